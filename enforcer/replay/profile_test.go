package replay

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// profileConfig is the configuration `wormgate check` runs with
// `matcher.profile: p` and nothing else set.
func profileConfig(p matcher.Profile) Config {
	mc := matcher.DefaultConfig()
	mc.Profile, mc.Rules = p, nil
	mc = mc.Resolved()
	rules := make(map[string]policy.RulePolicy)
	for _, r := range mc.Rules {
		rules[r.Name] = policy.RulePolicy{Threshold: r.Threshold, Window: r.Window, BanFor: r.BanFor, DryRun: r.DryRun, Evidence: r.Evidence}
	}
	return Config{Matcher: mc, Policy: policy.DefaultConfig(), Rules: rules}
}

// corpus generates a mail log of several MX hosts: ordinary sessions,
// ordinary clients that cause each abuse record now and then (fewer than
// any threshold within its window), abusers of every class (repeats
// within the window), and decoy addresses in 192.0.2.0/24 in every field
// a client writes. It is deterministic: the same seed, the same log.
type corpus struct {
	r      *rand.Rand
	t0     time.Time
	lines  []stamped
	qid    int
	pid    int
	nAddrs [3]int
	// abusers are the clients the aggressive profile must ban;
	// classic the subset that the default profile bans too.
	abusers, classic map[netip.Addr]string
}

type stamped struct {
	t    time.Time
	seq  int
	text string
}

func newCorpus(seed uint64) *corpus {
	return &corpus{
		r:       rand.New(rand.NewPCG(seed, 12)),
		t0:      time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC),
		abusers: make(map[netip.Addr]string),
		classic: make(map[netip.Addr]string),
	}
}

var corpusHosts = []string{"mx1", "mx2", "mx3"}

// session starts a new SMTP session: its lines carry one process ID,
// which smtpd's records of a session share.
func (c *corpus) session() { c.pid = 1000 + c.r.IntN(30000) }

// emit adds one line of prog at t on host, from the current session's
// process.
func (c *corpus) emit(t time.Time, host, prog, format string, args ...any) {
	text := fmt.Sprintf("%s %s %s[%d]: %s", t.Format("2006-01-02T15:04:05.000000-07:00"), host, prog, c.pid, fmt.Sprintf(format, args...))
	c.lines = append(c.lines, stamped{t: t, seq: len(c.lines), text: text})
}

// addr returns the next address of a group of clients (index 0:
// ordinary senders, 1: ordinary clients that glitch, 2: abusers), IPv6
// for every third. Abusers and glitching clients never share one.
func (c *corpus) addr(group int) netip.Addr {
	c.nAddrs[group]++
	n := c.nAddrs[group]
	if n%3 == 0 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(group), 14: byte(n >> 8), 15: byte(n)})
	}
	if group == 2 {
		return netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + n%250)})
	}
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + n%250)})
}

func (c *corpus) host() string { return corpusHosts[c.r.IntN(len(corpusHosts))] }

func (c *corpus) decoy() string { return fmt.Sprintf("192.0.2.%d", 1+c.r.IntN(254)) }

// namaddr is smtpd's NAMADDR for a, with a port for some clients.
func (c *corpus) namaddr(a netip.Addr) string {
	s := "unknown[" + a.String() + "]"
	if c.r.IntN(2) == 0 {
		s += fmt.Sprintf(":%d", 1024+c.r.IntN(60000))
	}
	return s
}

func psAddr(a netip.Addr, port int) string { return fmt.Sprintf("[%s]:%d", a, port) }

// delivery is an ordinary accepted message from a on host at t.
func (c *corpus) delivery(t time.Time, host string, a netip.Addr) {
	c.session()
	c.qid++
	qid := fmt.Sprintf("%010X", 0x3A00000000+c.qid)
	na := c.namaddr(a)
	c.emit(t, host, "postfix/smtpd", "connect from %s", na)
	c.emit(t.Add(10*time.Millisecond), host, "postfix/smtpd", "%s: client=%s", qid, na)
	c.emit(t.Add(20*time.Millisecond), host, "postfix/cleanup", "%s: message-id=<%d@sender.example>", qid, c.qid)
	c.emit(t.Add(30*time.Millisecond), host, "postfix/qmgr", "%s: from=<news@sender.example>, size=%d, nrcpt=1 (queue active)", qid, 1000+c.r.IntN(50000))
	c.emit(t.Add(40*time.Millisecond), host, "postfix/smtpd", "disconnect from %s ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", na)
	c.emit(t.Add(90*time.Millisecond), host, "postfix/local", "%s: to=<u@example.test>, relay=local, delay=0.1, status=sent (delivered to mailbox)", qid)
	c.emit(t.Add(95*time.Millisecond), host, "postfix/qmgr", "%s: removed", qid)
}

// class is one abuse class: the record one event writes, how many events
// an abuser needs within how long, and how many an ordinary client may
// cause within that long without a ban.
type class struct {
	name string
	// event writes one event of client a at t.
	event func(c *corpus, t time.Time, host string, a netip.Addr)
	// abuse is the events an abuser sends within span.
	abuse int
	span  time.Duration
	// glitch is the events an ordinary client causes, every gap.
	glitch int
	gap    time.Duration
	// classic: the default profile bans its abusers too.
	classic bool
}

var classes = []class{
	{
		name: "lost connection after CONNECT", abuse: 20, span: 5 * time.Minute, glitch: 30, gap: time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			na := c.namaddr(a)
			c.emit(t, host, "postfix/smtpd", "connect from %s", na)
			if c.r.IntN(2) == 0 { // Postfix 3.10 and later
				c.emit(t.Add(time.Millisecond), host, "postfix/smtpd", "NOQUEUE: lost connection after CONNECT from %s", na)
			} else {
				c.emit(t.Add(time.Millisecond), host, "postfix/smtpd", "lost connection after CONNECT from %s", na)
			}
			c.emit(t.Add(2*time.Millisecond), host, "postfix/smtpd", "disconnect from %s commands=0/0", na)
		},
	},
	{
		name: "lost connection after AUTH", abuse: 6, span: 5 * time.Minute, glitch: 6, gap: 10 * time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			na := c.namaddr(a)
			c.emit(t, host, "postfix/submission/smtpd", "lost connection after AUTH from %s", na)
			c.emit(t.Add(time.Millisecond), host, "postfix/submission/smtpd", "disconnect from %s ehlo=1 auth=0/1 commands=1/2", na)
		},
	},
	{
		name: "failed AUTH sessions", abuse: 6, span: 20 * time.Minute, glitch: 12, gap: 10 * time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			// AUTH on a port that does not offer it: no SASL record.
			c.emit(t, host, "postfix/smtpd", "disconnect from %s ehlo=1 auth=0/%d rset=1 quit=1 commands=3/%d", c.namaddr(a), 1+c.r.IntN(3), 6)
		},
	},
	{
		name: "unoffered SASL mechanism", abuse: 6, span: 5 * time.Minute, glitch: 6, gap: 5 * time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			c.emit(t, host, "postfix/submission/smtpd", "warning: %s: SASL CRAM-MD5 authentication failed: Invalid authentication mechanism, sasl_username=x@[%s]", c.namaddr(a), c.decoy())
		},
	},
	{
		name: "anvil rate limits", abuse: 4, span: 30 * time.Minute, glitch: 4, gap: 31 * time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			what := []string{"Connection rate", "Message delivery request rate", "Recipient address rate", "New TLS session rate", "AUTH command rate"}[c.r.IntN(5)]
			c.emit(t, host, "postfix/smtpd", "warning: %s limit exceeded: %d from %s for service smtp", what, 30+c.r.IntN(100), c.namaddr(a))
		},
	},
	{
		name: "improper pipelining", abuse: 4, span: 30 * time.Minute, glitch: 4, gap: 31 * time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			if c.r.IntN(2) == 0 {
				c.emit(t, host, "postfix/smtpd", "improper command pipelining after EHLO from %s: MAIL FROM:<a@[%s]>\\r\\nRCPT TO:<b@x> from unknown[%s]\\r\\n", c.namaddr(a), c.decoy(), c.decoy())
			} else {
				c.emit(t, host, "postfix/postscreen", "COMMAND PIPELINING from %s after EHLO: MAIL FROM:<a@[%s]>\\r\\n", psAddr(a, 1024+c.r.IntN(60000)), c.decoy())
			}
		},
	},
	{
		name: "non-SMTP commands", abuse: 3, span: 20 * time.Minute, glitch: 2, gap: 2 * time.Hour,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			if c.r.IntN(2) == 0 {
				c.emit(t, host, "postfix/smtpd", "warning: non-SMTP command from %s: GET /from unknown[%s]: HTTP/1.1", c.namaddr(a), c.decoy())
			} else {
				c.emit(t, host, "postfix/postscreen", "NON-SMTP COMMAND from %s after CONNECT: GET / HTTP/1.1 from [%s]:25", psAddr(a, 1024+c.r.IntN(60000)), c.decoy())
			}
		},
	},
	{
		name: "postscreen protocol tests", abuse: 4, span: 30 * time.Minute, glitch: 4, gap: 31 * time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			pa := psAddr(a, 1024+c.r.IntN(60000))
			switch c.r.IntN(4) {
			case 0:
				c.emit(t, host, "postfix/postscreen", "COMMAND TIME LIMIT from %s after CONNECT", pa)
			case 1:
				c.emit(t, host, "postfix/postscreen", "COMMAND COUNT LIMIT from %s after RCPT", pa)
			case 2:
				c.emit(t, host, "postfix/postscreen", "COMMAND LENGTH LIMIT from %s after UNIMPLEMENTED", pa)
			default:
				c.emit(t, host, "postfix/postscreen", "BARE NEWLINE from %s after EHLO [%s]:25", pa, c.decoy())
			}
		},
	},
	{
		name: "too many errors", abuse: 4, span: 30 * time.Minute, glitch: 4, gap: 31 * time.Minute,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			c.emit(t, host, "postfix/smtpd", "NOQUEUE: too many errors after RCPT from %s", c.namaddr(a))
		},
	},
	// The default profile's classes, which both profiles ban.
	{
		name: "password guessing", abuse: 6, span: 5 * time.Minute, glitch: 12, gap: 10 * time.Minute, classic: true,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			na := c.namaddr(a)
			c.emit(t, host, "postfix/submission/smtpd", "warning: %s: SASL LOGIN authentication failed: authentication failure, sasl_username=admin@[%s]", na, c.decoy())
			c.emit(t.Add(time.Millisecond), host, "postfix/submission/smtpd", "disconnect from %s ehlo=1 auth=0/1 quit=1 commands=2/3", na)
		},
	},
	{
		name: "worm", abuse: 1, span: time.Minute, classic: true,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			c.qid++
			qid := fmt.Sprintf("%010X", 0x3A00000000+c.qid)
			c.emit(t, host, "postfix/smtpd", "%s: client=%s", qid, c.namaddr(a))
			c.emit(t.Add(time.Millisecond), host, "postfix/cleanup", "%s: reject: header Subject: Re: Details from unknown[%s]; from unknown[%s]; from=<a@[%s]> to=<b@example.test> proto=ESMTP helo=<[%s]>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus",
				qid, c.decoy(), a, c.decoy(), c.decoy())
		},
	},
	{
		name: "pregreet", abuse: 1, span: time.Minute, classic: true,
		event: func(c *corpus, t time.Time, host string, a netip.Addr) {
			c.emit(t, host, "postfix/postscreen", "PREGREET 11 after 0.1 from %s: EHLO [%s]\\r\\n", psAddr(a, 1024+c.r.IntN(60000)), c.decoy())
		},
	},
}

// generate writes abusersPer abusers and glitchersPer ordinary clients of
// every class, busy relays over an anvil limit that are established
// senders, and ordinary deliveries, over three days.
func (c *corpus) generate(abusersPer, glitchersPer, deliveries int) string {
	const days = 3
	// Established relays: plenty of accepted mail over the days, and
	// over the rate limit again and again on the last day. The rate
	// limit is weak evidence, which never bans them.
	for range 3 {
		a := c.addr(0)
		for i := range 40 {
			c.delivery(c.t0.Add(time.Duration(i)*(days*24*time.Hour)/40), c.host(), a)
		}
		for i := range 6 {
			c.session()
			t := c.t0.Add((days*24-2)*time.Hour + time.Duration(i)*5*time.Minute)
			c.emit(t, c.host(), "postfix/smtpd", "warning: Message delivery request rate limit exceeded: %d from %s for service smtp", 60+i, c.namaddr(a))
		}
	}
	// The SASL backend down for ten minutes: the mail clients of
	// ordinary users retry every 30 seconds, and every session ends in a
	// failed AUTH that is the server's fault.
	down := c.t0.Add(30 * time.Hour)
	for range 20 {
		a, host := c.addr(1), c.host()
		for i := range 20 {
			c.session()
			t := down.Add(time.Duration(i) * 30 * time.Second)
			na := c.namaddr(a)
			c.emit(t, host, "postfix/submission/smtpd", "warning: %s: SASL PLAIN authentication failed: Connection lost to authentication server, sasl_username=user%d@example.test", na, i)
			c.emit(t.Add(time.Millisecond), host, "postfix/submission/smtpd", "disconnect from %s ehlo=2 starttls=1 auth=0/1 quit=1 commands=4/5", na)
		}
	}
	for range deliveries {
		c.delivery(c.t0.Add(time.Duration(c.r.Int64N(int64(days*24*time.Hour)))), c.host(), c.addr(0))
	}
	for _, cl := range classes {
		for range abusersPer {
			a := c.addr(2)
			c.abusers[a] = cl.name
			if cl.classic {
				c.classic[a] = cl.name
			}
			start := c.t0.Add(time.Duration(c.r.Int64N(int64((days - 1) * 24 * time.Hour))))
			for i := range cl.abuse {
				// Evenly within span, each MX host in turn: one
				// gateway protects them all.
				at := start.Add(cl.span * time.Duration(i) / time.Duration(cl.abuse))
				c.session()
				cl.event(c, at, corpusHosts[i%len(corpusHosts)], a)
			}
		}
		for range glitchersPer {
			a := c.addr(1)
			start := c.t0.Add(time.Duration(c.r.Int64N(int64((days - 1) * 24 * time.Hour))))
			for i := range cl.glitch {
				c.session()
				cl.event(c, start.Add(cl.gap*time.Duration(i)), c.host(), a)
			}
		}
	}
	slices.SortStableFunc(c.lines, func(a, b stamped) int {
		if n := a.t.Compare(b.t); n != 0 {
			return n
		}
		return a.seq - b.seq
	})
	var b strings.Builder
	for _, l := range c.lines {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestProfilesOnGeneratedCorpus: on a generated log with every abuse
// class, the aggressive profile bans every abuser and nobody else (no
// ordinary client, however often it glitched below a threshold, no
// established relay over a rate limit, no user retrying while the SASL
// backend is down, no decoy); the default profile bans exactly the
// abusers of its own classes.
func TestProfilesOnGeneratedCorpus(t *testing.T) {
	c := newCorpus(1)
	log := c.generate(8, 8, 3000)
	decoys := netip.MustParsePrefix("192.0.2.0/24")
	for _, tt := range []struct {
		profile matcher.Profile
		want    map[netip.Addr]string
	}{
		{matcher.ProfileAggressive, c.abusers},
		{matcher.ProfileDefault, c.classic},
	} {
		t.Run(string(tt.profile), func(t *testing.T) {
			r := replayAll(t, profileConfig(tt.profile), input{name: "generated", text: log, ref: c.t0})
			if n := r.Counts(); n.Unparsable != 0 || n.Lines != strings.Count(log, "\n") {
				t.Fatalf("counts %+v: want every one of %d lines parsed", n, strings.Count(log, "\n"))
			}
			got := make(map[netip.Addr]string)
			for _, b := range r.Bans() {
				if decoys.Contains(b.Addr) {
					t.Errorf("decoy %v banned by %s", b.Addr, b.Rule)
				}
				got[b.Addr] = b.Rule
			}
			// Which rule banned is shown by explain; here only who.
			wantAddrs := slices.Collect(maps.Keys(tt.want))
			gotAddrs := slices.Collect(maps.Keys(got))
			less := func(a, b netip.Addr) bool { return a.Less(b) }
			if diff := cmp.Diff(wantAddrs, gotAddrs, cmpopts.SortSlices(less), cmpAddrs); diff != "" {
				t.Errorf("banned addresses (-want +got):\n%s", diff)
				for _, a := range gotAddrs {
					if _, ok := tt.want[a]; !ok {
						t.Logf("wrongly banned %v by %s", a, got[a])
					}
				}
				for _, a := range wantAddrs {
					if _, ok := got[a]; !ok {
						t.Logf("missed abuser %v of %s", a, tt.want[a])
					}
				}
			}
		})
	}
}

// TestGeneratedCorpusDeterministic: the generator is a fixture, so the
// same seed must give the same log.
func TestGeneratedCorpusDeterministic(t *testing.T) {
	a, b := newCorpus(7).generate(2, 2, 50), newCorpus(7).generate(2, 2, 50)
	if a != b {
		t.Error("two logs generated from one seed differ")
	}
}
