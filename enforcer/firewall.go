package enforcer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Element is one blocked address or network in the kernel with the time
// it has left.
type Element struct {
	Addr netip.Addr
	// Net, when valid and wider than one address, makes the element a
	// network held in the interval sets; Addr is then ignored (List sets
	// Addr to Net.Addr()).
	Net     netip.Prefix
	Timeout time.Duration
	// Refresh marks an element the kernel may already hold (the extension
	// of a ban written before): Add must then restart its timeout, which
	// on some kernels costs a delete and a re-add. A new element (false)
	// costs one add. List never sets it; Restore ignores it.
	Refresh bool
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
	// ErrOverlap means a network overlaps another one the kernel holds
	// (the kernel refuses overlapping intervals); nothing of the batch
	// was applied.
	ErrOverlap = errors.New("overlapping networks")
)

// Normalize checks e and brings it to the kernel's terms: IPv4 for 4in6
// addresses and prefixes, no zone, a masked prefix, a Net of one address
// turned into Addr (Net then zero), a timeout of whole milliseconds (the
// kernel's resolution) and at least 1 ms. A Net that is set but not valid,
// or that covers every address, is an error wrapping ErrInvalidElement.
func (e Element) Normalize() (Element, error) {
	if e.Net != (netip.Prefix{}) {
		p, err := NormalizeNet(e.Net)
		if err != nil {
			return Element{}, err
		}
		e.Addr, e.Net = p.Addr(), p
		if p.IsSingleIP() {
			e.Net = netip.Prefix{}
		}
	}
	if !e.Addr.IsValid() {
		return Element{}, fmt.Errorf("%w: zero address", ErrInvalidElement)
	}
	if e.Timeout <= 0 {
		return Element{}, fmt.Errorf("%w: %v: timeout %v is not positive", ErrInvalidElement, e.Addr, e.Timeout)
	}
	e.Addr = e.Addr.Unmap().WithZone("")
	e.Timeout = max(e.Timeout.Round(time.Millisecond), time.Millisecond)
	return e, nil
}

// NormalizeNet masks p, turns a 4in6 prefix into IPv4 and rejects a
// prefix that is not valid or covers every address (ErrInvalidElement).
func NormalizeNet(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("%w: prefix %v is not valid", ErrInvalidElement, p)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("%w: prefix %v covers every address", ErrInvalidElement, p)
	}
	return p.Masked(), nil
}

// Firewall is the kernel side of the enforcer. Implementations serialise
// their own access; every method may be called from any goroutine.
type Firewall interface {
	// Setup creates wormgate's table, sets and chain, or adopts them when
	// they exist, in one atomic batch; it never touches another table and
	// never removes elements that are already blocked.
	Setup(ctx context.Context) error
	// Restore makes the kernel hold exactly elems: it creates or adopts
	// table, sets and chain, empties the blocked sets (addresses and
	// networks) and fills them with elems, all in one atomic batch, so
	// that there is no moment in which a banned address gets through.
	// Overlapping networks fail with an error wrapping ErrOverlap.
	Restore(ctx context.Context, elems []Element) error
	// Check cheaply verifies that table, sets, chain and rules exist as
	// Setup made them and that nobody else changed the blocked sets since
	// the last Restore, without listing them: its cost does not grow with
	// the sets. A difference is an error wrapping ErrDrift, reported at
	// every Check until a Restore succeeds.
	Check(ctx context.Context) error
	// Add inserts elements; each one ends up blocked for its Timeout
	// counted from now. Elements with Refresh set may be in the kernel
	// already and get their timeout restarted; the others are assumed
	// absent, which lets the kernel side write each with a single add
	// (should one be there after all, the kernel may keep its old
	// timeout). A failure returns an error; callers retry the whole slice,
	// with the same Refresh marks, which is safe. A network that overlaps
	// another one, in elems or in the kernel, fails the call with an error
	// wrapping ErrOverlap; the same network again is a refresh.
	Add(ctx context.Context, elems []Element) error
	// Delete removes addresses; an address that is not blocked is not an error.
	Delete(ctx context.Context, addrs []netip.Addr) error
	// DeleteNets removes networks, each as it was added (a prefix that is
	// only part of a blocked network, or covers one, removes nothing); one
	// that is not blocked is not an error. A prefix of one address is
	// deleted as that address.
	DeleteNets(ctx context.Context, nets []netip.Prefix) error
	// SetPorts makes the drop rules apply to exactly these TCP destination
	// ports (none: all traffic of a blocked address), in one atomic batch;
	// later calls of Setup, Restore and Check use them too. After a failure
	// the old ports stay in force, in the kernel and for later calls.
	SetPorts(ctx context.Context, ports []uint16) error
	// List reads the blocked elements back from the kernel, networks with
	// Net set; no table means no elements, not an error. It is slow on big
	// sets: for start-up, audits and tests.
	List(ctx context.Context) ([]Element, error)
	// Close releases the connection. Bans stay in the kernel.
	Close() error
}
