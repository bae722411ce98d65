package main

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/dryrun"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wormgate/wormgate/cmd/wormgate/internal/yamlconf"
	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/configerr"
)

// regexpEq compares compiled patterns by their source text.
var regexpEq = cmp.Comparer(func(a, b matcher.Regexp) bool {
	if a.Regexp == nil || b.Regexp == nil {
		return a.Regexp == b.Regexp
	}
	return a.String() == b.String()
})

var configOpts = cmp.Options{regexpEq, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})}

func TestDefaultYAMLIsTheDefault(t *testing.T) {
	// Decoded over nothing, the printed default must be the default.
	var got Config
	if err := yamlconf.Load("default.yaml", defaultYAML, &got, func() error { return got.Validate() }); err != nil {
		t.Fatalf("embedded default.yaml: %v", err)
	}
	if diff := cmp.Diff(defaultConfig(), got, configOpts, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("default.yaml differs from defaultConfig() (-want +got):\n%s", diff)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "wormgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigOverDefaults(t *testing.T) {
	p := writeConfig(t, "enforcer:\n  ban_for: 2h\n  nftables:\n    ports: []\nreceiver:\n  allowed_senders: [198.51.100.25/32]\n")
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.Enforcer.BanFor = 2 * time.Hour
	want.Enforcer.NFTables.Ports = []uint16{}
	want.Receiver.AllowedSenders = []netip.Prefix{netip.MustParsePrefix("198.51.100.25/32")}
	if diff := cmp.Diff(want, cfg, configOpts); diff != "" {
		t.Errorf("loaded config (-want +got):\n%s", diff)
	}
}

// TestRuleDefaults pins the one place rule defaults come from: a rule in
// the file starts from Rule.SetDefaults, and what the enforcer and check
// get is that rule as it is.
func TestRuleDefaults(t *testing.T) {
	p := writeConfig(t, `
matcher:
  rules:
    - name: worm
      pattern: W32
    - name: sasl
      pattern: authentication failed
      threshold: 5
      window: 10m
      ban_for: 1h
      dry_run: true
      evidence: weak
`)
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]policy.RulePolicy{
		"worm": {Threshold: matcher.DefaultThreshold, Window: matcher.DefaultWindow, Evidence: matcher.EvidenceStrong},
		"sasl": {Threshold: 5, Window: 10 * time.Minute, BanFor: time.Hour, DryRun: true, Evidence: matcher.EvidenceWeak},
	}
	if diff := cmp.Diff(want, rulePolicies(cfg.Matcher)); diff != "" {
		t.Errorf("rulePolicies (-want +got):\n%s", diff)
	}
	if _, err := matcher.New(cfg.Matcher); err != nil {
		t.Errorf("matcher.New(loaded rules) = %v", err)
	}
}

func TestExampleLoads(t *testing.T) {
	cfg, err := loadConfig(filepath.Join("..", "..", "deploy", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(cfg.Enforcer.NeverBlock), 6; got != want {
		t.Errorf("example never_block has %d prefixes, want %d", got, want)
	}
	if _, err := newReplay(cfg, netip.Addr{}); err != nil {
		t.Errorf("newReplay(example) = %v", err)
	}
}

// invalidConfigs pairs every testdata/invalid-*.yaml with the whole
// message it must produce, after "invalid config:\n".
var invalidConfigs = []struct {
	file, wantErr string
}{
	{"invalid-unknown-top.yaml", `
testdata/invalid-unknown-top.yaml:2: reciever: unknown field (did you mean receiver?)`},
	{"invalid-unknown-nested.yaml", `
testdata/invalid-unknown-nested.yaml:3: enforcer.neverblock: unknown field (did you mean never_block?)
testdata/invalid-unknown-nested.yaml:7: enforcer.nftables.tabel: unknown field (did you mean table?)`},
	{"invalid-int.yaml", `
testdata/invalid-int.yaml:2: receiver.max_connections: "many" is not a whole number
testdata/invalid-int.yaml:3: receiver.max_message_size: 1.5 is not a whole number`},
	{"invalid-port.yaml", `
testdata/invalid-port.yaml:5: enforcer.nftables.ports[1]: 70000 is not a port (1-65535)
testdata/invalid-port.yaml:6: enforcer.nftables.ports[2]: 0 is not a port (1-65535)
testdata/invalid-port.yaml:7: enforcer.nftables.ports[3]: 25 is also ports[0]`},
	{"invalid-bool.yaml", `
testdata/invalid-bool.yaml:2: enforcer.dry_run: "maybe" is not true or false`},
	{"invalid-list.yaml", `
testdata/invalid-list.yaml:3: receiver.allowed_senders: want a list, not "192.0.2.25/32"
testdata/invalid-list.yaml:6: matcher.rules: want a list, not a mapping`},
	{"invalid-prefix.yaml", `
testdata/invalid-prefix.yaml:4: receiver.allowed_senders[1]: "192.0.2.0/33" is not an IP prefix: prefix length out of range
testdata/invalid-prefix.yaml:9: enforcer.never_block[2]: "198.51.100.300/24" is not an IP prefix: IPv4 field has value >255
testdata/invalid-prefix.yaml:10: enforcer.never_block[3]: "partner.example" is not an IP prefix: no '/'`},
	{"invalid-duration.yaml", `
testdata/invalid-duration.yaml:9: matcher.rules[1].window: "10 minutes" is not a duration (e.g. 10m, 1h30m)
testdata/invalid-duration.yaml:11: enforcer.ban_for: "1d" is not a duration (e.g. 10m, 1h30m)
testdata/invalid-duration.yaml:12: enforcer.max_ban_for: want a duration (e.g. 10m, 1h30m), not a list`},
	{"invalid-pattern.yaml", `
testdata/invalid-pattern.yaml:4: matcher.rules[0].program: '^postfix/(cleanup' is not a regular expression: missing closing )
testdata/invalid-pattern.yaml:5: matcher.rules[0].pattern: '(?i)\b(w32|worm' is not a regular expression: missing closing )
testdata/invalid-pattern.yaml:7: matcher.rules[1].pattern: 'x\qy' is not a regular expression: invalid escape sequence: ` + "`\\q`"},
	{"invalid-kind.yaml", `
testdata/invalid-kind.yaml:4: matcher.rules[0].kinds[1]: "cleanup_rejekt" is not an event kind (cleanup_reject, cleanup_discard, cleanup_hold, cleanup_warning, milter_reject, smtpd_reject, sasl_failed, sasl_server_error, sasl_bad_mechanism, postscreen_pregreet, postscreen_dnsbl, postscreen_hangup, smtpd_lost_auth, smtpd_too_many_errors, smtpd_lost_connection, smtpd_pipelining, smtpd_non_smtp, smtpd_rate_limit, smtpd_auth_failed_session, postscreen_command_time_limit, postscreen_command_count_limit, postscreen_command_length_limit, postscreen_non_smtp, postscreen_bare_newline, postscreen_pipelining)`},
	{"invalid-evidence.yaml", `
testdata/invalid-evidence.yaml:3: matcher.established.table_size: 0 is out of range (at least 1)
testdata/invalid-evidence.yaml:4: matcher.established.min_messages: 0 is out of range (at least 1)
testdata/invalid-evidence.yaml:5: matcher.established.min_span: -1h0m0s is negative
testdata/invalid-evidence.yaml:9: matcher.rules[0].evidence: "medium" is not an evidence strength (strong or weak)
testdata/invalid-evidence.yaml:12: matcher.rules[1].evidence: "" is not an evidence strength (strong or weak)`},
	{"invalid-duplicate-rule.yaml", `
testdata/invalid-duplicate-rule.yaml:7: matcher.rules[2].name: "worm" is also the name of rules[0]
testdata/invalid-duplicate-rule.yaml:9: matcher.rules[3].name: "bad name" is not a rule name: use up to 64 letters, digits, '.', '_' and '-'`},
	{"invalid-range.yaml", `
testdata/invalid-range.yaml:2: receiver.max_message_size: 10 is out of range (256-67108864)
testdata/invalid-range.yaml:3: receiver.idle_timeout: 0s is out of range (at least 1s)
testdata/invalid-range.yaml:5: matcher.queue_table_size: 0 is out of range (at least 1)
testdata/invalid-range.yaml:9: matcher.rules[0].threshold: 0 is out of range (at least 1)
testdata/invalid-range.yaml:10: matcher.rules[0].window: 0s is out of range (at least 1s)
testdata/invalid-range.yaml:11: matcher.rules[0].ban_for: -1h0m0s is negative (0 means enforcer.ban_for)
testdata/invalid-range.yaml:14: enforcer.max_ban_for: 24h0m0s is less than ban_for (48h0m0s)
testdata/invalid-range.yaml:15: enforcer.escalation_factor: 0.5 is out of range (1-100)
testdata/invalid-range.yaml:16: enforcer.max_active_bans: -1 is out of range (at least 1)`},
	{"invalid-several.yaml", `
testdata/invalid-several.yaml:4: receiver.max_conections: unknown field (did you mean max_connections?)
testdata/invalid-several.yaml:9: matcher.rules[0].pattern: '(w32' is not a regular expression: missing closing )
testdata/invalid-several.yaml:10: matcher.rules[0].window: "soon" is not a duration (e.g. 10m, 1h30m)
testdata/invalid-several.yaml:12: enforcer.never_block[0]: "198.51.100.300/24" is not an IP prefix: IPv4 field has value >255
testdata/invalid-several.yaml:14: enforcer.nftables.ports[1]: 70000 is not a port (1-65535)
testdata/invalid-several.yaml:16: log.level: "loud" is not a log level (debug, info, warn or error)
testdata/invalid-several.yaml:17: log.format: "xml" is not a log format (text or json)`},
	{"invalid-empty-pattern.yaml", `
testdata/invalid-empty-pattern.yaml:4: matcher.rules[0].pattern: required
testdata/invalid-empty-pattern.yaml:5: matcher.rules[1].pattern: required`},
	{"invalid-listen.yaml", `
testdata/invalid-listen.yaml:2: receiver.udp_listen[0]: "192.0.2.1" is not a listen address (host:port): missing port in address
testdata/invalid-listen.yaml:3: receiver.tcp_listen[0]: "192.0.2.1:syslog" is not a listen address (host:port): port "syslog" is not a number from 0 to 65535
testdata/invalid-listen.yaml:3: receiver.tcp_listen[2]: ":514" is also tcp_listen[1]
testdata/invalid-listen.yaml:5: http.listen: "nowhere" is not a listen address (host:port): missing port in address`},
	{"invalid-tls.yaml", `
testdata/invalid-tls.yaml:1: receiver.tls_cert_file: required when tls_listen is set`},
	{"invalid-syntax.yaml", `
testdata/invalid-syntax.yaml:2: not valid YAML: did not find expected ',' or ']'`},
	{"invalid-duplicate-key.yaml", `
testdata/invalid-duplicate-key.yaml:4: enforcer.ban_for: given twice (first on line 2)`},
	{"invalid-null.yaml", `
testdata/invalid-null.yaml:2: enforcer.ban_for: missing value (want a duration (e.g. 10m, 1h30m))
testdata/invalid-null.yaml:3: enforcer.state_dir: "var/lib/wormgate" is not an absolute path
testdata/invalid-null.yaml:5: enforcer.nftables.table: required`},
}

func TestInvalidConfigs(t *testing.T) {
	for _, tt := range invalidConfigs {
		t.Run(tt.file, func(t *testing.T) {
			want := "invalid config:" + tt.wantErr
			_, err := loadConfig(filepath.Join("testdata", tt.file))
			if err == nil {
				t.Fatal("loadConfig() = nil error")
			}
			if diff := cmp.Diff(want, err.Error()); diff != "" {
				t.Errorf("loadConfig() error (-want +got):\n%s", diff)
			}
			if !errors.Is(err, errConfig) {
				t.Errorf("loadConfig() = %v, want it to wrap errConfig", err)
			}

			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{"check", "--config", filepath.Join("testdata", tt.file), "-"}, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("wormgate check exit code = %d, want %d", code, exitUsage)
			}
			if diff := cmp.Diff("wormgate check: "+want+"\n", stderr.String()); diff != "" {
				t.Errorf("wormgate check stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInvalidConfigsListed keeps the table and the files in step.
func TestInvalidConfigsListed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "invalid-*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, tt := range invalidConfigs {
		listed = append(listed, filepath.Join("testdata", tt.file))
	}
	if diff := cmp.Diff(files, listed, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("testdata/invalid-*.yaml vs the table (-files +table):\n%s", diff)
	}
}

// TestConfigErrorKinds checks that every problem wraps the sentinel of
// its kind, and the whole error errConfig once.
func TestConfigErrorKinds(t *testing.T) {
	tests := []struct {
		file string
		want []error
	}{
		{"invalid-unknown-nested.yaml", []error{configerr.ErrUnknownField, configerr.ErrUnknownField}},
		{"invalid-port.yaml", []error{configerr.ErrOutOfRange, configerr.ErrOutOfRange, configerr.ErrDuplicate}},
		{"invalid-prefix.yaml", []error{configerr.ErrType, configerr.ErrType, configerr.ErrType}},
		{"invalid-empty-pattern.yaml", []error{configerr.ErrRequired, configerr.ErrRequired}},
		{"invalid-syntax.yaml", []error{configerr.ErrSyntax}},
		{"invalid-duplicate-key.yaml", []error{configerr.ErrDuplicate}},
	}
	sentinels := []error{configerr.ErrSyntax, configerr.ErrUnknownField, configerr.ErrType, configerr.ErrRequired,
		configerr.ErrOutOfRange, configerr.ErrDuplicate, configerr.ErrInvalid}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := loadConfig(filepath.Join("testdata", tt.file))
			var ye *yamlconf.Error
			if !errors.As(err, &ye) {
				t.Fatalf("loadConfig() = %v, want a *yamlconf.Error", err)
			}
			var got []error
			for _, p := range ye.Problems {
				for _, s := range sentinels {
					if errors.Is(p, s) {
						got = append(got, s)
					}
				}
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("sentinels (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReloadUsesTheLoader checks that SIGHUP's reload goes through the same
// loader: a bad file is logged with every problem and changes nothing; a
// good one is swapped in with its rules' defaults.
func TestReloadUsesTheLoader(t *testing.T) {
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	cfg := defaultConfig()
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		t.Fatal(err)
	}
	enf, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), dryrun.New(log), log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a := &app{log: log, matcher: m, enf: enf, reloadM: newReloadMetrics(reg)}
	a.cfg.Store(&cfg)

	a.path = filepath.Join("testdata", "invalid-several.yaml")
	if res := a.reload(t.Context(), "test"); res.OK || !strings.Contains(res.Error, "log.format") {
		t.Errorf("reload of an invalid file = %+v, want failed naming log.format", res)
	}
	if got := testutil.ToFloat64(a.reloadM.ok); got != 0 {
		t.Errorf("wormgate_config_last_reload_successful = %v after a failed reload, want 0", got)
	}
	if a.cfg.Load() != &cfg {
		t.Fatal("a failed reload changed the config")
	}
	for _, want := range []string{"reload failed; keeping the old config", `testdata/invalid-several.yaml:4: receiver.max_conections`, `testdata/invalid-several.yaml:17: log.format`} {
		if !strings.Contains(logBuf.String(), want) {
			t.Errorf("log %q does not contain %q", logBuf.String(), want)
		}
	}

	a.path = writeConfig(t, "matcher:\n  rules:\n    - name: only\n      pattern: x\nreceiver:\n  udp_listen: [\"127.0.0.1:5514\"]\nenforcer:\n  ban_for: 2h\n")
	res := a.reload(t.Context(), "test")
	if !res.OK || !slices.Contains(res.Applied, "matcher.rules") || !slices.Contains(res.Applied, "enforcer.ban_for") ||
		!slices.Equal(res.NeedsRestart, []string{"receiver.udp_listen"}) {
		t.Errorf("reload = %+v, want matcher.rules and enforcer.ban_for applied, receiver.udp_listen needing a restart", res)
	}
	if got := testutil.ToFloat64(a.reloadM.ok); got != 1 {
		t.Errorf("wormgate_config_last_reload_successful = %v after a good reload, want 1", got)
	}
	if got := a.cfg.Load().Receiver.UDPListen; !slices.Equal(got, cfg.Receiver.UDPListen) {
		t.Errorf("running config shows udp_listen %v, want the old %v until a restart", got, cfg.Receiver.UDPListen)
	}
	if a.cfg.Load() == &cfg {
		t.Fatal("a good reload did not swap the config")
	}
	want := map[string]policy.RulePolicy{"only": {Threshold: matcher.DefaultThreshold, Window: matcher.DefaultWindow, Evidence: matcher.EvidenceStrong}}
	if diff := cmp.Diff(want, rulePolicies(a.cfg.Load().Matcher)); diff != "" {
		t.Errorf("rules after reload (-want +got):\n%s", diff)
	}
}

func TestExitCodes(t *testing.T) {
	bad := writeConfig(t, "enforcer:\n  nonsense: 1\n")
	tests := []struct {
		name string
		args []string
		want int
		out  string
	}{
		{"no args", nil, exitUsage, ""},
		{"unknown command", []string{"frobnicate"}, exitUsage, ""},
		{"help", []string{"--help"}, exitOK, "Usage:"},
		{"serve help", []string{"serve", "--help"}, exitOK, ""},
		{"check help", []string{"check", "--help"}, exitOK, ""},
		{"bad flag", []string{"serve", "--nope"}, exitUsage, ""},
		{"bad config", []string{"serve", "--config", bad}, exitUsage, ""},
		{"missing config", []string{"check", "--config", "/nonexistent/wormgate.yaml", "-"}, exitUsage, ""},
		{"check without files", []string{"check"}, exitUsage, ""},
		{"check missing file", []string{"check", "/nonexistent/maillog"}, exitFailure, ""},
		{"version", []string{"version"}, exitOK, "wormgate "},
		{"config", []string{"config"}, exitOK, "allowed_senders:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(t.Context(), tt.args, strings.NewReader(""), &stdout, &stderr)
			if got != tt.want {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.args, got, tt.want, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.out) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.out)
			}
		})
	}
}

// FuzzLoadConfig feeds arbitrary files to the loader: it must not panic,
// and it must return either an error that lists problems, each on a line
// of its own that names the file, or a config the daemon can run.
func FuzzLoadConfig(f *testing.F) {
	f.Add(defaultYAML)
	if b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "example.yaml")); err == nil {
		f.Add(b)
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "invalid-*.yaml"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a: &x [*x, *x]\nb: *x\n"))
	f.Add([]byte("matcher:\n  rules:\n    - &r {name: a, pattern: x}\n    - <<: *r\n      name: b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := defaultConfig()
		err := yamlconf.Load("f.yaml", data, &cfg, func() error { return cfg.Validate() })
		if err != nil {
			var ye *yamlconf.Error
			if !errors.As(err, &ye) || len(ye.Problems) == 0 {
				t.Fatalf("Load() = %v, want a *yamlconf.Error with problems", err)
			}
			if lines := strings.Count(err.Error(), "\n") + 1; lines < len(ye.Problems) {
				t.Fatalf("%d problems on %d lines:\n%v", len(ye.Problems), lines, err)
			}
			for _, p := range ye.Problems {
				if p.Err == nil || !configerr.Worded(p.Err) {
					t.Fatalf("problem %q is not a configerr error", p)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load() = nil but Validate() = %v", err)
		}
		// A config that passes must run: every part accepts it.
		m, err := matcher.New(cfg.Matcher)
		if err != nil {
			t.Fatalf("matcher.New(valid config) = %v", err)
		}
		if _, err := policy.NewPolicy(cfg.Enforcer.Config, rulePolicies(cfg.Matcher)); err != nil {
			t.Fatalf("policy.NewPolicy(valid config) = %v", err)
		}
		if err := m.SetRules(cfg.Matcher.Rules); err != nil {
			t.Fatalf("SetRules(valid rules) = %v", err)
		}
	})
}
