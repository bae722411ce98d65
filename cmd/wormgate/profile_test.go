package main

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/cmd/wormgate/internal/yamlconf"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/configerr"
)

// TestDefaultYAMLAggressiveRules keeps the commented-out list of what
// `profile: aggressive` adds, in the printed default, equal to the rules
// the profile really adds.
func TestDefaultYAMLAggressiveRules(t *testing.T) {
	const start, prefix = "  # What `profile: aggressive` adds", "  #   "
	text := string(defaultYAML)
	i := strings.Index(text, start)
	if i < 0 {
		t.Fatalf("default.yaml lacks %q", start)
	}
	var b strings.Builder
	b.WriteString("rules:\n")
	for _, l := range strings.Split(text[i:], "\n")[1:] {
		if l == "  #" && b.Len() > len("rules:\n") {
			break
		}
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			b.WriteString("  " + rest + "\n")
		}
	}
	var got struct {
		Rules []matcher.Rule `yaml:"rules"`
	}
	if err := yamlconf.Load("default.yaml", []byte(b.String()), &got, nil); err != nil {
		t.Fatalf("the aggressive rules in default.yaml: %v\n%s", err, b.String())
	}
	if diff := cmp.Diff(matcher.AggressiveRules(), got.Rules, configOpts); diff != "" {
		t.Errorf("default.yaml's aggressive rules differ from matcher.AggressiveRules() (-want +got):\n%s", diff)
	}
}

func ruleNames(rules []matcher.Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.Name)
	}
	return out
}

// TestConfigProfiles loads files that choose a profile, add rules to it or
// replace its rules, and the mistakes: an unknown profile, an added rule
// named like one of the profile's, and a profile that a rules list would
// silently override. The loaded configuration lists every rule it runs
// in Rules, so that serve, reload, check and the status API read them
// alike.
func TestConfigProfiles(t *testing.T) {
	// The line of the profile in the printed default.
	profileLine := 1 + strings.Count(string(defaultYAML[:bytes.Index(defaultYAML, []byte("  profile: default\n"))]), "\n")
	def := ruleNames(matcher.DefaultConfig().Rules)
	aggr := append(append([]string(nil), def...), ruleNames(matcher.AggressiveRules())...)
	tests := []struct {
		name, file string
		want       []string
		wantErr    string // after "FILE:"
		sentinel   error
	}{
		{name: "no matcher section", file: "log:\n  level: INFO\n", want: def},
		{name: "aggressive", file: "matcher:\n  profile: aggressive\n", want: aggr},
		{name: "explicit default", file: "matcher:\n  profile: default\n", want: def},
		{
			name: "aggressive with a rule added",
			file: "matcher:\n  profile: aggressive\n  rules_add:\n    - name: mine\n      pattern: x\n",
			want: append(append([]string(nil), aggr...), "mine"),
		},
		{
			name: "default with a rule added",
			file: "matcher:\n  rules_add:\n    - name: rate-limit\n      pattern: x\n",
			want: append(append([]string(nil), def...), "rate-limit"),
		},
		{
			name: "rules replace the list",
			file: "matcher:\n  rules:\n    - name: only\n      pattern: x\n  rules_add:\n    - name: more\n      pattern: y\n",
			want: []string{"only", "more"},
		},
		{
			name: "the printed default with its profile",
			file: string(defaultYAML),
			want: def,
		},
		{
			name:     "unknown profile",
			file:     "matcher:\n  profile: Aggressive\n",
			wantErr:  `2: matcher.profile: "Aggressive" is not a rule profile (default or aggressive)`,
			sentinel: configerr.ErrInvalid,
		},
		{
			name:     "added rule named like the profile's",
			file:     "matcher:\n  profile: aggressive\n  rules_add:\n    - name: mine\n      pattern: x\n    - name: rate-limit\n      pattern: x\n",
			wantErr:  `6: matcher.rules_add[1].name: "rate-limit" is also the name of a rule of profile aggressive`,
			sentinel: configerr.ErrDuplicate,
		},
		{
			name:     "added rule named like a listed one",
			file:     "matcher:\n  rules:\n    - name: mine\n      pattern: x\n  rules_add:\n    - name: mine\n      pattern: y\n",
			wantErr:  `6: matcher.rules_add[0].name: "mine" is also the name of rules[0]`,
			sentinel: configerr.ErrDuplicate,
		},
		{
			name:     "a profile that the rules list overrides",
			file:     strings.Replace(string(defaultYAML), "  profile: default\n", "  profile: aggressive\n", 1),
			wantErr:  fmt.Sprintf("%d: matcher.profile: profile aggressive has no effect, because matcher.rules lists the rules itself: remove matcher.rules, and put rules of your own in matcher.rules_add", profileLine),
			sentinel: configerr.ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.file)
			cfg, err := loadConfig(p)
			if tt.wantErr != "" {
				want := "invalid config:\n" + p + ":" + tt.wantErr
				if err == nil {
					t.Fatalf("loadConfig() = nil error, want %q", want)
				}
				if diff := cmp.Diff(want, err.Error()); diff != "" {
					t.Errorf("loadConfig() error (-want +got):\n%s", diff)
				}
				if !errors.Is(err, errConfig) || !errors.Is(err, tt.sentinel) {
					t.Errorf("loadConfig() = %v, want it to wrap errConfig and %v", err, tt.sentinel)
				}
				var o, e bytes.Buffer
				if code := run(t.Context(), []string{"check", "--config", p, "-"}, strings.NewReader(""), &o, &e); code != exitUsage {
					t.Errorf("check with this file exited %d, want %d", code, exitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, ruleNames(cfg.Matcher.Rules)); diff != "" {
				t.Errorf("loaded rules (-want +got):\n%s", diff)
			}
			if cfg.Matcher.RulesAdd != nil {
				t.Errorf("loaded RulesAdd = %v, want it folded into Rules", ruleNames(cfg.Matcher.RulesAdd))
			}
			if diff := cmp.Diff(tt.want, slices.Collect(maps.Keys(rulePolicies(cfg.Matcher))), cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("rule policies (-want +got):\n%s", diff)
			}
		})
	}
}
