// Command bench writes a synthetic multi-host Postfix mail log for
// check-bench.sh: ordinary deliveries from several MX hosts and Postfix
// instances, interleaved with the reject events wormgate's default rules
// act on (worm and attachment header_checks rejects with decoy addresses,
// DNSBL, relay and postscreen rejects, SASL guessing).
//
//	go run ./cmd/wormgate/bench -lines 1000000 > maillog
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

func main() {
	lines := flag.Int("lines", 1_000_000, "lines to write")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	g := &gen{w: w, r: rand.New(rand.NewPCG(*seed, 2)), t: time.Date(2025, 12, 28, 0, 0, 0, 0, time.UTC)}
	for g.n < *lines {
		g.session()
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type gen struct {
	w   *bufio.Writer
	r   *rand.Rand
	t   time.Time
	n   int
	qid uint64
}

var hosts = []string{"mx1", "mx2", "mx3", "mx4"}

const tail = "; from=<%s> to=<postmaster@example.test> proto=ESMTP helo=<%s>"

func (g *gen) line(host, prog, format string, args ...any) {
	// About 1.6 lines per second: a million lines span about a week,
	// across a year boundary.
	g.t = g.t.Add(time.Duration(g.r.IntN(1200)) * time.Millisecond)
	fmt.Fprintf(g.w, "%s %s %s[%d]: ", g.t.Format("2006-01-02T15:04:05.000000-07:00"), host, prog, 1000+g.r.IntN(30000))
	fmt.Fprintf(g.w, format, args...)
	g.w.WriteByte('\n')
	g.n++
}

func (g *gen) nextQID() string {
	g.qid++
	if g.qid%3 == 0 { // long queue IDs on some hosts
		return fmt.Sprintf("4Q%08dzB%04X", g.qid, g.qid&0xffff)
	}
	return fmt.Sprintf("%010X", 0xB81000000+g.qid)
}

func (g *gen) goodClient() string {
	if g.r.IntN(4) == 0 {
		return fmt.Sprintf("2001:db8:1::%x", g.r.IntN(4096))
	}
	return fmt.Sprintf("198.51.100.%d", g.r.IntN(256))
}

func (g *gen) badClient() string {
	if g.r.IntN(4) == 0 {
		return fmt.Sprintf("2001:db8:bad::%x", g.r.IntN(2048))
	}
	return fmt.Sprintf("203.0.113.%d", g.r.IntN(256))
}

// session writes one SMTP session: mostly ordinary mail, sometimes abuse.
func (g *gen) session() {
	host := hosts[g.r.IntN(len(hosts))]
	inst := "postfix"
	if g.r.IntN(5) == 0 {
		inst = "postfix-out"
	}
	smtpd, cleanup, qmgr := inst+"/smtpd", inst+"/cleanup", inst+"/qmgr"
	switch k := g.r.IntN(100); {
	case k < 70: // ordinary delivery
		c := g.goodClient()
		qid := g.nextQID()
		g.line(host, "postfix/postscreen", "CONNECT from [%s]:%d to [192.0.2.25]:25", c, 1024+g.r.IntN(60000))
		g.line(host, "postfix/postscreen", "PASS OLD [%s]:%d", c, 1024+g.r.IntN(60000))
		g.line(host, smtpd, "connect from mail.example.net[%s]", c)
		g.line(host, smtpd, "%s: client=mail.example.net[%s]", qid, c)
		g.line(host, cleanup, "%s: message-id=<%d.%s@example.net>", qid, g.r.Uint32(), qid)
		g.line(host, qmgr, "%s: from=<news@example.net>, size=%d, nrcpt=1 (queue active)", qid, 1000+g.r.IntN(90000))
		g.line(host, inst+"/lmtp", "%s: to=<user%d@example.test>, relay=mailbox.example.test[192.0.2.30]:24, delay=0.3, delays=0.1/0/0/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)", qid, g.r.IntN(500))
		g.line(host, qmgr, "%s: removed", qid)
		g.line(host, smtpd, "disconnect from mail.example.net[%s] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7", c)
		if g.r.IntN(3) == 0 {
			g.line(host, "dovecot", "imap-login: Login: user=<user%d>, method=PLAIN, rip=192.0.2.40, lip=192.0.2.25, mpid=%d, TLS", g.r.IntN(500), g.r.IntN(99999))
		}
	case k < 76: // worm header/body check with decoys
		c := g.badClient()
		qid := g.nextQID()
		g.line(host, smtpd, "connect from unknown[%s]", c)
		g.line(host, smtpd, "%s: client=unknown[%s]", qid, c)
		if g.r.IntN(2) == 0 {
			g.line(host, cleanup, "%s: reject: header Subject: Re: Movie from unknown[192.0.2.96]; from unknown[%s]"+tail+": 5.7.1 the email subject is identical to the one produced by W32-SoBig worm", qid, c, "a@worm.example", "x[192.0.2.97]")
		} else {
			g.line(host, cleanup, `%s: reject: header Content-Type: application/octet-stream; name="x from unknown[192.0.2.99]; .scr" from unknown[%s]`+tail+": 5.7.1 Email rejected, an attachment with .scr extension detected.", qid, c, `"x]; from unknown[192.0.2.98]; from=<"@worm.example`, "vm")
		}
		g.line(host, smtpd, "disconnect from unknown[%s] ehlo=1 mail=1 rcpt=1 data=0/1 quit=1 commands=4/5", c)
	case k < 80: // an AV notification: "virus" only in the Subject
		c := g.goodClient()
		qid := g.nextQID()
		g.line(host, smtpd, "%s: client=av.example.net[%s]", qid, c)
		g.line(host, cleanup, "%s: reject: header Subject: Your mail server sent us a virus from av.example.net[%s]"+tail+": 5.7.1 Notifications not wanted", qid, c, "av@example.net", "av.example.net")
	case k < 86: // DNSBL rejects (smtpd and postscreen)
		c := g.badClient()
		if g.r.IntN(2) == 0 {
			g.line(host, smtpd, "NOQUEUE: reject: RCPT from unknown[%s]: 554 5.7.1 Service unavailable; Client host [%s] blocked using zen.example.org"+tail, c, c, "spam@bot.example", "bot")
		} else {
			g.line(host, "postfix/postscreen", "DNSBL rank 3 for [%s]:%d", c, 1024+g.r.IntN(60000))
			g.line(host, "postfix/postscreen", "NOQUEUE: reject: RCPT from [%s]:%d: 550 5.7.1 Service unavailable; client [%s] blocked using zen.example.org; from=<spam@bot.example>, to=<u@example.test>, proto=ESMTP, helo=<bot>", c, 1024+g.r.IntN(60000), c)
		}
	case k < 90: // relay probes, unknown users
		c := g.badClient()
		g.line(host, smtpd, "NOQUEUE: reject: RCPT from unknown[%s]: 454 4.7.1 <victim@[192.0.2.1]>: Relay access denied"+tail, c, "probe@[192.0.2.2]", "[192.0.2.3]")
		g.line(host, smtpd, "NOQUEUE: reject: RCPT from unknown[%s]: 550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in local recipient table"+tail, g.goodClient(), "x@example.net", "x")
	case k < 96: // SASL guessing
		c := g.badClient()
		g.line(host, inst+"/submission/smtpd", "connect from unknown[%s]", c)
		g.line(host, inst+"/submission/smtpd", "warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", c)
		g.line(host, inst+"/submission/smtpd", "lost connection after AUTH from unknown[%s]", c)
		g.line(host, inst+"/submission/smtpd", "disconnect from unknown[%s] ehlo=1 auth=0/1 commands=1/2", c)
	default: // postscreen pregreet and hangups
		c := g.badClient()
		g.line(host, "postfix/postscreen", "CONNECT from [%s]:%d to [192.0.2.25]:25", c, 1024+g.r.IntN(60000))
		g.line(host, "postfix/postscreen", "PREGREET 11 after 0.1 from [%s]:%d: EHLO [192.0.2.7]\\r\\n", c, 1024+g.r.IntN(60000))
		g.line(host, "postfix/postscreen", "HANGUP after 0.5 from [%s]:%d in tests before SMTP handshake", c, 1024+g.r.IntN(60000))
		g.line(host, "postfix/postscreen", "DISCONNECT [%s]:%d", c, 1024+g.r.IntN(60000))
	}
}
