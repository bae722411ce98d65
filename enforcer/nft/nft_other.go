//go:build !linux

package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"

	"github.com/wormgate/wormgate/enforcer"
)

// ErrUnsupported: nftables exists only on Linux. `wormgate check` needs no
// firewall and runs everywhere; `wormgate serve` needs this package on
// Linux, or enforcer.dry_run elsewhere.
var ErrUnsupported = errors.New("nftables is only available on Linux")

type options struct {
	netnsFd int
	guard   *Guard
}

// Firewall is never returned on this platform; it exists so that the
// daemon's wiring compiles everywhere.
type Firewall struct{}

var _ enforcer.Firewall = (*Firewall)(nil)

// Open fails with ErrUnsupported.
func Open(cfg enforcer.NFTablesConfig, log *slog.Logger, opts ...Option) (*Firewall, error) {
	return nil, fmt.Errorf("open nftables on %s: %w", runtime.GOOS, ErrUnsupported)
}

// Setup fails with ErrUnsupported.
func (*Firewall) Setup(context.Context) error { return ErrUnsupported }

// Restore fails with ErrUnsupported.
func (*Firewall) Restore(context.Context, []enforcer.Element) error { return ErrUnsupported }

// Check fails with ErrUnsupported.
func (*Firewall) Check(context.Context) error { return ErrUnsupported }

// Add fails with ErrUnsupported.
func (*Firewall) Add(context.Context, []enforcer.Element) error { return ErrUnsupported }

// Delete fails with ErrUnsupported.
func (*Firewall) Delete(context.Context, []netip.Addr) error { return ErrUnsupported }

// DeleteNets fails with ErrUnsupported.
func (*Firewall) DeleteNets(context.Context, []netip.Prefix) error { return ErrUnsupported }

// SetPorts fails with ErrUnsupported.
func (*Firewall) SetPorts(context.Context, []uint16) error { return ErrUnsupported }

// List fails with ErrUnsupported.
func (*Firewall) List(context.Context) ([]enforcer.Element, error) { return nil, ErrUnsupported }

// Counters fails with ErrUnsupported.
func (*Firewall) Counters(context.Context) (DropCounts, error) {
	return DropCounts{}, ErrUnsupported
}

// Close does nothing.
func (*Firewall) Close() error { return nil }
