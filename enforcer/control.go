package enforcer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/enforcer/store"
	"github.com/wormgate/wormgate/matcher"
)

// Errors of the operator's operations; each names what was wrong with the
// argument, so that the CLI and the API can show it as it is.
var (
	// ErrNotBanned: unban of an address or network with no active ban.
	ErrNotBanned = errors.New("not banned")
	// ErrProtected: a ban of a never-block address, or of a network that
	// overlaps a never-block prefix.
	ErrProtected = errors.New("on the never-block list")
	// ErrTooWide: a prefix wider than manual.widest_ipv4/6_prefix.
	ErrTooWide = errors.New("prefix too wide")
	// ErrBadDuration: a duration that is not positive or exceeds
	// manual.max_duration.
	ErrBadDuration = errors.New("duration out of range")
	// ErrNetOverlap: a network ban that overlaps another one (the kernel's
	// interval sets cannot hold both).
	ErrNetOverlap = errors.New("overlaps another network ban")
	// ErrNotAllowed: disallow of a prefix that is not a run-time allow.
	ErrNotAllowed = errors.New("not an allow entry")
	// ErrNotReady: the firewall is not set up yet.
	ErrNotReady = errors.New("firewall not ready")
)

// manualRule names manual bans in metrics, the API and the record.
const manualRule = "manual"

// durableWait is how long an operator's change waits for the record
// before the reply says it is enforced but not yet on disk.
const durableWait = 3 * time.Second

// ManualBan is an operator's ban.
type ManualBan struct {
	Net    netip.Prefix
	For    time.Duration
	Reason string
	// By names the operator: "uid 0", "token".
	By string
}

// Result is what an operator's change did.
type Result struct {
	// Changed lists the addresses and networks the change applied to.
	Changed []netip.Prefix `json:"changed"`
	// Lifted lists the bans an allow or a reload lifted.
	Lifted []netip.Prefix `json:"lifted,omitempty"`
	// Durable is true when the record holds the change; false when it
	// is enforced but the record did not confirm within a few seconds
	// (it follows when the disk answers).
	Durable bool `json:"durable"`
}

// CheckNet validates an operator's address or prefix: canonical (no host
// bits), not wider than the configured limit.
func (e *Enforcer) CheckNet(n netip.Prefix) (netip.Prefix, error) {
	if !n.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%w: invalid prefix", ErrTooWide)
	}
	n = netip.PrefixFrom(n.Addr().Unmap(), n.Bits()-(n.Addr().BitLen()-n.Addr().Unmap().BitLen()))
	if n.Masked() != n {
		return netip.Prefix{}, fmt.Errorf("%v has host bits set (did you mean %v?)", n, n.Masked())
	}
	e.mu.Lock()
	lim := e.manual
	e.mu.Unlock()
	widest := lim.WidestIPv6
	if n.Addr().Is4() {
		widest = lim.WidestIPv4
	}
	if n.Bits() < widest {
		return netip.Prefix{}, fmt.Errorf("%v: %w (the widest allowed is /%d)", n, ErrTooWide, widest)
	}
	return n, nil
}

// CheckNets is CheckNet for each of nets; the first error is returned.
func (e *Enforcer) CheckNets(nets []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		c, err := e.CheckNet(n)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (e *Enforcer) checkFor(d time.Duration) error {
	e.mu.Lock()
	maxFor := e.manual.MaxDuration
	e.mu.Unlock()
	if d <= 0 || d > maxFor {
		return fmt.Errorf("%w: %v (from 1s to %v)", ErrBadDuration, d, maxFor)
	}
	return nil
}

// Ban bans an address or network by hand until it expires or is
// unbanned; an existing ban of it is replaced. It is in the kernel when
// Ban returns, and in the record unless Result.Durable says otherwise.
func (e *Enforcer) Ban(ctx context.Context, mb ManualBan) (Result, error) {
	n, err := e.CheckNet(mb.Net)
	if err != nil {
		return Result{}, err
	}
	if err := e.checkFor(mb.For); err != nil {
		return Result{}, err
	}
	if !e.Ready() {
		return Result{}, ErrNotReady
	}
	now := e.now()
	b := policy.Ban{
		Addr: n.Addr(), Rule: manualRule, Start: now, Duration: mb.For, Until: now.Add(mb.For),
		Manual: true, Reason: mb.Reason,
	}
	e.mu.Lock()
	if pfx, ok := e.policy.ProtectedNet(n); ok {
		e.mu.Unlock()
		return Result{}, fmt.Errorf("%v: %w (%v)", n, ErrProtected, pfx)
	}
	if n.IsSingleIP() {
		_, existed := e.active[n.Addr()]
		if old, ok := e.active[n.Addr()]; ok {
			b.Hits, b.Hosts = old.Hits, old.Hosts
		}
		e.putActiveLocked(b, existed)
		e.dropTombstoneLocked(n)
		e.mu.Unlock()
		if err := e.flush(ctx); err != nil {
			return Result{}, fmt.Errorf("ban %v: %w", n, err)
		}
	} else {
		b.Net = n
		for other := range e.nets {
			if other.Overlaps(n) && other != n {
				e.mu.Unlock()
				return Result{}, fmt.Errorf("%v: %w (%v)", n, ErrNetOverlap, other)
			}
		}
		e.nets[n] = b
		e.dropTombstoneLocked(n)
		e.ctl.Bans = append(e.ctl.Bans, b)
		e.mu.Unlock()
		if err := e.writeNet(ctx, b, now); err != nil {
			return Result{}, fmt.Errorf("ban %v: %w", n, err)
		}
	}
	e.noteEvent(policy.Event{Time: now, Addr: n.Addr(), Kind: "manual", Rule: manualRule, Text: mb.Reason, Verdict: "manual ban", Detail: fmt.Sprintf("%v for %v by %s", n, mb.For, mb.By)})
	e.log.Info("manual ban", "net", n, "for", mb.For, "reason", mb.Reason, "by", mb.By)
	e.decided(Decision{Op: OpBan, Net: n, Time: now, Until: b.Until, Rule: manualRule, Reason: mb.Reason, By: mb.By, Hits: b.Hits, Manual: true})
	return Result{Changed: []netip.Prefix{n}, Durable: e.waitDurable(ctx)}, nil
}

// putActiveLocked makes b the active ban of its address, bypassing the
// cap and the rate limit (an operator's ban), and queues its writes.
func (e *Enforcer) putActiveLocked(b policy.Ban, refresh bool) {
	a := b.Addr
	delete(e.dels, a)
	e.active[a] = b
	if b.Until.Before(e.nextExpiry) {
		e.nextExpiry = b.Until
	}
	if p, queued := e.pending[a]; queued {
		refresh = p.refresh
	}
	e.pending[a] = pendingBan{until: b.Until, refresh: refresh}
	delete(e.kdels, a)
	kick(e.kick)
	if e.store != nil {
		e.unrecorded[a] = unrecorded{ban: b}
		kick(e.recKick)
	}
}

// writeNet puts one network ban into the kernel.
func (e *Enforcer) writeNet(ctx context.Context, b policy.Ban, now time.Time) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err := e.fw.Add(ctx, []Element{{Addr: b.Addr, Net: b.Net, Timeout: b.Until.Sub(now)}}); err != nil {
		e.m.fwErrors.WithLabelValues("add").Inc()
		e.needRestore.Store(true) // the next reconcile writes it
		return err
	}
	return nil
}

// Unban lifts the bans of nets (addresses as single-IP prefixes): out of
// the kernel and the record at once, with a tombstone so that a start-up
// does not adopt them back from a kernel that still held them. Every
// prefix must name an active ban; otherwise nothing changes.
func (e *Enforcer) Unban(ctx context.Context, nets []netip.Prefix, by string) (Result, error) {
	checked, err := e.CheckNets(nets)
	if err != nil {
		return Result{}, err
	}
	now := e.now()
	e.mu.Lock()
	for _, n := range checked {
		if !e.bannedLocked(n, now) {
			e.mu.Unlock()
			return Result{}, fmt.Errorf("%v: %w", n, ErrNotBanned)
		}
	}
	var hosts []netip.Addr
	var netDels []netip.Prefix
	untils := make([]time.Time, len(checked))
	for i, n := range checked {
		untils[i] = e.unbanLocked(n, &hosts, &netDels)
	}
	e.mu.Unlock()
	err = e.deleteFromKernel(ctx, hosts, netDels)
	for i, n := range checked {
		e.noteEvent(policy.Event{Time: now, Addr: n.Addr(), Kind: "manual", Rule: manualRule, Verdict: "unban", Detail: fmt.Sprintf("%v by %s", n, by)})
		e.decided(Decision{Op: OpUnban, Net: n, Time: now, Until: untils[i], By: by})
	}
	e.log.Info("unban", "nets", checked, "by", by)
	if err != nil {
		return Result{Changed: checked}, fmt.Errorf("unban: lifted in wormgate, but the kernel delete failed (retried): %w", err)
	}
	return Result{Changed: checked, Durable: e.waitDurable(ctx)}, nil
}

// unbanLocked lifts the ban of n with a tombstone and adds it to the
// hosts or networks to delete from the kernel. It returns when the ban
// would have ended.
func (e *Enforcer) unbanLocked(n netip.Prefix, hosts *[]netip.Addr, nets *[]netip.Prefix) time.Time {
	until := e.liftLocked(n)
	e.ctl.Tombstones = append(e.ctl.Tombstones, store.Tombstone{Net: n, Until: until})
	e.ctl.DropTombstones = slices.DeleteFunc(e.ctl.DropTombstones, func(p netip.Prefix) bool { return p == n })
	if n.IsSingleIP() {
		*hosts = append(*hosts, n.Addr())
	} else {
		*nets = append(*nets, n)
	}
	return until
}

// bannedLocked reports whether n is an active ban.
func (e *Enforcer) bannedLocked(n netip.Prefix, now time.Time) bool {
	if n.IsSingleIP() {
		b, ok := e.active[n.Addr()]
		return ok && b.Until.After(now)
	}
	b, ok := e.nets[n]
	return ok && b.Until.After(now)
}

// liftLocked forgets the ban of n in wormgate: the active maps, the
// pending writes, the record (queued), the policy's memory. It returns
// when the ban would have ended.
func (e *Enforcer) liftLocked(n netip.Prefix) time.Time {
	if !n.IsSingleIP() {
		until := e.nets[n].Until
		delete(e.nets, n)
		e.ctl.Bans = slices.DeleteFunc(e.ctl.Bans, func(b policy.Ban) bool { return b.Net == n })
		e.ctl.Deletes = append(e.ctl.Deletes, n)
		kick(e.recKick)
		return until
	}
	a := n.Addr()
	until := e.active[a].Until
	delete(e.active, a)
	delete(e.pending, a)
	delete(e.unrecorded, a)
	e.kdels[a] = struct{}{}
	if e.store != nil {
		e.dels[a] = struct{}{}
		if h, ok := e.policy.Lift(a); ok {
			e.ctl.History = append(e.ctl.History, h)
		}
		kick(e.recKick)
	} else {
		e.policy.Lift(a)
	}
	return until
}

// deleteFromKernel removes hosts and networks now; what fails stays in
// kdels (hosts) or makes the next reconcile restore (networks).
func (e *Enforcer) deleteFromKernel(ctx context.Context, hosts []netip.Addr, nets []netip.Prefix) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	var errs []error
	if len(hosts) > 0 {
		if err := e.fw.Delete(ctx, hosts); err != nil {
			e.m.fwErrors.WithLabelValues("delete").Inc()
			errs = append(errs, err)
		} else {
			e.mu.Lock()
			for _, a := range hosts {
				if _, again := e.active[a]; !again {
					delete(e.kdels, a)
				}
			}
			e.mu.Unlock()
		}
	}
	if len(nets) > 0 {
		if err := e.fw.DeleteNets(ctx, nets); err != nil {
			e.m.fwErrors.WithLabelValues("delete").Inc()
			e.needRestore.Store(true)
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		e.fail(partFirewall, err)
		kick(e.kick)
		return err
	}
	return nil
}

func (e *Enforcer) dropTombstoneLocked(n netip.Prefix) {
	if _, ok := e.tombs[n]; ok {
		delete(e.tombs, n)
		e.ctl.DropTombstones = append(e.ctl.DropTombstones, n)
	}
	e.ctl.Tombstones = slices.DeleteFunc(e.ctl.Tombstones, func(t store.Tombstone) bool { return t.Net == n })
}

// Allow adds a run-time never-block entry (until a.Until, or for good
// when zero) and lifts every active ban it covers.
func (e *Enforcer) Allow(ctx context.Context, a store.Allow) (Result, error) {
	n, err := e.CheckNet(a.Net)
	if err != nil {
		return Result{}, err
	}
	a.Net = n
	now := e.now()
	if !a.Until.IsZero() {
		if err := e.checkFor(a.Until.Sub(now)); err != nil {
			return Result{}, err
		}
	}
	a.Added = now
	e.mu.Lock()
	e.putAllowLocked(a)
	e.applyAllowsLocked()
	hosts, nets := e.liftProtectedLocked()
	e.mu.Unlock()
	lifted := liftedPrefixes(hosts, nets)
	err = e.deleteFromKernel(ctx, hosts, nets)
	e.noteEvent(policy.Event{Time: now, Addr: n.Addr(), Kind: "manual", Rule: manualRule, Text: a.Reason, Verdict: "allow", Detail: fmt.Sprintf("%v by %s", n, a.By)})
	e.log.Info("allow", "net", n, "until", a.Until, "reason", a.Reason, "by", a.By, "lifted", len(lifted))
	e.decided(Decision{Op: OpAllow, Net: n, Time: now, Until: a.Until, Reason: a.Reason, By: a.By})
	if err != nil {
		return Result{Changed: []netip.Prefix{n}, Lifted: lifted}, fmt.Errorf("allow: the kernel delete failed (retried): %w", err)
	}
	return Result{Changed: []netip.Prefix{n}, Lifted: lifted, Durable: e.waitDurable(ctx)}, nil
}

// Disallow removes run-time never-block entries; each must exist.
func (e *Enforcer) Disallow(ctx context.Context, nets []netip.Prefix, by string) (Result, error) {
	checked, err := e.CheckNets(nets)
	if err != nil {
		return Result{}, err
	}
	e.mu.Lock()
	for _, n := range checked {
		if _, ok := e.allows[n]; !ok {
			e.mu.Unlock()
			return Result{}, fmt.Errorf("%v: %w", n, ErrNotAllowed)
		}
	}
	for _, n := range checked {
		e.dropAllowLocked(n)
	}
	e.applyAllowsLocked()
	e.mu.Unlock()
	e.log.Info("disallow", "nets", checked, "by", by)
	now := e.now()
	for _, n := range checked {
		e.decided(Decision{Op: OpDisallow, Net: n, Time: now, By: by})
	}
	return Result{Changed: checked, Durable: e.waitDurable(ctx)}, nil
}

// putAllowLocked adds (or replaces) a run-time allow and queues it for
// the record; the caller applies the allows and lifts what they cover.
func (e *Enforcer) putAllowLocked(a store.Allow) {
	n := a.Net
	e.allows[n] = a
	e.ctl.Disallows = slices.DeleteFunc(e.ctl.Disallows, func(p netip.Prefix) bool { return p == n })
	e.ctl.Allows = append(slices.DeleteFunc(e.ctl.Allows, func(x store.Allow) bool { return x.Net == n }), a)
	kick(e.recKick)
}

// dropAllowLocked removes a run-time allow and queues that for the
// record; the caller applies the allows.
func (e *Enforcer) dropAllowLocked(n netip.Prefix) {
	delete(e.allows, n)
	e.ctl.Allows = slices.DeleteFunc(e.ctl.Allows, func(x store.Allow) bool { return x.Net == n })
	e.ctl.Disallows = append(e.ctl.Disallows, n)
	kick(e.recKick)
}

// Allows returns the run-time never-block entries, in address order.
func (e *Enforcer) Allows() []store.Allow {
	e.mu.Lock()
	out := make([]store.Allow, 0, len(e.allows))
	for _, a := range e.allows {
		out = append(out, a)
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b store.Allow) int { return a.Net.Addr().Compare(b.Net.Addr()) })
	return out
}

// applyAllowsLocked hands the live allows to the policy.
func (e *Enforcer) applyAllowsLocked() {
	nets := make([]netip.Prefix, 0, len(e.allows))
	for n := range e.allows {
		nets = append(nets, n)
	}
	e.policy.SetAllowed(nets)
}

// liftProtectedLocked lifts every active ban that the never-block list
// (configured, added or allowed) now covers, and returns them.
func (e *Enforcer) liftProtectedLocked() (hosts []netip.Addr, nets []netip.Prefix) {
	for a := range e.active {
		if _, ok := e.policy.Protected(a); ok {
			hosts = append(hosts, a)
		}
	}
	for n := range e.nets {
		if _, ok := e.policy.ProtectedNet(n); ok {
			nets = append(nets, n)
		}
	}
	for _, a := range hosts {
		e.liftLocked(netip.PrefixFrom(a, a.BitLen()))
	}
	for _, n := range nets {
		e.liftLocked(n)
	}
	return hosts, nets
}

func liftedPrefixes(hosts []netip.Addr, nets []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(hosts)+len(nets))
	for _, a := range hosts {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return append(out, nets...)
}

// waitDurable waits (briefly) until the record holds every change made
// so far; false means it did not confirm in time.
func (e *Enforcer) waitDurable(ctx context.Context) bool {
	if e.store == nil {
		return false
	}
	kick(e.recKick)
	deadline := time.Now().Add(durableWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		e.mu.Lock()
		lag := e.recordLagLocked()
		e.mu.Unlock()
		if lag == 0 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// Why is everything wormgate knows about one address.
type Why struct {
	Addr netip.Addr `json:"addr"`
	// Ban is the active ban of the address or of a network holding it.
	Ban *policy.Ban `json:"ban,omitempty"`
	// Protected is the never-block prefix or allow that covers it.
	Protected netip.Prefix `json:"protected,omitzero"`
	Allow     *store.Allow `json:"allow,omitempty"`
	// Offender is the policy's memory of it.
	Offender *WhyOffender `json:"offender,omitempty"`
	// Events are its recorded offences and operator actions, oldest first.
	Events []policy.Event `json:"events"`
}

// WhyOffender is the policy's memory of an address.
type WhyOffender struct {
	Hits        int       `json:"hits"`
	Bans        int       `json:"bans"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	LastRule    string    `json:"last_rule"`
	Hosts       []string  `json:"hosts"`
	BannedUntil time.Time `json:"banned_until,omitzero"`
}

// Why reports what wormgate knows about addr.
func (e *Enforcer) Why(addr netip.Addr) Why {
	addr = addr.Unmap()
	now := e.now()
	w := Why{Addr: addr}
	e.mu.Lock()
	defer e.mu.Unlock()
	if b, ok := e.active[addr]; ok && b.Until.After(now) {
		w.Ban = &b
	}
	for n, b := range e.nets {
		if n.Contains(addr) && b.Until.After(now) {
			w.Ban = &b
		}
	}
	if p, ok := e.policy.Protected(addr); ok {
		w.Protected = p
		if a, ok := e.allows[p]; ok {
			w.Allow = &a
		}
	}
	if o, ok := e.policy.Offender(addr); ok {
		w.Offender = &WhyOffender{Hits: o.Hits, Bans: o.Bans, FirstSeen: o.FirstSeen, LastSeen: o.LastSeen, LastRule: o.LastRule, Hosts: o.Hosts, BannedUntil: o.BannedUntil}
	}
	w.Events = e.events.of(addr)
	if w.Events == nil {
		w.Events = []policy.Event{}
	}
	return w
}

// noteEvent keeps ev in the offence history and queues it for the record.
func (e *Enforcer) noteEvent(ev policy.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.noteEventLocked(ev)
}

func (e *Enforcer) noteEventLocked(ev policy.Event) {
	dropped := e.events.add(ev, e.now())
	if e.store == nil {
		return
	}
	e.ctl.Events = append(e.ctl.Events, e.events.last(ev.Addr))
	e.ctl.DropEvents = append(e.ctl.DropEvents, dropped...)
	if len(e.ctl.DropEvents) > e.events.cfg.Total {
		// A record that fails for long must not let the queue grow: an
		// event pushed out before it was committed cancels its drop.
		dropUncommittedEvents(&e.ctl)
	}
}

// noteOffenseLocked keeps an offence and its decision in the history.
func (e *Enforcer) noteOffenseLocked(off matcher.Offense, d policy.Decision, verdict string) {
	ev := policy.Event{
		Time: off.Time, Addr: off.Addr, Host: off.Host, QueueID: off.QueueID, Kind: string(off.Kind),
		Rule: off.Rule, Text: off.Text, Verdict: verdict,
	}
	switch d.Verdict {
	case policy.VerdictCounted:
		ev.Detail = fmt.Sprintf("%d of %d hits in %v", d.HitsInWindow, d.Threshold, d.Window)
	case policy.VerdictNeverBlock:
		ev.Detail = d.Prefix.String()
	case policy.VerdictTrustedClient:
		ev.Detail = d.Trust.String()
	}
	e.noteEventLocked(ev)
}

// Reconfigure applies a reloaded configuration: the policy (durations,
// escalation, never_block, offender memory), the rules, the caps, the
// history bounds, the manual limits and the kernel's port set. Bans that
// the new never-block list covers are lifted. Settings that need a
// restart (state_dir, the table, the syslog guard) are the caller's to
// report; they are ignored here. On a port-set error nothing else has
// changed yet and the error is returned.
func (e *Enforcer) Reconfigure(ctx context.Context, cfg Config, rules map[string]policy.RulePolicy) (Result, error) {
	if !slices.Equal(e.ports, cfg.NFTables.Ports) {
		e.wmu.Lock()
		err := e.fw.SetPorts(ctx, cfg.NFTables.Ports)
		e.wmu.Unlock()
		if err != nil {
			e.m.fwErrors.WithLabelValues("ports").Inc()
			return Result{}, fmt.Errorf("reconfigure: ports: %w", err)
		}
		e.ports = slices.Clone(cfg.NFTables.Ports)
	}
	rate := float64(cfg.MaxNewBansPerSecond)
	e.mu.Lock()
	e.policy.SetConfig(cfg.Config)
	e.policy.SetRules(rules)
	e.maxActive = cfg.MaxActiveBans
	e.history = cfg.OffenderCacheSize
	e.rate = rate
	e.tokens = min(e.tokens, rate)
	e.events.cfg = cfg.Events
	e.manual = cfg.Manual
	hosts, nets := e.liftProtectedLocked()
	e.mu.Unlock()
	lifted := liftedPrefixes(hosts, nets)
	for _, n := range lifted {
		e.log.Warn("ban lifted: the reloaded never_block list covers it", "net", n)
	}
	if err := e.deleteFromKernel(ctx, hosts, nets); err != nil {
		return Result{Lifted: lifted}, fmt.Errorf("reconfigure: %w", err)
	}
	return Result{Lifted: lifted, Durable: len(lifted) == 0 || e.waitDurable(ctx)}, nil
}
