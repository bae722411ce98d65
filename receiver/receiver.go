package receiver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wormgate/wormgate/receiver/syslog"
	"golang.org/x/sync/errgroup"
)

const (
	// udpBufSize holds any UDP datagram plus one byte, so that nothing is
	// silently truncated.
	udpBufSize = 64<<10 + 1
	// handshakeTimeout bounds a TLS handshake; it runs in the connection's
	// goroutine, so a silent client only holds its own slot.
	handshakeTimeout = 10 * time.Second
	// denyLogEvery is how often one denied sender may be logged at Warn.
	denyLogEvery = time.Minute
	// denyLogBurst bounds Warn lines for denied senders per denyLogEvery,
	// whatever the number of (possibly spoofed) addresses.
	denyLogBurst = 20
)

// Receiver errors.
var (
	ErrNoOutput     = errors.New("receiver: nil output channel")
	ErrAlreadyUsed  = errors.New("receiver: already opened or run")
	ErrListenerDied = errors.New("receiver: listener closed unexpectedly")
)

// MaxBatch is the most messages the receiver puts in one batch. A queue
// of N batches holds at most N*MaxBatch messages.
const MaxBatch = 64

// batches holds batches for reuse, all of capacity MaxBatch: a busy
// sender's batches cost no allocation once the consumer releases them.
var batches = sync.Pool{New: func() any { return new([MaxBatch]syslog.Message) }}

// newBatch returns an empty batch of capacity MaxBatch.
func newBatch() []syslog.Message { return batches.Get().(*[MaxBatch]syslog.Message)[:0] }

// Release gives back a batch that the consumer of a Receiver's output has
// done with, for reuse. Its messages must not be used afterwards (the
// strings they hold may be kept). Releasing is optional: a batch that is
// not released is garbage collected.
func Release(b []syslog.Message) {
	if cap(b) != MaxBatch {
		return
	}
	a := (*[MaxBatch]syslog.Message)(b[:MaxBatch])
	// Cleared, so that a pooled batch does not keep old lines alive.
	clear(a[:len(b)])
	batches.Put(a)
}

// Receiver serves syslog over UDP, TCP and TLS and sends parsed Messages,
// in batches, to its output channel. It is single-use: New, Open
// (optional), Run.
//
// A batch holds messages in the order they arrived: a stream's batch is
// what one read of its connection brought (at most MaxBatch), a UDP
// socket's is one datagram or, while the output is full, the datagrams
// (of any sender) that waited for it. Batches, not single messages, are
// what lets several senders feed one matcher: with a channel operation
// per message, four connections spent a third of the CPU contending for
// the channel's lock.
type Receiver struct {
	cfg     Config
	out     chan<- []syslog.Message
	log     *slog.Logger
	m       *metrics
	tlsSrv  *tlsServer
	tlsConf *tls.Config
	allowed []netip.Prefix
	loc     *time.Location
	// parse is Parse; tests replace it to prove that panics are contained.
	parse func([]byte, time.Time, *time.Location) (syslog.Message, error)

	state atomic.Int32 // 0 new, 1 open, 2 running or done

	udp []*net.UDPConn
	tcp []net.Listener
	tls []net.Listener

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]struct{}
	// perPeer counts the open connections of each sender.
	perPeer map[netip.Addr]int
	// handshakes holds a token per TLS handshake under way.
	handshakes chan struct{}

	deny        rateLimiter
	connLimitAt atomic.Int64 // unix seconds of the last conn_limit Warn

	// parseErrs counts unparsable messages per sender, for the operator's
	// per-MX view; at most maxTrackedSenders senders.
	pmu       sync.Mutex
	parseErrs map[netip.Addr]uint64
}

// maxTrackedSenders bounds the per-sender parse error table; a site has a
// handful of MX hosts.
const maxTrackedSenders = 1024

// ParseErrors returns the unparsable messages of each sender since start.
func (r *Receiver) ParseErrors() map[netip.Addr]uint64 {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	out := make(map[netip.Addr]uint64, len(r.parseErrs))
	for a, n := range r.parseErrs {
		out[a] = n
	}
	return out
}

func (r *Receiver) countParseError(peer netip.Addr) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if _, ok := r.parseErrs[peer]; ok || len(r.parseErrs) < maxTrackedSenders {
		if r.parseErrs == nil {
			r.parseErrs = make(map[netip.Addr]uint64)
		}
		r.parseErrs[peer]++
	}
}

// New checks cfg, loads the TLS key pair and registers the metrics on reg
// (nil: not registered). Batches of messages go to out; the receiver never
// closes it, and never touches a batch it has sent.
func New(cfg Config, out chan<- []syslog.Message, log *slog.Logger, reg prometheus.Registerer) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if out == nil {
		return nil, ErrNoOutput
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{
		cfg:        cfg,
		out:        out,
		log:        log,
		loc:        time.Local,
		parse:      syslog.Parse,
		conns:      make(map[net.Conn]struct{}),
		perPeer:    make(map[netip.Addr]int),
		handshakes: make(chan struct{}, max(cfg.MaxTLSHandshakes, 1)),
		deny:       rateLimiter{every: denyLogEvery, burst: denyLogBurst},
	}
	for _, p := range cfg.AllowedSenders {
		r.allowed = append(r.allowed, p.Masked())
	}
	if len(cfg.TLSListen) > 0 {
		srv, err := newTLSServer(cfg)
		if err != nil {
			return nil, err
		}
		r.tlsSrv, r.tlsConf = srv, srv.config()
		if cfg.TLSClientCAFile == "" {
			log.Warn("syslog over TLS without client authentication: set receiver.tls_client_ca_file so that only your MX hosts' certificates are accepted")
		}
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	r.m = m
	return r, nil
}

// Open binds every configured socket, so that a busy port fails at start-up
// rather than later; nothing is read until Run.
func (r *Receiver) Open() error {
	if !r.state.CompareAndSwap(0, 1) {
		return ErrAlreadyUsed
	}
	if err := r.bind(); err != nil {
		r.closeSockets()
		r.state.Store(2)
		return err
	}
	return nil
}

func (r *Receiver) bind() error {
	ctx := context.Background()
	var lc net.ListenConfig
	for _, a := range r.cfg.UDPListen {
		pc, err := lc.ListenPacket(ctx, "udp", a)
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", a, err)
		}
		c := pc.(*net.UDPConn)
		r.udp = append(r.udp, c)
		if r.cfg.UDPReadBuffer > 0 {
			got, err := setReadBuffer(c, r.cfg.UDPReadBuffer)
			switch {
			case err != nil:
				r.log.Warn("cannot set UDP receive buffer", "addr", c.LocalAddr().String(), "err", err)
			case got < r.cfg.UDPReadBuffer:
				r.log.Warn("kernel capped the UDP receive buffer; raise net.core.rmem_max",
					"addr", c.LocalAddr().String(), "want", r.cfg.UDPReadBuffer, "got", got)
			}
		}
	}
	for _, a := range r.cfg.TCPListen {
		l, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			return fmt.Errorf("listen tcp %s: %w", a, err)
		}
		r.tcp = append(r.tcp, l)
	}
	for _, a := range r.cfg.TLSListen {
		// Plain TCP here: the handshake belongs to the connection's
		// goroutine, not to Accept.
		l, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			return fmt.Errorf("listen tls %s: %w", a, err)
		}
		r.tls = append(r.tls, l)
	}
	return nil
}

// UDPAddrs returns the bound UDP addresses (useful with port 0).
func (r *Receiver) UDPAddrs() []net.Addr {
	var a []net.Addr
	for _, c := range r.udp {
		a = append(a, c.LocalAddr())
	}
	return a
}

// TCPAddrs returns the bound plain TCP addresses.
func (r *Receiver) TCPAddrs() []net.Addr { return listenerAddrs(r.tcp) }

// TLSAddrs returns the bound TLS addresses.
func (r *Receiver) TLSAddrs() []net.Addr { return listenerAddrs(r.tls) }

func listenerAddrs(ls []net.Listener) []net.Addr {
	var a []net.Addr
	for _, l := range ls {
		a = append(a, l.Addr())
	}
	return a
}

// Run serves until ctx is done (opening the sockets first if Open was not
// called). On cancellation it closes the listeners and every accepted
// connection, waits for all its goroutines and returns nil. It returns an
// error when a socket fails for good, after shutting the rest down.
func (r *Receiver) Run(ctx context.Context) error {
	if r.state.Load() == 0 {
		if err := r.Open(); err != nil {
			return err
		}
	}
	if !r.state.CompareAndSwap(1, 2) {
		return ErrAlreadyUsed
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-gctx.Done()
		r.closeSockets()
		return nil
	})
	for _, c := range r.udp {
		g.Go(func() error { return r.serveUDP(gctx, c) })
	}
	for _, l := range r.tcp {
		g.Go(func() error { return r.accept(gctx, g, l, TransportTCP) })
	}
	for _, l := range r.tls {
		g.Go(func() error { return r.accept(gctx, g, l, TransportTLS) })
	}
	return g.Wait()
}

// closeSockets closes listeners, UDP sockets and every accepted connection,
// and makes track refuse new ones.
func (r *Receiver) closeSockets() {
	r.mu.Lock()
	r.closing = true
	conns := r.conns
	r.conns = map[net.Conn]struct{}{}
	r.mu.Unlock()
	for _, c := range r.udp {
		_ = c.Close()
	}
	for _, l := range r.tcp {
		_ = l.Close()
	}
	for _, l := range r.tls {
		_ = l.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
}

func (r *Receiver) allowedPeer(a netip.Addr) bool {
	for _, p := range r.allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *Receiver) denied(tm *transportMetrics, transport string, peer netip.Addr) {
	tm.senderDenied.Inc()
	if r.deny.allow(peer, time.Now()) {
		r.log.Warn("syslog from a sender outside allowed_senders dropped",
			"transport", transport, "peer", peer.String())
		return
	}
	r.log.Debug("syslog from denied sender dropped", "transport", transport, "peer", peer.String())
}

// udpRetry is how soon a UDP socket with messages waiting for a full
// output tries again when no datagram comes in the meantime.
const udpRetry = 2 * time.Millisecond

func (r *Receiver) serveUDP(ctx context.Context, c *net.UDPConn) error {
	tm := r.m.by[TransportUDP]
	buf := make([]byte, udpBufSize)
	var backoff time.Duration
	// pending holds the messages that found the output full. UDP cannot
	// push back: they wait, up to MaxBatch, for the output while the
	// socket goes on reading, and what comes past that is dropped and
	// counted. A read while messages wait ends after udpRetry, to offer
	// them again.
	var pending []syslog.Message
	var deadline bool
	defer func() {
		if len(pending) > 0 {
			r.offerUDP(tm, pending, true)
		}
	}()
	for {
		if len(pending) > 0 {
			_ = c.SetReadDeadline(time.Now().Add(udpRetry))
			deadline = true
		} else if deadline {
			_ = c.SetReadDeadline(time.Time{})
			deadline = false
		}
		n, ap, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				pending = r.offerUDP(tm, pending, false)
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("udp %s: %w: %w", c.LocalAddr(), ErrListenerDied, err)
			}
			backoff = nextBackoff(backoff)
			r.log.Warn("udp read failed", "addr", c.LocalAddr().String(), "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		peer := ap.Addr().Unmap()
		if !r.allowedPeer(peer) {
			r.denied(tm, TransportUDP, peer)
			continue
		}
		pending = r.datagram(tm, peer, buf[:n], time.Now(), pending)
		pending = r.offerUDP(tm, pending, false)
	}
}

// offerUDP hands batch on if the output has room and returns what is
// still waiting: nothing, or batch itself. With last set, what finds no
// room is dropped.
func (r *Receiver) offerUDP(tm *transportMetrics, batch []syslog.Message, last bool) []syslog.Message {
	if len(batch) == 0 {
		return batch
	}
	select {
	case r.out <- batch:
		tm.messages.Add(float64(len(batch)))
		return nil
	default:
	}
	if last {
		tm.queueFull.Add(float64(len(batch)))
		return nil
	}
	return batch
}

// datagram adds the messages of one UDP payload to pending. Normally it is
// one message; senders that batch put several LF-separated lines in one
// datagram. Splitting only where a new "<PRI>" follows keeps a multi-line
// message in one piece.
func (r *Receiver) datagram(tm *transportMetrics, peer netip.Addr, b []byte, now time.Time, pending []syslog.Message) []syslog.Message {
	for len(b) > 0 {
		end := len(b)
		next := len(b)
		for i := 0; i+1 < len(b); i++ {
			if b[i] == '\n' && b[i+1] == '<' {
				end, next = i, i+1
				break
			}
		}
		frame := syslog.TrimEnd(b[:end])
		b = b[next:]
		if len(frame) == 0 {
			continue
		}
		if len(frame) > r.cfg.MaxMessageSize {
			tm.oversize.Inc()
			r.log.Debug("oversize syslog datagram dropped", "peer", peer.String(), "len", len(frame))
			continue
		}
		msg, ok := r.parseFrame(tm, TransportUDP, peer, frame, now)
		if !ok {
			continue
		}
		if len(pending) >= MaxBatch {
			if pending = r.offerUDP(tm, pending, false); len(pending) > 0 {
				tm.queueFull.Inc()
				r.log.Debug("output queue full, syslog datagram dropped", "peer", peer.String())
				continue
			}
		}
		if pending == nil {
			pending = newBatch()
		}
		pending = append(pending, msg)
	}
	return pending
}

// parseFrame parses one frame received at now; what does not parse (or
// panics the parser) is counted and logged at Debug.
func (r *Receiver) parseFrame(tm *transportMetrics, transport string, peer netip.Addr, frame []byte, now time.Time) (msg syslog.Message, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			tm.parseError.Inc()
			r.countParseError(peer)
			r.log.Error("panic while parsing syslog message", "transport", transport, "peer", peer.String(), "panic", fmt.Sprint(p))
			msg, ok = syslog.Message{}, false
		}
	}()
	msg, err := r.parse(frame, now, r.loc)
	if err != nil {
		tm.parseError.Inc()
		r.countParseError(peer)
		r.log.Debug("unparsable syslog message dropped", "transport", transport, "peer", peer.String(), "err", err)
		return syslog.Message{}, false
	}
	msg.Peer = peer
	msg.Transport = transport
	return msg, true
}

func (r *Receiver) accept(ctx context.Context, g *errgroup.Group, l net.Listener, transport string) error {
	tm := r.m.by[transport]
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%s %s: %w: %w", transport, l.Addr(), ErrListenerDied, err)
			}
			// EMFILE and friends: back off instead of spinning.
			backoff = nextBackoff(backoff)
			r.log.Warn("accept failed", "transport", transport, "addr", l.Addr().String(), "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		peer := addrOf(c.RemoteAddr())
		if !r.allowedPeer(peer) {
			_ = c.Close()
			r.denied(tm, transport, peer)
			continue
		}
		switch r.track(c, peer) {
		case trackClosing:
			_ = c.Close()
			return nil
		case trackFull:
			_ = c.Close()
			tm.connLimit.Inc()
			r.connLimitWarn(transport, peer)
			continue
		case trackSenderFull:
			_ = c.Close()
			tm.senderLimit.Inc()
			r.connLimitWarn(transport, peer)
			continue
		}
		tm.conns.Inc()
		g.Go(func() error {
			defer r.untrack(c, peer)
			defer tm.conns.Dec()
			r.serveStream(ctx, c, transport, peer, tm)
			return nil
		})
	}
}

func (r *Receiver) connLimitWarn(transport string, peer netip.Addr) {
	now := time.Now().Unix()
	last := r.connLimitAt.Load()
	if now-last >= int64(denyLogEvery/time.Second) && r.connLimitAt.CompareAndSwap(last, now) {
		r.log.Warn("max_connections reached, connection refused", "transport", transport, "peer", peer.String(), "max_connections", r.cfg.MaxConnections)
		return
	}
	r.log.Debug("max_connections reached, connection refused", "transport", transport, "peer", peer.String())
}

// track registers c so that shutdown can close it; it refuses when the
// connection limit is reached or shutdown has begun.
// What track says of a new connection.
const (
	trackOK = iota
	trackClosing
	trackFull
	trackSenderFull
)

func (r *Receiver) track(c net.Conn, peer netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closing:
		return trackClosing
	case len(r.conns) >= r.cfg.MaxConnections:
		return trackFull
	case r.perPeer[peer] >= r.cfg.MaxConnectionsPerSender:
		return trackSenderFull
	}
	r.conns[c] = struct{}{}
	r.perPeer[peer]++
	return trackOK
}

func (r *Receiver) untrack(c net.Conn, peer netip.Addr) {
	r.mu.Lock()
	delete(r.conns, c)
	if r.perPeer[peer]--; r.perPeer[peer] <= 0 {
		delete(r.perPeer, peer)
	}
	r.mu.Unlock()
	_ = c.Close()
}

func (r *Receiver) serveStream(ctx context.Context, c net.Conn, transport string, peer netip.Addr, tm *transportMetrics) {
	log := r.log.With("transport", transport, "peer", peer.String())
	var conn net.Conn = c
	if transport == TransportTLS {
		select {
		case r.handshakes <- struct{}{}:
		default:
			tm.hsLimit.Inc()
			log.Debug("tls handshake refused: too many under way", "max_tls_handshakes", cap(r.handshakes))
			return
		}
		tc := tls.Server(c, r.tlsConf)
		_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
		err := tc.HandshakeContext(ctx)
		<-r.handshakes
		if err != nil {
			r.m.tlsHandshake.Inc()
			log.Debug("tls handshake failed", "err", err)
			return
		}
		_ = c.SetDeadline(time.Time{})
		conn = tc
	}
	log.Debug("syslog sender connected")
	sr := newStreamReader(ctx, conn, r.cfg, r.out, tm.messages)
	// What the last read brought goes out whatever ended the connection.
	defer sr.send()
	for {
		frame, err := sr.fr.Next()
		switch {
		case err == nil:
			msg, ok := r.parseFrame(tm, transport, peer, frame, sr.readAt)
			if ok && !sr.forward(msg) {
				return
			}
		case errors.Is(err, errOversize):
			tm.oversize.Inc()
			log.Debug("oversize syslog frame discarded", "max_message_size", r.cfg.MaxMessageSize)
		case errors.Is(err, errFraming):
			tm.framing.Inc()
			log.Debug("syslog framing error, closing connection")
			return
		case errors.Is(err, io.EOF):
			log.Debug("syslog sender disconnected")
			return
		case sr.timedOut != "":
			tm.closed[sr.timedOut].Inc()
			log.Debug("syslog connection closed", "reason", sr.timedOut,
				"idle_timeout", r.cfg.IdleTimeout, "message_timeout", r.cfg.MessageTimeout)
			return
		default:
			// Reset, or our own shutdown closing the socket.
			log.Debug("syslog connection ended", "err", err)
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func nextBackoff(d time.Duration) time.Duration {
	const lo, hi = 5 * time.Millisecond, time.Second
	return min(max(2*d, lo), hi)
}

// sleep waits d or until ctx is done; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// rateLimiter decides whether a per-address event may be logged at Warn:
// once per address per interval, and at most burst addresses per interval,
// because UDP sources are trivially spoofed.
type rateLimiter struct {
	every time.Duration
	burst int

	mu     sync.Mutex
	last   map[netip.Addr]time.Time
	window time.Time
	count  int
}

func (l *rateLimiter) allow(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= l.every {
		l.window, l.count = now, 0
		// Old entries cannot suppress anything any more.
		for k, t := range l.last {
			if now.Sub(t) >= l.every {
				delete(l.last, k)
			}
		}
	}
	if t, ok := l.last[a]; ok && now.Sub(t) < l.every {
		return false
	}
	if l.count >= l.burst {
		return false
	}
	if l.last == nil {
		l.last = make(map[netip.Addr]time.Time)
	}
	l.last[a] = now
	l.count++
	return true
}
