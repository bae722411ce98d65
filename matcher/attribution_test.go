package matcher

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// decoys are the addresses an attacker plants in the fields it controls;
// none of them may ever be attributed an offense.
var decoys = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("203.0.113.99/32"),
	netip.MustParsePrefix("2001:db8:99::/48"),
}

func isDecoy(a netip.Addr) bool {
	for _, p := range decoys {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// decoyReject is a cleanup reject of a worm subject from client with a
// decoy in every field the sender writes: the header text, MAIL FROM,
// RCPT TO and HELO (cleanup_act_log's layout).
func decoyReject(qid, client string) string {
	return qid + `: reject: header Subject: Re: Details from unknown[192.0.2.10]; from unknown[192.0.2.11] from ` + client +
		`; from=<"x]; from unknown[192.0.2.12]; from=<"@worm.example> to=<"a[192.0.2.13]"@mx.example.test>` +
		` proto=ESMTP helo=<x[192.0.2.14]>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus`
}

// TestClientRecordAttribution runs every client= record layout that
// smtpd writes (smtpd.c and smtpd_sasl_proto.c's smtpd_sasl_mail_log:
// client=NAMADDR[, sasl_method=][, sasl_username=][, sasl_sender=]
// [, orig_queue_id=][, orig_client=NAMADDR]) with decoys in every field a
// client can write, the MAIL FROM AUTH= parameter (sasl_sender) first of
// all: Postfix logs it as sent, quotes, commas, spaces and brackets
// included, and accepts it from unauthenticated clients.
func TestClientRecordAttribution(t *testing.T) {
	const worm = "203.0.113.67"
	tests := []struct {
		name, client  string // client: the text after "QID: client="
		want          string // "" for unattributed
		wantAmbiguous uint64
	}{
		// Plain shapes.
		{"plain", "unknown[203.0.113.67]", worm, 0},
		{"verified name", "mail.worm.example[203.0.113.67]", worm, 0},
		{"port logging", "unknown[203.0.113.67]:41234", worm, 0},
		{"IPv6", "unknown[2001:db8:66::67]", "2001:db8:66::67", 0},
		{"IPv6 with port", "unknown[2001:db8:66::67]:41234", "2001:db8:66::67", 0},
		{"authenticated", "unknown[203.0.113.67], sasl_method=PLAIN, sasl_username=u@example.test", worm, 0},
		{"authenticated with AUTH=", "unknown[203.0.113.67], sasl_method=PLAIN, sasl_username=u@example.test, sasl_sender=u@example.test", worm, 0},

		// The AUTH= injections of the trust issue, from a client that is
		// not a re-injection source: everything after its NAMADDR is
		// ignored, so the worm itself is banned.
		{"AUTH= moves the ban", `unknown[203.0.113.67], sasl_sender=", orig_client="x[203.0.113.99]`, worm, 0},
		{"AUTH= evades", `unknown[203.0.113.67], sasl_sender="a, orig_client=x[192.0.2.1]"`, worm, 0},
		{"AUTH= ends the line like orig_client", `unknown[203.0.113.67], sasl_sender=a, orig_client=x[192.0.2.1]`, worm, 0},
		{"AUTH= with orig_queue_id", `unknown[203.0.113.67], sasl_sender=a, orig_queue_id=C31CFB81BD, orig_client=unknown[2001:db8:99::1]:25`, worm, 0},
		{"AUTH= with IPv6 decoy", `unknown[203.0.113.67], sasl_sender="x, orig_client=[2001:db8:99::1]"`, worm, 0},
		{"AUTH= with brackets", `unknown[203.0.113.67], sasl_sender=x]]][192.0.2.5]]`, worm, 0},
		{"AUTH= long", `unknown[203.0.113.67], sasl_sender="` + strings.Repeat("a, b", 500) + `, orig_client=x[192.0.2.1]"`, worm, 0},
		{"AUTH= after authentication", `unknown[203.0.113.67], sasl_method=LOGIN, sasl_username=u, sasl_sender=", orig_client=x[192.0.2.1]`, worm, 0},
		{"sasl_username decoy", `unknown[203.0.113.67], sasl_method=LOGIN, sasl_username=x[192.0.2.1]`, worm, 0},
		{"IPv6 worm, AUTH= decoy", `unknown[2001:db8:66::67], sasl_sender=", orig_client="x[203.0.113.99]`, "2001:db8:66::67", 0},

		// Re-injection from a content filter on loopback: orig_client is
		// the origin when nothing a client wrote precedes it.
		{"re-injection", "localhost[127.0.0.1], orig_queue_id=C31CFB81BD, orig_client=unknown[203.0.113.67]", worm, 0},
		{"re-injection without ident", "localhost[127.0.0.1]:10025, orig_client=unknown[203.0.113.67]:40000", worm, 0},
		{"re-injection over IPv6, filter authenticated", "localhost[::1]:10025, sasl_method=PLAIN, sasl_username=amavis, orig_queue_id=C31CFB81BD, orig_client=h.worm.example[2001:db8:66::67]:40000", "2001:db8:66::67", 0},
		// ... and ambiguous, hence unattributed, when a sasl_sender (which
		// a filter may copy from the original client's AUTH=) could have
		// written or hidden it.
		{"re-injection with AUTH= decoy", `localhost[127.0.0.1], sasl_sender=", orig_client="x[203.0.113.99]`, "", 1},
		{"re-injection with AUTH= before a real orig_client", `localhost[127.0.0.1], sasl_sender="a, orig_client=x[192.0.2.1]", orig_queue_id=C31CFB81BD, orig_client=unknown[203.0.113.67]`, "", 1},
		{"re-injection without orig_client", "localhost[127.0.0.1]", "", 1},
		{"re-injection, orig_client not last", "localhost[127.0.0.1], orig_client=unknown[203.0.113.67] junk", "", 1},
		{"re-injection, two orig_clients", "localhost[127.0.0.1], orig_client=unknown[203.0.113.67], orig_client=unknown[192.0.2.1]", "", 1},
		{"re-injection, unknown orig address", "localhost[127.0.0.1], orig_client=unknown[unknown]", "", 1},

		// Malformed records attribute nobody.
		{"no address", "unknown[unknown]", "", 0},
		{"junk after NAMADDR", "unknown[203.0.113.67]junk", "", 0},
		{"space in name", "un known[203.0.113.67]", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(t, testConfig())
			offs := m.Match(nil, msgAt(smtpd, "E5221B81BD: client="+tt.client))
			offs = m.Match(offs, msgAt(cleanup, decoyReject("E5221B81BD", tt.client)))
			var got []string
			for _, o := range offs {
				if isDecoy(o.Addr) {
					t.Errorf("offense attributed to decoy %v", o.Addr)
				}
				got = append(got, o.Addr.String())
			}
			var want []string
			if tt.want != "" {
				want = []string{tt.want}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("banned addresses (-want +got):\n%s", diff)
			}
			st := m.Stats()
			wantUn := uint64(0)
			if tt.want == "" {
				wantUn = 1
			}
			if got := st.Unattributed[KindCleanupReject]; got != wantUn {
				t.Errorf("unattributed = %d, want %d", got, wantUn)
			}
			if st.AmbiguousClients != tt.wantAmbiguous {
				t.Errorf("AmbiguousClients = %d, want %d", st.AmbiguousClients, tt.wantAmbiguous)
			}
		})
	}
}

// TestNoReinjectionSources: with the list emptied, orig_client is never
// read, even from loopback.
func TestNoReinjectionSources(t *testing.T) {
	cfg := testConfig()
	cfg.ReinjectionSources = nil
	m := newMatcher(t, cfg)
	offs := m.Match(nil, msgAt(smtpd, "E5221B81BD: client=localhost[127.0.0.1], orig_client=unknown[203.0.113.67]"))
	offs = m.Match(offs, msgAt(cleanup, decoyReject("E5221B81BD", "localhost[127.0.0.1]")))
	if len(offs) != 1 || offs[0].Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("offenses = %+v, want one for the connecting client 127.0.0.1", offs)
	}
}

// TestReinjectionSourceConfig: a filter on another host can be named.
func TestReinjectionSourceConfig(t *testing.T) {
	cfg := testConfig()
	cfg.ReinjectionSources = []netip.Prefix{netip.MustParsePrefix("198.51.100.30/32")}
	m := newMatcher(t, cfg)
	offs := m.Match(nil, msgAt(smtpd, "E5221B81BD: client=filter.example.test[198.51.100.30]:10025, orig_queue_id=ABCDEF1234, orig_client=unknown[203.0.113.67]"))
	offs = m.Match(offs, msgAt(cleanup, decoyReject("E5221B81BD", "filter.example.test[198.51.100.30]")))
	if len(offs) != 1 || offs[0].Addr != netip.MustParseAddr("203.0.113.67") {
		t.Fatalf("offenses = %+v, want one for the original client 203.0.113.67", offs)
	}
}

// TestQueueKeyedBySender: a reject is attributed only through a client=
// record of the same syslog sender, whatever HOSTNAME either wrote: a
// forged name, the same name, or none at all.
func TestQueueKeyedBySender(t *testing.T) {
	mx1 := netip.MustParseAddr("198.51.100.25")
	mx2 := netip.MustParseAddr("198.51.100.26")
	from := func(peer netip.Addr, host, program, text string) syslog.Message {
		m := msgAt(program, text)
		m.Peer, m.Host = peer, host
		return m
	}
	tests := []struct {
		name           string
		clientFrom     syslog.Message
		rejectFrom     syslog.Message
		wantAttributed bool
	}{
		{"same sender", from(mx1, "mx1", smtpd, "E5221B81BD: client=unknown[203.0.113.67]"), from(mx1, "mx1", cleanup, decoyReject("E5221B81BD", "unknown[203.0.113.67]")), true},
		{"other sender forging the name", from(mx1, "mx1", smtpd, "E5221B81BD: client=unknown[203.0.113.67]"), from(mx2, "mx1", cleanup, decoyReject("E5221B81BD", "unknown[203.0.113.67]")), false},
		{"no names, other sender", from(mx1, "", smtpd, "E5221B81BD: client=unknown[203.0.113.67]"), from(mx2, "", cleanup, decoyReject("E5221B81BD", "unknown[203.0.113.67]")), false},
		{"same sender, other name", from(mx1, "mx1", smtpd, "E5221B81BD: client=unknown[203.0.113.67]"), from(mx1, "mx2", cleanup, decoyReject("E5221B81BD", "unknown[203.0.113.67]")), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(t, testConfig())
			offs := m.Match(nil, tt.clientFrom)
			offs = m.Match(offs, tt.rejectFrom)
			if got := len(offs) == 1; got != tt.wantAttributed {
				t.Errorf("attributed = %v (%+v), want %v", got, offs, tt.wantAttributed)
			}
		})
	}
}

// TestUnattributedBySender: an event that matched a rule but had no
// client= record before it is counted against the syslog sender that
// reported it, and only against that one.
func TestUnattributedBySender(t *testing.T) {
	m := newMatcher(t, testConfig())
	mx1, mx2 := netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("192.0.2.26")
	at := func(peer netip.Addr, program, text string) syslog.Message {
		msg := msgAt(program, text)
		msg.Peer = peer
		return msg
	}
	m.Match(nil, at(mx1, smtpd, "E5221B81BD: client=unknown[203.0.113.5]"))
	if offs := m.Match(nil, at(mx1, cleanup, decoyReject("E5221B81BD", "unknown[203.0.113.5]"))); len(offs) == 0 {
		t.Fatal("the attributed reject made no offense")
	}
	// mx2 never announced this queue ID: unattributed, twice.
	m.Match(nil, at(mx2, cleanup, decoyReject("F5221B81BD", "unknown[203.0.113.6]")))
	m.Match(nil, at(mx2, cleanup, decoyReject("A5221B81BD", "unknown[203.0.113.7]")))
	want := map[netip.Addr]uint64{mx2: 2}
	if diff := cmp.Diff(want, m.UnattributedBySender(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("unattributed by sender (-want +got):\n%s", diff)
	}
}
