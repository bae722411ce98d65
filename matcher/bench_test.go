package matcher

import (
	"fmt"
	"testing"

	"github.com/wormgate/wormgate/receiver/syslog"
)

// benchMessages is a mail log mix: per message about ten lines, of which
// one client= record and, for one message in ten, a cleanup reject.
func benchMessages(b *testing.B) []syslog.Message {
	var msgs []syslog.Message
	for i := range 100 {
		qid := fmt.Sprintf("%08X", 0xC31CF000+i)
		addr := fmt.Sprintf("203.0.113.%d", i)
		msgs = append(msgs,
			msgAt("postfix/smtpd", "connect from unknown["+addr+"]"),
			msgAt("postfix/smtpd", qid+": client=unknown["+addr+"]"),
			msgAt("postfix/cleanup", qid+": message-id=<"+qid+"@worm.example>"),
		)
		if i%10 == 0 {
			msgs = append(msgs, msgAt("postfix/cleanup", qid+": reject: header Subject: Re: Details from unknown["+addr+"]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"))
		} else {
			msgs = append(msgs,
				msgAt("postfix/qmgr", qid+": from=<a@example.test>, size=1234, nrcpt=1 (queue active)"),
				msgAt("postfix/smtp", qid+": to=<b@example.test>, relay=x[198.51.100.1]:25, delay=1, status=sent (250 ok)"),
				msgAt("postfix/qmgr", qid+": removed"),
			)
		}
		msgs = append(msgs,
			msgAt("postfix/smtpd", "disconnect from unknown["+addr+"] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"),
			msgAt("postfix/anvil", "statistics: max connection rate 1/60s for (smtp:"+addr+") at Nov 26 18:19:13"),
			msgAt("dovecot", "imap-login: Login: user=<u>, method=PLAIN"),
		)
	}
	return msgs
}

// BenchmarkMatch reports the cost per log line over the mix.
func BenchmarkMatch(b *testing.B) {
	m := newMatcher(b, DefaultConfig())
	msgs := benchMessages(b)
	var dst []Offense
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		dst = m.Match(dst[:0], msgs[i%len(msgs)])
	}
}

// BenchmarkMatchNonEvent is the common case alone.
func BenchmarkMatchNonEvent(b *testing.B) {
	m := newMatcher(b, DefaultConfig())
	msg := msgAt("postfix/smtpd", "disconnect from unknown[203.0.113.66] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5")
	var dst []Offense
	b.ReportAllocs()
	for b.Loop() {
		dst = m.Match(dst[:0], msg)
	}
}

// BenchmarkMatchReject is the cost of one attributed cleanup reject under
// the default rules: the rule patterns read only the administrator's text.
func BenchmarkMatchReject(b *testing.B) {
	m := newMatcher(b, DefaultConfig())
	client := msgAt("postfix/smtpd", "E5221B81BD: client=unknown[203.0.113.66]")
	reject := msgAt("postfix/cleanup", `E5221B81BD: reject: header Subject: Re: Approved from unknown[203.0.113.66]; from=<"x]; from unknown[192.0.2.98]; from=<"@worm.example> to=<postmaster@mx.example.test> proto=ESMTP helo=<vm>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus`)
	var dst []Offense
	b.ReportAllocs()
	for b.Loop() {
		m.Match(nil, client)
		dst = m.Match(dst[:0], reject)
	}
}
