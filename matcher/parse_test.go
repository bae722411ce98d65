package matcher

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitProgram(t *testing.T) {
	type result struct {
		Instance, Service string
		OK                bool
	}
	tests := map[string]result{
		"postfix/cleanup":          {"postfix", "cleanup", true},
		"postfix-out/smtpd":        {"postfix-out", "smtpd", true},
		"postfix/submission/smtpd": {"postfix", "smtpd", true},
		"postfix":                  {},
		"mypostfix/smtpd":          {},
		"exim":                     {},
		"":                         {},
	}
	for in, want := range tests {
		i, s, ok := splitProgram(in)
		if diff := cmp.Diff(want, result{i, s, ok}); diff != "" {
			t.Errorf("splitProgram(%q) (-want +got):\n%s", in, diff)
		}
	}
}

func TestCutQueueID(t *testing.T) {
	type result struct {
		QID, Rest string
		OK        bool
	}
	long32 := strings.Repeat("Ab", 16)
	tests := map[string]result{
		"C31CFB81BD: client=x":     {"C31CFB81BD", "client=x", true},
		"ABCDEF: removed":          {"ABCDEF", "removed", true},
		"4Q2Yh85FCfzB5sw: removed": {"4Q2Yh85FCfzB5sw", "removed", true},
		long32 + ": x":             {long32, "x", true},
		long32 + "A: x":            {},
		"ABCDE: removed":           {},
		"abcdef: removed":          {}, // lower case is long form, which needs 10
		"NOQUEUE: reject: x":       {},
		"disconnect from x":        {},
		"C31CFB81BD:x":             {},
		"C31CFB81BD:":              {},
		"C31CFB81BD":               {},
		"":                         {},
	}
	for in, want := range tests {
		q, r, ok := cutQueueID(in)
		if diff := cmp.Diff(want, result{q, r, ok}); diff != "" {
			t.Errorf("cutQueueID(%q) (-want +got):\n%s", in, diff)
		}
	}
}

func TestParseAddresses(t *testing.T) {
	tests := []struct {
		name string
		fn   func(string) (string, bool)
		in   string
		want string // "" for no address
	}{
		{"client", client, "unknown[192.0.2.1]", "192.0.2.1"},
		{"client", client, "unknown[192.0.2.1]:25", "192.0.2.1"},
		{"client", client, "h.example[2001:db8::1], sasl_method=PLAIN", "2001:db8::1"},
		{"client", client, "unknown[::ffff:192.0.2.1]", "192.0.2.1"},
		{"client", client, "unknown[fe80::1%eth0]", "fe80::1"},
		{"client", client, "l[127.0.0.1], orig_queue_id=X, orig_client=u[192.0.2.7]:99", "192.0.2.7"},
		{"client", client, "l[127.0.0.1], orig_client=u[unknown]", ""},
		{"client", client, "unknown[192.0.2.1]x", ""},
		{"client", client, "unknown[unknown]", ""},
		{"client", client, "un known[192.0.2.1]", ""},
		{"client", client, "unknown[192.0.2.1", ""},
		{"client", client, "", ""},
		{"anchored", anchored, "RCPT from unknown[192.0.2.1]: 554 x", "192.0.2.1"},
		{"anchored", anchored, "END-OF-MESSAGE from h[192.0.2.1]:25: 5", "192.0.2.1"},
		{"anchored", anchored, "CONNECT from [192.0.2.1]:25: 5", "192.0.2.1"},
		{"anchored", anchored, "RCPT from unknown[192.0.2.1] 554", ""},
		{"anchored", anchored, "rcpt from unknown[192.0.2.1]: 5", ""},
		{"anchored", anchored, "from unknown[192.0.2.1]: 5", ""},
		{"sasl", sasl, "unknown[192.0.2.1]: SASL LOGIN authentication failed: x", "192.0.2.1"},
		{"sasl", sasl, "unknown[192.0.2.1]:587: SASL PLAIN authentication failed", "192.0.2.1"},
		{"sasl", sasl, "unknown[192.0.2.1]: SASL authentication failed", ""},
		{"sasl", sasl, "unknown[192.0.2.1]: SASL LOGIN authentication aborted", ""},
	}
	for _, tt := range tests {
		got, ok := tt.fn(tt.in)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("%s(%q) = %q, %v; want %q", tt.name, tt.in, got, ok, tt.want)
		}
	}
}

func client(s string) (string, bool) {
	loopback := func(a netip.Addr) bool { return a.IsLoopback() }
	a, _, st := parseClient(s, loopback)
	return addrString(a, st == clientOK)
}

func anchored(s string) (string, bool) {
	a, ok := parseAnchoredReject(s)
	return addrString(a, ok)
}

func sasl(s string) (string, bool) {
	_, a, ok := parseSASLFailure(s)
	return addrString(a, ok)
}

// TestSASLFailureReasons: the backend's reason tells a guessed password
// from a backend that is down, and from an unoffered mechanism.
func TestSASLFailureReasons(t *testing.T) {
	tests := []struct {
		line string
		want Kind
	}{
		{"unknown[192.0.2.1]: SASL LOGIN authentication failed: authentication failure", KindSASLFailed},
		{"unknown[192.0.2.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", KindSASLFailed},
		{"unknown[192.0.2.1]: SASL PLAIN authentication failed:", KindSASLFailed},
		{"unknown[192.0.2.1]: SASL LOGIN authentication failed: Connection lost to authentication server", KindSASLServerError},
		{"unknown[192.0.2.1]: SASL PLAIN authentication failed: generic failure", KindSASLServerError},
		{"unknown[192.0.2.1]: SASL PLAIN authentication failed: Temporary authentication failure", KindSASLServerError},
		{"unknown[192.0.2.1]:587: SASL CRAM-MD5 authentication failed: Invalid authentication mechanism", KindSASLBadMechanism},
	}
	for _, tt := range tests {
		ki, _, ok := parseSASLFailure(tt.line)
		if !ok || kinds[ki] != tt.want {
			t.Errorf("parseSASLFailure(%q) = %v %v, want %v", tt.line, kinds[ki], ok, tt.want)
		}
	}
}
