package syslog

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestParseJournal reads the same Postfix record as each journalctl text
// export writes it, and journalctl's comment lines.
func TestParseJournal(t *testing.T) {
	const text = "warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: authentication failure"
	want := func(tm time.Time) Message {
		return Message{Time: tm, Host: "mx1", Program: "postfix/submission/smtpd", PID: 2634, Text: text}
	}
	plus2 := time.FixedZone("", 2*3600)
	tests := []struct {
		name, line string
		want       Message
		err        error
	}{
		{"short", "Nov 26 18:19:13 mx1 postfix/submission/smtpd[2634]: " + text,
			want(time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC)), nil},
		{"short-precise", "Nov 26 18:19:13.123456 mx1 postfix/submission/smtpd[2634]: " + text,
			want(time.Date(2026, 11, 26, 18, 19, 13, 123456000, time.UTC)), nil},
		{"short-iso", "2026-11-26T18:19:13+0200 mx1 postfix/submission/smtpd[2634]: " + text,
			want(time.Date(2026, 11, 26, 18, 19, 13, 0, plus2)), nil},
		{"short-iso-precise", "2026-11-26T18:19:13.123456+0200 mx1 postfix/submission/smtpd[2634]: " + text,
			want(time.Date(2026, 11, 26, 18, 19, 13, 123456000, plus2)), nil},
		{"short-iso, west of UTC", "2026-11-26T18:19:13-0530 mx1 postfix/submission/smtpd[2634]: " + text,
			want(time.Date(2026, 11, 26, 18, 19, 13, 0, time.FixedZone("", -(5*3600+30*60)))), nil},
		{"short-iso in UTC", "2026-11-26T18:19:13+0000 mx1 postfix/submission/smtpd[2634]: " + text,
			want(time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC)), nil},
		{"short-iso with RFC 3339's colon", "2026-11-26T18:19:13.123456+02:00 mx1 postfix/submission/smtpd[2634]: " + text,
			want(time.Date(2026, 11, 26, 18, 19, 13, 123456000, plus2)), nil},
		{"boot comment", "-- Boot 5d1e0c4b1a2f4f0e9d3c2b1a0f9e8d7c --", Message{}, ErrComment},
		{"old header comment", "-- Logs begin at Thu 2026-11-26 00:00:01 CET, end at Thu 2026-11-26 18:20:00 CET. --", Message{}, ErrComment},
		{"no entries", "-- No entries --", Message{}, ErrComment},

		{"precise without digits", "Nov 26 18:19:13. mx1 postfix/smtpd[1]: x", Message{}, ErrMalformed},
		{"ISO without zone", "2026-11-26T18:19:13.123456 mx1 postfix/smtpd[1]: x", Message{}, ErrTimestamp},
		{"ISO with a short zone", "2026-11-26T18:19:13+020 mx1 postfix/smtpd[1]: x", Message{}, ErrTimestamp},
		{"ISO with a long zone", "2026-11-26T18:19:13+02000 mx1 postfix/smtpd[1]: x", Message{}, ErrTimestamp},
		{"ISO with a bad zone", "2026-11-26T18:19:13+2400 mx1 postfix/smtpd[1]: x", Message{}, ErrTimestamp},
		{"ISO Feb 30", "2026-02-30T18:19:13+0200 mx1 postfix/smtpd[1]: x", Message{}, ErrTimestamp},
		{"ISO followed by no space", "2026-11-26T18:19:13+0200mx1 postfix/smtpd[1]: x", Message{}, ErrMalformed},
		{"comment not closed", "-- Boot 5d1e0c4b1a2f4f0e9d3c2b1a0f9e8d7c", Message{}, ErrTimestamp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.line), testRef, time.UTC)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) error = %v, want %v", tt.line, err, tt.err)
			}
			if diff := cmp.Diff(tt.want, got, msgOpts); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.line, diff)
			}
			if err == nil && !got.Time.Equal(tt.want.Time) {
				t.Errorf("Parse(%q) time %v, want %v", tt.line, got.Time, tt.want.Time)
			}
		})
	}
}

// TestParseJournalAllocs: journalctl's stamps cost what the others cost,
// one allocation per line.
func TestParseJournalAllocs(t *testing.T) {
	for _, line := range []string{
		"2026-11-26T18:19:13.123456+0200 mx1 postfix/smtpd[2634]: x",
		"Nov 26 18:19:13.123456 mx1 postfix/smtpd[2634]: x",
	} {
		b := []byte(line)
		if n := testing.AllocsPerRun(100, func() { _, _ = Parse(b, testRef, time.UTC) }); n > 1 {
			t.Errorf("Parse(%q): %v allocations, want at most 1", line, n)
		}
	}
}

// FuzzJournalStamp compares journalStamp with the standard library: every
// ISO stamp it accepts, time.Parse reads as the same instant, and every
// short-precise stamp is parse3164's second plus the fraction.
func FuzzJournalStamp(f *testing.F) {
	for _, s := range []string{
		"2026-11-26T18:19:13+0200 mx1 p: x",
		"2026-11-26T18:19:13.123456-0530 mx1 p: x",
		"2026-11-26T18:19:13.1234567891+0000 x",
		"Nov 26 18:19:13.123456 mx1 p: x",
		"Nov  6 18:19:60.5 x",
		"-- Boot 5d1e --",
		"2026-02-29T00:00:00+0000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		tm, n, err := journalStamp(b, testRef, time.UTC)
		switch {
		case errors.Is(err, errNotJournal):
			return
		case errors.Is(err, ErrComment):
			if len(s) < 7 || s[:3] != "-- " || s[len(s)-3:] != " --" {
				t.Fatalf("journalStamp(%q) = comment", s)
			}
			return
		case err != nil:
			t.Fatalf("journalStamp(%q) = unexpected error %v", s, err)
		}
		if n <= 0 || n > len(s) {
			t.Fatalf("journalStamp(%q) read %d bytes", s, n)
		}
		stamp := s[:n]
		if isDigit(stamp[0]) {
			if stamp[17:19] == "60" || fractionDigits(stamp, 19) > 9 {
				return // time.Parse refuses leap seconds and long fractions
			}
			ref, perr := time.Parse("2006-01-02T15:04:05.999999999-0700", stamp)
			if perr != nil || !ref.Equal(tm) {
				t.Fatalf("journalStamp(%q) = %v; time.Parse = %v, %v", stamp, tm, ref, perr)
			}
			return
		}
		sec, m, perr := parse3164(b, testRef, time.UTC)
		if perr != nil || stamp[m] != '.' || tm.Sub(sec) < 0 || tm.Sub(sec) >= time.Second {
			t.Fatalf("journalStamp(%q) = %v, parse3164 = %v (%d bytes), %v", stamp, tm, sec, m, perr)
		}
	})
}

func fractionDigits(s string, i int) int {
	if i >= len(s) || s[i] != '.' {
		return 0
	}
	n := 0
	for i++; i < len(s) && isDigit(s[i]); i++ {
		n++
	}
	return n
}
