//go:build linux

package nft

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// guardJumps are the base chain's rules that send packets for a syslog
// listener on one of the gateway's own addresses to the guard chain:
//
//	meta l4proto udp udp dport 514 fib daddr type local jump syslog_guard
//
// and the same for each TCP port. Nothing else goes there.
func (k *kernel) guardJumps() []*nftables.Rule {
	if k.guard == nil {
		return nil
	}
	var out []*nftables.Rule
	add := func(proto byte, ports []uint16) {
		for _, p := range ports {
			out = append(out, &nftables.Rule{Table: k.table, Chain: k.chain, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
				&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
				&expr.Verdict{Kind: expr.VerdictJump, Chain: guardChainName},
			}})
		}
	}
	add(unix.IPPROTO_UDP, k.guard.UDPPorts)
	add(unix.IPPROTO_TCP, k.guard.TCPPorts)
	return out
}

// guardRules are the guard chain's rules, in this order:
//
//	fib saddr . iif oif missing counter drop   (reason "rpf")
//	ip saddr PREFIX return                     (one per allowed sender)
//	ip6 saddr PREFIX return
//	counter drop                               (reason "sender")
//
// The first is the strict reverse-path check, done here because Linux's
// rp_filter is often loose (2) on multi-homed gateways and does not exist
// for IPv6. Counters reads the two counters by this order.
func (k *kernel) guardRules() []*nftables.Rule {
	if k.guard == nil {
		return nil
	}
	rule := func(ex ...expr.Any) *nftables.Rule {
		return &nftables.Rule{Table: k.table, Chain: k.guardChain, Exprs: ex}
	}
	out := []*nftables.Rule{rule(
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)}
	for _, p := range k.guard.Senders {
		p = p.Masked()
		proto, offset := byte(unix.NFPROTO_IPV4), uint32(12)
		if p.Addr().Is6() {
			proto, offset = unix.NFPROTO_IPV6, 8
		}
		n := uint32(p.Addr().BitLen() / 8)
		out = append(out, rule(
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: prefixMask(p), Xor: make([]byte, n)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
			&expr.Verdict{Kind: expr.VerdictReturn},
		))
	}
	return append(out, rule(&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}))
}

// prefixMask is p's netmask as bytes.
func prefixMask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := range p.Bits() {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}
