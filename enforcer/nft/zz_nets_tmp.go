package nft

import (
	"context"
	"errors"
	"net/netip"
)

// DeleteNets: placeholder until the interval sets land (h-nft branch).
func (*Firewall) DeleteNets(context.Context, []netip.Prefix) error {
	return errors.New("network bans: not in this build")
}

// SetPorts: placeholder until the h-nft branch lands.
func (*Firewall) SetPorts(context.Context, []uint16) error {
	return errors.New("port changes: not in this build")
}
