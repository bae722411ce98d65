package main

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// sendUDPFrom sends datagrams from the local address src, on one socket.
func sendUDPFrom(t *testing.T, ns *nftest.NS, src, addr string, datagrams ...string) {
	t.Helper()
	c, err := ns.DialFrom(t.Context(), "udp", src, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeSyslogGuardForgedSource is the trust issue's forged-datagram
// attack in namespaces: worm side, gateway, MX side, with the gateway's
// rp_filter loose (2) as on many multi-homed Debian gateways. The worm
// side sends a client= and reject pair, over UDP and as TCP SYNs, with
// the MX's own source address. The kernel guard drops it (strict
// reverse-path check) and counts it; nobody is banned. The same pair from
// the real MX bans. IPv4 and IPv6 (which has no rp_filter at all).
func TestServeSyslogGuardForgedSource(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	gw, worm, mx := nftest.NewNS(t), nftest.NewNS(t), nftest.NewNS(t)
	p := netip.MustParsePrefix
	// The worm also holds the MX's addresses, as /32 and /128: that is
	// how it forges them, between namespaces this test made.
	nftest.Link(t, gw, []netip.Prefix{p("203.0.113.1/24"), p("2001:db8:66::1/64")},
		worm, []netip.Prefix{p("203.0.113.66/24"), p("2001:db8:66::66/64"), p("192.0.2.25/32"), p("2001:db8:25::25/128")})
	nftest.Link(t, gw, []netip.Prefix{p("192.0.2.1/24"), p("2001:db8:25::1/64")},
		mx, []netip.Prefix{p("192.0.2.25/24"), p("2001:db8:25::25/64")})
	worm.Run(t, "ip", "route", "add", "default", "via", "203.0.113.1")
	worm.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:66::1")
	mx.Run(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	mx.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:25::1")
	gw.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")

	cfg := stateDirConfig(t)
	appendFileTB(t, cfg, `receiver:
  udp_listen: ["192.0.2.1:514", "[2001:db8:25::1]:514"]
  tcp_listen: ["192.0.2.1:514", "[2001:db8:25::1]:514"]
  allowed_senders: [192.0.2.25/32, "2001:db8:25::25/128"]
`)
	d := startDaemon(t, gw, "--config", cfg)
	const rpf = `wormgate_syslog_guard_dropped_packets_total{reason=rpf}`

	for _, tc := range []struct {
		family, mxAddr, listen, forgedClient, realClient string
	}{
		{"ipv4", "192.0.2.25", "192.0.2.1:514", "203.0.113.90", "203.0.113.91"},
		{"ipv6", "2001:db8:25::25", "[2001:db8:25::1]:514", "2001:db8:90::90", "2001:db8:91::91"},
	} {
		t.Run(tc.family, func(t *testing.T) {
			before := d.counters(t)[rpf]
			sendUDPFrom(t, worm, tc.mxAddr, tc.listen, pairLines(traditional, "FA00000001", tc.forgedClient)...)
			dctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			c, err := worm.DialFrom(dctx, "tcp", tc.mxAddr, tc.listen)
			cancel()
			if err == nil {
				c.Close()
				t.Error("a forged TCP SYN got an answer")
			}
			// The real MX, afterwards: its pair bans, and it has had the
			// forged pair's chance to be processed.
			sendUDPFrom(t, mx, tc.mxAddr, tc.listen, pairLines(traditional, "FA00000002", tc.realClient)...)
			got := waitKernel(t, gw, tc.realClient)
			if slices.Contains(got, tc.forgedClient) {
				t.Errorf("the forged pair banned %s", tc.forgedClient)
			}
			if n := d.counters(t)[rpf] - before; n < 3 {
				t.Errorf("%s rose by %v, want the 2 forged datagrams and at least 1 SYN", rpf, n)
			}
		})
	}
	if strings.Contains(d.logText(), "FA00000001") {
		t.Error("a forged line reached wormgate")
	}
}
