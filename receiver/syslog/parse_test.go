package syslog

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"
)

// msgOpts lets cmp look into Message.Peer.
var msgOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

var (
	testRef = time.Date(2026, time.November, 26, 18, 20, 0, 0, time.UTC)
	berlin  = mustLoc("Europe/Berlin")
)

func mustLoc(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		// No tzdata on this machine: a fixed +01:00 keeps the tests
		// meaningful (November is winter time in Berlin).
		return time.FixedZone("CET", 3600)
	}
	return l
}

const (
	cleanupText = `C31CFB81BD: reject: header Subject: Re: Details from unknown[2001:db8:66::66]; from=<a@worm.example> to=<postmaster@mx.example.test> proto=ESMTP helo=<vm>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus`
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		line string
		ref  time.Time
		loc  *time.Location
		want Message
	}{
		{
			name: "rsyslog file RFC 3339",
			line: "2026-11-26T18:19:13.799660+00:00 vm postfix/cleanup[5325]: " + cleanupText,
			want: Message{Time: ts("2026-11-26T18:19:13.79966Z"), Host: "vm", Program: "postfix/cleanup", PID: 5325, Text: cleanupText},
		},
		{
			name: "wire RFC 3164 with PRI, LF kept by framing",
			line: "<22>Nov 26 18:19:13 vm postfix/cleanup[5325]: " + cleanupText + "\n",
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC), Host: "vm", Program: "postfix/cleanup", PID: 5325, Text: cleanupText},
		},
		{
			name: "RFC 3164 in the given zone",
			line: "<22>Nov 26 18:19:13 vm postfix/cleanup[5325]: x",
			loc:  berlin,
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, berlin), Host: "vm", Program: "postfix/cleanup", PID: 5325, Text: "x"},
		},
		{
			name: "space-padded day, CRLF",
			line: "<22>Nov  6 08:01:02 mx1 postfix/smtpd[1]: connect from unknown[203.0.113.66]\r\n",
			want: Message{Time: time.Date(2026, 11, 6, 8, 1, 2, 0, time.UTC), Host: "mx1", Program: "postfix/smtpd", PID: 1, Text: "connect from unknown[203.0.113.66]"},
		},
		{
			name: "unpadded day, no PRI (a file)",
			line: "Aug 3 15:30:49 host postfix/smtpd[17041]: improper command pipelining after RSET from host[192.0.2.1]: QUIT",
			ref:  time.Date(2026, 8, 20, 0, 0, 0, 0, time.UTC),
			want: Message{Time: time.Date(2026, 8, 3, 15, 30, 49, 0, time.UTC), Host: "host", Program: "postfix/smtpd", PID: 17041, Text: "improper command pipelining after RSET from host[192.0.2.1]: QUIT"},
		},
		{
			name: "zero-padded day, odd spacing",
			line: "<22>Aug  03   15:30:49 host postfix/smtpd[1]: x",
			ref:  time.Date(2026, 8, 20, 0, 0, 0, 0, time.UTC),
			want: Message{Time: time.Date(2026, 8, 3, 15, 30, 49, 0, time.UTC), Host: "host", Program: "postfix/smtpd", PID: 1, Text: "x"},
		},
		{
			name: "year before the time",
			line: "<22>Aug  3 2025 15:30:49 host postfix/smtpd[1]: x",
			ref:  time.Date(2026, 8, 20, 0, 0, 0, 0, time.UTC),
			want: Message{Time: time.Date(2025, 8, 3, 15, 30, 49, 0, time.UTC), Host: "host", Program: "postfix/smtpd", PID: 1, Text: "x"},
		},
		{
			name: "RSYSLOG_ForwardFormat: PRI and RFC 3339 with offset",
			line: "<22>2026-11-26T19:19:13.5+01:00 mx1 postfix-out/smtpd[77]: NOQUEUE: reject: RCPT from x[198.51.100.7]: 554",
			want: Message{Time: time.Date(2026, 11, 26, 19, 19, 13, 5e8, time.FixedZone("", 3600)), Host: "mx1", Program: "postfix-out/smtpd", PID: 77, Text: "NOQUEUE: reject: RCPT from x[198.51.100.7]: 554"},
		},
		{
			name: "RFC 3339 Z without fraction, three-level program",
			line: "2026-11-26T18:19:13Z mx1 postfix/submission/smtpd[9]: text",
			want: Message{Time: ts("2026-11-26T18:19:13Z"), Host: "mx1", Program: "postfix/submission/smtpd", PID: 9, Text: "text"},
		},
		{
			name: "tag without PID",
			line: "<13>Nov 26 18:19:13 mx1 wormtest: hello world",
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC), Host: "mx1", Program: "wormtest", Text: "hello world"},
		},
		{
			name: "missing hostname stays empty",
			line: "<22>Nov 26 18:19:13 postfix/cleanup[5325]: x",
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC), Program: "postfix/cleanup", PID: 5325, Text: "x"},
		},
		{
			name: "missing hostname, tag without PID",
			line: "<13>Nov 26 18:19:13 logger: x",
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC), Program: "logger", Text: "x"},
		},
		{
			name: "IPv6 address as hostname",
			line: "<22>Nov 26 18:19:13 2001:db8::25 postfix/smtpd[1]: x",
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC), Host: "2001:db8::25", Program: "postfix/smtpd", PID: 1, Text: "x"},
		},
		{
			name: "empty text",
			line: "<22>Nov 26 18:19:13 vm postfix/smtpd[1]:",
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC), Host: "vm", Program: "postfix/smtpd", PID: 1},
		},
		{
			name: "non-numeric PID is dropped, program kept",
			line: "<22>Nov 26 18:19:13 vm prog[abc]: x",
			want: Message{Time: time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC), Host: "vm", Program: "prog", Text: "x"},
		},
		{
			name: "Dec 31 read on Jan 1 is last year",
			line: "<13>Dec 31 23:59:59 vm p: x",
			ref:  time.Date(2027, 1, 1, 0, 0, 5, 0, time.UTC),
			want: Message{Time: time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), Host: "vm", Program: "p", Text: "x"},
		},
		{
			name: "Jan 1 read on Dec 31 is next year",
			line: "<13>Jan  1 00:00:01 vm p: x",
			ref:  time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC),
			want: Message{Time: time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC), Host: "vm", Program: "p", Text: "x"},
		},
		{
			name: "Feb 29 in a leap year",
			line: "<13>Feb 29 12:00:00 vm p: x",
			ref:  time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC),
			want: Message{Time: time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), Host: "vm", Program: "p", Text: "x"},
		},
		{
			name: "RFC 5424 rsyslog with slash in APP-NAME",
			line: "<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - - " + cleanupText + "\n",
			want: Message{Time: ts("2026-11-26T18:19:13.79966Z"), Host: "mx1", Program: "postfix/cleanup", PID: 5325, Text: cleanupText},
		},
		{
			// rsyslog forwarding what syslog(3) wrote to /dev/log: the
			// template's space plus the one after "tag:".
			name: "RFC 5424 rsyslog from /dev/log, two spaces",
			line: "<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - -  " + cleanupText,
			want: Message{Time: ts("2026-11-26T18:19:13.79966Z"), Host: "mx1", Program: "postfix/cleanup", PID: 5325, Text: cleanupText},
		},
		{
			name: "RFC 5424 without permitSlashInProgramName, with SD",
			line: `<22>1 2026-11-26T19:19:13.799660+01:00 mx1 postfix 5325 - [meta sequenceId="1"] postfix/cleanup[5325]: x`,
			want: Message{Time: time.Date(2026, 11, 26, 19, 19, 13, 799660000, time.FixedZone("", 3600)), Host: "mx1", Program: "postfix", PID: 5325, Text: "postfix/cleanup[5325]: x"},
		},
		{
			name: "RFC 5424 with NILVALUEs and BOM",
			line: "<22>1 - - - - - - \xef\xbb\xbfhello",
			want: Message{Time: testRef, Text: "hello"},
		},
		{
			name: "RFC 5424 non-numeric PROCID",
			line: "<22>1 2026-11-26T18:19:13Z mx1 app worker-3 ID47 - x",
			want: Message{Time: ts("2026-11-26T18:19:13Z"), Host: "mx1", Program: "app", Text: "x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref, loc := tt.ref, tt.loc
			if ref.IsZero() {
				ref = testRef
			}
			if loc == nil {
				loc = time.UTC
			}
			got, err := Parse([]byte(tt.line), ref, loc)
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.line, err)
			}
			if diff := cmp.Diff(tt.want, got, msgOpts); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.line, diff)
			}
			// cmp compares instants (time.Time.Equal); the zone offset is
			// part of the contract too.
			_, wantOff := tt.want.Time.Zone()
			_, gotOff := got.Time.Zone()
			if wantOff != gotOff {
				t.Errorf("zone offset = %d, want %d", gotOff, wantOff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		line string
		want error
	}{
		{"empty", "", ErrEmpty},
		{"only newline", "\r\n", ErrEmpty},
		{"PRI only", "<13>", ErrTimestamp},
		{"PRI, timestamp and host only", "<13>Jan  2 15:04:05 host", ErrMalformed},
		{"PRI, timestamp, host and space", "<13>Jan  2 15:04:05 host ", ErrMalformed},
		{"PRI too large", "<192>Jan  2 15:04:05 host p: x", ErrPriority},
		{"PRI too long", "<0013>Jan  2 15:04:05 host p: x", ErrPriority},
		{"PRI empty", "<>Jan  2 15:04:05 host p: x", ErrPriority},
		{"PRI unterminated", "<13", ErrPriority},
		{"PRI non-digit", "<1a>x", ErrPriority},
		{"bad month", "<13>Foo  2 15:04:05 host p: x", ErrTimestamp},
		{"bad hour", "<13>Jan  2 25:04:05 host p: x", ErrTimestamp},
		{"Feb 30", "<13>Feb 30 15:04:05 host p: x", ErrTimestamp},
		{"truncated timestamp", "<13>Jan  2 15:04", ErrTimestamp},
		{"three-digit day", "<13>Jan 123 15:04:05 host p: x", ErrTimestamp},
		{"day 0", "<13>Jan 0 15:04:05 host p: x", ErrTimestamp},
		{"no space after month", "<13>Jan2 15:04:05 host p: x", ErrTimestamp},
		{"five-digit year", "<13>Jan  2 20260 15:04:05 host p: x", ErrTimestamp},
		{"no space after timestamp", "<13>Jan  2 15:04:05host p: x", ErrMalformed},
		{"RFC 3339 without zone", "2026-11-26T18:19:13 vm p: x", ErrTimestamp},
		{"RFC 3339 bad month", "2026-13-26T18:19:13Z vm p: x", ErrTimestamp},
		{"RFC 3339 empty fraction", "2026-11-26T18:19:13.Z vm p: x", ErrTimestamp},
		{"RFC 3339 year 1", "0001-01-01T00:00:00+00:00 0: ", ErrTimestamp},
		{"RFC 3339 bad offset", "2026-11-26T18:19:13+010 vm p: x", ErrTimestamp},
		{"no tag terminator", "<13>Jan  2 15:04:05 host just some words", ErrMalformed},
		{"unterminated PID", "<13>Jan  2 15:04:05 host p[12 x", ErrMalformed},
		{"PID without colon", "<13>Jan  2 15:04:05 host p[12] x", ErrMalformed},
		{"empty program", "<13>Jan  2 15:04:05 host [12]: x", ErrMalformed},
		{"no timestamp", "<13>hello world", ErrTimestamp},
		{"binary", "\xff\xfe\x00\x01garbage", ErrTimestamp},
		{"RFC 5424 truncated", "<22>1 2026-11-26T18:19:13Z mx1 postfix", ErrMalformed},
		{"RFC 5424 bad timestamp", "<22>1 2026-11-26 mx1 postfix 1 - - x", ErrMalformed},
		{"RFC 5424 bracket in APP-NAME", "<22>1 - - a[1 - - - x", ErrMalformed},
		{"RFC 5424 PRI only with version", "<22>1 ", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.line), testRef, time.UTC)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q) = %+v, %v; want error %v", tt.line, got, err, tt.want)
			}
			if diff := cmp.Diff(Message{}, got, msgOpts); diff != "" {
				t.Errorf("Parse(%q) returned a message with an error (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

// TestParseSampleFile parses every line of real Postfix 3.7 output as
// rsyslog writes it to a file, and checks the fields the matcher relies on.
func TestParseSampleFile(t *testing.T) {
	lines := syslogtest.SampleLines()
	if len(lines) < 20 {
		t.Fatalf("sample has %d lines, want the whole capture", len(lines))
	}
	type key struct{ Host, Program string }
	counts := map[key]int{}
	for _, l := range lines {
		m, err := Parse([]byte(l), testRef, time.UTC)
		if err != nil {
			t.Fatalf("Parse(%q): %v", l, err)
		}
		if m.PID == 0 || m.Text == "" || m.Time.Year() != 2026 {
			t.Errorf("Parse(%q) = %+v: want PID, text and a 2026 time", l, m)
		}
		if !strings.HasSuffix(l, m.Text) {
			t.Errorf("Parse(%q).Text = %q, not the tail of the line", l, m.Text)
		}
		counts[key{m.Host, m.Program}]++
	}
	want := map[key]int{{"vm", "postfix/smtpd"}: 21, {"vm", "postfix/cleanup"}: 8}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("host/program counts mismatch (-want +got):\n%s", diff)
	}
}

// TestParseAllocs pins the cost that `wormgate check` depends on.
func TestParseAllocs(t *testing.T) {
	for _, line := range []string{
		"2026-11-26T18:19:13.799660+00:00 vm postfix/cleanup[5325]: " + cleanupText,
		"2026-11-26T18:19:13.799660+01:00 vm postfix/cleanup[5325]: " + cleanupText,
		"<22>Nov 26 18:19:13 vm postfix/cleanup[5325]: " + cleanupText,
		"<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - - " + cleanupText,
		`<22>1 2026-11-26T18:19:13.799660+01:00 mx1 postfix/cleanup 5325 - [origin ip="192.0.2.25"][x@1 a="b\"c"]  ` + cleanupText,
	} {
		b := []byte(line)
		if n := testing.AllocsPerRun(100, func() { _, _ = Parse(b, testRef, time.UTC) }); n > 1 {
			t.Errorf("Parse(%q): %v allocs, want <= 1", line, n)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"file-rfc3339", "2026-11-26T18:19:13.799660+00:00 vm postfix/cleanup[5325]: " + cleanupText},
		{"wire-rfc3164", "<22>Nov 26 18:19:13 vm postfix/cleanup[5325]: " + cleanupText},
		{"wire-rfc5424", "<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - - " + cleanupText},
		{"wire-rfc5424-sd", `<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - [origin ip="192.0.2.25" software="rsyslogd"] ` + cleanupText},
	} {
		line := []byte(bc.line)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if _, err := Parse(line, testRef, time.UTC); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, l := range syslogtest.SampleLines() {
		f.Add([]byte(l))
	}
	for _, l := range []string{
		"<22>Nov 26 18:19:13 vm postfix/cleanup[5325]: " + cleanupText + "\n",
		"<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - - x\n",
		`<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix 5325 - [a b="c"] x`,
		"<13>", "<13>Jan  2 15:04:05 host", "<22>1 - - - - - -", "-1 x",
		"<13>Nov 26 18:19:13 postfix/cleanup[5325]: x\r\n",
		"2026-11-26T18:19:13.1234567890+23:59 vm p[99999999999]: x\x00",
	} {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := Parse(line, testRef, time.UTC)
		if err != nil {
			if diff := cmp.Diff(Message{}, m, msgOpts); diff != "" {
				t.Fatalf("error %v with a non-zero message (-want +got):\n%s", err, diff)
			}
			return
		}
		if strings.HasSuffix(m.Text, "\n") || strings.HasSuffix(m.Text, "\r") {
			t.Errorf("Text %q ends in a line terminator", m.Text)
		}
		if strings.Contains(m.Program, "[") {
			t.Errorf("Program %q contains '['", m.Program)
		}
		if m.PID < 0 {
			t.Errorf("PID %d < 0", m.PID)
		}
		if m.Time.IsZero() {
			t.Errorf("zero Time for %q", line)
		}
	})
}
