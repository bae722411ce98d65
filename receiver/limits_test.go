package receiver

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/wormgate/wormgate/receiver/syslog"
)

// dialFrom connects from the loopback address src (Linux answers for all
// of 127.0.0.0/8), so that one test can be several senders.
func dialFrom(t *testing.T, src string, a net.Addr) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", a.String())
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

// TestSenderCannotTakeEverySlot: one sender opening 1,100 idle
// connections, plain and TLS, holds at most max_connections_per_sender of
// them; the rest are closed and counted, and a second sender still
// connects and delivers, over TCP and TLS.
func TestSenderCannotTakeEverySlot(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	out := make(chan syslog.Message, 4)
	h := start(t, out, func(c *Config) {
		c.TLSListen = []string{"127.0.0.1:0"}
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	})
	const flood = 1100
	per := DefaultConfig().MaxConnectionsPerSender
	// Each flood from its own address: the limit is per sender across
	// transports.
	for _, tc := range []struct {
		transport, flooder string
		addr               net.Addr
	}{{TransportTCP, "127.0.0.1", h.r.TCPAddrs()[0]}, {TransportTLS, "127.0.0.3", h.r.TLSAddrs()[0]}} {
		t.Run(tc.transport, func(t *testing.T) {
			for range flood {
				// Connecting succeeds (the kernel completes the handshake);
				// the receiver then closes what is over the limit.
				if _, err := dialFrom(t, tc.flooder, tc.addr); err != nil {
					t.Fatalf("dial: %v", err)
				}
			}
			waitDropped(t, h.reg, tc.transport, ReasonSenderConnLimit, float64(flood-per))
			if got := metric(t, h.reg, MetricConnections, "transport", tc.transport); got != float64(per) {
				t.Errorf("open %s connections = %v, want %d", tc.transport, got, per)
			}
			c, err := dialFrom(t, "127.0.0.2", tc.addr)
			if err != nil {
				t.Fatalf("second sender: %v", err)
			}
			if tc.transport == TransportTLS {
				tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "wormgate.test"})
				if err := tc.Handshake(); err != nil {
					t.Fatalf("second sender's TLS handshake: %v", err)
				}
				c = tc
			}
			send(t, c, wire3164+"\n")
			if m := recv(t, out); m.Peer.String() != "127.0.0.2" {
				t.Errorf("message from %v, want the second sender", m.Peer)
			}
		})
	}
}
