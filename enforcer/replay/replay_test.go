package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/logfile"
	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"
)

// at is a time of the sample log (18:19:SS.micro, UTC).
func at(sec, micro int) time.Time {
	return time.Date(2026, 11, 26, 18, 19, sec, micro*1000, time.UTC)
}

var (
	worm  = netip.MustParseAddr("203.0.113.66")
	worm6 = netip.MustParseAddr("2001:db8:66::66")
)

// testConfig is the default configuration, as `wormgate check` without
// --config runs it.
func testConfig() Config {
	rules := make(map[string]policy.RulePolicy)
	for _, r := range matcher.DefaultConfig().Rules {
		rules[r.Name] = policy.RulePolicy{Threshold: r.Threshold, Window: r.Window, BanFor: r.BanFor, DryRun: r.DryRun, Evidence: r.Evidence}
	}
	return Config{Matcher: matcher.DefaultConfig(), Policy: policy.DefaultConfig(), Rules: rules}
}

// input is one log file of a test, read with ref anchoring its year.
type input struct {
	name string
	text string
	ref  time.Time
}

func replayAll(t *testing.T, cfg Config, in ...input) *Replay {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var files []*logfile.File
	for _, i := range in {
		f, err := logfile.New(i.name, strings.NewReader(i.text), i.ref, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	for _, f := range files {
		if err := r.Scan(f); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func sample() input {
	return input{name: "sample", text: syslogtest.SampleLog, ref: at(0, 0)}
}

var cmpAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func TestReplayBans(t *testing.T) {
	lines := syslogtest.SampleLines()
	// The sample split at a log rotation between a client= record and
	// its cleanup reject.
	older := input{name: "mail.log.1", text: strings.Join(lines[:7], "\n") + "\n", ref: at(0, 0)}
	newer := input{name: "mail.log", text: strings.Join(lines[7:], "\n") + "\n", ref: at(0, 0)}
	rollover, err := os.ReadFile("testdata/rollover.log")
	if err != nil {
		t.Fatal(err)
	}
	sampleBans := []Ban{
		{Addr: worm6, Rule: "worm-signature", Hits: 1, First: at(13, 799660), Last: at(13, 799660), Banned: at(13, 799660), Until: at(13, 799660).Add(24 * time.Hour)},
		{Addr: worm, Rule: "executable-attachment", Hits: 6, First: at(13, 869071), Last: at(14, 165211), Banned: at(13, 869071), Until: at(14, 165211).Add(24 * time.Hour)},
	}
	// Five SASL failures within 10 minutes across midnight reach
	// sasl-guessing's threshold only if Jan 1 is in the next year.
	rolloverBans := []Ban{{
		Addr: netip.MustParseAddr("203.0.113.77"), Rule: "sasl-guessing", Hits: 5,
		First:  time.Date(2025, 12, 31, 23, 56, 0, 0, time.UTC),
		Last:   time.Date(2026, 1, 1, 0, 4, 0, 0, time.UTC),
		Banned: time.Date(2026, 1, 1, 0, 4, 0, 0, time.UTC),
		Until:  time.Date(2026, 1, 1, 1, 4, 0, 0, time.UTC),
	}}
	tests := []struct {
		name string
		in   []input
		want []Ban
		// wantCounts leaves out the per-rule maps.
		wantCounts Counts
	}{
		{
			name:       "sample: only the infected client's own addresses",
			in:         []input{sample()},
			want:       sampleBans,
			wantCounts: Counts{Files: 1, Lines: 29, Offenses: 7},
		},
		{
			name:       "rotated halves in time order keep the reject's client",
			in:         []input{older, newer},
			want:       sampleBans,
			wantCounts: Counts{Files: 2, Lines: 29, Offenses: 7},
		},
		{
			name:       "year rollover, anchored just after midnight",
			in:         []input{{name: "mail.log", text: string(rollover), ref: time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)}},
			want:       rolloverBans,
			wantCounts: Counts{Files: 1, Lines: 9, Offenses: 6},
		},
		{
			name:       "year rollover, anchored by a later touch",
			in:         []input{{name: "mail.log", text: string(rollover), ref: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}},
			want:       rolloverBans,
			wantCounts: Counts{Files: 1, Lines: 9, Offenses: 6},
		},
		{
			name:       "year rollover, anchored before midnight",
			in:         []input{{name: "mail.log", text: string(rollover), ref: time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC)}},
			want:       rolloverBans,
			wantCounts: Counts{Files: 1, Lines: 9, Offenses: 6},
		},
		{
			name: "blank, unparsable and too long lines are counted, not matched",
			in: []input{{name: "junk", ref: at(0, 0), text: "\n<999>garbage\n" +
				strings.Repeat("x", logfile.MaxLine+1) + "\n" + syslogtest.SampleLog}},
			want:       sampleBans,
			wantCounts: Counts{Files: 1, Lines: 32, Unparsable: 1, TooLong: 1, Blank: 1, Offenses: 7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := replayAll(t, testConfig(), tt.in...)
			if diff := cmp.Diff(tt.want, r.Bans(), cmpAddrs); diff != "" {
				t.Errorf("bans (-want +got):\n%s", diff)
			}
			got := r.Counts()
			got.OffensesByRule, got.BansByRule, got.TrustedByRule = nil, nil, nil
			// TestReplayFiles looks at the files' counts.
			got.PerFile = nil
			if diff := cmp.Diff(tt.wantCounts, got); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplayExplain(t *testing.T) {
	// hit is what a test compares of a Hit.
	type hit struct {
		Line      int
		Rule      string
		Count     int
		Threshold int
		Verdict   policy.Verdict
		Until     time.Time
		Prefix    netip.Prefix
	}
	day := 24 * time.Hour
	tests := []struct {
		name    string
		explain string
		cfg     func(*Config)
		want    []hit
	}{
		{
			name:    "the infected client",
			explain: "203.0.113.66",
			want: []hit{
				{8, "executable-attachment", 1, 1, policy.VerdictBan, at(13, 869071).Add(day), netip.Prefix{}},
				{12, "worm-signature", 1, 1, policy.VerdictExtend, at(13, 938899).Add(day), netip.Prefix{}},
				{16, "worm-signature", 1, 1, policy.VerdictExtend, at(14, 8649).Add(day), netip.Prefix{}},
				{19, "relay-probing", 1, 3, policy.VerdictCounted, time.Time{}, netip.Prefix{}},
				{24, "worm-signature", 1, 1, policy.VerdictExtend, at(14, 114687).Add(day), netip.Prefix{}},
				{28, "worm-signature", 1, 1, policy.VerdictExtend, at(14, 165211).Add(day), netip.Prefix{}},
			},
		},
		{
			name:    "an IPv4-mapped address is the IPv4 one",
			explain: "::ffff:203.0.113.66",
			cfg: func(c *Config) {
				c.Rules["executable-attachment"] = policy.RulePolicy{Threshold: 2, Window: time.Hour}
				c.Rules["worm-signature"] = policy.RulePolicy{Threshold: 2, Window: time.Hour}
			},
			want: []hit{
				{8, "executable-attachment", 1, 2, policy.VerdictCounted, time.Time{}, netip.Prefix{}},
				{12, "worm-signature", 1, 2, policy.VerdictCounted, time.Time{}, netip.Prefix{}},
				{16, "worm-signature", 2, 2, policy.VerdictBan, at(14, 8649).Add(day), netip.Prefix{}},
				{19, "relay-probing", 1, 3, policy.VerdictCounted, time.Time{}, netip.Prefix{}},
				{24, "worm-signature", 2, 2, policy.VerdictExtend, at(14, 114687).Add(day), netip.Prefix{}},
				{28, "worm-signature", 2, 2, policy.VerdictExtend, at(14, 165211).Add(day), netip.Prefix{}},
			},
		},
		{
			name:    "never-block",
			explain: "2001:db8:66::66",
			cfg:     func(c *Config) { c.Policy.NeverBlock = []netip.Prefix{netip.MustParsePrefix("2001:db8:66::/48")} },
			want:    []hit{{3, "worm-signature", 0, 0, policy.VerdictNeverBlock, time.Time{}, netip.MustParsePrefix("2001:db8:66::/48")}},
		},
		{
			name:    "dry-run",
			explain: "2001:db8:66::66",
			cfg: func(c *Config) {
				c.Rules["worm-signature"] = policy.RulePolicy{Threshold: 1, Window: time.Hour, BanFor: time.Hour, DryRun: true}
			},
			want: []hit{{3, "worm-signature", 1, 1, policy.VerdictDryRun, at(13, 799660).Add(time.Hour), netip.Prefix{}}},
		},
		{
			name:    "a decoy the worm wrote into its mail",
			explain: "192.0.2.99",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Explain = netip.MustParseAddr(tt.explain)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			r := replayAll(t, cfg, sample())
			_, hits := r.Explained()
			var got []hit
			for _, h := range hits {
				got = append(got, hit{h.Line, h.Rule, h.Count, h.Threshold, h.Verdict, h.Until, h.Prefix})
			}
			if diff := cmp.Diff(tt.want, got, cmpAddrs); diff != "" {
				t.Errorf("hits (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplayReports(t *testing.T) {
	explain := func(addr string) func(*Config) {
		return func(c *Config) { c.Explain = netip.MustParseAddr(addr) }
	}
	tests := []struct {
		name  string
		cfg   func(*Config)
		write func(*Replay, *bytes.Buffer) error
		want  string
	}{
		{
			name:  "bans",
			write: func(r *Replay, b *bytes.Buffer) error { return r.WriteBans(b, false) },
			want: "2001:db8:66::66\tworm-signature\t1\t2026-11-26T18:19:13Z\t2026-11-26T18:19:13Z\n" +
				"203.0.113.66\texecutable-attachment\t6\t2026-11-26T18:19:13Z\t2026-11-26T18:19:14Z\n",
		},
		{
			name:  "bans as JSON",
			write: func(r *Replay, b *bytes.Buffer) error { return r.WriteBans(b, true) },
			want: `{"addr":"2001:db8:66::66","rule":"worm-signature","hits":1,"first":"2026-11-26T18:19:13.79966Z","last":"2026-11-26T18:19:13.79966Z","banned":"2026-11-26T18:19:13.79966Z","until":"2026-11-27T18:19:13.79966Z"}` + "\n" +
				`{"addr":"203.0.113.66","rule":"executable-attachment","hits":6,"first":"2026-11-26T18:19:13.869071Z","last":"2026-11-26T18:19:14.165211Z","banned":"2026-11-26T18:19:13.869071Z","until":"2026-11-27T18:19:14.165211Z"}` + "\n",
		},
		{
			name:  "explain a decoy",
			cfg:   explain("192.0.2.99"),
			write: func(r *Replay, b *bytes.Buffer) error { return r.WriteExplain(b, false) },
			want:  "192.0.2.99: no offenses\n",
		},
		{
			name: "explain never-block",
			cfg: func(c *Config) {
				explain("2001:db8:66::66")(c)
				c.Policy.NeverBlock = []netip.Prefix{netip.MustParsePrefix("2001:db8:66::/48")}
			},
			write: func(r *Replay, b *bytes.Buffer) error { return r.WriteExplain(b, false) },
			want: "2001:db8:66::66: not banned; 1 offenses\n" +
				"sample:3: 2026-11-26T18:19:13Z worm-signature (cleanup_reject C31CFB81BD): never_block (2001:db8:66::/48)\n" +
				"\t" + syslogtest.SampleLines()[2] + "\n",
		},
		{
			name: "explain dry-run",
			cfg: func(c *Config) {
				explain("2001:db8:66::66")(c)
				c.Rules["worm-signature"] = policy.RulePolicy{Threshold: 1, Window: time.Hour, BanFor: time.Hour, DryRun: true}
			},
			write: func(r *Replay, b *bytes.Buffer) error { return r.WriteExplain(b, false) },
			want: "2001:db8:66::66: not banned; 1 offenses\n" +
				"sample:3: 2026-11-26T18:19:13Z worm-signature (cleanup_reject C31CFB81BD): dry_run: threshold 1 within 1h0m0s reached, until 2026-11-26T19:19:13Z\n" +
				"\t" + syslogtest.SampleLines()[2] + "\n",
		},
		{
			name:  "summary",
			write: func(r *Replay, b *bytes.Buffer) error { return r.WriteSummary(b, 2*time.Second) },
			want: "check: 29 lines in 1 files (0 unparsable, 0 too long) in 2s, 14 lines/s\n" +
				"check: sample: 29 lines (0 unparsable, 0 too long, 0 blank or comments)\n" +
				"check: events by kind: cleanup_reject=6 smtpd_reject=1\n" +
				"check: 0 unattributed events (no client= record for the queue ID): none\n" +
				"check: 7 offenses by rule: executable-attachment=1 relay-probing=1 worm-signature=5\n" +
				"check: 2 bans by rule: executable-attachment=1 worm-signature=1; 0 never-block, 0 dry-run, 0 trusted-client\n" +
				"check: 0 trusted-client offenses (weak evidence, not banned; 0 authenticated, 0 established) by rule: none\n" +
				"check: 0 accepted messages counted for 0 senders remembered (0 forgotten)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			r := replayAll(t, cfg, sample())
			var b bytes.Buffer
			if err := tt.write(r, &b); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReplayExplainJSON: the JSON of an explained line names the verdict
// as the policy does and carries the policy's numbers.
func TestReplayExplainJSON(t *testing.T) {
	cfg := testConfig()
	cfg.Explain = worm
	r := replayAll(t, cfg, sample())
	var b bytes.Buffer
	if err := r.WriteExplain(&b, true); err != nil {
		t.Fatal(err)
	}
	type jsonHit struct {
		File      string `json:"file"`
		Line      int    `json:"line"`
		Rule      string `json:"rule"`
		Kind      string `json:"kind"`
		QueueID   string `json:"queue_id"`
		Count     int    `json:"count"`
		Threshold int    `json:"threshold"`
		Window    string `json:"window"`
		Verdict   string `json:"verdict"`
	}
	var got []jsonHit
	dec := json.NewDecoder(&b)
	for dec.More() {
		var h jsonHit
		if err := dec.Decode(&h); err != nil {
			t.Fatalf("decode: %v", err)
		}
		got = append(got, h)
	}
	const hour = "1h0m0s"
	want := []jsonHit{
		{"sample", 8, "executable-attachment", "cleanup_reject", "D4101B81BD", 1, 1, hour, "ban"},
		{"sample", 12, "worm-signature", "cleanup_reject", "E5221B81BD", 1, 1, hour, "extend"},
		{"sample", 16, "worm-signature", "cleanup_reject", "02051B81E1", 1, 1, hour, "extend"},
		{"sample", 19, "relay-probing", "smtpd_reject", "", 1, 3, hour, "counted"},
		{"sample", 24, "worm-signature", "cleanup_reject", "1BE77B81E1", 1, 1, hour, "extend"},
		{"sample", 28, "worm-signature", "cleanup_reject", "28396B81E1", 1, 1, hour, "extend"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("explained hits (-want +got):\n%s", diff)
	}
}

type failingWriter struct{}

var errFull = errors.New("disk full")

func (failingWriter) Write([]byte) (int, error) { return 0, errFull }

func TestReplayWriteErrors(t *testing.T) {
	r := replayAll(t, testConfig(), sample())
	for name, err := range map[string]error{
		"bans":    r.WriteBans(failingWriter{}, false),
		"explain": r.WriteExplain(failingWriter{}, false),
		"summary": r.WriteSummary(failingWriter{}, time.Second),
	} {
		if !errors.Is(err, errFull) {
			t.Errorf("%s: error = %v, want %v", name, err, errFull)
		}
	}
}
