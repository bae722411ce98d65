package matcher

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/receiver/syslog"
)

// contentRules are the default rules for cleanup events only, so that the
// tests of other kinds see only their own test rules.
func contentRules() []Rule {
	var rules []Rule
	for _, r := range DefaultConfig().Rules {
		if r.Name == "worm-signature" || r.Name == "executable-attachment" {
			rules = append(rules, r)
		}
	}
	return rules
}

// testConfig is the default content rules plus one rule per other kind.
func testConfig() Config {
	cfg := Config{Rules: contentRules(), ReinjectionSources: DefaultReinjectionSources()}
	re := func(s string) *Regexp { r := MustRegexp(s); return &r }
	cfg.Rules = append(cfg.Rules,
		Rule{Name: "relay-denied", Kinds: []Kind{KindSMTPDReject}, Pattern: MustRegexp(`Relay access denied`)},
		Rule{Name: "dnsbl", Kinds: []Kind{KindSMTPDReject}, Program: re(`^postfix/postscreen$`), Pattern: MustRegexp(`blocked using`)},
		Rule{Name: "submission", Kinds: []Kind{KindSMTPDReject}, Program: re(`/submission/`), Pattern: MustRegexp(`.`)},
		Rule{Name: "sasl", Kinds: []Kind{KindSASLFailed}, Pattern: MustRegexp(`authentication failed`)},
		Rule{Name: "milter", Kinds: []Kind{KindMilterReject}, Pattern: MustRegexp(`5\.7\.1`)},
		Rule{Name: "held", Kinds: []Kind{KindCleanupHold}, Pattern: MustRegexp(`.`)},
		Rule{Name: "warned", Kinds: []Kind{KindCleanupWarning}, Program: re(`^postfix/cleanup$`), Pattern: MustRegexp(`.`)},
	)
	return cfg
}

type verdict struct {
	Addr, Rule string
	Kind       Kind
	QueueID    string
}

type line struct{ host, program, text string }

const (
	smtpd   = "postfix/smtpd"
	cleanup = "postfix/cleanup"
	tail    = `; from=<a@worm.example> to=<postmaster@mx.example.test> proto=ESMTP helo=<vm>`
)

func mx(program, text string) line { return line{"mx", program, text} }

func TestMatch(t *testing.T) {
	tests := []struct {
		name             string
		lines            []line
		want             []verdict
		wantUnattributed map[Kind]uint64
	}{
		{
			name: "subject decoy before the real address",
			lines: []line{
				mx(smtpd, "28396B81E1: client=unknown[203.0.113.66]"),
				mx(cleanup, "28396B81E1: reject: header Subject: Re: Movie from unknown[192.0.2.96]; from unknown[203.0.113.66]"+tail+": 5.7.1 the email subject is identical to the one produced by W32-SoBig worm"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "28396B81E1"}},
		},
		{
			name: "attachment name decoy",
			lines: []line{
				mx(smtpd, "D4101B81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, `D4101B81BD: reject: header Content-Type: application/octet-stream; name="x from unknown[192.0.2.99]; .scr" from unknown[203.0.113.66]`+tail+": 5.7.1 Email rejected, an attachment with .scr extension detected."),
			},
			want: []verdict{{"203.0.113.66", "executable-attachment", KindCleanupReject, "D4101B81BD"}},
		},
		{
			name: "MAIL FROM decoy after the real address",
			lines: []line{
				mx(smtpd, "E5221B81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, `E5221B81BD: reject: header Subject: Re: Approved from unknown[203.0.113.66]; from=<"x]; from unknown[192.0.2.98]; from=<"@worm.example> to=<postmaster@mx.example.test> proto=ESMTP helo=<vm>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus`),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "E5221B81BD"}},
		},
		{
			name: "HELO decoy",
			lines: []line{
				mx(smtpd, "02051B81E1: client=unknown[203.0.113.66]"),
				mx(cleanup, "02051B81E1: reject: header Subject: Re: Approved from unknown[203.0.113.66]; from=<a@worm.example> to=<postmaster@mx.example.test> proto=ESMTP helo=<x[192.0.2.97]>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "02051B81E1"}},
		},
		{
			name: "cleanup reject without client record is unattributed",
			lines: []line{
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			wantUnattributed: map[Kind]uint64{KindCleanupReject: 1},
		},
		{
			name: "client record from another host with the same queue ID",
			lines: []line{
				{"mx2", smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"},
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			wantUnattributed: map[Kind]uint64{KindCleanupReject: 1},
		},
		{
			name: "client record from another Postfix instance with the same queue ID",
			lines: []line{
				mx("postfix-out/smtpd", "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			wantUnattributed: map[Kind]uint64{KindCleanupReject: 1},
		},
		{
			name: "secondary instance correlates with itself",
			lines: []line{
				mx("postfix-in/smtpd", "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx("postfix-in/cleanup", "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "C31CFB81BD"}},
		},
		{
			name: "submission service correlates with the instance's cleanup",
			lines: []line{
				mx("postfix/submission/smtpd", "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: discard: body W32 payload from unknown[203.0.113.66]"+tail+": W32 worm"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupDiscard, "C31CFB81BD"}},
		},
		{
			name: "orig_client from content filter re-injection",
			lines: []line{
				mx(smtpd, "A1B2C3D4E5: client=localhost[127.0.0.1], orig_queue_id=C31CFB81BD, orig_client=unknown[203.0.113.66]"),
				mx(cleanup, "A1B2C3D4E5: reject: body x from localhost[127.0.0.1]"+tail+": 5.7.1 W32.Mydoom worm"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "A1B2C3D4E5"}},
		},
		{
			name: "orig_client after SASL fields, with ports",
			lines: []line{
				mx(smtpd, "A1B2C3D4E5: client=localhost[::1]:10025, sasl_method=PLAIN, sasl_username=u@example.test, orig_queue_id=C31CFB81BD, orig_client=host.example.net[2001:db8:66::66]:40000"),
				mx(cleanup, "A1B2C3D4E5: reject: body x from localhost[::1]"+tail+": 5.7.1 W32.Mydoom worm"),
			},
			want: []verdict{{"2001:db8:66::66", "worm-signature", KindCleanupReject, "A1B2C3D4E5"}},
		},
		{
			name: "orig_client from a client that is not a re-injection source is ignored",
			lines: []line{
				mx(smtpd, "A1B2C3D4E5: client=unknown[203.0.113.66], orig_client=unknown[192.0.2.1] junk"),
				mx(cleanup, "A1B2C3D4E5: reject: body x from unknown[203.0.113.66]"+tail+": 5.7.1 W32.Mydoom worm"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "A1B2C3D4E5"}},
		},
		{
			name: "SASL fields without orig_client",
			lines: []line{
				mx(smtpd, "A1B2C3D4E5: client=unknown[203.0.113.66], sasl_method=LOGIN, sasl_username=x[192.0.2.1]"),
				mx(cleanup, "A1B2C3D4E5: reject: body x from unknown[203.0.113.66]"+tail+": 5.7.1 W32.Mydoom worm"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "A1B2C3D4E5"}},
		},
		{
			name: "client port logging",
			lines: []line{
				mx(smtpd, "D4101B81BD: client=unknown[203.0.113.66]:41234"),
				mx(cleanup, "D4101B81BD: reject: header Content-Disposition: attachment; filename=a.pif from unknown[203.0.113.66]:41234"+tail+": 5.7.1 Email rejected, an attachment with .pif extension detected."),
			},
			want: []verdict{{"203.0.113.66", "executable-attachment", KindCleanupReject, "D4101B81BD"}},
		},
		{
			name: "long queue IDs",
			lines: []line{
				mx(smtpd, "4Q2Yh85FCfzB5sw: client=mail.worm.example[2001:db8:66::66]"),
				mx(cleanup, "4Q2Yh85FCfzB5sw: reject: header Subject: Re: Details from mail.worm.example[2001:db8:66::66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			want: []verdict{{"2001:db8:66::66", "worm-signature", KindCleanupReject, "4Q2Yh85FCfzB5sw"}},
		},
		{
			name: "IPv4-mapped client",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[::ffff:203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[::ffff:203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "C31CFB81BD"}},
		},
		{
			name: "queue ID reuse: the later client wins",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[198.51.100.7]"),
				mx("postfix/qmgr", "C31CFB81BD: removed"),
				mx(smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "C31CFB81BD"}},
		},
		{
			name: "queue ID reuse without removed line",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[198.51.100.7]"),
				mx(smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			want: []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "C31CFB81BD"}},
		},
		{
			name: "removed forgets the client",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[198.51.100.7]"),
				mx("postfix/qmgr", "C31CFB81BD: removed"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			wantUnattributed: map[Kind]uint64{KindCleanupReject: 1},
		},
		{
			name: "unusable client record clears the reused queue ID",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[198.51.100.7]"),
				mx(smtpd, "C31CFB81BD: client=unknown[unknown]"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[unknown]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			wantUnattributed: map[Kind]uint64{KindCleanupReject: 1},
		},
		{
			name: "a reject ends the message: a second event is unattributed",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Re: Details from unknown[203.0.113.66]"+tail+": 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"),
			},
			want:             []verdict{{"203.0.113.66", "worm-signature", KindCleanupReject, "C31CFB81BD"}},
			wantUnattributed: map[Kind]uint64{KindCleanupReject: 1},
		},
		{
			name: "hold and warning keep the record for a later reject",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: warning: header X-Mailer: x from unknown[203.0.113.66]"+tail+": odd mailer"),
				mx(cleanup, "C31CFB81BD: hold: header X-Spam: yes from unknown[203.0.113.66]"+tail),
				mx(cleanup, "C31CFB81BD: reject: body worm from unknown[203.0.113.66]"+tail+": 5.7.1 W32.Netsky worm"),
			},
			want: []verdict{
				{"203.0.113.66", "warned", KindCleanupWarning, "C31CFB81BD"},
				{"203.0.113.66", "held", KindCleanupHold, "C31CFB81BD"},
				{"203.0.113.66", "worm-signature", KindCleanupReject, "C31CFB81BD"},
			},
		},
		{
			name: "one event, several rules",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: reject: header Content-Type: x; name=a.exe from unknown[203.0.113.66]"+tail+": 5.7.1 W32 worm, an attachment with .exe extension detected"),
			},
			want: []verdict{
				{"203.0.113.66", "worm-signature", KindCleanupReject, "C31CFB81BD"},
				{"203.0.113.66", "executable-attachment", KindCleanupReject, "C31CFB81BD"},
			},
		},
		{
			name: "worm words in the Subject do not select the worm rule",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=mail.av.example[198.51.100.9]"),
				mx(cleanup, "C31CFB81BD: reject: header Subject: Your mail server sent us a virus from mail.av.example[198.51.100.9]"+tail+": 5.7.1 Thanks, but no thanks - your notifications cause more problems then they solve."),
				mx(smtpd, "D4101B81BD: client=mail.av.example[198.51.100.9]"),
				mx(cleanup, "D4101B81BD: reject: header Subject: W32 worm, attachment with .exe extension from mail.av.example[198.51.100.9]"+tail+": 5.7.1 Message content rejected"),
			},
		},
		{
			name: "milter reject in cleanup uses the client record, not the line",
			lines: []line{
				mx(smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"),
				mx(cleanup, "C31CFB81BD: milter-reject: END-OF-MESSAGE from unknown[192.0.2.5]: 5.7.1 Spam detected"+tail),
			},
			want: []verdict{{"203.0.113.66", "milter", KindMilterReject, "C31CFB81BD"}},
		},
		{
			name: "milter reject in smtpd is anchored",
			lines: []line{
				mx(smtpd, "NOQUEUE: milter-reject: RCPT from unknown[203.0.113.66]: 550 5.7.1 Command rejected; from=<x[192.0.2.1]> to=<b@mx.example.test> proto=ESMTP helo=<vm>"),
			},
			want: []verdict{{"203.0.113.66", "milter", KindMilterReject, ""}},
		},
		{
			name: "default rules ignore relay denied",
			lines: []line{
				mx(smtpd, "NOQUEUE: reject: RCPT from unknown[203.0.113.66]: 454 4.7.1 <victim@other.example>: Relay access denied; from=<a@worm.example> to=<victim@other.example> proto=ESMTP helo=<vm>"),
			},
			want: []verdict{{"203.0.113.66", "relay-denied", KindSMTPDReject, ""}},
		},
		{
			name: "smtpd reject with port, queue ID and decoys",
			lines: []line{
				mx(smtpd, "C31CFB81BD: reject: RCPT from unknown[203.0.113.66]:4321: 454 4.7.1 <v@x[192.0.2.1]>: Relay access denied; from=<[192.0.2.2]> to=<v@x[192.0.2.1]> proto=ESMTP helo=<[192.0.2.3]>"),
			},
			want: []verdict{{"203.0.113.66", "relay-denied", KindSMTPDReject, "C31CFB81BD"}},
		},
		{
			name: "smtpd reject over IPv6 with a host name",
			lines: []line{
				mx(smtpd, "NOQUEUE: reject: RCPT from mail.worm.example[2001:db8:66::66]: 454 4.7.1 <v@other.example>: Relay access denied; from=<a@worm.example> to=<v@other.example> proto=ESMTP helo=<vm>"),
			},
			want: []verdict{{"2001:db8:66::66", "relay-denied", KindSMTPDReject, ""}},
		},
		{
			name: "smtpd reject from the submission service",
			lines: []line{
				mx("postfix/submission/smtpd", "NOQUEUE: reject: MAIL from unknown[203.0.113.66]: 553 5.7.1 <a@x>: Sender address rejected; proto=ESMTP helo=<vm>"),
			},
			want: []verdict{{"203.0.113.66", "submission", KindSMTPDReject, ""}},
		},
		{
			name: "postscreen reject without a name",
			lines: []line{
				mx("postfix/postscreen", "NOQUEUE: reject: RCPT from [203.0.113.66]:54321: 550 5.7.1 Service unavailable; client [203.0.113.66] blocked using zen.example; from=<a@[192.0.2.1]>, to=<b@mx.example.test>, proto=ESMTP, helo=<vm>"),
			},
			want: []verdict{{"203.0.113.66", "dnsbl", KindSMTPDReject, ""}},
		},
		{
			name: "SASL failure",
			lines: []line{
				mx(smtpd, "warning: unknown[203.0.113.66]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"),
			},
			want: []verdict{{"203.0.113.66", "sasl", KindSASLFailed, ""}},
		},
		{
			name: "SASL failure with port over IPv6",
			lines: []line{
				mx("postfix/submission/smtpd", "warning: host.worm.example[2001:db8:66::66]:50000: SASL CRAM-MD5 authentication failed: authentication failure, sasl_username=x[192.0.2.1]"),
			},
			want: []verdict{{"2001:db8:66::66", "sasl", KindSASLFailed, ""}},
		},
		{
			name: "unanchored addresses are never read",
			lines: []line{
				mx(smtpd, "warning: SASL authentication failure: Password verification failed for [192.0.2.1]"),
				mx(smtpd, "warning: hostname x does not resolve to address 192.0.2.1: authentication failed"),
				mx(smtpd, "connect from unknown[192.0.2.1]"),
				mx(smtpd, "lost connection after AUTH from unknown[192.0.2.1]"),
				mx(smtpd, "NOQUEUE: client=unknown[192.0.2.1]"),
				mx(smtpd, "NOQUEUE: reject: RCPT from x y[192.0.2.1]: Relay access denied"),
				mx(cleanup, "C31CFB81BD: message-id=<x@[192.0.2.1]>"),
			},
		},
		{
			name: "non-Postfix programs are ignored",
			lines: []line{
				mx("exim", "C31CFB81BD: client=unknown[192.0.2.1]"),
				mx("sendmail/smtpd", "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 454 4.7.1 Relay access denied"),
				mx("mypostfix/smtpd", "warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x"),
				mx("postfix", "warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x"),
				mx("sendmail/cleanup", "C31CFB81BD: reject: body W32 from x: 5.7.1 W32 worm"),
			},
			wantUnattributed: map[Kind]uint64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(t, testConfig())
			var offs []Offense
			for _, l := range tt.lines {
				msg := msgAt(l.program, l.text)
				msg.Host = l.host
				offs = m.Match(offs, msg)
			}
			var got []verdict
			for _, o := range offs {
				if o.Host != "mx" || !o.Time.Equal(msgAt("", "").Time) {
					t.Errorf("offense %+v: host or time not from the message", o)
				}
				got = append(got, verdict{o.Addr.String(), o.Rule, o.Kind, o.QueueID})
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("offenses (-want +got):\n%s", diff)
			}
			st := m.Stats()
			gotUn := map[Kind]uint64{}
			for k, n := range st.Unattributed {
				if n != 0 {
					gotUn[k] = n
				}
			}
			if diff := cmp.Diff(tt.wantUnattributed, gotUn, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Stats.Unattributed (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMatchNoAllocs guards the common path: lines that are no event must not
// allocate.
func TestMatchNoAllocs(t *testing.T) {
	m := newMatcher(t, DefaultConfig())
	msgs := []syslog.Message{
		msgAt("postfix/smtpd", "connect from unknown[203.0.113.66]"),
		msgAt("postfix/smtpd", "disconnect from unknown[203.0.113.66] ehlo=1 mail=1 rcpt=1 data=0/1 quit=1 commands=4/5"),
		msgAt("postfix/cleanup", "C31CFB81BD: message-id=<20261126181913.005326@vm>"),
		msgAt("postfix/qmgr", "C31CFB81BD: from=<a@worm.example>, size=1234, nrcpt=1 (queue active)"),
		msgAt("postfix/smtp", "C31CFB81BD: to=<b@example.test>, relay=x[198.51.100.1]:25, delay=1, status=sent (250 ok)"),
		msgAt("dovecot", "imap-login: Login: user=<u>"),
	}
	var dst []Offense
	allocs := testing.AllocsPerRun(100, func() {
		for _, msg := range msgs {
			dst = m.Match(dst[:0], msg)
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %.1f times per round of non-event lines, want 0", allocs)
	}
}
