package enforcer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Element is one blocked address in the kernel with the time it has left.
type Element struct {
	Addr    netip.Addr
	Timeout time.Duration
	// Refresh marks an element the kernel may already hold (the extension
	// of a ban written before): Add must then restart its timeout, which
	// on some kernels costs a delete and a re-add. A new element (false)
	// costs one add. List never sets it; Restore ignores it.
	Refresh bool
	// Net, when valid and wider than one address, makes the element a
	// network held in the interval sets; Addr is then ignored (List sets
	// Addr to Net.Addr()).
	Net netip.Prefix
}

// Errors of every Firewall.
var (
	// ErrDrift means the kernel no longer holds wormgate's ruleset as
	// wormgate made it: the table, a set, the chain or a rule was deleted
	// or changed by someone else.
	ErrDrift = errors.New("ruleset drifted")
	// ErrClosed is returned by every method of a Firewall after Close.
	ErrClosed = errors.New("firewall closed")
	// ErrIncompatibleSet means a set with one of wormgate's names exists in
	// the table but cannot hold what wormgate puts there; an operator has
	// to remove it, wormgate never deletes objects it did not create.
	// Retrying does not help.
	ErrIncompatibleSet = errors.New("incompatible set")
	// ErrInvalidElement rejects an element before anything reaches the
	// kernel.
	ErrInvalidElement = errors.New("invalid element")
)

// Normalize checks e and brings it to the kernel's terms: IPv4 for 4in6
// addresses, no zone, a timeout of whole milliseconds (the kernel's
// resolution) and at least 1 ms.
func (e Element) Normalize() (netip.Addr, time.Duration, error) {
	if !e.Addr.IsValid() {
		return netip.Addr{}, 0, fmt.Errorf("%w: zero address", ErrInvalidElement)
	}
	if e.Timeout <= 0 {
		return netip.Addr{}, 0, fmt.Errorf("%w: %v: timeout %v is not positive", ErrInvalidElement, e.Addr, e.Timeout)
	}
	return e.Addr.Unmap().WithZone(""), max(e.Timeout.Round(time.Millisecond), time.Millisecond), nil
}

// Firewall is the kernel side of the enforcer. Implementations serialise
// their own access; every method may be called from any goroutine.
type Firewall interface {
	// Setup creates wormgate's table, sets and chain, or adopts them when
	// they exist, in one atomic batch; it never touches another table and
	// never removes elements that are already blocked.
	Setup(ctx context.Context) error
	// Restore makes the kernel hold exactly elems: it creates or adopts
	// table, sets and chain, empties the blocked sets and fills them with
	// elems, all in one atomic batch, so that there is no moment in which
	// a banned address gets through.
	Restore(ctx context.Context, elems []Element) error
	// Check cheaply verifies that table, sets, chain and rules exist as
	// Setup made them (it never reads the blocked sets); a difference is
	// an error wrapping ErrDrift.
	Check(ctx context.Context) error
	// Add inserts elements; each one ends up blocked for its Timeout
	// counted from now. Elements with Refresh set may be in the kernel
	// already and get their timeout restarted; the others are assumed
	// absent, which lets the kernel side write each with a single add
	// (should one be there after all, the kernel may keep its old
	// timeout). A failure returns an error; callers retry the whole slice,
	// with the same Refresh marks, which is safe.
	Add(ctx context.Context, elems []Element) error
	// Delete removes addresses; an address that is not blocked is not an error.
	Delete(ctx context.Context, addrs []netip.Addr) error
	// DeleteNets removes networks; one that is not blocked is not an error.
	DeleteNets(ctx context.Context, nets []netip.Prefix) error
	// SetPorts makes the port set hold exactly ports (none: all traffic
	// of a blocked address is dropped) in one atomic batch; later Setup,
	// Restore and Check use the new list.
	SetPorts(ctx context.Context, ports []uint16) error
	// List reads the blocked elements back from the kernel; no table means
	// no elements, not an error. It is slow on big sets: for start-up,
	// audits and tests.
	List(ctx context.Context) ([]Element, error)
	// Close releases the connection. Bans stay in the kernel.
	Close() error
}
