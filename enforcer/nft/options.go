package nft

import "net/netip"

// Option adjusts Open.
type Option func(*options)

// WithNetNS makes the firewall work in the network namespace open at fd
// instead of the current one; tests use it.
func WithNetNS(fd int) Option { return func(o *options) { o.netnsFd = fd } }

// Guard is the kernel-level protection of wormgate's syslog listeners: a
// packet to one of these ports on one of the gateway's own addresses is
// dropped unless its source is one of Senders and passes a strict
// reverse-path check (the route back to the source leaves through the
// interface the packet came in on). A forged source, which the user-space
// allow-list cannot tell from a real one, fails the second test; no other
// traffic is looked at.
type Guard struct {
	// UDPPorts and TCPPorts are the listeners' ports (TCP covers TLS).
	UDPPorts, TCPPorts []uint16
	// Senders are receiver.allowed_senders.
	Senders []netip.Prefix
}

// WithSyslogGuard installs g in wormgate's table.
func WithSyslogGuard(g Guard) Option { return func(o *options) { o.guard = &g } }

// DropCounts are what wormgate's rules dropped since they were last made.
type DropCounts struct {
	// BanPackets and BanBytes: traffic from banned addresses.
	BanPackets, BanBytes uint64
	// RPFPackets: packets to a syslog listener whose source failed the
	// reverse-path check (forged). SenderPackets: packets to a syslog
	// listener from a source not in allowed_senders.
	RPFPackets, SenderPackets uint64
}
