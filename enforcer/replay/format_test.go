package replay

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestShape names the layout of a line of each format.
func TestShape(t *testing.T) {
	tests := map[string]Format{
		"Nov 26 18:19:13 mx1 postfix/smtpd[1]: x":                      FormatRFC3164,
		"Nov  6 18:19:13 mx1 postfix/smtpd[1]: x":                      FormatRFC3164,
		"Aug 3 15:30:49 mx1 postfix/smtpd[1]: x":                       FormatRFC3164,
		"Aug  3 2026 15:30:49 mx1 postfix/smtpd[1]: x":                 FormatRFC3164,
		"<22>Nov 26 18:19:13 mx1 postfix/smtpd[1]: x":                  FormatRFC3164,
		"Nov 26 18:19:13.123456 mx1 postfix/smtpd[1]: x":               FormatJournalShortPrecise,
		"2026-11-26T18:19:13+01:00 mx1 postfix/smtpd[1]: x":            FormatRFC3339,
		"2026-11-26T18:19:13.123456Z mx1 postfix/smtpd[1]: x":          FormatRFC3339,
		"<22>2026-11-26T18:19:13.123456-05:00 mx1 postfix/smtpd[1]: x": FormatRFC3339,
		"2026-11-26T18:19:13+0100 mx1 postfix/smtpd[1]: x":             FormatJournalShortISO,
		"2026-11-26T18:19:13.123456-0500 mx1 postfix/smtpd[1]: x":      FormatJournalShortISOPrecise,
		"<22>1 2026-11-26T18:19:13Z mx1 postfix/smtpd 1 - - x":         FormatRFC5424,
	}
	for line, want := range tests {
		if got := shape([]byte(line)); got != want {
			t.Errorf("shape(%q) = %s, want %s", line, got, want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range Formats {
		if got, err := ParseFormat(string(f)); err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %q, %v", f, got, err)
		}
	}
	if got, err := ParseFormat(""); err != nil || got != FormatAuto {
		t.Errorf(`ParseFormat("") = %q, %v; want auto`, got, err)
	}
	_, err := ParseFormat("short-iso")
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), `"short-iso" (auto, rfc3164, rfc3339, rfc5424, journald-short, `) {
		t.Errorf(`ParseFormat("short-iso") = %v`, err)
	}
	cfg := testConfig()
	cfg.Format = "syslog"
	if _, err := New(cfg); !errors.Is(err, ErrFormat) {
		t.Errorf("New with format syslog = %v, want %v", err, ErrFormat)
	}
}

// TestReplayRange: only offenses within Since and Until count, and a
// client= record before Since still attributes a reject within.
func TestReplayRange(t *testing.T) {
	// The sample's rejects are at 18:19:13.79 (IPv6 client) and from
	// 18:19:13.87 to 18:19:14.17; each client= record precedes its reject
	// by less than a millisecond.
	tests := []struct {
		name         string
		since, until time.Time
		want         []netip.Addr
		outOfRange   int
		err          error
	}{
		{name: "all", want: []netip.Addr{worm6, worm}},
		{name: "since the IPv6 reject, after its client= record", since: at(13, 799600), want: []netip.Addr{worm6, worm}, outOfRange: 2},
		{name: "since after the IPv6 reject", since: at(13, 800000), want: []netip.Addr{worm}, outOfRange: 4},
		{name: "until before the IPv4 client", until: at(13, 800000), want: []netip.Addr{worm6}, outOfRange: 25},
		{name: "a range without rejects", since: at(14, 200000), until: at(15, 0), outOfRange: 29},
		{name: "an empty range", since: at(15, 0), until: at(14, 0), err: ErrRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Since, cfg.Until = tt.since, tt.until
			if tt.err != nil {
				if _, err := New(cfg); !errors.Is(err, tt.err) {
					t.Fatalf("New() = %v, want %v", err, tt.err)
				}
				return
			}
			r := replayAll(t, cfg, sample())
			var got []netip.Addr
			for _, b := range r.Bans() {
				got = append(got, b.Addr)
			}
			if diff := cmp.Diff(tt.want, got, cmpAddrs); diff != "" {
				t.Errorf("bans (-want +got):\n%s", diff)
			}
			if n := r.Counts(); n.OutOfRange != tt.outOfRange || n.PerFile[0].OutOfRange != tt.outOfRange {
				t.Errorf("out of range: %d (file: %d), want %d", n.OutOfRange, n.PerFile[0].OutOfRange, tt.outOfRange)
			}
		})
	}
}

// TestReplayFileCounts: each file's lines are counted apart, and a file
// whose every line is unparsable is unreadable.
func TestReplayFileCounts(t *testing.T) {
	cfg := testConfig()
	cfg.Format = FormatRFC3339
	r := replayAll(t, cfg,
		input{name: "garbage", text: "x\n\n-- Boot 1a2b --\ny\n", ref: at(0, 0)},
		sample(),
		input{name: "journal", text: "Nov 26 18:19:13.123456 vm postfix/smtpd[1]: x\n", ref: at(0, 0)},
	)
	want := []FileCounts{
		{Name: "garbage", Lines: 4, Unparsable: 2, Blank: 2},
		{Name: "sample", Lines: 29},
		{Name: "journal", Lines: 1, Unparsable: 1, WrongFormat: 1},
	}
	got := r.Counts().PerFile
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("per file (-want +got):\n%s", diff)
	}
	for i, unreadable := range []bool{true, false, true} {
		if got[i].Unreadable() != unreadable {
			t.Errorf("%s: Unreadable() = %v, want %v", got[i].Name, !unreadable, unreadable)
		}
	}
}
