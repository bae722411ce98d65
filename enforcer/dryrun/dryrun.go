package dryrun

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/wormgate/wormgate/enforcer"
)

// Firewall is an enforcer.Firewall that changes nothing: it logs what it
// would block or unblock and remembers it in memory with expiries, so that
// List and the status pages behave as with the kernel. Like the kernel's
// interval sets, it refuses a network that overlaps another one.
type Firewall struct {
	log *slog.Logger
	now func() time.Time
	mu  sync.Mutex
	// bans holds addresses as prefixes of one address, and networks.
	bans   map[netip.Prefix]time.Time
	closed bool
}

var _ enforcer.Firewall = (*Firewall)(nil)

// New returns an empty dry-run firewall.
func New(log *slog.Logger) *Firewall {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Firewall{log: log, now: time.Now, bans: make(map[netip.Prefix]time.Time)}
}

// Setup only announces the dry run, so that an operator sees in the log
// that nothing is enforced.
func (d *Firewall) Setup(ctx context.Context) error {
	if err := d.check(ctx, "setup"); err != nil {
		return err
	}
	d.log.Info("dry run: the firewall is not changed")
	return nil
}

// ban is one normalised element.
type ban struct {
	p netip.Prefix
	d time.Duration
}

// normalizeLocked validates elems and refuses networks that overlap each other
// or, unless replacing, one already held.
func (d *Firewall) normalizeLocked(elems []enforcer.Element, replacing bool) ([]ban, error) {
	out := make([]ban, 0, len(elems))
	nets := map[netip.Prefix]bool{}
	if !replacing {
		for p := range d.bans {
			if !p.IsSingleIP() {
				nets[p] = true
			}
		}
	}
	for _, e := range elems {
		e, err := e.Normalize()
		if err != nil {
			return nil, err
		}
		p := netip.PrefixFrom(e.Addr, e.Addr.BitLen())
		if e.Net.IsValid() {
			p = e.Net
			for q := range nets {
				if q != p && q.Overlaps(p) {
					return nil, fmt.Errorf("%w: %v overlaps %v", enforcer.ErrOverlap, p, q)
				}
			}
			nets[p] = true
		}
		out = append(out, ban{p, e.Timeout})
	}
	return out, nil
}

// Restore replaces what the dry run remembers with elems.
func (d *Firewall) Restore(ctx context.Context, elems []enforcer.Element) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, "restore"); err != nil {
		return err
	}
	bans, err := d.normalizeLocked(elems, true)
	if err != nil {
		return fmt.Errorf("dry run restore: %w", err)
	}
	now := d.now()
	d.bans = make(map[netip.Prefix]time.Time, len(bans))
	for _, b := range bans {
		d.bans[b.p] = now.Add(b.d)
	}
	d.log.Info("dry run: would restore the ruleset", "bans", len(bans))
	return nil
}

// Check has nothing to compare: a dry run has no ruleset to lose.
func (d *Firewall) Check(ctx context.Context) error { return d.check(ctx, "check") }

// Add records the bans and logs each one; a map has no cost to save, so
// Refresh changes nothing here.
func (d *Firewall) Add(ctx context.Context, elems []enforcer.Element) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, "add"); err != nil {
		return err
	}
	d.expireLocked()
	bans, err := d.normalizeLocked(elems, false)
	if err != nil {
		return fmt.Errorf("dry run add: %w", err)
	}
	now := d.now()
	for _, b := range bans {
		d.bans[b.p] = now.Add(b.d)
		d.log.Info("dry run: would block", "addr", show(b.p), "timeout", b.d)
	}
	return nil
}

// Delete forgets the addresses and logs each one that was blocked.
func (d *Firewall) Delete(ctx context.Context, addrs []netip.Addr) error {
	ps := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		if !a.IsValid() {
			return fmt.Errorf("dry run delete: %w: zero address", enforcer.ErrInvalidElement)
		}
		a = a.Unmap().WithZone("")
		ps[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return d.forget(ctx, "delete", ps)
}

// DeleteNets forgets networks (each only as it was added) and addresses
// given as prefixes of one address.
func (d *Firewall) DeleteNets(ctx context.Context, nets []netip.Prefix) error {
	ps := make([]netip.Prefix, len(nets))
	for i, p := range nets {
		p, err := enforcer.NormalizeNet(p)
		if err != nil {
			return fmt.Errorf("dry run delete networks: %w", err)
		}
		ps[i] = p
	}
	return d.forget(ctx, "delete networks", ps)
}

func (d *Firewall) forget(ctx context.Context, op string, ps []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, op); err != nil {
		return err
	}
	d.expireLocked()
	for _, p := range ps {
		if _, ok := d.bans[p]; !ok {
			continue
		}
		delete(d.bans, p)
		d.log.Info("dry run: would unblock", "addr", show(p))
	}
	return nil
}

// SetPorts only logs the ports the rules would apply to.
func (d *Firewall) SetPorts(ctx context.Context, ports []uint16) error {
	if err := d.check(ctx, "set ports"); err != nil {
		return err
	}
	var desc any = "all"
	if len(ports) > 0 {
		desc = ports
	}
	d.log.Info("dry run: would change the ports", "ports", desc)
	return nil
}

// List returns the unexpired bans with their remaining time, sorted by
// address, networks with Net set.
func (d *Firewall) List(ctx context.Context) ([]enforcer.Element, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, "list"); err != nil {
		return nil, err
	}
	d.expireLocked()
	now := d.now()
	out := make([]enforcer.Element, 0, len(d.bans))
	for p, until := range d.bans {
		e := enforcer.Element{Addr: p.Addr(), Timeout: until.Sub(now)}
		if !p.IsSingleIP() {
			e.Net = p
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b enforcer.Element) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return a.Net.Bits() - b.Net.Bits()
	})
	return out, nil
}

// show is how the log names p: an address alone, a network as a prefix.
func show(p netip.Prefix) any {
	if p.IsSingleIP() {
		return p.Addr()
	}
	return p
}

// Close makes every later call fail with enforcer.ErrClosed.
func (d *Firewall) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *Firewall) check(ctx context.Context, op string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.checkLocked(ctx, op)
}

func (d *Firewall) checkLocked(ctx context.Context, op string) error {
	if d.closed {
		return fmt.Errorf("dry run %s: %w", op, enforcer.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dry run %s: %w", op, err)
	}
	return nil
}

// expireLocked drops what the kernel would have timed out, so the map
// cannot grow without bound.
func (d *Firewall) expireLocked() {
	now := d.now()
	for a, until := range d.bans {
		if !until.After(now) {
			delete(d.bans, a)
		}
	}
}
