package receiver

import (
	"net"
	"strings"
	"testing"
	"time"
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
// connects and delivers, over TCP and TLS. With TestSlowlorisClosed, this
// is issue 10's acceptance 8.
func TestSenderCannotTakeEverySlot(t *testing.T) {
	out := newInbox(4)
	h, pool := startTLS(t, out, nil)
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
				c = handshake(t, c, pool)
			}
			send(t, c, wire3164+"\n")
			if m := recv(t, out); m.Peer.String() != "127.0.0.2" {
				t.Errorf("message from %v, want the second sender", m.Peer)
			}
		})
	}
}

// TestSlowlorisClosed: a sender that trickles one byte of a message every
// 100 ms, never finishing it, is closed within message_timeout (1 s here)
// of its first byte and counted as slow, over TCP and TLS; a normal
// sender on a second connection keeps delivering throughout.
func TestSlowlorisClosed(t *testing.T) {
	out := newInbox(64)
	h, pool := startTLS(t, out, func(c *Config) { c.MessageTimeout, c.IdleTimeout = time.Second, time.Minute })
	const bound = time.Second
	for _, tc := range []struct {
		transport string
		addr      net.Addr
	}{{TransportTCP, h.r.TCPAddrs()[0]}, {TransportTLS, h.r.TLSAddrs()[0]}} {
		t.Run(tc.transport, func(t *testing.T) {
			connect := func() net.Conn {
				c := dial(t, "tcp", tc.addr)
				if tc.transport == TransportTLS {
					return handshake(t, c, pool)
				}
				return c
			}
			slow, normal := connect(), connect()
			closed := make(chan time.Duration, 1)
			begin := time.Now()
			go func() {
				// One byte at a time, as long as the server lets it.
				msg := wire3164 + "\n"
				for i := 0; ; i++ {
					if _, err := slow.Write([]byte{msg[i%len(msg)]}); err != nil {
						closed <- time.Since(begin)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
			var took time.Duration
			for i := 0; took == 0; i++ {
				select {
				case took = <-closed:
				case <-time.After(100 * time.Millisecond):
					if time.Since(begin) > bound+time.Second {
						t.Fatalf("slowloris still connected after %v, message_timeout %v", time.Since(begin), bound)
					}
				}
				send(t, normal, wire3164+"\n")
				check(t, want3164(tc.transport, loopback4), recv(t, out))
			}
			// The write that fails comes after the close; the close
			// itself must not come before the bound.
			if got := metric(t, h.reg, MetricConnectionsClosed, "transport", tc.transport, "reason", ReasonSlow); got != 1 {
				t.Errorf("closed{%s,slow} = %v, want 1", tc.transport, got)
			}
			if got := metric(t, h.reg, MetricConnectionsClosed, "transport", tc.transport, "reason", ReasonIdle); got != 0 {
				t.Errorf("closed{%s,idle} = %v, want 0", tc.transport, got)
			}
			if took < bound {
				t.Errorf("slowloris closed after %v, before message_timeout %v", took, bound)
			}
			// The normal sender was never cut off.
			send(t, normal, wire3164+"\n")
			check(t, want3164(tc.transport, loopback4), recv(t, out))
		})
	}
}

// TestIdleWithoutMessagesClosed: bytes that never make a message (blank
// lines) do not keep a connection open past idle_timeout, while one
// complete message per 300 ms does, with idle_timeout 1 s.
func TestIdleWithoutMessagesClosed(t *testing.T) {
	out := newInbox(64)
	h := start(t, out, func(c *Config) { c.IdleTimeout = time.Second })
	addr := h.r.TCPAddrs()[0]
	blank, busy := dial(t, "tcp", addr), dial(t, "tcp", addr)
	begin := time.Now()
	var blankClosed time.Duration
	for time.Since(begin) < 2500*time.Millisecond {
		if _, err := blank.Write([]byte("\n")); err != nil && blankClosed == 0 {
			blankClosed = time.Since(begin)
		}
		send(t, busy, wire3164+"\n")
		recv(t, out)
		time.Sleep(300 * time.Millisecond)
	}
	if !closedByPeer(t, blank) {
		t.Fatal("connection sending only blank lines still open after 2.5 s, idle_timeout 1 s")
	}
	if blankClosed != 0 && blankClosed < time.Second {
		t.Errorf("blank-line sender cut off after %v, before idle_timeout", blankClosed)
	}
	if got := metric(t, h.reg, MetricConnectionsClosed, "transport", TransportTCP, "reason", ReasonIdle); got != 1 {
		t.Errorf("closed{tcp,idle} = %v, want 1 (the blank-line sender only)", got)
	}
	send(t, busy, wire3164+"\n")
	check(t, want3164(TransportTCP, loopback4), recv(t, out))
}

// TestBackpressureIsNotIdleness: while the matcher does not keep up, a
// stream waits for it (and TCP holds the sender back); that time does not
// count against the sender, however much longer than idle_timeout and
// message_timeout it is.
func TestBackpressureIsNotIdleness(t *testing.T) {
	out := newInbox(0) // nobody reads until the stall ends
	h := start(t, out, func(c *Config) { c.IdleTimeout, c.MessageTimeout = time.Second, time.Second })
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	const n = 3
	// The last message is cut in two: a frame under way across the stall.
	msgs := strings.Repeat(wire3164+"\n", n)
	send(t, c, msgs[:len(msgs)-20])
	time.Sleep(2500 * time.Millisecond)
	send(t, c, msgs[len(msgs)-20:])
	for range n {
		check(t, want3164(TransportTCP, loopback4), recv(t, out))
	}
	for _, reason := range closeReasons {
		if got := metric(t, h.reg, MetricConnectionsClosed, "transport", TransportTCP, "reason", reason); got != 0 {
			t.Errorf("closed{tcp,%s} = %v, want 0: the stall was ours", reason, got)
		}
	}
}
