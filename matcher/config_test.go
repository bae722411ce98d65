package matcher

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

func TestValidate(t *testing.T) {
	ok := func() Rule { return Rule{Name: "r", Pattern: MustRegexp(`x`)} }
	with := func(f func(*Rule)) Rule { r := ok(); f(&r); return r }
	tests := []struct {
		name     string
		cfg      Config
		want     []string // error lines, in order
		sentinel error
	}{
		{name: "default", cfg: DefaultConfig()},
		{name: "zero values take defaults", cfg: Config{Rules: []Rule{ok()}}},
		{name: "no rules", cfg: Config{}},
		{
			name:     "missing pattern",
			cfg:      Config{Rules: []Rule{ok(), ok(), with(func(r *Rule) { r.Name = "p"; r.Pattern = Regexp{} })}},
			want:     []string{`matcher.rules[1].name: duplicate rule name "r", also rules[0]`, `matcher.rules[2].pattern: required`},
			sentinel: ErrRequired,
		},
		{
			name:     "missing name",
			cfg:      Config{Rules: []Rule{with(func(r *Rule) { r.Name = "" })}},
			want:     []string{`matcher.rules[0].name: required`},
			sentinel: ErrRequired,
		},
		{
			name:     "name with a space",
			cfg:      Config{Rules: []Rule{with(func(r *Rule) { r.Name = "a b" })}},
			want:     []string{`matcher.rules[0].name: invalid rule name "a b": use letters, digits, '.', '_' and '-'`},
			sentinel: ErrBadName,
		},
		{
			name:     "duplicate names",
			cfg:      Config{Rules: []Rule{ok(), ok()}},
			want:     []string{`matcher.rules[1].name: duplicate rule name "r", also rules[0]`},
			sentinel: ErrDuplicate,
		},
		{
			name:     "unknown kind",
			cfg:      Config{Rules: []Rule{with(func(r *Rule) { r.Kinds = []Kind{KindSASLFailed, "cleanup_rejekt"} })}},
			want:     []string{`matcher.rules[0].kinds[1]: unknown kind "cleanup_rejekt", want one of [cleanup_reject cleanup_discard cleanup_hold cleanup_warning milter_reject smtpd_reject sasl_failed postscreen_pregreet postscreen_dnsbl postscreen_hangup smtpd_lost_auth smtpd_too_many_errors]`},
			sentinel: ErrUnknownKind,
		},
		{
			name:     "negative threshold",
			cfg:      Config{Rules: []Rule{with(func(r *Rule) { r.Threshold = -1 })}},
			want:     []string{`matcher.rules[0].threshold: out of range: -1, want >= 1`},
			sentinel: ErrOutOfRange,
		},
		{
			name:     "negative window and ban_for",
			cfg:      Config{Rules: []Rule{with(func(r *Rule) { r.Window = -time.Second; r.BanFor = -time.Minute })}},
			want:     []string{`matcher.rules[0].window: out of range: -1s, want > 0`, `matcher.rules[0].ban_for: out of range: -1m0s, want >= 0`},
			sentinel: ErrOutOfRange,
		},
		{
			name:     "negative queue table size",
			cfg:      Config{QueueTableSize: -5},
			want:     []string{`matcher.queue_table_size: out of range: -5, want >= 1 (0 for the default)`},
			sentinel: ErrOutOfRange,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
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

func TestWithDefaults(t *testing.T) {
	got := Config{Rules: []Rule{{Name: "r", Pattern: MustRegexp("x"), BanFor: time.Minute}}}.WithDefaults()
	type policy struct {
		Threshold      int
		Window, BanFor time.Duration
		QueueTableSize int
	}
	want := policy{1, time.Hour, time.Minute, 100000}
	if diff := cmp.Diff(want, policy{got.Rules[0].Threshold, got.Rules[0].Window, got.Rules[0].BanFor, got.QueueTableSize}); diff != "" {
		t.Errorf("WithDefaults (-want +got):\n%s", diff)
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
	err = r.UnmarshalText([]byte(`(abc`))
	if !errors.Is(err, ErrPattern) || !strings.Contains(err.Error(), `"(abc"`) {
		t.Errorf("UnmarshalText((abc) = %v, want ErrPattern naming the pattern", err)
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
queue_table_size: 500
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
		Size                   int
	}
	want := flat{"worm", `^postfix/cleanup$`, `(?i)\b(w32|worm)\b[^:]*$`, []Kind{KindCleanupReject}, 2, 30 * time.Minute, 24 * time.Hour, true, 500}
	if diff := cmp.Diff(want, flat{r.Name, r.Program.String(), r.Pattern.String(), r.Kinds, r.Threshold, r.Window, r.BanFor, r.DryRun, cfg.QueueTableSize}); diff != "" {
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
		if def.Rules[i].Pattern.String() != r.Pattern.String() || def.Rules[i].BanFor != r.BanFor {
			t.Errorf("default rule %d after round trip = %+v, want %+v", i, def.Rules[i], r)
		}
	}

	bad := "rules:\n  - name: x\n    pattern: '(abc'\n"
	err = yaml.Unmarshal([]byte(bad), &cfg)
	if err == nil || !strings.Contains(err.Error(), `"(abc"`) {
		t.Errorf("decoding a bad pattern: %v, want an error naming it", err)
	}
}
