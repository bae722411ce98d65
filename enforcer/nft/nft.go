//go:build linux

package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"github.com/wormgate/wormgate/enforcer"
	"golang.org/x/sys/unix"
)

const (
	set4Name  = "blocked4"
	set6Name  = "blocked6"
	net4Name  = "blocked4_net"
	net6Name  = "blocked6_net"
	portsName = "ports"
	chainName = "prerouting"
	// guardChainName is the regular chain the syslog guard jumps to.
	guardChainName = "syslog_guard"

	// chunk bounds the elements per netlink message and per batch:
	// google/nftables v0.3.0 silently truncates one message above ~2,300
	// IPv4 (1,600 IPv6) timed elements, because the nested attribute length
	// is 16 bits.
	chunk = 1000
	// sockBuf holds a whole batch (three messages of one chunk) many times
	// over, and the kernel's replies to it.
	sockBuf = 8 << 20
	// opTimeout bounds one kernel operation when the caller's context has no
	// deadline, so that a lost netlink reply cannot hang the owner goroutine.
	opTimeout = 60 * time.Second
)

// Firewall is enforcer.Firewall on the kernel's nftables. One goroutine owns the
// netlink connection, because google/nftables' lasting Conn can deadlock
// when goroutines share it; every method hands its work to that goroutine.
type Firewall struct {
	log     *slog.Logger
	reqs    chan request
	quit    chan struct{}
	stopped chan struct{}
	err     error // of closing the connection, set before stopped closes
	// closeOnce lets Close be called twice, also concurrently.
	closeOnce sync.Once
	table     string
	// ports are the configured ports, for the log.
	ports atomic.Pointer[[]uint16]
}

var _ enforcer.Firewall = (*Firewall)(nil)

type request struct {
	ctx context.Context
	// run does the work on the owner goroutine and hands its result to
	// the caller through a channel of its own; it never writes anything
	// the caller can still read after it returned on a cancelled context.
	run func(k *kernel)
}

// Open connects to nftables and starts the owner goroutine. It does not
// change the ruleset; call Setup for that. cfg comes from a validated
// configuration: no defaults are applied here, and no ports means that all
// traffic of a blocked address is dropped.
func Open(cfg enforcer.NFTablesConfig, log *slog.Logger, opts ...Option) (*Firewall, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := options{timeoutUpdate: timeoutUpdateSupported()}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.Table == "" || len(cfg.Table) > unix.NFT_NAME_MAXLEN-1 {
		return nil, fmt.Errorf("open nftables: table name %q: want 1 to %d bytes", cfg.Table, unix.NFT_NAME_MAXLEN-1)
	}
	ports := normalizePorts(cfg.Ports)

	k := newKernel(cfg.Table, ports, o)
	k.log = log
	if err := k.open(); err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	if !k.testing {
		if err := k.follow(); err != nil {
			_ = k.close()
			return nil, fmt.Errorf("open nftables: %w", err)
		}
	}
	n := &Firewall{
		log:     log,
		reqs:    make(chan request),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		table:   cfg.Table,
	}
	n.ports.Store(&ports)
	log.Debug("nftables element timeout update", "supported", o.timeoutUpdate)
	go n.run(k)
	return n, nil
}

func (n *Firewall) run(k *kernel) {
	defer close(n.stopped)
	for {
		select {
		case <-n.quit:
			k.closeMonitor()
			n.err = k.close()
			return
		case r := <-n.reqs:
			r.run(k)
		}
	}
}

// result carries what an operation on the owner goroutine produced.
type result[T any] struct {
	v   T
	err error
}

// call runs fn on the owner goroutine and returns its value. When ctx
// ends first, call returns at once; the kernel operation may still
// complete, which is safe because every operation can be repeated, and
// its value then goes to a buffered channel nobody reads.
func call[T any](ctx context.Context, n *Firewall, op string, fn func(ctx context.Context, k *kernel) (T, error)) (T, error) {
	var zero T
	res := make(chan result[T], 1)
	r := request{ctx: ctx, run: func(k *kernel) {
		var v T
		err := k.do(ctx, func(ctx context.Context, k *kernel) error {
			var err error
			v, err = fn(ctx, k)
			return err
		})
		res <- result[T]{v, err}
	}}
	select {
	case <-n.quit:
		return zero, fmt.Errorf("nftables %s: %w", op, enforcer.ErrClosed)
	default:
	}
	select {
	case n.reqs <- r:
	case <-n.quit:
		return zero, fmt.Errorf("nftables %s: %w", op, enforcer.ErrClosed)
	case <-ctx.Done():
		return zero, fmt.Errorf("nftables %s: %w", op, ctx.Err())
	}
	select {
	case r := <-res:
		if r.err != nil {
			return zero, fmt.Errorf("nftables %s: %w", op, r.err)
		}
		return r.v, nil
	case <-ctx.Done():
		return zero, fmt.Errorf("nftables %s: %w", op, ctx.Err())
	}
}

// exec is call for operations without a value.
func (n *Firewall) exec(ctx context.Context, op string, fn func(ctx context.Context, k *kernel) error) error {
	_, err := call(ctx, n, op, func(ctx context.Context, k *kernel) (struct{}, error) {
		return struct{}{}, fn(ctx, k)
	})
	return err
}

// Close stops the owner goroutine after the operation in progress and
// closes the connection. The table and its elements stay in the kernel:
// bans outlive a restart of the daemon.
func (n *Firewall) Close() error {
	n.closeOnce.Do(func() { close(n.quit) })
	<-n.stopped
	if n.err != nil {
		return fmt.Errorf("nftables close: %w", n.err)
	}
	return nil
}

// Setup creates or adopts table, sets and chain in one batch. The blocked
// sets keep their elements, the ports set is refilled and the chain's rules
// are replaced in the same transaction, so there is no moment without the
// drop rules and running it twice never duplicates a rule.
func (n *Firewall) Setup(ctx context.Context) error {
	err := n.exec(ctx, "setup", func(_ context.Context, k *kernel) error { return k.setup() })
	if err == nil {
		n.log.Info("nftables ruleset ready", "table", "inet "+n.table, "ports", n.portsDesc())
	}
	return err
}

// Restore rebuilds or adopts the ruleset with exactly elems in the
// blocked sets, in one batch of many messages: the kernel commits a batch
// atomically, so the old elements stay in force until the new ones are.
// The sets are emptied first in that batch, so every element costs one
// add whether or not it was there; Element.Refresh does not matter here.
// It also ends a drift that Check reported: whatever anyone changed before
// is overwritten.
func (n *Firewall) Restore(ctx context.Context, elems []enforcer.Element) error {
	s, err := sortElements(elems)
	if err != nil {
		return fmt.Errorf("nftables restore: %w", err)
	}
	err = n.exec(ctx, "restore", func(_ context.Context, k *kernel) error { return k.restore(s) })
	if err == nil {
		n.log.Info("nftables ruleset restored", "table", "inet "+n.table, "ports", n.portsDesc(),
			"ipv4", len(s.v4), "ipv6", len(s.v6), "networks", len(s.nets))
	}
	return err
}

// Check verifies table, sets, chain and rules, and reports what the event
// monitor saw another process change in wormgate's table since the last
// Restore (see monitor). It never reads the blocked sets, which would
// cost seconds on big sets: when the ruleset generation is the one it last
// found in order, nothing was committed since and one read of the
// generation is the whole check.
func (n *Firewall) Check(ctx context.Context) error {
	return n.exec(ctx, "check", func(_ context.Context, k *kernel) error { return k.check() })
}

// Add blocks each address or network until its own timeout ends, in one
// batch. A new element costs one add. An element marked Refresh gets its
// new timeout counted from now: on Linux 6.10 and later by one add that
// also carries the expiration, which the kernel then updates, before that
// by deleting and re-adding it.
func (n *Firewall) Add(ctx context.Context, elems []enforcer.Element) error {
	s, err := sortElements(elems)
	if err != nil {
		return fmt.Errorf("nftables add: %w", err)
	}
	err = n.exec(ctx, "add", func(_ context.Context, k *kernel) error { return k.add(s) })
	if err == nil {
		n.log.Debug("nftables add", "ipv4", len(s.v4), "ipv6", len(s.v6), "networks", len(s.nets))
	}
	return err
}

// Delete unblocks addresses; an address that is not blocked is skipped.
func (n *Firewall) Delete(ctx context.Context, addrs []netip.Addr) error {
	var s elemSets
	for _, a := range addrs {
		if !a.IsValid() {
			return fmt.Errorf("nftables delete: %w: zero address", enforcer.ErrInvalidElement)
		}
		if a = a.Unmap().WithZone(""); !isCanary(a) {
			s.addHost(elem{addr: a})
		}
	}
	err := n.exec(ctx, "delete", func(_ context.Context, k *kernel) error { return k.remove(s.v4, s.v6) })
	if err == nil {
		n.log.Debug("nftables delete", "ipv4", len(s.v4), "ipv6", len(s.v6))
	}
	return err
}

// DeleteNets unblocks networks, each only as it was added; one that is
// not blocked is skipped, and a prefix of one address is deleted as that
// address. The networks are few (bans by hand), so their sets are read
// first: an interval can only be deleted by its exact ends, and unlike an
// address it cannot be added first to make its delete safe, because the
// add would overlap whatever covers it.
func (n *Firewall) DeleteNets(ctx context.Context, nets []netip.Prefix) error {
	var hosts elemSets
	var want []netip.Prefix
	for _, p := range nets {
		p, err := enforcer.NormalizeNet(p)
		if err != nil {
			return fmt.Errorf("nftables delete networks: %w", err)
		}
		switch {
		case !p.IsSingleIP():
			want = append(want, p)
		case !isCanary(p.Addr()):
			hosts.addHost(elem{addr: p.Addr()})
		}
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = n.exec(ctx, "delete networks", func(_ context.Context, k *kernel) error {
			return k.removeNets(hosts, want)
		})
		// ENOENT: a network expired after it was read; read again.
		if !errors.Is(err, unix.ENOENT) || attempt == 3 {
			break
		}
	}
	if err == nil {
		n.log.Debug("nftables delete networks", "networks", len(want), "addresses", len(hosts.v4)+len(hosts.v6))
	}
	return err
}

// SetPorts replaces the ports the drop rules apply to (none: all traffic)
// in one batch that refills the ports set and rewrites the rules, so that
// no packet meets a half-changed ruleset.
func (n *Firewall) SetPorts(ctx context.Context, ports []uint16) error {
	ports = normalizePorts(ports)
	err := n.exec(ctx, "set ports", func(_ context.Context, k *kernel) error {
		if err := k.setPorts(ports); err != nil {
			return err
		}
		n.ports.Store(&ports)
		return nil
	})
	if err == nil {
		n.log.Info("nftables ports changed", "table", "inet "+n.table, "ports", n.portsDesc())
	}
	return err
}

// List reads the sets back with each element's remaining time, sorted by
// address, networks with Net set (a range added by hand that is no prefix
// comes as the prefixes that make it up). An element without a timeout
// (added by hand with nft) has Timeout 0; the canaries are left out. A
// read that the kernel could not give consistently (see kernel.list) is
// retried and finally fails with ErrInconsistentDump; it never returns
// an element twice.
func (n *Firewall) List(ctx context.Context) ([]enforcer.Element, error) {
	out, err := call(ctx, n, "list", func(ctx context.Context, k *kernel) ([]enforcer.Element, error) {
		// A table that is not there holds no bans: that is an answer,
		// not an error (the enforcer tells "nothing to keep" from "could
		// not read what is there").
		tables, err := k.conn.ListTablesOfFamily(k.table.Family)
		if err != nil {
			return nil, fmt.Errorf("read tables: %w", err)
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == k.table.Name }) {
			return nil, nil
		}
		return k.list(ctx)
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b enforcer.Element) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return a.Net.Bits() - b.Net.Bits()
	})
	return out, nil
}

// Counters reads the drop rules' counters.
func (n *Firewall) Counters(ctx context.Context) (DropCounts, error) {
	return call(ctx, n, "counters", func(_ context.Context, k *kernel) (DropCounts, error) {
		var c DropCounts
		rules, err := k.conn.GetRules(k.table, k.chain)
		if err != nil {
			return c, err
		}
		for _, r := range rules {
			if ctr := counterOf(r); ctr != nil {
				c.BanPackets += ctr.Packets
				c.BanBytes += ctr.Bytes
			}
		}
		if k.guard == nil {
			return c, nil
		}
		grules, err := k.conn.GetRules(k.table, k.guardChain)
		if err != nil {
			return c, err
		}
		if n := len(grules); n >= 2 {
			if ctr := counterOf(grules[0]); ctr != nil {
				c.RPFPackets = ctr.Packets
			}
			if ctr := counterOf(grules[n-1]); ctr != nil {
				c.SenderPackets = ctr.Packets
			}
		}
		return c, nil
	})
}

func counterOf(r *nftables.Rule) *expr.Counter {
	for _, e := range r.Exprs {
		if ctr, ok := e.(*expr.Counter); ok {
			return ctr
		}
	}
	return nil
}

func (n *Firewall) portsDesc() any {
	if p := *n.ports.Load(); len(p) > 0 {
		return p
	}
	return "all"
}

// normalizePorts sorts and deduplicates a copy of ports.
func normalizePorts(ports []uint16) []uint16 {
	ports = slices.Clone(ports)
	slices.Sort(ports)
	return slices.Compact(ports)
}

// elemSets are validated elements by kernel set; a network is
// two elements (see appendNet). nets are the networks.
type elemSets struct {
	v4, v6, n4, n6 []elem
	nets           []netip.Prefix
}

func (s *elemSets) addHost(e elem) {
	if e.addr.Is4() {
		s.v4 = append(s.v4, e)
	} else {
		s.v6 = append(s.v6, e)
	}
}

// sortElements validates elems and sorts them into the kernel sets. An
// element for a canary address is dropped: it could block nothing (no
// packet comes from it) and would turn the canary into a ban that expires.
func sortElements(elems []enforcer.Element) (elemSets, error) {
	n4 := 0
	for _, e := range elems {
		if e.Addr.Unmap().Is4() {
			n4++
		}
	}
	s := elemSets{v4: make([]elem, 0, n4), v6: make([]elem, 0, len(elems)-n4)}
	for _, e := range elems {
		e, err := e.Normalize()
		if err != nil {
			return elemSets{}, err
		}
		el := elem{addr: e.Addr, timeout: e.Timeout, refresh: e.Refresh}
		switch {
		case e.Net.IsValid() && e.Addr.Is4():
			s.n4, s.nets = appendNet(s.n4, e.Net, el), append(s.nets, e.Net)
		case e.Net.IsValid():
			s.n6, s.nets = appendNet(s.n6, e.Net, el), append(s.nets, e.Net)
		case !isCanary(e.Addr):
			s.addHost(el)
		}
	}
	return s, nil
}

// timeoutUpdateSupported reports whether the running kernel updates the
// timeout and expiration of an element that is added again (Linux 6.10,
// "set element timeout update support"). Older kernels keep the old
// timeout silently, so refreshes there need a delete and an add.
func timeoutUpdateSupported() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 6 || major == 6 && minor >= 10
}

// kernel is the state only the owner goroutine touches.
type kernel struct {
	log      *slog.Logger
	nsFd     int
	testDial nltest.Func
	// testing skips the socket options a fake connection lacks.
	testing bool
	// timeoutUpdate: the kernel restarts an element's timeout when it is
	// added again with an expiration.
	timeoutUpdate bool
	sndBuf        int
	conn          *nftables.Conn
	nl            *netlink.Conn
	table         *nftables.Table
	// set4 and set6 hold addresses, net4 and net6 networks (intervals).
	set4, set6, net4, net6 *nftables.Set
	ports                  *nftables.Set
	chain                  *nftables.Chain
	portN                  []uint16
	// guardChain holds the syslog guard's rules (empty without a guard);
	// guard is nil when the guard is off.
	guardChain *nftables.Chain
	guard      *Guard
	// watch is the change detection of monitor.go.
	watch watch
	// dumps counts reads of the blocked sets, which tests watch.
	dumps int
}

func newKernel(table string, ports []uint16, o options) *kernel {
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	accept := nftables.ChainPolicyAccept
	// Fixed set IDs: AddSet would otherwise draw them from a package
	// counter that is not safe for concurrent Conns.
	return &kernel{
		nsFd:          o.netnsFd,
		testDial:      o.testDial,
		testing:       o.testDial != nil,
		timeoutUpdate: o.timeoutUpdate,
		table:         t,
		set4:          &nftables.Set{Table: t, Name: set4Name, ID: 1, KeyType: nftables.TypeIPAddr, HasTimeout: true},
		set6:          &nftables.Set{Table: t, Name: set6Name, ID: 2, KeyType: nftables.TypeIP6Addr, HasTimeout: true},
		net4:          &nftables.Set{Table: t, Name: net4Name, ID: 4, KeyType: nftables.TypeIPAddr, HasTimeout: true, Interval: true},
		net6:          &nftables.Set{Table: t, Name: net6Name, ID: 5, KeyType: nftables.TypeIP6Addr, HasTimeout: true, Interval: true},
		ports:         &nftables.Set{Table: t, Name: portsName, ID: 3, KeyType: nftables.TypeInetService},
		chain: &nftables.Chain{
			Name:     chainName,
			Table:    t,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityRaw,
			Policy:   &accept,
		},
		portN:      ports,
		guardChain: &nftables.Chain{Name: guardChainName, Table: t},
		guard:      o.guard,
	}
}

func (k *kernel) open() error {
	opts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error {
			k.nl = c
			k.sndBuf = sockBuf
			if k.testing {
				return nil
			}
			if err := setBuffer(c, unix.SO_SNDBUFFORCE, sockBuf, c.SetWriteBuffer); err != nil {
				return err
			}
			return setBuffer(c, unix.SO_RCVBUFFORCE, sockBuf, c.SetReadBuffer)
		}),
	}
	if k.nsFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(k.nsFd))
	}
	if k.testDial != nil {
		opts = append(opts, nftables.WithTestDial(k.testDial))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return err
	}
	k.conn = conn
	// The monitor must drop the events of this connection from now on.
	k.watch.pid = 0
	return nil
}

// setBuffer raises a socket buffer beyond net.core.[rw]mem_max when the
// process may (CAP_NET_ADMIN), else as far as the sysctl allows.
func setBuffer(c *netlink.Conn, forceOpt, size int, fallback func(int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fallback(size)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, forceOpt, size)
	}); err != nil || serr != nil {
		return fallback(size)
	}
	return nil
}

func (k *kernel) close() error {
	if k.conn == nil {
		return nil
	}
	err := k.conn.CloseLasting()
	k.conn, k.nl = nil, nil
	return err
}

// do runs one operation under a socket deadline. After any failure the
// connection is replaced: a timed-out or failed batch can leave unread
// replies on the socket, and a Conn that failed to serialise keeps that
// error forever.
func (k *kernel) do(ctx context.Context, fn func(context.Context, *kernel) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if k.conn == nil {
		if err := k.open(); err != nil {
			return fmt.Errorf("reconnect: %w", err)
		}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(opTimeout)
	}
	if k.nl != nil {
		_ = k.nl.SetDeadline(deadline)
	}
	k.see()
	err := fn(ctx, k)
	if err != nil {
		if cerr := k.close(); cerr != nil {
			k.log.Debug("nftables reconnect: close", "err", cerr)
		}
		if oerr := k.open(); oerr != nil {
			k.log.Debug("nftables reconnect", "err", oerr)
		}
	}
	return err
}

func (k *kernel) setup() error {
	if err := k.checkSets(); err != nil {
		return err
	}
	c := k.conn
	c.AddTable(k.table)
	for _, s := range k.sets() {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	if err := k.addCanaries(c); err != nil {
		return err
	}
	if err := k.fillPorts(c); err != nil {
		return err
	}
	k.fillChain(c)
	return c.Flush()
}

// sets are all of wormgate's sets.
func (k *kernel) sets() []*nftables.Set {
	return []*nftables.Set{k.set4, k.set6, k.net4, k.net6, k.ports}
}

// restore is setup plus emptying and refilling the blocked sets, in one
// batch sent with one sendmsg; the socket's send buffer is raised to hold
// it. The objects are google/nftables' messages, the elements are built
// here, one add per element.
func (k *kernel) restore(s elemSets) error {
	if err := k.checkOverlap(s.nets, false); err != nil {
		return err
	}
	if err := k.checkSets(); err != nil {
		return err
	}
	changed, err := k.chainChanged()
	if err != nil {
		return err
	}
	msgs, err := record(func(c *nftables.Conn) error {
		c.AddTable(k.table)
		for _, s := range k.sets() {
			if err := c.AddSet(s, nil); err != nil {
				return fmt.Errorf("set %s: %w", s.Name, err)
			}
		}
		for _, s := range []*nftables.Set{k.set4, k.set6, k.net4, k.net6} {
			c.FlushSet(s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, x := range []struct {
		s     *nftables.Set
		elems []elem
	}{
		{k.set4, append(s.v4, elem{addr: canary4})},
		{k.set6, append(s.v6, elem{addr: canary6})},
		{k.net4, s.n4},
		{k.net6, s.n6},
	} {
		if msgs, err = appendElemMsgs(msgs, typeNewSetElem, x.s, x.elems, withTimeout); err != nil {
			return err
		}
	}
	tail, err := record(func(c *nftables.Conn) error {
		if err := k.fillPorts(c); err != nil {
			return err
		}
		if changed {
			// A base chain's hook cannot be changed in place:
			// replace it in the same batch.
			c.FlushChain(k.chain)
			c.DelChain(k.chain)
		}
		k.fillChain(c)
		return nil
	})
	if err != nil {
		return err
	}
	if err := overlap(k.sendBatch(append(msgs, tail...)), len(s.nets)); err != nil {
		return err
	}
	k.restored()
	return nil
}

// setPorts makes ports the ports set and rewrites the rules (which look
// the set up only when there are ports) in one batch.
func (k *kernel) setPorts(ports []uint16) error {
	old := k.portN
	k.portN = ports
	msgs, err := record(func(c *nftables.Conn) error {
		if err := k.fillPorts(c); err != nil {
			return err
		}
		k.fillChain(c)
		return nil
	})
	if err == nil {
		err = k.sendBatch(msgs)
	}
	if err != nil {
		k.portN = old
	}
	return err
}

// overlap turns the kernel's answer to an interval that overlaps another
// (EEXIST, which it gives for nothing else here: elements are added
// without NLM_F_EXCL) into ErrOverlap. checkOverlap has looked before;
// this is for what it could not see.
func overlap(err error, nets int) error {
	if nets > 0 && errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w: a network overlaps one the kernel holds: %w", enforcer.ErrOverlap, err)
	}
	return err
}

// fillPorts refills the ports set.
func (k *kernel) fillPorts(c *nftables.Conn) error {
	c.FlushSet(k.ports)
	if len(k.portN) == 0 {
		return nil
	}
	elems := make([]nftables.SetElement, len(k.portN))
	for i, p := range k.portN {
		elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
	}
	if err := c.SetAddElements(k.ports, elems); err != nil {
		return fmt.Errorf("set %s: %w", portsName, err)
	}
	return nil
}

// fillChain adds the chain (adopting it when it exists) with exactly
// wormgate's rules.
func (k *kernel) fillChain(c *nftables.Conn) {
	// The guard's chain first: the base chain's rules jump to it. It
	// exists (empty) without a guard too, so that turning the guard off
	// needs no deletion of an object that may be missing.
	c.AddChain(k.guardChain)
	c.FlushChain(k.guardChain)
	for _, r := range k.guardRules() {
		c.AddRule(r)
	}
	c.AddChain(k.chain)
	c.FlushChain(k.chain)
	for _, r := range k.rules() {
		c.AddRule(r)
	}
}

// chainChanged reports whether wormgate's chain exists with another
// type, hook or priority than setup gives it.
func (k *kernel) chainChanged() (bool, error) {
	chains, err := k.conn.ListChainsOfTableFamily(k.table.Family)
	if err != nil {
		return false, fmt.Errorf("read chains: %w", err)
	}
	i := slices.IndexFunc(chains, func(c *nftables.Chain) bool {
		return c.Table != nil && c.Table.Name == k.table.Name && c.Name == k.chain.Name
	})
	return i >= 0 && !k.sameChain(chains[i]), nil
}

func (k *kernel) sameChain(ch *nftables.Chain) bool {
	return ch.Hooknum != nil && *ch.Hooknum == *k.chain.Hooknum &&
		ch.Priority != nil && *ch.Priority == *k.chain.Priority && ch.Type == k.chain.Type
}

// check reports a change the monitor saw, then, when the ruleset
// generation moved since it last found everything in order, compares the
// kernel's objects with what setup makes and looks for the canaries. A
// missing or different object wraps enforcer.ErrDrift, a netlink failure
// does not; neither does a monitor that cannot run, which is reported
// after the objects were checked, so that a deleted table is still found.
func (k *kernel) check() error {
	if c := k.watch.changed; c != "" {
		return fmt.Errorf("%w: %s", enforcer.ErrDrift, c)
	}
	gen, err := k.genID()
	if err != nil {
		return err
	}
	if gen != k.watch.gen {
		if err := k.checkObjects(); err != nil {
			return err
		}
		if err := k.checkCanaries(); err != nil {
			return err
		}
		k.watch.gen = gen
	}
	if k.watch.mon == nil && !k.testing {
		return fmt.Errorf("event monitor: %w", k.watch.err)
	}
	return nil
}

// checkObjects compares table, sets, chains, rules and ports with what
// setup makes.
func (k *kernel) checkObjects() error {
	tables, err := k.conn.ListTablesOfFamily(k.table.Family)
	if err != nil {
		return fmt.Errorf("read tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == k.table.Name }) {
		return fmt.Errorf("%w: table inet %s missing", enforcer.ErrDrift, k.table.Name)
	}
	sets, err := k.conn.GetSets(k.table)
	if err != nil {
		return fmt.Errorf("read sets: %w", err)
	}
	for _, want := range k.sets() {
		i := slices.IndexFunc(sets, func(s *nftables.Set) bool { return s.Name == want.Name })
		if i < 0 {
			return fmt.Errorf("%w: set %s missing", enforcer.ErrDrift, want.Name)
		}
		if have := sets[i]; have.KeyType.GetNFTMagic() != want.KeyType.GetNFTMagic() || have.HasTimeout != want.HasTimeout || have.Interval != want.Interval {
			return fmt.Errorf("%w: set %s is %s", enforcer.ErrDrift, want.Name, describeSet(have))
		}
	}
	chains, err := k.conn.ListChainsOfTableFamily(k.table.Family)
	if err != nil {
		return fmt.Errorf("read chains: %w", err)
	}
	i := slices.IndexFunc(chains, func(c *nftables.Chain) bool {
		return c.Table != nil && c.Table.Name == k.table.Name && c.Name == k.chain.Name
	})
	if i < 0 {
		return fmt.Errorf("%w: chain %s missing", enforcer.ErrDrift, k.chain.Name)
	}
	if !k.sameChain(chains[i]) {
		return fmt.Errorf("%w: chain %s changed", enforcer.ErrDrift, k.chain.Name)
	}
	if err := k.checkRules(k.chain, k.rules()); err != nil {
		return err
	}
	if !slices.ContainsFunc(chains, func(c *nftables.Chain) bool {
		return c.Table != nil && c.Table.Name == k.table.Name && c.Name == k.guardChain.Name
	}) {
		return fmt.Errorf("%w: chain %s missing", enforcer.ErrDrift, k.guardChain.Name)
	}
	if err := k.checkRules(k.guardChain, k.guardRules()); err != nil {
		return err
	}
	ports, err := k.conn.GetSetElements(k.ports)
	if err != nil {
		return fmt.Errorf("read set %s: %w", portsName, err)
	}
	if len(ports) != len(k.portN) {
		return fmt.Errorf("%w: set %s has %d ports, want %d", enforcer.ErrDrift, portsName, len(ports), len(k.portN))
	}
	for _, p := range ports {
		if len(p.Key) != 2 || !slices.Contains(k.portN, binaryutil.BigEndian.Uint16(p.Key)) {
			return fmt.Errorf("%w: set %s holds %x", enforcer.ErrDrift, portsName, p.Key)
		}
	}
	return nil
}

// checkRules compares chain's rules in the kernel with want, in order.
func (k *kernel) checkRules(chain *nftables.Chain, want []*nftables.Rule) error {
	rules, err := k.conn.GetRules(k.table, chain)
	if err != nil {
		return fmt.Errorf("read rules: %w", err)
	}
	if len(rules) != len(want) {
		return fmt.Errorf("%w: chain %s has %d rules, want %d", enforcer.ErrDrift, chain.Name, len(rules), len(want))
	}
	for i, r := range rules {
		if !sameRule(r, want[i]) {
			return fmt.Errorf("%w: chain %s rule %d changed", enforcer.ErrDrift, chain.Name, i)
		}
	}
	return nil
}

// sameRule compares the expressions that decide a packet's fate: the
// counter's values and the kernel's set IDs differ by nature.
func sameRule(have, want *nftables.Rule) bool {
	if len(have.Exprs) != len(want.Exprs) {
		return false
	}
	for i, w := range want.Exprs {
		h := have.Exprs[i]
		switch w := w.(type) {
		case *expr.Meta:
			h, ok := h.(*expr.Meta)
			if !ok || h.Key != w.Key {
				return false
			}
		case *expr.Cmp:
			h, ok := h.(*expr.Cmp)
			if !ok || h.Op != w.Op || !slices.Equal(h.Data, w.Data) {
				return false
			}
		case *expr.Payload:
			h, ok := h.(*expr.Payload)
			if !ok || h.Base != w.Base || h.Offset != w.Offset || h.Len != w.Len {
				return false
			}
		case *expr.Lookup:
			h, ok := h.(*expr.Lookup)
			if !ok || h.SetName != w.SetName || h.Invert != w.Invert {
				return false
			}
		case *expr.Counter:
			if _, ok := h.(*expr.Counter); !ok {
				return false
			}
		case *expr.Verdict:
			h, ok := h.(*expr.Verdict)
			if !ok || h.Kind != w.Kind || h.Chain != w.Chain {
				return false
			}
		case *expr.Fib:
			h, ok := h.(*expr.Fib)
			if !ok || *h != *w {
				return false
			}
		case *expr.Bitwise:
			h, ok := h.(*expr.Bitwise)
			if !ok || h.Len != w.Len || !slices.Equal(h.Mask, w.Mask) || !slices.Equal(h.Xor, w.Xor) {
				return false
			}
		}
	}
	return true
}

// checkSets turns the kernel's bare EEXIST for a set of another type into
// an error that names the set.
func (k *kernel) checkSets() error {
	// GetSets hides ENOENT behind %v, so look for the table first.
	tables, err := k.conn.ListTablesOfFamily(k.table.Family)
	if err != nil {
		return fmt.Errorf("read tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == k.table.Name }) {
		return nil
	}
	sets, err := k.conn.GetSets(k.table)
	if err != nil {
		return fmt.Errorf("read sets: %w", err)
	}
	for _, have := range sets {
		for _, want := range k.sets() {
			if have.Name != want.Name {
				continue
			}
			if have.KeyType.GetNFTMagic() != want.KeyType.GetNFTMagic() || have.HasTimeout != want.HasTimeout ||
				have.IsMap || have.Interval != want.Interval || have.Concatenation {
				return fmt.Errorf("%w: set %s in table inet %s is %s, want %s", enforcer.ErrIncompatibleSet,
					have.Name, k.table.Name, describeSet(have), describeSet(want))
			}
		}
	}
	return nil
}

func describeSet(s *nftables.Set) string {
	d := "type " + s.KeyType.Name
	if s.IsMap {
		d += " map"
	}
	if s.Interval {
		d += " flags interval"
	}
	if s.HasTimeout {
		d += " flags timeout"
	}
	return d
}

// rules are `ip saddr @blocked4 [tcp dport @ports] counter drop` and the
// same for ip6 and for the network sets.
func (k *kernel) rules() []*nftables.Rule {
	mk := func(proto byte, offset, length uint32, set *nftables.Set) *nftables.Rule {
		ex := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		}
		if len(k.portN) > 0 {
			ex = append(ex,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: k.ports.Name, SetID: k.ports.ID},
			)
		}
		ex = append(ex, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
		return &nftables.Rule{Table: k.table, Chain: k.chain, Exprs: ex}
	}
	return append(k.guardJumps(),
		mk(unix.NFPROTO_IPV4, 12, 4, k.set4),
		mk(unix.NFPROTO_IPV6, 8, 16, k.set6),
		mk(unix.NFPROTO_IPV4, 12, 4, k.net4),
		mk(unix.NFPROTO_IPV6, 8, 16, k.net6),
	)
}

// add writes v4 and v6 in one batch of one message per chunk: a new
// element is one add with its timeout. A re-add with only the timeout does
// not restart the clock of an element the kernel holds (before Linux 6.10
// never, since then only when the value differs, so a repeated ban of the
// same length would not be extended; TestNFTablesReAddRefreshesTimeout
// shows it). So refreshed elements are added with the expiration too where
// the kernel updates it, and elsewhere added without a timeout (a no-op
// for present ones), deleted and added with the timeout; that first add is
// needed because a delete of an absent or expired-but-not-collected
// element fails the whole batch with ENOENT.
func (k *kernel) add(s elemSets) error {
	var msgs []netlink.Message
	for _, x := range []struct {
		s     *nftables.Set
		elems []elem
	}{{k.set4, s.v4}, {k.set6, s.v6}, {k.net4, s.n4}, {k.net6, s.n6}} {
		fresh, refresh := splitRefresh(x.elems)
		type step struct {
			typ   netlink.HeaderType
			elems []elem
			w     elemWrite
		}
		steps := []step{{typeNewSetElem, fresh, withTimeout}}
		if k.timeoutUpdate {
			steps = append(steps, step{typeNewSetElem, refresh, withExpiration})
		} else {
			steps = append(steps,
				step{typeNewSetElem, refresh, keysOnly},
				step{typeDelSetElem, refresh, keysOnly},
				step{typeNewSetElem, refresh, withTimeout})
		}
		for _, step := range steps {
			var err error
			if msgs, err = appendElemMsgs(msgs, step.typ, x.s, step.elems, step.w); err != nil {
				return err
			}
		}
	}
	if err := k.checkOverlap(s.nets, true); err != nil {
		return err
	}
	return overlap(k.sendBatch(msgs), len(s.nets))
}

// splitRefresh separates new elements from refreshed ones.
func splitRefresh(elems []elem) (fresh, refresh []elem) {
	for _, e := range elems {
		if e.refresh {
			refresh = append(refresh, e)
		} else {
			fresh = append(fresh, e)
		}
	}
	return fresh, refresh
}

// remove deletes addresses in one batch (see removeMsgs).
func (k *kernel) remove(v4, v6 []elem) error {
	msgs, err := k.removeMsgs(v4, v6)
	if err != nil {
		return err
	}
	return k.sendBatch(msgs)
}

type options struct {
	netnsFd int
	// testDial replaces the netlink socket with a fake (unit tests
	// without root).
	testDial nltest.Func
	// timeoutUpdate is detected from the kernel release unless a test
	// sets it.
	timeoutUpdate bool
	guard         *Guard
}

// withTestDial sends every netlink message to f instead of the kernel.
func withTestDial(f nltest.Func) Option { return func(o *options) { o.testDial = f } }

// withTimeoutUpdate overrides the detection of the kernel's element
// timeout update, so that tests cover both ways of refreshing.
func withTimeoutUpdate(on bool) Option { return func(o *options) { o.timeoutUpdate = on } }
