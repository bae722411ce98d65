package main

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// sendTCPFrom sends payload over TCP from the local address src.
func sendTCPFrom(t *testing.T, ns *nftest.NS, src, addr string, payload []byte) {
	t.Helper()
	c, err := ns.DialFrom(t.Context(), "tcp", src, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
}

// TestServeSenderIdentity: in a namespace with two MX hosts as syslog
// senders (192.0.2.25 and 192.0.2.26, both named in allowed_senders), an MX
// that has not sent a line yet is never banned when the other logs it as
// a client, and a reject whose HOSTNAME is forged or missing is never
// attributed through another MX's client= record.
func TestServeSenderIdentity(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	// The MX hosts live in a namespace of their own: addresses of the
	// gateway itself are never-block anyway.
	ns := nftest.NewNS(t)
	mxs := nftest.NewNS(t)
	nftest.Link(t, ns, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")},
		mxs, []netip.Prefix{netip.MustParsePrefix("192.0.2.25/24"), netip.MustParsePrefix("192.0.2.26/24")})
	cfg := stateDirConfig(t)
	appendFile(t, cfg, `receiver:
  udp_listen: []
  tcp_listen: ["192.0.2.1:514"]
  allowed_senders: [192.0.2.25/32, 192.0.2.26/32]
`)
	d := startDaemon(t, ns, "--config", cfg)
	const syslogAddr = "192.0.2.1:514"
	const mx1, mx2 = "192.0.2.25", "192.0.2.26"

	// mx1 logs mx2 (which has said nothing yet) as a worm client, and a
	// real worm as the control.
	lines := append(pairLines(traditional, "AB20000001", mx2), pairLines(traditional, "AB20000002", "203.0.113.40")...)
	sendTCPFrom(t, mxs, mx1, syslogAddr, lfFrames(lines))
	waitKernel(t, ns, "203.0.113.40")

	// mx1 records a client; mx2 sends the reject for the same queue ID,
	// once claiming to be mx1 and once with no HOSTNAME at all.
	p := rejectPair("AB20000003", "203.0.113.41")
	sendTCPFrom(t, mxs, mx1, syslogAddr, lfFrames([]string{traditional("postfix/smtpd", 5320, p[0])}))
	time.Sleep(100 * time.Millisecond)
	forged := traditional("postfix/cleanup", 5325, p[1])
	noHost := "<22>" + time.Now().Format(time.Stamp) + " postfix/cleanup[5325]: " + p[1]
	sendTCPFrom(t, mxs, mx2, syslogAddr, lfFrames([]string{forged, noHost}))
	// The same reject from mx1 itself is attributed: the pipeline works.
	sendTCPFrom(t, mxs, mx1, syslogAddr, lfFrames(pairLines(traditional, "AB20000004", "203.0.113.42")))
	waitKernel(t, ns, "203.0.113.42")

	got := kernelAddrs(t, ns)
	if diff := cmpStrings([]string{"203.0.113.40", "203.0.113.42"}, got); diff != "" {
		t.Errorf("kernel bans (-want +got):\n%s", diff)
	}
	c := d.counters(t)
	if n := c["wormgate_bans_refused_total{reason=never_block}"]; n < 1 {
		t.Errorf("never_block refusals = %v, want the MX host's", n)
	}
	if n := c["wormgate_events_unattributed_total{kind=cleanup_reject}"]; n < 2 {
		t.Errorf("unattributed cleanup rejects = %v, want the forged and the nameless one", n)
	}
}

func appendFile(t *testing.T, path, body string) { appendFileTB(t, path, body) }

func appendFileTB(t testing.TB, path, body string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(b)+body)
}
