package receiver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/wormgate/wormgate/receiver/configerr"
	"github.com/wormgate/wormgate/receiver/syslog"
	"github.com/wormgate/wormgate/receiver/tlstest"
)

const (
	wire3164 = "<22>Nov 26 18:19:13 vm postfix/cleanup[5325]: " + cleanupText
	wire5424 = "<22>1 2026-11-26T18:19:13.799660+00:00 mx1 postfix/cleanup 5325 - - " + cleanupText
)

var loopback4 = netip.MustParseAddr("127.0.0.1")

// harness runs one Receiver on loopback for a test and, at cleanup, checks
// that Run returns nil within a second of cancellation.
type harness struct {
	t      testing.TB
	r      *Receiver
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func start(t testing.TB, out *inbox, mod func(*Config), before ...func(*Receiver)) *harness {
	t.Helper()
	cfg := DefaultConfig()
	cfg.UDPListen = []string{"127.0.0.1:0"}
	cfg.TCPListen = []string{"127.0.0.1:0"}
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	r, err := New(cfg, out.ch, testLogger(t), reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, f := range before {
		f(r)
	}
	if err := r.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, r: r, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

// stop cancels Run and fails the test unless it returns nil within 1 s.
func (h *harness) stop() {
	h.once.Do(func() {
		begin := time.Now()
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				h.t.Errorf("Run returned %v, want nil on shutdown", err)
			}
			if d := time.Since(begin); d > time.Second {
				h.t.Errorf("Run took %v to return after cancel, want < 1s", d)
			}
		case <-time.After(3 * time.Second):
			h.t.Errorf("Run did not return within 3s of cancel")
		}
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench {
		// Debug lines per connection would drown the figures.
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// metric reads one series from the registry; labels are name, value pairs.
func metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func dropped(t *testing.T, g prometheus.Gatherer, transport, reason string) float64 {
	t.Helper()
	return metric(t, g, MetricDropped, "transport", transport, "reason", reason)
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitDropped(t *testing.T, g prometheus.Gatherer, transport, reason string, want float64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("dropped{%s,%s} == %v", transport, reason, want), func() bool {
		return dropped(t, g, transport, reason) == want
	})
}

// inbox is a receiver's output as tests read it: one message at a time,
// whatever the batches were.
type inbox struct {
	ch      chan []syslog.Message
	pending []syslog.Message
}

// newInbox makes an output of capacity batches; 0 is unbuffered, so that
// every batch waits for the test to read it.
func newInbox(capacity int) *inbox {
	return &inbox{ch: make(chan []syslog.Message, capacity)}
}

// next returns the next message, waiting at most d.
func (in *inbox) next(d time.Duration) (syslog.Message, bool) {
	if len(in.pending) == 0 {
		select {
		case b := <-in.ch:
			in.pending = b
		case <-time.After(d):
			return syslog.Message{}, false
		}
	}
	m := in.pending[0]
	in.pending = in.pending[1:]
	return m, true
}

func recv(t *testing.T, in *inbox) syslog.Message {
	t.Helper()
	m, ok := in.next(5 * time.Second)
	if !ok {
		t.Fatal("no message within 5s")
	}
	return m
}

func noMessage(t *testing.T, in *inbox) {
	t.Helper()
	if m, ok := in.next(100 * time.Millisecond); ok {
		t.Fatalf("unexpected message %+v", m)
	}
}

func dial(t *testing.T, network string, a net.Addr) net.Conn {
	t.Helper()
	c, err := net.Dial(network, a.String())
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, a, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func send(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func octet(s string) string { return fmt.Sprintf("%d %s", len(s), s) }

// closedByPeer reports whether the server closes c within 3 s.
func closedByPeer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return true
}

// ignoreTime compares RFC 3164 messages, whose year depends on today.
var ignoreTime = cmpopts.IgnoreFields(syslog.Message{}, "Time")

func want3164(transport string, peer netip.Addr) syslog.Message {
	return syslog.Message{Host: "vm", Program: "postfix/cleanup", PID: 5325, Text: cleanupText, Peer: peer, Transport: transport}
}

func want5424(transport string, peer netip.Addr) syslog.Message {
	return syslog.Message{Time: ts("2026-11-26T18:19:13.79966Z"), Host: "mx1", Program: "postfix/cleanup", PID: 5325, Text: cleanupText, Peer: peer, Transport: transport}
}

func check(t *testing.T, want, got syslog.Message) {
	t.Helper()
	if diff := cmp.Diff(want, got, msgOpts, ignoreTime); diff != "" {
		t.Errorf("message mismatch (-want +got):\n%s", diff)
	}
	if want.Time.IsZero() {
		if got.Time.Month() != time.November || got.Time.Day() != 26 || got.Time.Hour() != 18 {
			t.Errorf("Time = %v, want Nov 26 18:19:13", got.Time)
		}
	} else if !want.Time.Equal(got.Time) {
		t.Errorf("Time = %v, want %v", got.Time, want.Time)
	}
}

func TestReceiveUDPAndTCP(t *testing.T) {
	out := newInbox(16)
	h := start(t, out, nil)

	u := dial(t, "udp", h.r.UDPAddrs()[0])
	send(t, u, wire3164+"\n")
	check(t, want3164(TransportUDP, loopback4), recv(t, out))
	send(t, u, wire5424)
	check(t, want5424(TransportUDP, loopback4), recv(t, out))
	// A batching sender: two lines in one datagram, NUL-terminated.
	send(t, u, wire3164+"\n"+wire5424+"\n\x00")
	check(t, want3164(TransportUDP, loopback4), recv(t, out))
	check(t, want5424(TransportUDP, loopback4), recv(t, out))

	// LF and octet-counted framing mixed on one connection.
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	send(t, c, wire3164+"\n"+octet(wire5424)+wire3164+"\r\n"+octet(wire3164+"\n"))
	check(t, want3164(TransportTCP, loopback4), recv(t, out))
	check(t, want5424(TransportTCP, loopback4), recv(t, out))
	check(t, want3164(TransportTCP, loopback4), recv(t, out))
	check(t, want3164(TransportTCP, loopback4), recv(t, out))

	if got := metric(t, h.reg, MetricMessages, "transport", TransportUDP); got != 4 {
		t.Errorf("messages{udp} = %v, want 4", got)
	}
	if got := metric(t, h.reg, MetricMessages, "transport", TransportTCP); got != 4 {
		t.Errorf("messages{tcp} = %v, want 4", got)
	}
	if got := metric(t, h.reg, MetricConnections, "transport", TransportTCP); got != 1 {
		t.Errorf("connections{tcp} = %v, want 1", got)
	}
	// Every drop reason exists from the start.
	for _, tr := range netTransports {
		for _, reason := range dropReasons {
			if got := dropped(t, h.reg, tr, reason); got != 0 {
				t.Errorf("dropped{%s,%s} = %v, want 0", tr, reason, got)
			}
		}
	}
}

func TestReceiveIPv6Loopback(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("IPv6 loopback unavailable: %v", err)
		}
		t.Skipf("IPv6 loopback unavailable: %v", err)
	} else {
		_ = l.Close()
	}
	out := newInbox(4)
	h := start(t, out, func(c *Config) {
		c.UDPListen = []string{"[::1]:0"}
		c.TCPListen = []string{"[::1]:0"}
	})
	lo6 := netip.IPv6Loopback()
	send(t, dial(t, "udp", h.r.UDPAddrs()[0]), wire5424)
	check(t, want5424(TransportUDP, lo6), recv(t, out))
	send(t, dial(t, "tcp", h.r.TCPAddrs()[0]), wire3164+"\n")
	check(t, want3164(TransportTCP, lo6), recv(t, out))
}

func TestPeerUnmapped(t *testing.T) {
	mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3"), Port: 514}
	got := addrOf(mapped)
	if want := netip.MustParseAddr("10.1.2.3"); got != want {
		t.Fatalf("addrOf(%v) = %v, want %v", mapped, got, want)
	}
	r, err := New(DefaultConfig(), newInbox(0).ch, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"::ffff:10.1.2.3", true}, {"10.1.2.3", true}, {"::1", true}, {"fe80::1", true},
		{"fd00::5", true}, {"172.31.0.1", true}, {"172.32.0.1", false},
		{"192.0.2.1", false}, {"2001:db8::1", false}, {"::ffff:192.0.2.1", false},
	} {
		a := addrOf(&net.UDPAddr{IP: net.ParseIP(tc.addr)})
		if got := r.allowedPeer(a); got != tc.want {
			t.Errorf("allowedPeer(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// TestBadInput sends each input from go-syslog-notes.md on its own
// connection and checks that it is counted under the right reason and that
// the next good message on a new connection still arrives.
func TestBadInput(t *testing.T) {
	out := newInbox(16)
	h := start(t, out, nil)
	tcpAddr, udpAddr := h.r.TCPAddrs()[0], h.r.UDPAddrs()[0]
	tests := []struct {
		name      string
		transport string
		payload   string
		close     bool // client closes after sending
		reason    string
		closed    bool // server must close the connection
	}{
		{"tcp PRI only", TransportTCP, "<13>\n", false, ReasonParseError, false},
		{"tcp no tag", TransportTCP, "<13>Jan  2 15:04:05 host\n", false, ReasonParseError, false},
		{"tcp negative octet count", TransportTCP, "-1 x", false, ReasonFraming, true},
		{"tcp 100 KiB line", TransportTCP, "<13>" + strings.Repeat("A", 100<<10) + "\n", false, ReasonOversize, false},
		{"tcp binary garbage", TransportTCP, "\xff\xfe\x01\x02garbage\x7f\n", false, ReasonParseError, false},
		{"tcp half octet frame then close", TransportTCP, "50 <13>Jan  2 15:04:05 host p: x", true, ReasonFraming, false},
		{"tcp 70 KiB octet count", TransportTCP, "71680 <13>" + strings.Repeat("B", 70<<10), false, ReasonFraming, true},
		{"udp PRI only", TransportUDP, "<13>", false, ReasonParseError, false},
		{"udp no tag", TransportUDP, "<13>Jan  2 15:04:05 host", false, ReasonParseError, false},
		{"udp negative octet count", TransportUDP, "-1 x", false, ReasonParseError, false},
		{"udp binary garbage", TransportUDP, "\xff\xfe\x01\x02garbage", false, ReasonParseError, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dropped(t, h.reg, tt.transport, tt.reason)
			addr := tcpAddr
			if tt.transport == TransportUDP {
				addr = udpAddr
			}
			c := dial(t, tt.transport, addr)
			// The server may close before the whole payload is written.
			_, _ = c.Write([]byte(tt.payload))
			if tt.close {
				_ = c.Close()
			}
			waitDropped(t, h.reg, tt.transport, tt.reason, before+1)
			if tt.closed && !closedByPeer(t, c) {
				t.Errorf("server kept the connection open after a framing error")
			}
			noMessage(t, out)
			next := dial(t, tt.transport, addr)
			send(t, next, wire3164+"\n")
			check(t, want3164(tt.transport, loopback4), recv(t, out))
		})
	}
	// The parse errors are counted against their sender too.
	parseErrors := 0
	for _, tt := range tests {
		if tt.reason == ReasonParseError {
			parseErrors++
		}
	}
	if got := h.r.ParseErrors()[loopback4]; got != uint64(parseErrors) {
		t.Errorf("ParseErrors()[%v] = %d, want %d", loopback4, got, parseErrors)
	}
}

func TestOversizeLineKeepsConnection(t *testing.T) {
	out := newInbox(4)
	h := start(t, out, nil)
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	send(t, c, "<13>"+strings.Repeat("A", 100<<10)+"\n"+wire3164+"\n")
	check(t, want3164(TransportTCP, loopback4), recv(t, out))
	if got := dropped(t, h.reg, TransportTCP, ReasonOversize); got != 1 {
		t.Errorf("dropped{tcp,oversize} = %v, want 1", got)
	}
}

func TestUDPOversize(t *testing.T) {
	out := newInbox(4)
	h := start(t, out, func(c *Config) { c.MaxMessageSize = 1024 })
	u := dial(t, "udp", h.r.UDPAddrs()[0])
	send(t, u, "<13>Nov 26 18:19:13 vm p: "+strings.Repeat("x", 2000))
	waitDropped(t, h.reg, TransportUDP, ReasonOversize, 1)
	send(t, u, wire3164)
	check(t, want3164(TransportUDP, loopback4), recv(t, out))
}

func TestSenderDenied(t *testing.T) {
	out := newInbox(4)
	h := start(t, out, func(c *Config) {
		c.AllowedSenders = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	})
	send(t, dial(t, "udp", h.r.UDPAddrs()[0]), wire3164)
	waitDropped(t, h.reg, TransportUDP, ReasonSenderDenied, 1)
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	_, _ = c.Write([]byte(wire3164 + "\n"))
	waitDropped(t, h.reg, TransportTCP, ReasonSenderDenied, 1)
	if !closedByPeer(t, c) {
		t.Error("denied TCP sender was not disconnected")
	}
	noMessage(t, out)
	for _, tr := range []string{TransportUDP, TransportTCP} {
		if got := dropped(t, h.reg, tr, ReasonParseError); got != 0 {
			t.Errorf("dropped{%s,parse_error} = %v: denied input must not be parsed", tr, got)
		}
		if got := metric(t, h.reg, MetricMessages, "transport", tr); got != 0 {
			t.Errorf("messages{%s} = %v, want 0", tr, got)
		}
	}
}

// TestUDPQueueFull: UDP cannot push back. While the output is full, up
// to MaxBatch messages wait for it and go out, in order, as soon as it has
// room, without a further datagram; what comes past that is dropped and
// counted.
func TestUDPQueueFull(t *testing.T) {
	out := newInbox(1) // nobody reads it until the end
	h := start(t, out, nil)
	u := dial(t, "udp", h.r.UDPAddrs()[0])
	const n = 1 + MaxBatch + 2
	for i := range n {
		send(t, u, fmt.Sprintf("<13>Oct 11 22:14:15 mymachine su: line %d", i))
	}
	waitDropped(t, h.reg, TransportUDP, ReasonQueueFull, 2)
	if got := metric(t, h.reg, MetricMessages, "transport", TransportUDP); got != 1 {
		t.Errorf("messages{udp} = %v, want 1 while the output is full", got)
	}
	for i := range 1 + MaxBatch {
		if m := recv(t, out); m.Text != fmt.Sprintf("line %d", i) {
			t.Fatalf("message %d: %q, want line %d", i, m.Text, i)
		}
	}
	noMessage(t, out)
	if got := metric(t, h.reg, MetricMessages, "transport", TransportUDP); got != 1+MaxBatch {
		t.Errorf("messages{udp} = %v, want %d", got, 1+MaxBatch)
	}
	if got := dropped(t, h.reg, TransportUDP, ReasonQueueFull); got != 2 {
		t.Errorf("dropped{udp,queue_full} = %v, want 2", got)
	}
}

func TestTCPBackpressure(t *testing.T) {
	out := newInbox(0) // unbuffered: every send waits for the reader
	h := start(t, out, nil)
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	for range 3 {
		send(t, c, wire3164+"\n")
	}
	time.Sleep(100 * time.Millisecond)
	for range 3 {
		check(t, want3164(TransportTCP, loopback4), recv(t, out))
	}
	if got := dropped(t, h.reg, TransportTCP, ReasonQueueFull); got != 0 {
		t.Errorf("dropped{tcp,queue_full} = %v: streams must block, not drop", got)
	}
}

func TestConnLimit(t *testing.T) {
	out := newInbox(4)
	h := start(t, out, func(c *Config) { c.MaxConnections = 1 })
	addr := h.r.TCPAddrs()[0]
	a := dial(t, "tcp", addr)
	send(t, a, wire3164+"\n")
	recv(t, out)
	b := dial(t, "tcp", addr)
	waitDropped(t, h.reg, TransportTCP, ReasonConnLimit, 1)
	if !closedByPeer(t, b) {
		t.Error("connection over max_connections was not closed")
	}
	_ = a.Close()
	waitFor(t, "connections{tcp} == 0", func() bool {
		return metric(t, h.reg, MetricConnections, "transport", TransportTCP) == 0
	})
	send(t, dial(t, "tcp", addr), wire3164+"\n")
	check(t, want3164(TransportTCP, loopback4), recv(t, out))
}

func TestIdleTimeout(t *testing.T) {
	out := newInbox(4)
	h := start(t, out, func(c *Config) { c.IdleTimeout = time.Second })
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	begin := time.Now()
	if !closedByPeer(t, c) {
		t.Fatal("idle sender not closed within 3s")
	}
	if d := time.Since(begin); d < 900*time.Millisecond {
		t.Errorf("idle sender closed after %v, before idle_timeout", d)
	}
	waitFor(t, "closed{tcp,idle} == 1", func() bool {
		return metric(t, h.reg, MetricConnectionsClosed, "transport", TransportTCP, "reason", ReasonIdle) == 1
	})
}

func TestPanicInParserIsContained(t *testing.T) {
	out := newInbox(4)
	h := start(t, out, nil, func(r *Receiver) {
		r.parse = func(b []byte, ref time.Time, loc *time.Location) (syslog.Message, error) {
			if strings.Contains(string(b), "BOOM") {
				panic("boom")
			}
			return syslog.Parse(b, ref, loc)
		}
	})
	u := dial(t, "udp", h.r.UDPAddrs()[0])
	send(t, u, "<13>BOOM")
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	send(t, c, "<13>BOOM\n")
	waitDropped(t, h.reg, TransportUDP, ReasonParseError, 1)
	waitDropped(t, h.reg, TransportTCP, ReasonParseError, 1)
	send(t, u, wire3164)
	check(t, want3164(TransportUDP, loopback4), recv(t, out))
	send(t, c, wire3164+"\n")
	check(t, want3164(TransportTCP, loopback4), recv(t, out))
}

// TestShutdownWithIdleClients: Run must return within 1 s of cancel (the
// harness checks) although stream senders are idle, mid-frame, blocked on
// the output channel, or stuck before the TLS handshake.
func TestShutdownWithIdleClients(t *testing.T) {
	out := newInbox(0) // never read
	h, _ := startTLS(t, out, nil)
	var clients []net.Conn
	for range 4 {
		clients = append(clients, dial(t, "tcp", h.r.TCPAddrs()[0]))
	}
	mid := dial(t, "tcp", h.r.TCPAddrs()[0])
	send(t, mid, "50 <13>Jan")
	blocked := dial(t, "tcp", h.r.TCPAddrs()[0])
	send(t, blocked, wire3164+"\n")
	silentTLS := dial(t, "tcp", h.r.TLSAddrs()[0])
	clients = append(clients, mid, blocked, silentTLS)
	waitFor(t, "7 connections", func() bool {
		return metric(t, h.reg, MetricConnections, "transport", TransportTCP) == 6 &&
			metric(t, h.reg, MetricConnections, "transport", TransportTLS) == 1
	})
	h.stop()
	for i, c := range clients {
		if !closedByPeer(t, c) {
			t.Errorf("client %d still connected after shutdown", i)
		}
	}
}

func TestTLS(t *testing.T) {
	out := newInbox(4)
	h, pool := startTLS(t, out, nil)
	addr := h.r.TLSAddrs()[0]

	// A client that connects and never handshakes must not hold up others.
	_ = dial(t, "tcp", addr)

	begin := time.Now()
	c, err := tls.Dial("tcp", addr.String(), &tls.Config{RootCAs: pool, ServerName: "wormgate.test"})
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	send(t, c, octet(wire5424)+wire3164+"\n")
	check(t, want5424(TransportTLS, loopback4), recv(t, out))
	check(t, want3164(TransportTLS, loopback4), recv(t, out))
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("TLS client served after %v: a silent client blocked it", d)
	}

	// Plain text on the TLS port fails the handshake and is counted.
	p := dial(t, "tcp", addr)
	send(t, p, wire3164+"\n")
	waitFor(t, "a TLS handshake failure", func() bool {
		return metric(t, h.reg, MetricTLSHandshakeErr) == 1
	})
	if !closedByPeer(t, p) {
		t.Error("plain-text client on the TLS port not disconnected")
	}
	noMessage(t, out)
}

// startTLS starts a receiver that also listens for TLS, with a
// certificate for "wormgate.test" from a test CA; pool trusts the CA.
func startTLS(t *testing.T, out *inbox, mod func(*Config)) (h *harness, pool *x509.CertPool) {
	t.Helper()
	ca := tlstest.NewCA(t, "wormgate test CA")
	certFile, keyFile := ca.Issue(t, "wormgate.test")
	return start(t, out, func(c *Config) {
		c.TLSListen = []string{"127.0.0.1:0"}
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		if mod != nil {
			mod(c)
		}
	}), ca.Pool()
}

// handshake makes c a TLS client connection to "wormgate.test".
func handshake(t *testing.T, c net.Conn, pool *x509.CertPool) net.Conn {
	t.Helper()
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "wormgate.test"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return tc
}

func TestOpenBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := DefaultConfig()
	cfg.UDPListen = []string{"127.0.0.1:0"}
	cfg.TCPListen = []string{busy.Addr().String()}
	r, err := New(cfg, newInbox(0).ch, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Open()
	if err == nil || !strings.Contains(err.Error(), "listen tcp "+busy.Addr().String()) {
		t.Fatalf("Open() = %v, want a listen tcp error naming %s", err, busy.Addr())
	}
	if err := r.Run(context.Background()); !errors.Is(err, ErrAlreadyUsed) {
		t.Errorf("Run after failed Open = %v, want ErrAlreadyUsed", err)
	}
}

func TestRunWithoutOpenAndTwice(t *testing.T) {
	cfg := DefaultConfig()
	cfg.UDPListen = []string{"127.0.0.1:0"}
	cfg.TCPListen = nil
	r, err := New(cfg, newInbox(0).ch, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run with a done context = %v, want nil", err)
	}
	if err := r.Run(context.Background()); !errors.Is(err, ErrAlreadyUsed) {
		t.Fatalf("second Run = %v, want ErrAlreadyUsed", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(DefaultConfig(), nil, nil, nil); !errors.Is(err, ErrNoOutput) {
		t.Errorf("New(nil out) = %v, want ErrNoOutput", err)
	}
	bad := DefaultConfig()
	bad.MaxConnections = 0
	if _, err := New(bad, newInbox(0).ch, nil, nil); !errors.Is(err, configerr.ErrOutOfRange) {
		t.Errorf("New(bad config) = %v, want configerr.ErrOutOfRange", err)
	}
	tlsCfg := DefaultConfig()
	tlsCfg.TLSListen = []string{"127.0.0.1:0"}
	tlsCfg.TLSCertFile, tlsCfg.TLSKeyFile = "/nonexistent/cert.pem", "/nonexistent/key.pem"
	if _, err := New(tlsCfg, newInbox(0).ch, nil, nil); err == nil || !strings.Contains(err.Error(), "tls_cert_file") {
		t.Errorf("New(missing cert) = %v, want an error naming tls_cert_file", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(DefaultConfig(), newInbox(0).ch, nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(DefaultConfig(), newInbox(0).ch, nil, reg); err == nil {
		t.Error("second New on one registry succeeded, want a registration error")
	}
}

func TestRateLimiter(t *testing.T) {
	l := rateLimiter{every: time.Minute, burst: 2}
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	got := []bool{
		l.allow(a, t0),                      // first for a
		l.allow(a, t0.Add(time.Second)),     // a again within the minute
		l.allow(b, t0.Add(2*time.Second)),   // b: burst 2 of 2
		l.allow(c, t0.Add(3*time.Second)),   // c: burst used up
		l.allow(a, t0.Add(61*time.Second)),  // new window, a again
		l.allow(c, t0.Add(62*time.Second)),  // c now fits
		l.allow(b, t0.Add(63*time.Second)),  // burst used up again
		l.allow(b, t0.Add(122*time.Second)), // next window
	}
	want := []bool{true, false, true, false, true, true, false, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("allow sequence mismatch (-want +got):\n%s", diff)
	}
	if len(l.last) > 2 {
		t.Errorf("limiter remembers %d addresses, want at most the burst", len(l.last))
	}
}

const cleanupText = `C31CFB81BD: reject: header Subject: Re: Details from unknown[2001:db8:66::66]; from=<a@worm.example> to=<postmaster@mx.example.test> proto=ESMTP helo=<vm>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus`

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// msgOpts lets cmp look into Message.Peer.
var msgOpts = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// TestStreamBatches: what a connection brings goes out in batches of at
// most MaxBatch, in the order sent, each message counted once.
func TestStreamBatches(t *testing.T) {
	out := newInbox(1024)
	h := start(t, out, nil)
	c := dial(t, "tcp", h.r.TCPAddrs()[0])
	const n = 5*MaxBatch + 7
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "<13>Oct 11 22:14:15 mymachine su: line %d\n", i)
	}
	send(t, c, b.String()) // one write: few reads
	var got, batches int
	for got < n {
		select {
		case batch := <-out.ch:
			if len(batch) == 0 || len(batch) > MaxBatch {
				t.Fatalf("batch of %d messages, want 1 to %d", len(batch), MaxBatch)
			}
			for _, m := range batch {
				if want := fmt.Sprintf("line %d", got); m.Text != want {
					t.Fatalf("message %d: %q, want %q", got, m.Text, want)
				}
				got++
			}
			batches++
			Release(batch)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d messages within 5 s", got, n)
		}
	}
	if batches > n/2 {
		t.Errorf("%d messages came in %d batches: not batched", n, batches)
	}
	noMessage(t, out)
	if got := metric(t, h.reg, MetricMessages, "transport", TransportTCP); got != n {
		t.Errorf("messages{tcp} = %v, want %d", got, n)
	}
}

// TestReleaseClears: a released batch keeps no message alive in the pool.
func TestReleaseClears(t *testing.T) {
	b := append(newBatch(), syslog.Message{Text: "a long line", Host: "mx1"})
	Release(b)
	if a := (*[MaxBatch]syslog.Message)(b[:MaxBatch]); a[0] != (syslog.Message{}) {
		t.Errorf("released batch still holds %+v", a[0])
	}
	Release(make([]syslog.Message, 3)) // not one of ours: ignored, no panic
}
