package syslog

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse5424Fields(t *testing.T) {
	const h = "<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 ID47 "
	tests := []struct {
		name, line, wantText string
		wantFast             bool // false: go-syslog's fallback had to take it
	}{
		{"nil SD", h + "- x", "x", true},
		{"nil SD, no MSG", h + "-", "", true},
		{"one element", h + `[a b="c"] x`, "x", true},
		{"two elements and params", h + `[a b="c" d="e"][f@32473 g="h"] x`, "x", true},
		{"escaped quote and backslash", h + `[a b="c\"d\\"] x`, "x", true},
		{"escaped bracket", h + `[a b="c\]"] x`, "x", true},
		{"SD, no MSG", h + `[a]`, "", true},
		// go-syslog ends the SD at the first "] " even inside a value; the
		// RFC reading keeps the value whole.
		{"] and space inside a value", h + `[a b="c] d"] x`, "x", true},
		// Lenient forms only go-syslog takes: the fallback keeps them.
		{"year before 1970", "<22>1 1969-12-31T23:59:59Z mx1 p 1 - - x", "x", false},
		{"seven fraction digits", "<22>1 2026-11-26T18:19:13.1234567Z mx1 p 1 - - x", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := []byte(tt.line)
			hdr := bytes.Index(line, []byte("1 ")) + 2
			_, fast := fast5424(line, hdr, testRef)
			if fast != tt.wantFast {
				t.Errorf("fast5424 ok = %v, want %v", fast, tt.wantFast)
			}
			m, err := Parse(line, testRef, time.UTC)
			if tt.name == "seven fraction digits" {
				if err == nil {
					t.Errorf("Parse accepted %q", tt.line)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.line, err)
			}
			if m.Text != tt.wantText {
				t.Errorf("Text = %q, want %q", m.Text, tt.wantText)
			}
		})
	}
}

// FuzzParse5424 is the differential test of the RFC 5424 parser against
// go-syslog.v2, the reference: on every line both accept, every field
// agrees. The one known difference is skipped: a quoted PARAM-VALUE that
// holds "] ", where go-syslog cuts the SD short. go-syslog's panics
// (recovered in parse5424GoSyslog) make that line an error there, so it is
// not compared.
func FuzzParse5424(f *testing.F) {
	for _, l := range []string{
		"<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - - " + cleanupText,
		"<22>1 2026-11-26T18:19:13.799660+01:00 mx1 postfix/smtpd 5320 - -  C31CFB81BD: client=unknown[2001:db8:66::66]",
		`<22>1 2026-11-26T18:19:13Z mx1 postfix 5325 - [origin ip="192.0.2.25"][x@1 a="b\"c"] x`,
		"<22>1 - - - - - -",
		"<22>1 - mx1 - - - - \xef\xbb\xbfx",
		"<13>1 2026-02-31T23:59:59.1-23:59 h a p m [a] b",
		`<22>1 2026-11-26T18:19:13Z h a p m [a b="c] d"] x`,
	} {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		line = TrimEnd(line)
		n, ok := parsePRI(line)
		if !ok || len(line) < n+2 || line[n] != '1' || line[n+1] != ' ' {
			return
		}
		got, ok := fast5424(line, n+2, testRef)
		if !ok {
			return
		}
		want, err := parse5424GoSyslog(line, testRef)
		if err != nil {
			return
		}
		if sd := sdSpan(line[n+2:]); strings.Contains(strings.TrimSuffix(sd, "]"), "] ") {
			return
		}
		type fields struct {
			Host, Program, Text string
			PID                 int
			Unix                int64
			Offset              int
		}
		f := func(m Message) fields {
			_, off := m.Time.Zone()
			return fields{m.Host, m.Program, m.Text, m.PID, m.Time.UnixNano(), off}
		}
		if diff := cmp.Diff(f(want), f(got)); diff != "" {
			t.Errorf("%q: fast5424 differs from go-syslog (-go-syslog +fast5424):\n%s", line, diff)
		}
	})
}

// sdSpan is the STRUCTURED-DATA of a line that fast5424 accepted: what
// follows the five header fields, up to the MSG.
func sdSpan(b []byte) string {
	s := string(b)
	for range 5 {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			return ""
		}
		s = s[i+1:]
	}
	rest, _ := cutSD(s)
	return strings.TrimSuffix(s[:len(s)-len(rest)], " ")
}
