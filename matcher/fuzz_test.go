package matcher

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

// Reference grammar for FuzzMatch, written independently of parse.go with
// regular expressions: the only places an address may be taken from.
var (
	refAnchored   = regexp.MustCompile(`^(?:NOQUEUE|[0-9A-Za-z]+): (?:milter-)?reject: [A-Z-]+ from [^\[\] ]*\[([^\]]*)\](?::[0-9]+)?: `)
	refSASL       = regexp.MustCompile(`^warning: [^\[\] ]*\[([^\]]*)\](?::[0-9]+)?: SASL `)
	refClient     = regexp.MustCompile(`(?:^[0-9A-Za-z]+: client=|, orig_client=)[^\[\] ]*\[([^\]]*)\]`)
	refPostscreen = regexp.MustCompile(`^(?:PREGREET [0-9]+ after [0-9.]+ from |DNSBL rank -?[0-9]+ for |HANGUP after [0-9.]+ from |(?:COMMAND (?:TIME|COUNT|LENGTH) LIMIT|COMMAND PIPELINING|NON-SMTP COMMAND|BARE NEWLINE) from )\[([^\]]*)\]:[0-9]+`)
	refSessionEnd = regexp.MustCompile(`^(?:(?:NOQUEUE|[0-9A-Za-z]+): )?(?:lost connection|too many errors) after [A-Z-]+(?: \([0-9]+ bytes\))? from [^\[\] ]*\[([^\]]*)\](?::[0-9]+)?$`)
	refSession    = regexp.MustCompile(`^(?:improper command pipelining after [A-Z-]+ from |disconnect from )[^\[\] ]*\[([^\]]*)\](?::[0-9]+)?[: ]`)
	refWarning    = regexp.MustCompile(`^warning: (?:non-SMTP command from |[A-Za-z ]+ limit exceeded: [0-9]+ from )[^\[\] ]*\[([^\]]*)\](?::[0-9]+)?[: ]`)
	// The only records that may make a client authenticated or count a
	// message as accepted.
	refAuthClient  = regexp.MustCompile(`^[0-9A-Za-z]+: client=[^\[\] ,;]*\[[^\]]*\](?::[0-9]+)?, sasl_method=[^, ]`)
	refQueueActive = regexp.MustCompile(`(?s)^C31CFB81BD: from=<.*>, size=[0-9]+, nrcpt=[0-9]+ \(queue active\)$`)
)

var fuzzPrograms = []string{"postfix/cleanup", "postfix/smtpd", "postfix/postscreen", "postfix/qmgr", "postfix/submission/smtpd", "postfix-out/cleanup", "exim"}

// FuzzMatch feeds one arbitrary message between a fixed client= record and
// a fixed reject. Property: every offense names the recorded client, or an
// address that the reference grammar finds in a client record or at the
// anchored position of the arbitrary message. A cleanup message can never
// contribute an address. An offense is authenticated only after a client=
// record with Postfix's sasl_method right after the address, and counts
// an accepted message only after qmgr's "(queue active)" record of the
// recorded client's queue ID.
func FuzzMatch(f *testing.F) {
	for _, l := range readSample(f) {
		msg := parseFileLine(f, l)
		for i, p := range fuzzPrograms {
			if p == msg.Program {
				f.Add(msg.Text, uint8(i))
			}
		}
	}
	f.Add("C31CFB81BD: client=unknown[192.0.2.1], orig_client=unknown[192.0.2.2]", uint8(1))
	f.Add("C31CFB81BD: reject: RCPT from unknown[::ffff:192.0.2.1]:25: 5", uint8(1))
	f.Add("warning: unknown[fe80::1%eth0]: SASL LOGIN authentication failed: x", uint8(4))
	f.Add("C31CFB81BD: milter-reject: END-OF-MESSAGE from unknown[192.0.2.5]: 5.7.1 x", uint8(0))
	f.Add("NOQUEUE: reject: RCPT from [192.0.2.3]:1: 550 x", uint8(2))
	f.Add("C31CFB81BD: removed", uint8(3))
	f.Add("PREGREET 11 after 0.1 from [203.0.113.5]:4711: EHLO [192.0.2.1]\\r\\n", uint8(2))
	f.Add("DNSBL rank 3 for [2001:db8::5]:4711", uint8(2))
	f.Add("HANGUP after 0.5 from [::ffff:203.0.113.5]:4711 in tests before SMTP handshake", uint8(2))
	f.Add("lost connection after AUTH from unknown[203.0.113.5]:587", uint8(1))
	f.Add("too many errors after DATA (0 bytes) from x.example[2001:db8::5]", uint8(4))
	f.Add("lQ2Yh85FCfzB5sw: client=unknown[203.0.113.5]", uint8(1))
	f.Add("NOQUEUE: lost connection after CONNECT from unknown[203.0.113.5]", uint8(1))
	f.Add("C31CFB81BD: lost connection after DATA (10 bytes) from unknown[203.0.113.5]:25", uint8(4))
	f.Add("improper command pipelining after RSET from x.example[203.0.113.5]: MAIL FROM:<a@[192.0.2.1]>", uint8(1))
	f.Add("disconnect from unknown[2001:db8::5] ehlo=1 auth=0/1 quit=1 commands=2/3", uint8(4))
	f.Add("warning: non-SMTP command from unknown[203.0.113.5]: GET / from unknown[192.0.2.1]: x", uint8(1))
	f.Add("warning: Connection rate limit exceeded: 31 from unknown[203.0.113.5] for service smtp", uint8(1))
	f.Add("COMMAND TIME LIMIT from [203.0.113.5]:3608 after CONNECT", uint8(2))
	f.Add("NON-SMTP COMMAND from [203.0.113.5]:1 after CONNECT: GET / from [192.0.2.1]:2", uint8(2))
	f.Add("BARE NEWLINE from [203.0.113.5]:1 after EHLO [192.0.2.1]:2", uint8(2))
	f.Add("C31CFB81BD: from=<news@example.net>, size=4242, nrcpt=1 (queue active)", uint8(3))
	f.Add(`C31CFB81BD: from=<"x>, size=1, nrcpt=1 (queue active)"@x>, status=expired, returned to sender`, uint8(3))
	f.Add("C31CFB81BD: client=unknown[203.0.113.5], sasl_method=PLAIN, sasl_username=u", uint8(1))
	f.Add(`C31CFB81BD: client=unknown[203.0.113.67], sasl_sender=", sasl_method=PLAIN, sasl_username=x"`, uint8(4))

	const client = "203.0.113.66"
	f.Fuzz(func(t *testing.T, text string, prog uint8) {
		// A rule that matches every event shows every attribution.
		m, err := New(complete(Config{Rules: []Rule{{Name: "any", Pattern: MustRegexp(`^`)}}}))
		if err != nil {
			t.Fatal(err)
		}

		program := fuzzPrograms[int(prog)%len(fuzzPrograms)]
		allowed := map[netip.Addr]bool{netip.MustParseAddr(client): true}
		if strings.HasSuffix(program, "/smtpd") || strings.HasSuffix(program, "/postscreen") {
			for _, re := range []*regexp.Regexp{refAnchored, refSASL, refPostscreen, refSessionEnd, refSession, refWarning} {
				if sm := re.FindStringSubmatch(text); sm != nil {
					addAllowed(allowed, sm[1])
				}
			}
			for _, sm := range refClient.FindAllStringSubmatch(text, -1) {
				addAllowed(allowed, sm[1])
			}
		}

		var offs []Offense
		offs = m.Match(offs, msgAt("postfix/smtpd", "C31CFB81BD: client=unknown["+client+"]"))
		msg := msgAt(program, text)
		offs = m.Match(offs, msg)
		offs = m.Match(offs, msgAt("postfix/cleanup", "C31CFB81BD: reject: header Subject: x from unknown[192.0.2.9]; from=<[192.0.2.10]>: 5.7.1 x"))
		for _, o := range offs {
			if !allowed[o.Addr] {
				t.Errorf("offense for %v from %s %q; allowed %v", o.Addr, program, text, allowed)
			}
			if o.Host != "mx" || o.Rule != "any" || !o.Kind.Valid() {
				t.Errorf("malformed offense %+v", o)
			}
			if o.Authenticated && !(strings.HasSuffix(program, "/smtpd") && refAuthClient.MatchString(text)) {
				t.Errorf("authenticated offense %+v after %s %q", o, program, text)
			}
			if o.Accepted > 1 || (o.Accepted == 1 && !(program == "postfix/qmgr" && refQueueActive.MatchString(text))) {
				t.Errorf("offense %+v counts %d accepted after %s %q", o, o.Accepted, program, text)
			}
		}
	})
}

func addAllowed(allowed map[netip.Addr]bool, s string) {
	if a, err := netip.ParseAddr(s); err == nil {
		allowed[a.Unmap().WithZone("")] = true
	}
}
