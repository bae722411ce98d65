package dryrun

import (
	"context"
	"net/netip"
)

// DeleteNets: placeholder until the h-nft branch lands.
func (*Firewall) DeleteNets(context.Context, []netip.Prefix) error { return nil }

// SetPorts: placeholder until the h-nft branch lands.
func (*Firewall) SetPorts(context.Context, []uint16) error { return nil }
