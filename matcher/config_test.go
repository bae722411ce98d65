package matcher

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/wormgate/wormgate/receiver/configerr"
)

func TestValidate(t *testing.T) {
	ok := func() Rule {
		r := Rule{Name: "r", Pattern: MustRegexp(`x`)}
		r.Threshold, r.Window, r.Evidence = 1, time.Hour, EvidenceStrong
		return r
	}
	with := func(f func(*Rule)) Rule { r := ok(); f(&r); return r }
	cfg := func(rules ...Rule) Config {
		return Config{Rules: rules, QueueTableSize: 10, Established: DefaultEstablished()}
	}
	tests := []struct {
		name     string
		cfg      Config
		want     []string // error lines, in order
		sentinel error
	}{
		{name: "default", cfg: DefaultConfig()},
		{name: "no rules", cfg: cfg()},
		{
			name:     "missing pattern",
			cfg:      cfg(ok(), ok(), with(func(r *Rule) { r.Name = "p"; r.Pattern = Regexp{} })),
			want:     []string{`rules[1].name: "r" is also the name of rules[0]`, `rules[2].pattern: required`},
			sentinel: configerr.ErrRequired,
		},
		{
			name:     "missing name",
			cfg:      cfg(with(func(r *Rule) { r.Name = "" })),
			want:     []string{`rules[0].name: required`},
			sentinel: configerr.ErrRequired,
		},
		{
			name:     "name with a space",
			cfg:      cfg(with(func(r *Rule) { r.Name = "a b" })),
			want:     []string{`rules[0].name: "a b" is not a rule name: use up to 64 letters, digits, '.', '_' and '-'`},
			sentinel: configerr.ErrInvalid,
		},
		{
			name:     "duplicate names",
			cfg:      cfg(ok(), ok()),
			want:     []string{`rules[1].name: "r" is also the name of rules[0]`},
			sentinel: configerr.ErrDuplicate,
		},
		{
			name:     "unknown kind",
			cfg:      cfg(with(func(r *Rule) { r.Kinds = []Kind{KindSASLFailed, "cleanup_rejekt"} })),
			want:     []string{`rules[0].kinds[1]: "cleanup_rejekt" is not an event kind (cleanup_reject, cleanup_discard, cleanup_hold, cleanup_warning, milter_reject, smtpd_reject, sasl_failed, sasl_server_error, sasl_bad_mechanism, postscreen_pregreet, postscreen_dnsbl, postscreen_hangup, smtpd_lost_auth, smtpd_too_many_errors, smtpd_lost_connection, smtpd_pipelining, smtpd_non_smtp, smtpd_rate_limit, smtpd_auth_failed_session, postscreen_command_time_limit, postscreen_command_count_limit, postscreen_command_length_limit, postscreen_non_smtp, postscreen_bare_newline, postscreen_pipelining)`},
			sentinel: configerr.ErrInvalid,
		},
		{
			name:     "bad host",
			cfg:      cfg(with(func(r *Rule) { r.Hosts = []string{"mx1", "mx 2"} })),
			want:     []string{`rules[0].hosts[1]: "mx 2" is not a host name`},
			sentinel: configerr.ErrInvalid,
		},
		{
			// Zero is no longer "the default": the loader fills in
			// defaults, and the matcher gets complete rules.
			name:     "zero threshold and window",
			cfg:      cfg(with(func(r *Rule) { r.Threshold = 0; r.Window = 0 })),
			want:     []string{`rules[0].threshold: 0 is out of range (at least 1)`, `rules[0].window: 0s is out of range (at least 1s)`},
			sentinel: configerr.ErrOutOfRange,
		},
		{
			name:     "negative ban_for",
			cfg:      cfg(with(func(r *Rule) { r.BanFor = -time.Minute })),
			want:     []string{`rules[0].ban_for: -1m0s is negative (0 means enforcer.ban_for)`},
			sentinel: configerr.ErrOutOfRange,
		},
		{
			name:     "zero queue table size",
			cfg:      Config{QueueTableSize: 0, Established: DefaultEstablished()},
			want:     []string{`queue_table_size: 0 is out of range (at least 1)`},
			sentinel: configerr.ErrOutOfRange,
		},
		{
			name:     "empty reinjection source",
			cfg:      Config{QueueTableSize: 1, ReinjectionSources: []netip.Prefix{{}}, Established: DefaultEstablished()},
			want:     []string{`reinjection_sources[0]: empty prefix`},
			sentinel: configerr.ErrRequired,
		},
		{
			name: "weak evidence",
			cfg:  cfg(with(func(r *Rule) { r.Evidence = EvidenceWeak })),
		},
		{
			// Empty is not "strong": the loader fills in the default, and
			// a rule built in code must say what it means.
			name:     "unknown and missing evidence",
			cfg:      cfg(with(func(r *Rule) { r.Evidence = "Strong" }), with(func(r *Rule) { r.Name = "q"; r.Evidence = "" })),
			want:     []string{`rules[0].evidence: "Strong" is not an evidence strength (strong or weak)`, `rules[1].evidence: "" is not an evidence strength (strong or weak)`},
			sentinel: configerr.ErrInvalid,
		},
		{
			name: "established settings out of range",
			cfg:  Config{QueueTableSize: 1, Established: EstablishedConfig{TableSize: 0, MinMessages: 0, MinSpan: -time.Hour}},
			want: []string{
				`established.table_size: 0 is out of range (at least 1)`,
				`established.min_messages: 0 is out of range (at least 1)`,
				`established.min_span: -1h0m0s is negative`,
			},
			sentinel: configerr.ErrOutOfRange,
		},
		{
			name: "established on one message, no span",
			cfg:  Config{QueueTableSize: 1, Established: EstablishedConfig{TableSize: 1, MinMessages: 1}},
		},
		{
			name: "aggressive profile with added rules",
			cfg:  Config{Profile: ProfileAggressive, RulesAdd: []Rule{ok()}, QueueTableSize: 1, Established: DefaultEstablished()},
		},
		{
			name:     "unknown profile",
			cfg:      Config{Profile: "agressive", QueueTableSize: 1, Established: DefaultEstablished()},
			want:     []string{`profile: "agressive" is not a rule profile (default or aggressive)`},
			sentinel: configerr.ErrInvalid,
		},
		{
			name: "added rule named like a profile's rule",
			cfg: Config{Profile: ProfileAggressive, QueueTableSize: 1, Established: DefaultEstablished(), RulesAdd: []Rule{
				ok(), with(func(r *Rule) { r.Name = "rate-limit" }), with(func(r *Rule) { r.Name = "worm-signature" }),
			}},
			want: []string{
				`rules_add[1].name: "rate-limit" is also the name of a rule of profile aggressive`,
				`rules_add[2].name: "worm-signature" is also the name of a rule of profile aggressive`,
			},
			sentinel: configerr.ErrDuplicate,
		},
		{
			name: "added rule named like a listed rule, and invalid",
			cfg: Config{Rules: []Rule{ok()}, QueueTableSize: 1, Established: DefaultEstablished(), RulesAdd: []Rule{
				with(func(r *Rule) { r.Name = "q"; r.Threshold = 0 }), ok(), with(func(r *Rule) { r.Name = "q" }),
			}},
			want: []string{
				`rules_add[0].threshold: 0 is out of range (at least 1)`,
				`rules_add[1].name: "r" is also the name of rules[0]`,
				`rules_add[2].name: "q" is also the name of rules_add[0]`,
			},
			sentinel: configerr.ErrDuplicate,
		},
		{
			// The default profile has no rate-limit rule to clash with.
			name: "default profile, added rule named like an aggressive one",
			cfg:  Config{QueueTableSize: 1, Established: DefaultEstablished(), RulesAdd: []Rule{with(func(r *Rule) { r.Name = "rate-limit" })}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var got []string
			for _, fe := range configerr.Flatten(err) {
				got = append(got, fe.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() (-want +got):\n%s", diff)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("Validate() = %v, want it to wrap %v", err, tt.sentinel)
			}
			_, newErr := New(tt.cfg)
			if (newErr != nil) != (err != nil) {
				t.Errorf("New() error %v disagrees with Validate() error %v", newErr, err)
			}
		})
	}
}

func TestSetDefaults(t *testing.T) {
	var r Rule
	r.Name = "left over"
	r.SetDefaults()
	if diff := cmp.Diff(Rule{Threshold: DefaultThreshold, Window: DefaultWindow, Evidence: EvidenceStrong}, r, cmp.Comparer(func(a, b Regexp) bool { return a.String() == b.String() })); diff != "" {
		t.Errorf("SetDefaults (-want +got):\n%s", diff)
	}
}

func TestRegexpText(t *testing.T) {
	var r Regexp
	if err := r.UnmarshalText([]byte(`(?i)\bw32\b`)); err != nil {
		t.Fatal(err)
	}
	text, err := r.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`(?i)\bw32\b`, string(text)); diff != "" {
		t.Errorf("MarshalText (-want +got):\n%s", diff)
	}
	if !r.MatchString("a W32.x") {
		t.Error("compiled expression does not match")
	}
	for _, tt := range []struct{ expr, want string }{
		{`(abc`, `'(abc' is not a regular expression: missing closing )`},
		{`it's \q`, "'it''s \\q' is not a regular expression: invalid escape sequence: `\\q`"},
	} {
		err = r.UnmarshalText([]byte(tt.expr))
		if !errors.Is(err, configerr.ErrType) || !configerr.Worded(err) {
			t.Errorf("UnmarshalText(%s) = %v, want a worded configerr.ErrType", tt.expr, err)
		}
		if diff := cmp.Diff(tt.want, fmt.Sprint(err)); diff != "" {
			t.Errorf("UnmarshalText(%s) (-want +got):\n%s", tt.expr, diff)
		}
	}
}

func TestRegexpYAML(t *testing.T) {
	in := `
rules:
  - name: worm
    kinds: [cleanup_reject]
    program: '^postfix/cleanup$'
    pattern: '(?i)\b(w32|worm)\b[^:]*$'
    threshold: 2
    window: 30m
    ban_for: 24h
    dry_run: true
    evidence: weak
queue_table_size: 500
established:
  table_size: 1000
  min_messages: 50
  min_span: 72h
`
	var cfg Config
	if err := yaml.Unmarshal([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := cfg.Rules[0]
	type flat struct {
		Name, Program, Pattern string
		Kinds                  []Kind
		Threshold              int
		Window, BanFor         time.Duration
		DryRun                 bool
		Evidence               Evidence
		Size                   int
		Established            EstablishedConfig
	}
	want := flat{"worm", `^postfix/cleanup$`, `(?i)\b(w32|worm)\b[^:]*$`, []Kind{KindCleanupReject}, 2, 30 * time.Minute, 24 * time.Hour, true, EvidenceWeak, 500, EstablishedConfig{1000, 50, 72 * time.Hour}}
	if diff := cmp.Diff(want, flat{r.Name, r.Program.String(), r.Pattern.String(), r.Kinds, r.Threshold, r.Window, r.BanFor, r.DryRun, r.Evidence, cfg.QueueTableSize, cfg.Established}); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}

	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var again Config
	if err := yaml.Unmarshal(out, &again); err != nil {
		t.Fatalf("re-decode %s: %v", out, err)
	}
	if diff := cmp.Diff(r.Pattern.String(), again.Rules[0].Pattern.String()); diff != "" {
		t.Errorf("pattern after round trip (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(r.Program.String(), again.Rules[0].Program.String()); diff != "" {
		t.Errorf("program after round trip (-want +got):\n%s", diff)
	}

	// The default config survives a round trip too, so that the printed
	// default can be fed back.
	out, err = yaml.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var def Config
	if err := yaml.Unmarshal(out, &def); err != nil {
		t.Fatalf("re-decode default %s: %v", out, err)
	}
	if err := def.Validate(); err != nil {
		t.Errorf("default after round trip: %v", err)
	}
	for i, r := range DefaultConfig().Rules {
		if def.Rules[i].Pattern.String() != r.Pattern.String() || def.Rules[i].BanFor != r.BanFor || def.Rules[i].Evidence != r.Evidence {
			t.Errorf("default rule %d after round trip = %+v, want %+v", i, def.Rules[i], r)
		}
	}

	bad := "rules:\n  - name: x\n    pattern: '(abc'\n"
	err = yaml.Unmarshal([]byte(bad), &cfg)
	if err == nil || !strings.Contains(err.Error(), `'(abc'`) {
		t.Errorf("decoding a bad pattern: %v, want an error naming it", err)
	}
}

// TestProfiles: the built-in rule sets are valid, the aggressive one is
// the default one and its own additions, and a configuration runs
// Rules, or its profile's rules, and then RulesAdd.
func TestProfiles(t *testing.T) {
	names := func(rules []Rule) []string {
		var out []string
		for _, r := range rules {
			out = append(out, r.Name)
		}
		return out
	}
	def := names(DefaultConfig().Rules)
	aggr := append(slices.Clone(def), names(AggressiveRules())...)
	for _, p := range []Profile{ProfileDefault, ProfileAggressive} {
		if err := errors.Join(validateRules("rules", p.Rules(), make(map[string]string))...); err != nil {
			t.Errorf("profile %s: %v", p, err)
		}
	}
	// A SASL backend that is down never counts; a mechanism that was not
	// offered counts only in the aggressive profile.
	counts := func(p Profile, k Kind) bool {
		for _, r := range p.Rules() {
			if len(r.Kinds) == 0 || slices.Contains(r.Kinds, k) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		p    Profile
		k    Kind
		want bool
	}{
		{ProfileDefault, KindSASLServerError, false},
		{ProfileAggressive, KindSASLServerError, false},
		{ProfileDefault, KindSASLBadMechanism, false},
		{ProfileAggressive, KindSASLBadMechanism, true},
	} {
		if got := counts(c.p, c.k); got != c.want {
			t.Errorf("profile %s counts %s: %v, want %v", c.p, c.k, got, c.want)
		}
	}
	added := Rule{Name: "mine", Pattern: MustRegexp(`x`), Threshold: 1, Window: time.Hour, Evidence: EvidenceStrong}
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"zero value", Config{}, def},
		{"default", DefaultConfig(), def},
		{"aggressive", Config{Profile: ProfileAggressive}, aggr},
		{"aggressive and added", Config{Profile: ProfileAggressive, RulesAdd: []Rule{added}}, append(slices.Clone(aggr), "mine")},
		{"listed rules replace the profile's", Config{Profile: ProfileAggressive, Rules: []Rule{added}}, []string{"mine"}},
		{"an empty list is no rules", Config{Rules: []Rule{}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, names(tt.cfg.EffectiveRules())); diff != "" {
				t.Errorf("EffectiveRules (-want +got):\n%s", diff)
			}
			r := tt.cfg.Resolved()
			if diff := cmp.Diff(tt.want, names(r.Rules)); diff != "" || r.RulesAdd != nil || r.Rules == nil {
				t.Errorf("Resolved: RulesAdd %v, Rules (-want +got):\n%s", r.RulesAdd, diff)
			}
		})
	}
}
