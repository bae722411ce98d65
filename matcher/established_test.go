package matcher

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/receiver/syslog"
)

// standing is the part of an offense that weak evidence is judged by.
type standing struct {
	Addr, Rule    string
	Authenticated bool
	Accepted      int
	AcceptedSince time.Time
	Established   bool
}

func standings(offs []Offense) []standing {
	var out []standing
	for _, o := range offs {
		out = append(out, standing{o.Addr.String(), o.Rule, o.Authenticated, o.Accepted, o.AcceptedSince, o.Established})
	}
	return out
}

var t0 = time.Date(2026, 11, 19, 8, 0, 0, 0, time.UTC)

// mxLog writes the lines one MX (a syslog peer with a host name) logs,
// at the times the test gives.
type mxLog struct {
	peer netip.Addr
	host string
	inst string // the Postfix instance, "postfix" when empty
}

var mx1 = mxLog{peer: netip.MustParseAddr("198.51.100.25"), host: "mx1"}

func (l mxLog) msg(at time.Time, service, text string) syslog.Message {
	inst := l.inst
	if inst == "" {
		inst = "postfix"
	}
	return syslog.Message{Time: at, Host: l.host, Peer: l.peer, Program: inst + "/" + service, PID: 4242, Text: text}
}

// accepted is the life of one message that the MX accepted and
// delivered, as Postfix 3.7 logs it.
func (l mxLog) accepted(at time.Time, qid, client string) []syslog.Message {
	return []syslog.Message{
		l.msg(at, "smtpd", qid+": client="+client),
		l.msg(at, "cleanup", qid+": message-id=<"+qid+"@relay.example.net>"),
		l.msg(at, "qmgr", qid+": from=<news@example.net>, size=4242, nrcpt=1 (queue active)"),
		l.msg(at, "lmtp", qid+": to=<u@example.test>, relay=mailbox.example.test[192.0.2.30]:24, delay=0.3, delays=0.1/0/0/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)"),
		l.msg(at, "qmgr", qid+": removed"),
	}
}

// attachment is a message that the MX's header_checks rejected for an
// executable attachment.
func (l mxLog) attachment(at time.Time, qid, client string) []syslog.Message {
	return []syslog.Message{
		l.msg(at, "smtpd", qid+": client="+client),
		l.msg(at, "cleanup", qid+`: reject: header Content-Type: application/octet-stream; name="invoice.scr" from `+client+tail+": 5.7.1 Email rejected, an attachment with .scr extension detected."),
	}
}

func matchAll(m *Matcher, msgs ...[]syslog.Message) []Offense {
	var offs []Offense
	for _, ms := range msgs {
		for _, msg := range ms {
			offs = m.Match(offs, msg)
		}
	}
	return offs
}

func qidN(i int) string { return fmt.Sprintf("%010X", 0xB810000000+i) }

// TestAuthenticated: a client is authenticated only when Postfix's own
// ", sasl_method=" follows its address; sasl_sender is the client's
// MAIL FROM AUTH= text and may imitate anything.
func TestAuthenticated(t *testing.T) {
	const user = "203.0.113.67"
	tests := []struct {
		name, client string // the text after "QID: client="
		want         []standing
	}{
		{"not authenticated", "unknown[203.0.113.67]", []standing{{Addr: user, Rule: "executable-attachment"}}},
		{"PLAIN", "unknown[203.0.113.67], sasl_method=PLAIN, sasl_username=u@example.test", []standing{{Addr: user, Rule: "executable-attachment", Authenticated: true}}},
		{"with port and AUTH=", "h.example.net[203.0.113.67]:41234, sasl_method=LOGIN, sasl_username=u, sasl_sender=u@example.test", []standing{{Addr: user, Rule: "executable-attachment", Authenticated: true}}},
		{"IPv6", "unknown[2001:db8:66::67], sasl_method=SCRAM-SHA-256, sasl_username=u", []standing{{Addr: "2001:db8:66::67", Rule: "executable-attachment", Authenticated: true}}},
		// The decoys: an unauthenticated client's AUTH= text.
		{"sasl_sender decoy", `unknown[203.0.113.67], sasl_sender=", sasl_method=PLAIN, sasl_username=x"`, []standing{{Addr: user, Rule: "executable-attachment"}}},
		{"unquoted sasl_sender decoy", `unknown[203.0.113.67], sasl_sender=a, sasl_method=PLAIN, sasl_username=x`, []standing{{Addr: user, Rule: "executable-attachment"}}},
		{"decoy without the comma", `unknown[203.0.113.67] sasl_method=PLAIN`, nil}, // not Postfix's layout: unattributed
		{"empty method", `unknown[203.0.113.67], sasl_method=, sasl_username=x`, []standing{{Addr: user, Rule: "executable-attachment"}}},
		// A content filter's login is its own; XFORWARD carries none.
		{"re-injected by an authenticated filter", "localhost[127.0.0.1]:10025, sasl_method=PLAIN, sasl_username=amavis, orig_queue_id=C31CFB81BD, orig_client=unknown[203.0.113.67]", []standing{{Addr: user, Rule: "executable-attachment"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(t, testConfig())
			offs := matchAll(m, mx1.attachment(t0, "E5221B81BD", tt.client))
			if diff := cmp.Diff(tt.want, standings(offs)); diff != "" {
				t.Errorf("offenses (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAuthenticatedSMTPDReject: an smtpd reject inside a transaction
// reads the authentication from the message's client= record, and only
// when that record names the same client.
func TestAuthenticatedSMTPDReject(t *testing.T) {
	cfg := testConfig()
	m := newMatcher(t, cfg)
	reject := "C31CFB81BD: reject: RCPT from unknown[203.0.113.67]: 454 4.7.1 <v@elsewhere.example>: Relay access denied; from=<u@example.test> to=<v@elsewhere.example> proto=ESMTP helo=<pc>"
	offs := matchAll(m, []syslog.Message{
		mx1.msg(t0, "submission/smtpd", "C31CFB81BD: client=unknown[203.0.113.67], sasl_method=PLAIN, sasl_username=u"),
		mx1.msg(t0, "submission/smtpd", reject),
		mx1.msg(t0, "smtpd", "D31CFB81BD: client=unknown[203.0.113.68], sasl_method=PLAIN, sasl_username=u"),
		mx1.msg(t0, "smtpd", "D31CFB81BD: reject: RCPT from unknown[203.0.113.69]: 454 4.7.1 <v@elsewhere.example>: Relay access denied; proto=ESMTP helo=<pc>"),
	})
	want := []standing{
		{Addr: "203.0.113.67", Rule: "relay-denied", Authenticated: true},
		{Addr: "203.0.113.67", Rule: "submission", Authenticated: true},
		{Addr: "203.0.113.69", Rule: "relay-denied"},
	}
	if diff := cmp.Diff(want, standings(offs)); diff != "" {
		t.Errorf("offenses (-want +got):\n%s", diff)
	}
}

// TestAcceptedCounting counts a client's accepted messages through
// qmgr's "(queue active)" records and tells when that makes it
// established.
func TestAcceptedCounting(t *testing.T) {
	const relay = "mail.example.net[198.51.100.77]"
	cfg := testConfig()
	cfg.Established = EstablishedConfig{TableSize: 10, MinMessages: 3, MinSpan: 48 * time.Hour}
	day := 24 * time.Hour
	tests := []struct {
		name string
		at   []time.Duration // accepted messages, in log order
		// extra lines before the reject
		extra []syslog.Message
		want  []standing
	}{
		{
			name: "unknown client",
			want: []standing{{Addr: "198.51.100.77", Rule: "executable-attachment"}},
		},
		{
			name: "enough messages, too short a span",
			at:   []time.Duration{0, time.Hour, day},
			want: []standing{{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 3, AcceptedSince: t0}},
		},
		{
			name: "long enough, too few",
			at:   []time.Duration{0, 3 * day},
			want: []standing{{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 2, AcceptedSince: t0}},
		},
		{
			name: "established",
			at:   []time.Duration{0, day, 2 * day},
			want: []standing{{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 3, AcceptedSince: t0, Established: true}},
		},
		{
			// Several MX hosts' lines arrive a little out of order.
			name: "out of order",
			at:   []time.Duration{day, 2 * day, 0},
			want: []standing{{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 3, AcceptedSince: t0, Established: true}},
		},
		{
			// qmgr logs from= again for each retry from the deferred
			// queue: one message counts once.
			name: "deferred retries count once",
			at:   []time.Duration{0, day},
			extra: []syslog.Message{
				mx1.msg(t0.Add(2*day), "smtpd", "A1B2C3D4E5: client="+relay),
				mx1.msg(t0.Add(2*day), "qmgr", "A1B2C3D4E5: from=<news@example.net>, size=4242, nrcpt=1 (queue active)"),
				mx1.msg(t0.Add(2*day), "lmtp", "A1B2C3D4E5: to=<u@example.test>, relay=none, delay=0.1, delays=0.1/0/0/0, dsn=4.4.1, status=deferred (connect to mailbox.example.test[192.0.2.30]:24: Connection refused)"),
				mx1.msg(t0.Add(2*day+time.Hour), "qmgr", "A1B2C3D4E5: from=<news@example.net>, size=4242, nrcpt=1 (queue active)"),
				mx1.msg(t0.Add(2*day+2*time.Hour), "qmgr", "A1B2C3D4E5: from=<news@example.net>, size=4242, nrcpt=1 (queue active)"),
			},
			want: []standing{{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 3, AcceptedSince: t0, Established: true}},
		},
		{
			// A rejected message never reaches qmgr; a qmgr line for its
			// queue ID afterwards is another message's (a reused ID,
			// from pickup) and counts for nobody.
			name: "rejected messages do not count",
			at:   []time.Duration{0, day},
			extra: append(mx1.attachment(t0.Add(2*day), "A1B2C3D4E5", relay),
				mx1.msg(t0.Add(2*day), "qmgr", "A1B2C3D4E5: from=<root@mx1.example.test>, size=300, nrcpt=1 (queue active)")),
			want: []standing{
				{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 2, AcceptedSince: t0},
				{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 2, AcceptedSince: t0},
			},
		},
		{
			// Only qmgr's own layout counts.
			name: "other qmgr records do not count",
			at:   []time.Duration{0, day},
			extra: []syslog.Message{
				mx1.msg(t0.Add(2*day), "smtpd", "A1B2C3D4E5: client="+relay),
				mx1.msg(t0.Add(2*day), "qmgr", "A1B2C3D4E5: from=<x (queue active)>, status=expired, returned to sender"),
				mx1.msg(t0.Add(2*day), "qmgr", "A1B2C3D4E5: from=<news@example.net>, size=, nrcpt=1 (queue active)"),
				mx1.msg(t0.Add(2*day), "smtp", "A1B2C3D4E5: from=<news@example.net>, size=4242, nrcpt=1 (queue active)"),
			},
			want: []standing{{Addr: "198.51.100.77", Rule: "executable-attachment", Accepted: 2, AcceptedSince: t0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(t, cfg)
			for i, d := range tt.at {
				matchAll(m, mx1.accepted(t0.Add(d), qidN(i), relay))
			}
			offs := matchAll(m, tt.extra)
			offs = append(offs, matchAll(m, mx1.attachment(t0.Add(3*day), "F00DF00D42", relay))...)
			if diff := cmp.Diff(tt.want, standings(offs)); diff != "" {
				t.Errorf("offenses (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAcceptedKeyedBySender: a qmgr record counts only for the message
// whose client= record came from the same syslog sender, host name and
// Postfix instance, so that one MX (or a forger of its name) cannot make
// a client established with another's queue IDs.
func TestAcceptedKeyedBySender(t *testing.T) {
	const relay = "mail.example.net[198.51.100.77]"
	cfg := testConfig()
	cfg.Established = EstablishedConfig{TableSize: 10, MinMessages: 1}
	mx2 := mxLog{peer: netip.MustParseAddr("198.51.100.26"), host: "mx2"}
	forger := mxLog{peer: netip.MustParseAddr("198.51.100.26"), host: "mx1"}
	outInstance := mxLog{peer: mx1.peer, host: "mx1", inst: "postfix-out"}
	tests := []struct {
		name string
		qmgr mxLog
		want int
	}{
		{"same sender", mx1, 1},
		{"other MX", mx2, 0},
		{"other MX writing the same name", forger, 0},
		{"other instance", outInstance, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(t, cfg)
			matchAll(m, []syslog.Message{
				mx1.msg(t0, "smtpd", "C31CFB81BD: client="+relay),
				tt.qmgr.msg(t0, "qmgr", "C31CFB81BD: from=<news@example.net>, size=4242, nrcpt=1 (queue active)"),
			})
			offs := matchAll(m, mx1.attachment(t0, "F00DF00D42", relay))
			if len(offs) != 1 {
				t.Fatalf("offenses = %+v, want one", offs)
			}
			if got := offs[0].Accepted; got != tt.want {
				t.Errorf("Accepted = %d, want %d", got, tt.want)
			}
			if got, want := m.Stats().Accepted, uint64(tt.want); got != want {
				t.Errorf("Stats.Accepted = %d, want %d", got, want)
			}
		})
	}
}

// TestSenderTableBounded: past table_size the sender heard from least
// recently is forgotten, and with it its standing.
func TestSenderTableBounded(t *testing.T) {
	cfg := testConfig()
	cfg.Established = EstablishedConfig{TableSize: 3, MinMessages: 1}
	m := newMatcher(t, cfg)
	for i := range 4 {
		matchAll(m, mx1.accepted(t0.Add(time.Duration(i)*time.Minute), qidN(i), fmt.Sprintf("unknown[198.51.100.%d]", 10+i)))
	}
	// The first sender again: it moves to the front, the second is next.
	matchAll(m, mx1.accepted(t0.Add(time.Hour), qidN(4), "unknown[198.51.100.11]"))
	matchAll(m, mx1.accepted(t0.Add(time.Hour), qidN(5), "unknown[198.51.100.14]"))
	st := m.Stats()
	if got, want := [3]uint64{uint64(st.Senders), st.SenderEvictions, st.Accepted}, [3]uint64{3, 2, 6}; got != want {
		t.Errorf("Stats (senders, evictions, accepted) = %v, want %v", got, want)
	}
	var got []standing
	for i := range 5 {
		got = append(got, standings(matchAll(m, mx1.attachment(t0.Add(2*time.Hour), qidN(10+i), fmt.Sprintf("unknown[198.51.100.%d]", 10+i))))...)
	}
	since := func(d time.Duration) time.Time { return t0.Add(d) }
	want := []standing{
		{Addr: "198.51.100.10", Rule: "executable-attachment"},
		{Addr: "198.51.100.11", Rule: "executable-attachment", Accepted: 2, AcceptedSince: since(time.Minute), Established: true},
		{Addr: "198.51.100.12", Rule: "executable-attachment"},
		{Addr: "198.51.100.13", Rule: "executable-attachment", Accepted: 1, AcceptedSince: since(3 * time.Minute), Established: true},
		{Addr: "198.51.100.14", Rule: "executable-attachment", Accepted: 1, AcceptedSince: since(time.Hour), Established: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("standings after eviction (-want +got):\n%s", diff)
	}
}

func TestQueueActive(t *testing.T) {
	tests := map[string]bool{
		"from=<news@example.net>, size=4242, nrcpt=1 (queue active)":                    true,
		"from=<>, size=3001, nrcpt=12 (queue active)":                                   true,
		`from=<"a>, size=1, nrcpt=1 (queue active)"@x>, size=9, nrcpt=1 (queue active)`: true,
		"from=<news@example.net>, size=4242, nrcpt=1 (queue deferred)":                  false,
		"from=<news@example.net>, size=, nrcpt=1 (queue active)":                        false,
		"from=<news@example.net>, size=4242, nrcpt= (queue active)":                     false,
		"from=<news@example.net> size=4242, nrcpt=1 (queue active)":                     false,
		"from=<news@example.net, size=4242, nrcpt=1 (queue active)":                     false,
		"from=<x (queue active)>, status=expired, returned to sender":                   false,
		"to=<u@example.test>, size=4242, nrcpt=1 (queue active)":                        false,
		"from=<news@example.net>, size=4242, nrcpt=1 (queue active) ":                   false,
		"": false,
	}
	for in, want := range tests {
		if got := queueActive(in); got != want {
			t.Errorf("queueActive(%q) = %v, want %v", in, got, want)
		}
	}
}
