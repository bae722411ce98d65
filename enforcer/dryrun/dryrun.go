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

// Firewall is an enforcer.Firewall that changes nothing: it logs what it would block or
// unblock and remembers it in memory with expiries, so that List and the
// status pages behave as with the kernel.
type Firewall struct {
	log    *slog.Logger
	now    func() time.Time
	mu     sync.Mutex
	bans   map[netip.Addr]time.Time
	closed bool
}

var _ enforcer.Firewall = (*Firewall)(nil)

// New returns an empty dry-run firewall.
func New(log *slog.Logger) *Firewall {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Firewall{log: log, now: time.Now, bans: make(map[netip.Addr]time.Time)}
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

// Restore replaces what the dry run remembers with elems.
func (d *Firewall) Restore(ctx context.Context, elems []enforcer.Element) error {
	bans := make(map[netip.Addr]time.Time, len(elems))
	now := d.now()
	for _, e := range elems {
		a, t, err := e.Normalize()
		if err != nil {
			return fmt.Errorf("dry run restore: %w", err)
		}
		bans[a] = now.Add(t)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, "restore"); err != nil {
		return err
	}
	d.bans = bans
	d.log.Info("dry run: would restore the ruleset", "bans", len(bans))
	return nil
}

// Check has nothing to compare: a dry run has no ruleset to lose.
func (d *Firewall) Check(ctx context.Context) error { return d.check(ctx, "check") }

// Add records the bans and logs each one; a map has no cost to save, so
// Refresh changes nothing here.
func (d *Firewall) Add(ctx context.Context, elems []enforcer.Element) error {
	type ban struct {
		addr netip.Addr
		d    time.Duration
	}
	bans := make([]ban, 0, len(elems))
	for _, e := range elems {
		a, t, err := e.Normalize()
		if err != nil {
			return fmt.Errorf("dry run add: %w", err)
		}
		bans = append(bans, ban{a, t})
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, "add"); err != nil {
		return err
	}
	d.expireLocked()
	now := d.now()
	for _, b := range bans {
		d.bans[b.addr] = now.Add(b.d)
		d.log.Info("dry run: would block", "addr", b.addr, "timeout", b.d)
	}
	return nil
}

// Delete forgets the addresses and logs each one that was blocked.
func (d *Firewall) Delete(ctx context.Context, addrs []netip.Addr) error {
	for _, a := range addrs {
		if !a.IsValid() {
			return fmt.Errorf("dry run delete: %w: zero address", enforcer.ErrInvalidElement)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, "delete"); err != nil {
		return err
	}
	d.expireLocked()
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if _, ok := d.bans[a]; !ok {
			continue
		}
		delete(d.bans, a)
		d.log.Info("dry run: would unblock", "addr", a)
	}
	return nil
}

// List returns the unexpired bans with their remaining time, sorted by
// address.
func (d *Firewall) List(ctx context.Context) ([]enforcer.Element, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked(ctx, "list"); err != nil {
		return nil, err
	}
	d.expireLocked()
	now := d.now()
	out := make([]enforcer.Element, 0, len(d.bans))
	for a, until := range d.bans {
		out = append(out, enforcer.Element{Addr: a, Timeout: until.Sub(now)})
	}
	slices.SortFunc(out, func(a, b enforcer.Element) int { return a.Addr.Compare(b.Addr) })
	return out, nil
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
