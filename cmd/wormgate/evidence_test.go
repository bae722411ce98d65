package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The clients of the relay-safety acceptance test. Documentation
// addresses only.
const (
	relay      = "198.51.100.77"   // a provider's outbound relay: hundreds of messages a week
	relayWorm  = "2001:db8:77::77" // another established relay, relaying a named worm
	user       = "203.0.113.50"    // the site's own user, authenticated on submission
	decoyUser  = "203.0.113.67"    // unauthenticated, but its AUTH= text imitates a login
	newcomer   = "192.0.2.44"      // a few accepted messages on one day: not established
	directWorm = "203.0.113.66"    // a worm connecting directly
)

// relayLog generates a week of two MX hosts' Postfix 3.7 logs, as
// Debian's rsyslog writes them: two relays deliver a message every 20
// minutes each, which the MX accepts (client=, cleanup message-id=, qmgr
// from=... (queue active), smtp status=sent, qmgr removed); a newcomer
// delivers a few on the last day. At the end each client sends one
// message that header_checks reject. It returns the log and the number
// of messages accepted from relay.
func relayLog() (lines []string, relayAccepted int) {
	start := time.Date(2026, 11, 19, 8, 0, 0, 0, time.UTC)
	type block struct {
		at    time.Time
		lines []string
	}
	var blocks []block
	qid := 0xB81000000
	msg := func(at time.Time, host string, ls ...string) {
		qid++
		id := fmt.Sprintf("%010X", qid)
		b := block{at: at}
		for i, l := range ls {
			t := at.Add(time.Duration(i) * 50 * time.Millisecond).Format("2006-01-02T15:04:05.000000-07:00")
			b.lines = append(b.lines, t+" "+host+" "+strings.ReplaceAll(l, "QID", id))
		}
		blocks = append(blocks, b)
	}
	accepted := func(at time.Time, host, smtpd, client string) {
		addr := client[strings.IndexByte(client, '[')+1 : strings.IndexByte(client, ']')]
		msg(at, host,
			smtpd+"[2001]: connect from "+client,
			smtpd+"[2001]: QID: client="+client,
			"postfix/cleanup[2002]: QID: message-id=<QID@provider.example>",
			"postfix/qmgr[900]: QID: from=<newsletter@provider.example>, size=18234, nrcpt=1 (queue active)",
			"postfix/smtp[2003]: QID: to=<alice@example.test>, relay=mailbox.example.test[192.0.2.30]:25, delay=0.4, delays=0.1/0.01/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4Q2Yh85FCfzB5sw)",
			"postfix/qmgr[900]: QID: removed",
			smtpd+"[2001]: disconnect from "+client[:strings.IndexByte(client, '[')]+"["+addr+"] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
		)
	}
	rejected := func(at time.Time, host, smtpd, client, record, header, reply string) {
		msg(at, host,
			smtpd+"[2001]: QID: client="+record,
			"postfix/cleanup[2002]: QID: reject: header "+header+" from "+client+"; from=<x@sender.example> to=<alice@example.test> proto=ESMTP helo=<pc>: "+reply,
		)
	}
	const (
		exe  = "5.7.1 Email rejected, an attachment with .scr extension detected."
		worm = "5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus"
	)
	attachment := `Content-Type: application/octet-stream; name="invoice.scr"`
	hosts := []string{"mx1", "mx2"}
	week := 7 * 24 * time.Hour
	for i, at := 0, start; at.Before(start.Add(week)); i, at = i+1, at.Add(20*time.Minute) {
		accepted(at, hosts[i%2], "postfix/smtpd", "mail-out.provider.example["+relay+"]")
		relayAccepted++
		accepted(at.Add(7*time.Minute), hosts[(i+1)%2], "postfix/smtpd", "relay.partner.example["+relayWorm+"]")
	}
	end := start.Add(week)
	for i := range 5 {
		accepted(end.Add(-time.Duration(5-i)*time.Hour), "mx1", "postfix/smtpd", "unknown["+newcomer+"]")
	}
	rejected(end.Add(1*time.Minute), "mx1", "postfix/smtpd", "mail-out.provider.example["+relay+"]", "mail-out.provider.example["+relay+"]", attachment, exe)
	rejected(end.Add(2*time.Minute), "mx2", "postfix/submission/smtpd", "pc.example.test["+user+"]", "pc.example.test["+user+"], sasl_method=PLAIN, sasl_username=bob@example.test", attachment, exe)
	rejected(end.Add(3*time.Minute), "mx1", "postfix/smtpd", "unknown["+decoyUser+"]", `unknown[`+decoyUser+`], sasl_sender=", sasl_method=PLAIN, sasl_username=x"`, attachment, exe)
	rejected(end.Add(4*time.Minute), "mx1", "postfix/smtpd", "unknown["+newcomer+"]", "unknown["+newcomer+"]", attachment, exe)
	rejected(end.Add(5*time.Minute), "mx2", "postfix/smtpd", "relay.partner.example["+relayWorm+"]", "relay.partner.example["+relayWorm+"]", "Subject: Re: Approved", worm)
	rejected(end.Add(6*time.Minute), "mx2", "postfix/smtpd", "unknown["+directWorm+"]", "unknown["+directWorm+"]", "Subject: Re: Details", worm)

	slices.SortStableFunc(blocks, func(a, b block) int { return a.at.Compare(b.at) })
	for _, b := range blocks {
		lines = append(lines, b.lines...)
	}
	return lines, relayAccepted
}

// TestRelaySafety is the acceptance test of weak evidence: under the
// default configuration an established relay's and an authenticated
// user's executable attachment ban nobody, while the same reject from an
// untrusted client, and a named worm from anyone, bans on the first hit;
// --explain says why for each. With the attachment rule made strong the
// relay and the user are banned, which shows the log exercises the
// difference.
func TestRelaySafety(t *testing.T) {
	lines, nRelay := relayLog()
	if nRelay < 300 {
		t.Fatalf("generator: %d messages from the relay, want hundreds", nRelay)
	}
	dir := t.TempDir()
	log := writeLog(t, dir, "mail.log", lines, time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))

	type ban struct{ Addr, Rule string }
	bans := func(args ...string) ([]ban, string) {
		out, errOut := runCheck(t, "", append([]string{"--json"}, args...)...)
		var got []ban
		for _, b := range decodeBans(t, out) {
			got = append(got, ban{b.Addr, b.Rule})
		}
		slices.SortFunc(got, func(a, b ban) int { return strings.Compare(a.Addr, b.Addr) })
		return got, errOut
	}

	got, summary := bans(log)
	want := []ban{
		{newcomer, "executable-attachment"},
		{relayWorm, "worm-signature"},
		{directWorm, "worm-signature"},
		{decoyUser, "executable-attachment"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bans under the default config (-want +got):\n%s\nstderr: %s", diff, summary)
	}
	for _, s := range []string{
		"4 bans by rule: executable-attachment=2 worm-signature=2; 0 never-block, 0 dry-run, 2 trusted-client",
		"2 trusted-client offenses (weak evidence, not banned; 1 authenticated, 1 established) by rule: executable-attachment=2",
		fmt.Sprintf("%d accepted messages counted for 3 senders", 2*nRelay+5),
	} {
		if !strings.Contains(summary, s) {
			t.Errorf("summary lacks %q:\n%s", s, summary)
		}
	}

	// --explain, as text: why each client was or was not banned.
	since := "2026-11-19T08:00:00Z"
	for _, tt := range []struct {
		addr string
		want []string
	}{
		{relay, []string{
			relay + ": not banned; 1 offenses, 1 of them weak evidence against a trusted client\n",
			fmt.Sprintf("executable-attachment (cleanup_reject %s): trusted_client (established: %d accepted since %s): weak evidence does not ban it\n", qidOf(t, lines, relay, "reject:"), nRelay, since),
		}},
		{user, []string{
			user + ": not banned; 1 offenses, 1 of them weak evidence against a trusted client\n",
			fmt.Sprintf("executable-attachment (cleanup_reject %s): trusted_client (authenticated): weak evidence does not ban it\n", qidOf(t, lines, user, "reject:")),
		}},
		{decoyUser, []string{
			decoyUser + ": banned by executable-attachment at 2026-11-26T08:03:00Z until 2026-11-27T08:03:00Z; 1 offenses\n",
			"executable-attachment (cleanup_reject " + qidOf(t, lines, decoyUser, "reject:") + "): ban: threshold 1 within 1h0m0s reached",
		}},
		{newcomer, []string{
			newcomer + ": banned by executable-attachment at 2026-11-26T08:04:00Z",
			"): ban: threshold 1 within 1h0m0s reached",
		}},
		{relayWorm, []string{
			relayWorm + ": banned by worm-signature at 2026-11-26T08:05:00Z",
			"worm-signature (cleanup_reject " + qidOf(t, lines, relayWorm, "reject:") + "): ban: threshold 1 within 1h0m0s reached",
		}},
		{directWorm, []string{
			directWorm + ": banned by worm-signature at 2026-11-26T08:06:00Z until 2026-11-27T08:06:00Z; 1 offenses\n",
		}},
	} {
		out, _ := runCheck(t, "", "--explain", tt.addr, log)
		for _, s := range tt.want {
			if !strings.Contains(out, s) {
				t.Errorf("--explain %s lacks %q:\n%s", tt.addr, s, out)
			}
		}
	}

	// --explain --json carries the verdict and the reason.
	type hit struct {
		Rule    string `json:"rule"`
		Verdict string `json:"verdict"`
		Reason  string `json:"reason"`
	}
	explainJSON := func(addr string) []hit {
		out, _ := runCheck(t, "", "--explain", addr, "--json", log)
		var hits []hit
		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var h hit
			if err := dec.Decode(&h); err != nil {
				t.Fatalf("decode %q: %v", out, err)
			}
			hits = append(hits, h)
		}
		return hits
	}
	gotJSON := map[string][]hit{}
	for _, a := range []string{relay, user, decoyUser, directWorm} {
		gotJSON[a] = explainJSON(a)
	}
	wantJSON := map[string][]hit{
		relay:      {{"executable-attachment", "trusted_client", fmt.Sprintf("established: %d accepted since %s", nRelay, since)}},
		user:       {{"executable-attachment", "trusted_client", "authenticated"}},
		decoyUser:  {{"executable-attachment", "ban", ""}},
		directWorm: {{"worm-signature", "ban", ""}},
	}
	if diff := cmp.Diff(wantJSON, gotJSON); diff != "" {
		t.Errorf("--explain --json (-want +got):\n%s", diff)
	}

	// The same log with the attachment rule made strong bans the relay
	// and the user too: the log tells the two policies apart.
	strong := writeConfig(t, strings.Replace(string(defaultYAML), "      evidence: weak\n", "      evidence: strong\n", 1))
	got, summary = bans("--config", strong, log)
	want = append(want, ban{relay, "executable-attachment"}, ban{user, "executable-attachment"})
	slices.SortFunc(want, func(a, b ban) int { return strings.Compare(a.Addr, b.Addr) })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bans with evidence: strong (-want +got):\n%s\nstderr: %s", diff, summary)
	}
}

// qidOf returns the queue ID of the first line that mentions addr and
// has the word what.
func qidOf(t *testing.T, lines []string, addr, what string) string {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l, addr) && strings.Contains(l, what) {
			_, rest, _ := strings.Cut(l, "]: ")
			qid, _, _ := strings.Cut(rest, ":")
			return qid
		}
	}
	t.Fatalf("no line with %s and %q", addr, what)
	return ""
}
