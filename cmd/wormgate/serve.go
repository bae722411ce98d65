package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wormgate/wormgate/enforcer/dryrun"

	"github.com/wormgate/wormgate/enforcer/store/remote"

	"github.com/wormgate/wormgate/enforcer/nft"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/fleet"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// storeCloseTimeout bounds closing the record at shutdown.
const storeCloseTimeout = 500 * time.Millisecond

// recordOpenTimeout bounds opening the record at start-up: a hung disk
// fails the start instead of hanging it.
const recordOpenTimeout = 30 * time.Second

// queueLen buffers batches of messages between the receiver and the
// matcher, so that a burst of UDP datagrams is not dropped while the
// matcher is busy. It holds at most queueLen*receiver.MaxBatch (16,384)
// messages, some 6 MB of Postfix lines. A UDP socket's batches grow while
// the queue is full, so a burst of datagrams fills it as a stream does.
const queueLen = 256

func cmdServe(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("serve", "serve [--config FILE]\n\nRuns the appliance: syslog in, nftables bans out, status over HTTP.\nWithout --config it runs on the embedded default (see wormgate config).", s.stderr)
	path := fs.String("config", "", "configuration `file` (YAML); only what differs from the default")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	applyEnv(&cfg)
	log := newLogger(cfg.Log, s.stderr)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default action: a second
		// signal kills the process even if shutdown hangs.
		<-ctx.Done()
		stop()
	}()
	return serve(ctx, cfg, *path, log)
}

// app is the appliance, wired: what serve opened, in the order it opened
// it, and the goroutines it runs.
type app struct {
	log  *slog.Logger
	path string
	cfg  atomic.Pointer[Config]
	reg  *prometheus.Registry

	fw      enforcer.Firewall
	store   *remote.Client
	matcher *matcher.Matcher
	enf     *enforcer.Enforcer
	// fleet shares decisions with the other gateways; nil standalone.
	fleet  *fleet.Fleet
	guard  *senderGuard
	msgs   chan []syslog.Message
	rcv    *receiver.Receiver
	httpLn net.Listener
	// httpRejected counts the status server's 503s (too many at once).
	httpRejected prometheus.Counter
	status       *status
	closers      []func() error

	control   *control
	controlLn net.Listener
	// rmu serialises reloads (SIGHUP and the control API).
	rmu        sync.Mutex
	lastReload atomic.Pointer[reloadResult]
	reloadM    reloadMetrics
}

// serve opens every component and runs them until ctx is done.
func serve(ctx context.Context, cfg Config, path string, log *slog.Logger) error {
	a := &app{log: log, path: path, reg: prometheus.NewRegistry()}
	a.cfg.Store(&cfg)
	applyMemoryLimit(cfg.Process, log)
	defer a.close()
	for _, step := range []func(Config) error{
		a.openFirewall, a.openRecord, a.newMatcher, a.newFleet, a.newEnforcer, a.openReceiver, a.openHTTP, a.openControl,
	} {
		if err := step(cfg); err != nil {
			return err
		}
	}
	return a.run(ctx)
}

// close releases what the steps opened, in reverse order.
func (a *app) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			a.log.Warn("close", "err", err)
		}
	}
}

// openFirewall opens nftables, or the dry run. The ruleset is not touched
// until the enforcer runs.
func (a *app) openFirewall(cfg Config) error {
	if cfg.Enforcer.DryRun {
		a.fw = dryrun.New(a.log)
	} else {
		var opts []nft.Option
		if cfg.Enforcer.NFTables.SyslogGuard {
			opts = append(opts, nft.WithSyslogGuard(syslogGuard(cfg.Receiver)))
		} else {
			a.log.Warn("enforcer.nftables.syslog_guard is off: forged syslog datagrams from the Internet reach the user-space allow-list, which cannot tell them from an MX host's")
		}
		nf, err := nft.Open(cfg.Enforcer.NFTables, a.log, opts...)
		if err != nil {
			return err
		}
		a.fw = nf
		a.reg.MustRegister(kernelCollector{nf})
	}
	a.closers = append(a.closers, a.fw.Close)
	return nil
}

// openRecord opens the durable record of bans, when there is a firewall
// to keep in line with it.
func (a *app) openRecord(cfg Config) error {
	if cfg.Enforcer.DryRun {
		return nil
	}
	if cfg.Enforcer.StateDir == "" {
		a.log.Warn("enforcer.state_dir is empty: bans are not recorded and a flushed firewall or a reboot loses them")
		return nil
	}
	// The record lives in a helper process: a thread stuck in a write
	// on a hung disk (fsfreeze) cannot be interrupted, and would keep
	// this process from exiting; the helper can be abandoned.
	exe, err := remote.Executable()
	if err != nil {
		return fmt.Errorf("record helper: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), recordOpenTimeout)
	defer cancel()
	st, err := remote.Start(ctx, exe, []string{"record-helper"}, cfg.Enforcer.StateDir, a.log, remote.WithRegisterer(a.reg))
	if err != nil {
		return err
	}
	a.store = st
	a.closers = append(a.closers, func() error {
		// A hung disk holds the helper in a commit that never returns:
		// give up on it rather than on exiting. The kernel keeps the
		// bans and the next start adopts what the record lacks.
		ctx, cancel := context.WithTimeout(context.Background(), storeCloseTimeout)
		defer cancel()
		return st.Close(ctx)
	})
	return nil
}

func (a *app) newMatcher(cfg Config) error {
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	a.matcher = m
	a.reg.MustRegister(matcherCollector{m})
	return nil
}

// newFleet builds the fleet member when fleet.urls is set; it connects
// when the app runs, and NATS being down then does not stop the gateway.
func (a *app) newFleet(cfg Config) error {
	if !cfg.Fleet.Enabled() {
		return nil
	}
	var spool fleet.Spool
	if a.store != nil {
		spool = a.store
	}
	f, err := fleet.New(cfg.Fleet, a.log, a.reg, spool)
	if err != nil {
		return err
	}
	if cfg.Fleet.InsecureLab {
		a.log.Warn("fleet.insecure_lab is on: whoever reaches NATS can ban and unban on every gateway")
	}
	a.fleet = f
	return nil
}

// newEnforcer builds the enforcer; the gateway's own addresses and the
// single-host allowed senders are never-block from the start, every other
// syslog sender as soon as it is seen.
func (a *app) newEnforcer(cfg Config) error {
	var opts []enforcer.Option
	if a.store != nil {
		opts = append(opts, enforcer.WithStore(a.store))
	}
	if a.fleet != nil {
		opts = append(opts, enforcer.WithDecisionSink(a.fleet))
	}
	enf, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), a.fw, a.log, a.reg, opts...)
	if err != nil {
		return err
	}
	if a.fleet != nil {
		a.fleet.SetApplier(enf)
	}
	enf.AddNeverBlock(ownPrefixes(a.log)...)
	enf.AddNeverBlock(singleHosts(cfg.Receiver.AllowedSenders)...)
	a.enf = enf
	a.guard = &senderGuard{enf: enf, seen: make(map[netip.Addr]*liveSender), log: a.log}
	return nil
}

// fleetStatus is the fleet's part of the status; standalone says so.
func (a *app) fleetStatus() fleet.Status {
	if a.fleet == nil {
		return fleet.Status{Peers: []string{}}
	}
	return a.fleet.Status()
}

// openReceiver binds the syslog listeners.
func (a *app) openReceiver(cfg Config) error {
	a.msgs = make(chan []syslog.Message, queueLen)
	rcv, err := receiver.New(cfg.Receiver, a.msgs, a.log, a.reg)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	if err := rcv.Open(); err != nil {
		return err
	}
	a.rcv = rcv
	return nil
}

// openHTTP binds the status server's listener; "" disables it.
func (a *app) openHTTP(cfg Config) error {
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		senderCollector{a.senders}, newBuildInfo())
	a.status = &status{
		started: time.Now(), cfg: &a.cfg, enf: a.enf, rcv: a.rcv, reg: a.reg, senders: a.senders, lastReload: &a.lastReload,
		fleet:    a.fleetStatus,
		firewall: map[bool]string{true: "dry-run", false: "nftables"}[cfg.Enforcer.DryRun],
	}
	if cfg.HTTP.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	a.httpLn = ln
	a.status.httpAddr = ln.Addr().String()
	a.httpRejected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wormgate_http_requests_rejected_total",
		Help: "HTTP requests answered 503 because the status server was serving its maximum of requests at once.",
	})
	a.reg.MustRegister(a.httpRejected)
	return nil
}

// openControl binds the control socket and loads the HTTP write token.
func (a *app) openControl(cfg Config) error {
	a.reloadM = newReloadMetrics(a.reg)
	a.control = newControl(a)
	tok, err := loadToken(cfg.HTTP.WriteTokenFile)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	a.control.token.Store(&tok)
	if cfg.Control.Socket == "" {
		return nil
	}
	ln, err := listenControl(cfg.Control, a.log)
	if err != nil {
		return err
	}
	a.controlLn = ln // its Close, at the server's shutdown, removes the file
	return nil
}

// run runs every component in one errgroup until ctx is done. The
// enforcer outlives the receiver and the matcher: it stops only when every
// received message has been matched, then flushes what is pending.
func (a *app) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	enfCtx, enfStop := context.WithCancel(context.WithoutCancel(ctx))
	defer enfStop()
	// Without a firewall there is no point in receiving: an error of the
	// enforcer ends everything.
	g.Go(func() error { return a.enf.Run(enfCtx) })
	g.Go(func() error {
		defer close(a.msgs)
		return a.rcv.Run(gctx)
	})
	g.Go(func() error {
		defer enfStop()
		a.pipeline()
		return nil
	})
	if a.httpLn != nil {
		dash := newDashboard(a.status, a.control.writable, a.log)
		g.Go(func() error { dash.run(gctx); return nil })
		a.runHTTP(gctx, g, a.httpLn, a.httpServer(dash))
	}
	if a.controlLn != nil {
		a.runHTTP(gctx, g, a.controlLn, a.control.server())
	}
	g.Go(func() error { return a.reloadOnHUP(gctx) })
	g.Go(func() error { return a.returnMemory(gctx) })
	if a.fleet != nil {
		g.Go(func() error { return a.fleet.Run(gctx) })
	}
	// Every listener is bound (the steps before run): READY=1 waits for the firewall only.
	g.Go(func() error { notifyLifecycle(gctx, a.log, a.enf.Ready); return nil })
	cfg := a.cfg.Load()
	a.log.Info("wormgate started", "version", buildVersion(), "firewall", a.status.firewall,
		"udp", a.rcv.UDPAddrs(), "tcp", a.rcv.TCPAddrs(), "tls", a.rcv.TLSAddrs(), "http", cfg.HTTP.Listen, "rules", len(cfg.Matcher.Rules))
	err := g.Wait()
	a.log.Info("wormgate stopped", "err", err)
	return err
}

// pipeline matches every received message, in order, and hands the
// offenses to the enforcer, until the receiver closes the channel.
func (a *app) pipeline() {
	var offs []matcher.Offense
	// The clock is read after every wait and every clockEvery messages of
	// a burst, not for each one: the senders' last-message times need no
	// better, and a clock read per line is a tenth of the pipeline.
	const clockEvery = 256
	now, n := time.Now(), 0
	for {
		var batch []syslog.Message
		var ok bool
		select {
		case batch, ok = <-a.msgs:
		default:
			batch, ok = <-a.msgs
			now, n = time.Now(), 0
		}
		if !ok {
			return
		}
		for i := range batch {
			msg := &batch[i]
			if n++; n == clockEvery {
				now, n = time.Now(), 0
			}
			a.guard.observe(msg.Peer, msg.Host, now, n == 1)
			offs = a.matcher.Match(offs[:0], *msg)
			for _, o := range offs {
				a.enf.Offend(o)
			}
		}
		receiver.Release(batch)
	}
}

// httpServer is the status server, within defaultHTTPLimits: read-only,
// plus the control API's writes behind the bearer token when
// http.write_token_file is set, and the dashboard at /.
func (a *app) httpServer(dash *dashboard) *http.Server {
	mux := http.NewServeMux()
	a.status.routes(mux)
	a.control.readRoutes(mux)
	a.control.routes(mux, "token", a.control.requireToken)
	dash.routes(mux)
	mux.HandleFunc("GET /api/v1/auth", a.control.requireToken(checkToken))
	return httpServer(mux, defaultHTTPLimits, a.httpRejected, a.log)
}

func (a *app) runHTTP(ctx context.Context, g *errgroup.Group, ln net.Listener, srv *http.Server) {
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http %v: %w", ln.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

func (a *app) reloadOnHUP(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			a.reload(ctx, "SIGHUP")
		}
	}
}

// syslogGuard is the kernel's guard of the receiver's listeners.
func syslogGuard(c receiver.Config) nft.Guard {
	ports := func(lists ...[]string) []uint16 {
		var out []uint16
		for _, l := range lists {
			for _, a := range l {
				_, p, err := net.SplitHostPort(a)
				if err != nil {
					continue // validated at load
				}
				n, err := strconv.ParseUint(p, 10, 16)
				if err != nil || n == 0 {
					continue // port 0 (tests) is chosen by the kernel
				}
				if !slices.Contains(out, uint16(n)) {
					out = append(out, uint16(n))
				}
			}
		}
		return out
	}
	return nft.Guard{UDPPorts: ports(c.UDPListen), TCPPorts: ports(c.TCPListen, c.TLSListen), Senders: c.AllowedSenders}
}

// singleHosts are the allowed syslog senders named one by one: the MX
// hosts. They are never banned from the start, before they have sent a
// line, since another MX may log one of them as a client first.
func singleHosts(prefixes []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range prefixes {
		if p.IsSingleIP() {
			out = append(out, p)
		}
	}
	return out
}

// ownPrefixes are the gateway's own addresses: never banned whatever the
// rules say.
func ownPrefixes(log *slog.Logger) []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		log.Warn("own addresses unknown; only the configured never_block list protects them", "err", err)
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
			ip = ip.Unmap()
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out
}

// maxSenders bounds the syslog senders learned for the never-block list;
// a site has a handful of MX hosts.
const maxSenders = 1024

// senderGuard protects the syslog senders themselves: an MX host that
// forwards its log must never be banned because of a line in it. It
// learns the exact peer addresses (not the whole allowed_senders ranges,
// which may hold clients that deserve a ban). Only the pipeline
// goroutine calls it.
type senderGuard struct {
	enf *enforcer.Enforcer
	log *slog.Logger
	mu  sync.Mutex
	// seen are the senders and what they sent, for the never-block list
	// and `wormgate status`.
	seen map[netip.Addr]*liveSender
	// last is the sender of the previous message: a burst comes from one
	// sender, and its counters then need neither the lock nor the map.
	lastPeer netip.Addr
	last     *liveSender
}

// liveSender is a sender's counters, written by the pipeline goroutine
// and read by the status page.
type liveSender struct {
	first    time.Time
	lastNano atomic.Int64
	messages atomic.Uint64
	host     atomic.Pointer[string]
}

// senderStat is what one syslog sender sent.
type senderStat struct {
	// Host is the HOSTNAME of its last message, which the dashboard
	// shows beside the address.
	Host     string    `json:"host,omitempty"`
	First    time.Time `json:"first_message"`
	Last     time.Time `json:"last_message"`
	Messages uint64    `json:"messages"`
	// ParseErrors are its messages that did not parse; Unattributed its
	// events that matched a rule but named no client the matcher could
	// trust or find. Both since start.
	ParseErrors  uint64 `json:"parse_errors"`
	Unattributed uint64 `json:"unattributed"`
}

// observe counts a message of peer. Only the pipeline goroutine calls it;
// checkHost asks it to look at the HOSTNAME too (it does every so often:
// a sender's name seldom changes, and comparing it costs on every line).
func (g *senderGuard) observe(peer netip.Addr, host string, now time.Time, checkHost bool) {
	if !peer.IsValid() {
		return
	}
	st := g.last
	if peer != g.lastPeer || st == nil {
		var added bool
		if st, added = g.lookup(peer, host, now); st == nil {
			return
		}
		g.lastPeer, g.last = peer, st
		if added {
			g.enf.AddNeverBlock(netip.PrefixFrom(peer, peer.BitLen()))
			g.log.Info("syslog sender added to the never-block list", "addr", peer)
		}
	}
	st.lastNano.Store(now.UnixNano())
	st.messages.Add(1)
	if checkHost {
		if h := st.host.Load(); *h != host {
			// A copy: host may point into a large receive buffer.
			c := strings.Clone(host)
			st.host.Store(&c)
		}
	}
}

// lookup finds or adds peer; nil past maxSenders.
func (g *senderGuard) lookup(peer netip.Addr, host string, now time.Time) (st *liveSender, added bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st, ok := g.seen[peer]; ok {
		return st, false
	}
	if len(g.seen) >= maxSenders {
		return nil, false
	}
	st = &liveSender{first: now}
	h := strings.Clone(host)
	st.host.Store(&h)
	g.seen[peer] = st
	return st, true
}

// senders is what each syslog sender sent, with its parse errors and
// unattributed events; a sender whose every message failed to parse is
// listed too (with no messages), which is how an operator finds it.
func (a *app) senders() map[string]senderStat {
	out := a.guard.senders()
	add := func(m map[netip.Addr]uint64, f func(*senderStat, uint64)) {
		for addr, n := range m {
			st := out[addr.String()]
			f(&st, n)
			out[addr.String()] = st
		}
	}
	if a.rcv != nil {
		add(a.rcv.ParseErrors(), func(st *senderStat, n uint64) { st.ParseErrors = n })
	}
	add(a.matcher.UnattributedBySender(), func(st *senderStat, n uint64) { st.Unattributed = n })
	return out
}

// senders returns a copy of what each sender sent.
func (g *senderGuard) senders() map[string]senderStat {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]senderStat, len(g.seen))
	for a, st := range g.seen {
		out[a.String()] = senderStat{Host: *st.host.Load(), First: st.first, Last: time.Unix(0, st.lastNano.Load()), Messages: st.messages.Load()}
	}
	return out
}

// applyMemoryLimit sets the runtime's soft memory limit; 0 leaves Go's
// own (none, or $GOMEMLIMIT).
func applyMemoryLimit(c ProcessConfig, log *slog.Logger) {
	if c.MemoryLimitMiB > 0 {
		debug.SetMemoryLimit(int64(c.MemoryLimitMiB) << 20)
		log.Info("memory limit set", "mib", c.MemoryLimitMiB)
	}
}

// returnMemory hands freed heap back to the kernel after a burst, while a
// memory limit is set: the runtime's background scavenger is slow on an
// idle process, which would stay at its peak size for minutes after a
// flood. It looks every few seconds, at the cost of reading two runtime
// metrics; a return costs a garbage collection.
func (a *app) returnMemory(ctx context.Context) error {
	const every, slack = time.Second, 32 << 20
	samples := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if a.cfg.Load().Process.MemoryLimitMiB == 0 {
			continue
		}
		metrics.Read(samples)
		if free := samples[0].Value.Uint64(); free > slack {
			debug.FreeOSMemory()
			a.log.Debug("returned free memory to the kernel", "free_mib", free>>20)
		}
	}
}

// resetMemoryLimit lifts a limit a reload removed.
func resetMemoryLimit() { debug.SetMemoryLimit(math.MaxInt64) }
