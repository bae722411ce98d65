//go:build linux

package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"

	"github.com/wormgate/wormgate/enforcer"
)

// These tests need no root: the firewall talks to a fake netlink socket
// (nftables.WithTestDial) that records every batch and acknowledges it.

// fakeKernel records batches and answers requests like an empty kernel.
type fakeKernel struct {
	mu      sync.Mutex
	batches [][]netlink.Message
	// hold, when set, runs for every request outside a batch before it is
	// answered; tests block in it.
	hold func(req netlink.Message)
	// rules answer a rule dump.
	rules []netlink.Message
}

func (f *fakeKernel) dial(req []netlink.Message) ([]netlink.Message, error) {
	if len(req) == 0 {
		return nil, nil
	}
	if req[0].Header.Type == netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) {
		f.mu.Lock()
		f.batches = append(f.batches, req[1:len(req)-1])
		f.mu.Unlock()
		var acks []netlink.Message
		for _, m := range req {
			if m.Header.Flags&netlink.Acknowledge != 0 {
				acks = append(acks, ack(m))
			}
		}
		return acks, nil
	}
	if f.hold != nil {
		f.hold(req[0])
	}
	if req[0].Header.Type == netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETRULE) && len(f.rules) > 0 {
		var out []netlink.Message
		for _, r := range f.rules {
			r.Header.Type = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE)
			r.Header.Sequence = req[0].Header.Sequence
			out = append(out, r)
		}
		return nltest.Multipart(append(out, netlink.Message{Header: netlink.Header{Sequence: req[0].Header.Sequence}}))
	}
	if req[0].Header.Type == typeGetGen {
		gen := binary.BigEndian.AppendUint32([]byte{8, 0, unix.NFTA_GEN_ID, 0}, 1)
		return []netlink.Message{{
			Header: netlink.Header{Type: typeNewGen, Sequence: req[0].Header.Sequence},
			Data:   append([]byte{0, 0, 0, 0}, gen...),
		}}, nil
	}
	return nil, nil
}

func ack(m netlink.Message) netlink.Message {
	hdr := make([]byte, 20)
	binary.NativeEndian.PutUint32(hdr[4:], m.Header.Length)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID},
		Data:   hdr,
	}
}

func (f *fakeKernel) taken() [][]netlink.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.batches
	f.batches = nil
	return b
}

func openFake(t *testing.T, cfg enforcer.NFTablesConfig, opts ...Option) (*Firewall, *fakeKernel) {
	t.Helper()
	fk := &fakeKernel{}
	f, err := Open(testConfig(cfg), slog.New(slog.DiscardHandler), append([]Option{withTestDial(fk.dial)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, fk
}

// eachItem calls fn with each item of ad's current list attribute.
func eachItem(ad *netlink.AttributeDecoder, fn func(*netlink.AttributeDecoder)) {
	ad.Nested(func(l *netlink.AttributeDecoder) error {
		for l.Next() {
			l.Nested(func(d *netlink.AttributeDecoder) error { fn(d); return nil })
		}
		return nil
	})
}

// describe renders each message of each batch as one line.
func describe(t *testing.T, batches [][]netlink.Message) [][]string {
	t.Helper()
	out := make([][]string, len(batches))
	for i, b := range batches {
		out[i] = []string{}
		for _, m := range b {
			line, err := describeMsg(m)
			if err != nil {
				t.Fatalf("batch %d: %v", i, err)
			}
			out[i] = append(out[i], line)
		}
	}
	return out
}

var msgNames = map[int]string{
	unix.NFT_MSG_NEWTABLE: "NEWTABLE", unix.NFT_MSG_NEWSET: "NEWSET", unix.NFT_MSG_NEWSETELEM: "NEWSETELEM",
	unix.NFT_MSG_DELSETELEM: "DELSETELEM", unix.NFT_MSG_NEWCHAIN: "NEWCHAIN", unix.NFT_MSG_DELCHAIN: "DELCHAIN",
	unix.NFT_MSG_NEWRULE: "NEWRULE", unix.NFT_MSG_DELRULE: "DELRULE",
}

func describeMsg(m netlink.Message) (string, error) {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
		return "", fmt.Errorf("not an nftables message: %v", m.Header)
	}
	op, ok := msgNames[int(m.Header.Type&0xff)]
	if !ok {
		return "", fmt.Errorf("unexpected message type %#x", m.Header.Type)
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return "", err
	}
	ad.ByteOrder = binary.BigEndian
	var parts []string
	switch m.Header.Type & 0xff {
	case unix.NFT_MSG_NEWTABLE:
		for ad.Next() {
			if ad.Type() == unix.NFTA_TABLE_NAME {
				parts = append(parts, ad.String())
			}
		}
	case unix.NFT_MSG_NEWSET:
		keyTypes := map[uint32]string{7: "ipv4_addr", 8: "ipv6_addr", 13: "inet_service"}
		var name, typ, flags string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_NAME:
				name = ad.String()
			case unix.NFTA_SET_KEY_TYPE:
				typ = keyTypes[ad.Uint32()]
			case unix.NFTA_SET_FLAGS:
				f := ad.Uint32()
				if f&unix.NFT_SET_INTERVAL != 0 {
					flags = " flags interval"
				}
				if f&unix.NFT_SET_TIMEOUT != 0 {
					flags += " flags timeout"
				}
			}
		}
		parts = append(parts, name, "type "+typ+flags)
	case unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
		var name string
		var elems []string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_ELEM_LIST_SET:
				name = ad.String()
			case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
				eachItem(ad, func(ed *netlink.AttributeDecoder) { elems = append(elems, describeElem(ed)) })
			}
		}
		parts = append(parts, name)
		switch {
		case len(elems) == 0:
			parts = append(parts, "(all)")
		case len(elems) <= 3:
			parts = append(parts, strings.Join(elems, ", "))
		default:
			parts = append(parts, fmt.Sprintf("%d: %s .. %s", len(elems), elems[0], elems[len(elems)-1]))
		}
	case unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN:
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_CHAIN_NAME:
				parts = append(parts, ad.String())
			case unix.NFTA_CHAIN_TYPE:
				parts = append(parts, "type "+ad.String())
			case unix.NFTA_CHAIN_POLICY:
				parts = append(parts, fmt.Sprintf("policy %d", ad.Uint32()))
			case unix.NFTA_CHAIN_HOOK:
				ad.Nested(func(hd *netlink.AttributeDecoder) error {
					for hd.Next() {
						switch hd.Type() {
						case unix.NFTA_HOOK_HOOKNUM:
							parts = append(parts, fmt.Sprintf("hook %d", hd.Uint32()))
						case unix.NFTA_HOOK_PRIORITY:
							parts = append(parts, fmt.Sprintf("priority %d", int32(hd.Uint32())))
						}
					}
					return nil
				})
			}
		}
	case unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE:
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_CHAIN:
				parts = append(parts, ad.String())
			case unix.NFTA_RULE_EXPRESSIONS:
				eachItem(ad, func(xd *netlink.AttributeDecoder) { parts = append(parts, describeExpr(xd)) })
			}
		}
	}
	if err := ad.Err(); err != nil {
		return "", err
	}
	return op + " " + strings.Join(parts, " "), nil
}

func describeElem(ed *netlink.AttributeDecoder) string {
	var key, timing string
	for ed.Next() {
		switch ed.Type() {
		case unix.NFTA_SET_ELEM_KEY:
			ed.Nested(func(kd *netlink.AttributeDecoder) error {
				for kd.Next() {
					b := kd.Bytes()
					if a, ok := netip.AddrFromSlice(b); ok {
						key = a.String()
					} else if len(b) == 2 {
						key = fmt.Sprint(binary.BigEndian.Uint16(b))
					}
				}
				return nil
			})
		case unix.NFTA_SET_ELEM_FLAGS:
			if ed.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0 {
				timing += " end"
			}
		case unix.NFTA_SET_ELEM_TIMEOUT:
			timing += fmt.Sprintf(" timeout %v", time.Duration(ed.Uint64())*time.Millisecond)
		case unix.NFTA_SET_ELEM_EXPIRATION:
			timing += fmt.Sprintf(" expires %v", time.Duration(ed.Uint64())*time.Millisecond)
		}
	}
	return key + timing
}

func describeExpr(xd *netlink.AttributeDecoder) string {
	var name, detail string
	for xd.Next() {
		switch xd.Type() {
		case unix.NFTA_EXPR_NAME:
			name = xd.String()
		case unix.NFTA_EXPR_DATA:
			xd.Nested(func(dd *netlink.AttributeDecoder) error {
				for dd.Next() {
					switch {
					case name == "lookup" && dd.Type() == unix.NFTA_LOOKUP_SET:
						detail = "(@" + dd.String() + ")"
					case name == "immediate" && dd.Type() == unix.NFTA_IMMEDIATE_DATA:
						dd.Nested(func(vd *netlink.AttributeDecoder) error {
							for vd.Next() {
								if vd.Type() == unix.NFTA_DATA_VERDICT {
									vd.Nested(func(cd *netlink.AttributeDecoder) error {
										for cd.Next() {
											if cd.Type() == unix.NFTA_VERDICT_CODE && cd.Uint32() == 0 { // NF_DROP
												detail = "(drop)"
											}
										}
										return nil
									})
								}
							}
							return nil
						})
					}
				}
				return nil
			})
		}
	}
	return name + detail
}

// wireSets is how every setup and restore batch begins: the table and
// its sets; setupHead goes on with what Setup adds before the chains: the
// canaries, the ports and the guard chain emptied.
var (
	wireSets = []string{
		"NEWTABLE wormgate",
		"NEWSET blocked4 type ipv4_addr flags timeout",
		"NEWSET blocked6 type ipv6_addr flags timeout",
		"NEWSET blocked4_net type ipv4_addr flags interval flags timeout",
		"NEWSET blocked6_net type ipv6_addr flags interval flags timeout",
		"NEWSET ports type inet_service",
	}
	setupHead = slices.Concat(wireSets, []string{
		"NEWSETELEM blocked4 255.255.255.255",
		"NEWSETELEM blocked6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"DELSETELEM ports (all)",
		"NEWSETELEM ports 25, 465, 587",
		"NEWCHAIN syslog_guard",
		"DELRULE syslog_guard",
	})
)

func TestWireSetup(t *testing.T) {
	rule := func(set string) string {
		return "NEWRULE prerouting meta cmp payload lookup(@" + set + ") meta cmp payload lookup(@ports) counter immediate(drop)"
	}
	want := [][]string{slices.Concat(setupHead, []string{
		fmt.Sprintf("NEWCHAIN prerouting hook %d priority -300 policy 1 type filter", unix.NF_INET_PRE_ROUTING),
		"DELRULE prerouting",
		rule("blocked4"),
		rule("blocked6"),
		rule("blocked4_net"),
		rule("blocked6_net"),
	})}
	f, fk := openFake(t, enforcer.NFTablesConfig{})
	if err := f.Setup(t.Context()); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if diff := cmp.Diff(want, describe(t, fk.taken())); diff != "" {
		t.Errorf("Setup batches (-want +got):\n%s", diff)
	}
}

// TestWireSetupGuard: with the syslog guard, the guard chain comes first
// (the base chain jumps to it) with the reverse-path rule, one return per
// allowed sender and the final drop; the base chain starts with one jump
// per listener port.
func TestWireSetupGuard(t *testing.T) {
	ban := func(set string) string {
		return "NEWRULE prerouting meta cmp payload lookup(@" + set + ") meta cmp payload lookup(@ports) counter immediate(drop)"
	}
	const jump = "NEWRULE prerouting meta cmp payload cmp fib cmp immediate"
	want := [][]string{slices.Concat(setupHead, []string{
		"NEWRULE syslog_guard fib cmp counter immediate(drop)",
		"NEWRULE syslog_guard meta cmp payload bitwise cmp immediate",
		"NEWRULE syslog_guard meta cmp payload bitwise cmp immediate",
		"NEWRULE syslog_guard counter immediate(drop)",
		fmt.Sprintf("NEWCHAIN prerouting hook %d priority -300 policy 1 type filter", unix.NF_INET_PRE_ROUTING),
		"DELRULE prerouting",
		jump, jump, jump,
		ban("blocked4"),
		ban("blocked6"),
		ban("blocked4_net"),
		ban("blocked6_net"),
	})}
	g := Guard{UDPPorts: []uint16{514}, TCPPorts: []uint16{514, 6514},
		Senders: []netip.Prefix{netip.MustParsePrefix("192.0.2.25/32"), netip.MustParsePrefix("2001:db8:25::/64")}}
	f, fk := openFake(t, enforcer.NFTablesConfig{}, WithSyslogGuard(g))
	if err := f.Setup(t.Context()); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if diff := cmp.Diff(want, describe(t, fk.taken())); diff != "" {
		t.Errorf("Setup batches (-want +got):\n%s", diff)
	}
}

func TestPrefixMask(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   []byte
	}{
		{"192.0.2.0/24", []byte{255, 255, 255, 0}},
		{"198.51.100.25/32", []byte{255, 255, 255, 255}},
		{"10.0.0.0/9", []byte{255, 128, 0, 0}},
		{"0.0.0.0/0", []byte{0, 0, 0, 0}},
		{"2001:db8::/33", []byte{255, 255, 255, 255, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	} {
		if diff := cmp.Diff(tc.want, prefixMask(netip.MustParsePrefix(tc.prefix))); diff != "" {
			t.Errorf("prefixMask(%s) (-want +got):\n%s", tc.prefix, diff)
		}
	}
}

func v4seq(n int, timeout time.Duration, refresh bool) []enforcer.Element {
	out := make([]enforcer.Element, n)
	for i, a := range seqAddrs(addr("198.18.0.0"), n) {
		out[i] = enforcer.Element{Addr: a, Timeout: timeout, Refresh: refresh}
	}
	return out
}

func TestWireAdd(t *testing.T) {
	newV4 := enforcer.Element{Addr: addr("192.0.2.1"), Timeout: time.Hour}
	newV6 := enforcer.Element{Addr: addr("2001:db8::1"), Timeout: 90 * time.Second}
	old := enforcer.Element{Addr: addr("192.0.2.2"), Timeout: 2 * time.Hour, Refresh: true}
	for _, tc := range []struct {
		name          string
		timeoutUpdate bool
		elems         []enforcer.Element
		want          [][]string
	}{
		{"new elements, one add each", true, []enforcer.Element{newV4, newV6}, [][]string{{
			"NEWSETELEM blocked4 192.0.2.1 timeout 1h0m0s",
			"NEWSETELEM blocked6 2001:db8::1 timeout 1m30s",
		}}},
		{"new elements on an old kernel, one add each", false, []enforcer.Element{newV4, newV6}, [][]string{{
			"NEWSETELEM blocked4 192.0.2.1 timeout 1h0m0s",
			"NEWSETELEM blocked6 2001:db8::1 timeout 1m30s",
		}}},
		{"refresh by expiration", true, []enforcer.Element{newV4, old}, [][]string{{
			"NEWSETELEM blocked4 192.0.2.1 timeout 1h0m0s",
			"NEWSETELEM blocked4 192.0.2.2 timeout 2h0m0s expires 2h0m0s",
		}}},
		{"refresh by delete and add", false, []enforcer.Element{newV4, old}, [][]string{{
			"NEWSETELEM blocked4 192.0.2.1 timeout 1h0m0s",
			"NEWSETELEM blocked4 192.0.2.2",
			"DELSETELEM blocked4 192.0.2.2",
			"NEWSETELEM blocked4 192.0.2.2 timeout 2h0m0s",
		}}},
		{"4in6 and sub-millisecond timeouts are normalised", true, []enforcer.Element{{Addr: addr("::ffff:192.0.2.3"), Timeout: 1500 * time.Microsecond}}, [][]string{{
			"NEWSETELEM blocked4 192.0.2.3 timeout 2ms",
		}}},
		{"chunks of 1000", true, v4seq(2500, time.Hour, false), [][]string{{
			"NEWSETELEM blocked4 1000: 198.18.0.0 timeout 1h0m0s .. 198.18.3.231 timeout 1h0m0s",
			"NEWSETELEM blocked4 1000: 198.18.3.232 timeout 1h0m0s .. 198.18.7.207 timeout 1h0m0s",
			"NEWSETELEM blocked4 500: 198.18.7.208 timeout 1h0m0s .. 198.18.9.195 timeout 1h0m0s",
		}}},
		{"networks: first address with the timeout, end without", true, []enforcer.Element{
			{Net: netip.MustParsePrefix("203.0.113.7/24"), Timeout: time.Hour},
			{Net: netip.MustParsePrefix("::ffff:198.51.100.0/120"), Timeout: time.Hour},
			{Net: netip.MustParsePrefix("2001:db8::/48"), Timeout: time.Minute},
			{Net: netip.MustParsePrefix("192.0.2.9/32"), Timeout: time.Minute}, // one address: a host
		}, [][]string{{
			"NEWSETELEM blocked4 192.0.2.9 timeout 1m0s",
			"NEWSETELEM blocked4_net 4: 203.0.113.0 timeout 1h0m0s .. 198.51.101.0 end",
			"NEWSETELEM blocked6_net 2001:db8:: timeout 1m0s, 2001:db8:1:: end",
		}}},
		{"a network up to the last address has no end", true, []enforcer.Element{
			{Net: netip.MustParsePrefix("255.255.255.0/24"), Timeout: time.Hour},
		}, [][]string{{
			"NEWSETELEM blocked4_net 255.255.255.0 timeout 1h0m0s",
		}}},
		{"refresh networks by expiration", true, []enforcer.Element{
			{Net: netip.MustParsePrefix("203.0.113.0/24"), Timeout: time.Hour, Refresh: true},
		}, [][]string{{
			"NEWSETELEM blocked4_net 203.0.113.0 timeout 1h0m0s expires 1h0m0s, 203.0.114.0 end",
		}}},
		{"refresh networks by delete and add", false, []enforcer.Element{
			{Net: netip.MustParsePrefix("203.0.113.0/24"), Timeout: time.Hour, Refresh: true},
		}, [][]string{{
			"NEWSETELEM blocked4_net 203.0.113.0, 203.0.114.0 end",
			"DELSETELEM blocked4_net 203.0.113.0, 203.0.114.0 end",
			"NEWSETELEM blocked4_net 203.0.113.0 timeout 1h0m0s, 203.0.114.0 end",
		}}},
		{"canaries are not written", true, []enforcer.Element{
			{Addr: canary4, Timeout: time.Hour}, {Addr: canary6, Timeout: time.Hour},
		}, [][]string{}},
		{"refresh chunks of 1000", true, v4seq(1001, time.Hour, true), [][]string{{
			"NEWSETELEM blocked4 1000: 198.18.0.0 timeout 1h0m0s expires 1h0m0s .. 198.18.3.231 timeout 1h0m0s expires 1h0m0s",
			"NEWSETELEM blocked4 198.18.3.232 timeout 1h0m0s expires 1h0m0s",
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, fk := openFake(t, enforcer.NFTablesConfig{}, withTimeoutUpdate(tc.timeoutUpdate))
			if err := f.Add(t.Context(), tc.elems); err != nil {
				t.Fatalf("Add: %v", err)
			}
			if diff := cmp.Diff(tc.want, describe(t, fk.taken())); diff != "" {
				t.Errorf("Add batches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWireDelete(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
		want  [][]string
	}{
		{"both families", []netip.Addr{addr("192.0.2.1"), addr("2001:db8::1"), addr("::ffff:192.0.2.2")}, [][]string{{
			"NEWSETELEM blocked4 192.0.2.1, 192.0.2.2",
			"DELSETELEM blocked4 192.0.2.1, 192.0.2.2",
			"NEWSETELEM blocked6 2001:db8::1",
			"DELSETELEM blocked6 2001:db8::1",
		}}},
		{"chunks of 1000", seqAddrs(addr("198.18.0.0"), 1500), [][]string{{
			"NEWSETELEM blocked4 1000: 198.18.0.0 .. 198.18.3.231",
			"NEWSETELEM blocked4 500: 198.18.3.232 .. 198.18.5.219",
			"DELSETELEM blocked4 1000: 198.18.0.0 .. 198.18.3.231",
			"DELSETELEM blocked4 500: 198.18.3.232 .. 198.18.5.219",
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, fk := openFake(t, enforcer.NFTablesConfig{})
			if err := f.Delete(t.Context(), tc.addrs); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if diff := cmp.Diff(tc.want, describe(t, fk.taken())); diff != "" {
				t.Errorf("Delete batches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWireRestore(t *testing.T) {
	elems := append(v4seq(1500, time.Hour, true),
		enforcer.Element{Addr: addr("2001:db8::1"), Timeout: time.Minute},
		enforcer.Element{Net: netip.MustParsePrefix("203.0.113.0/24"), Timeout: time.Hour},
		enforcer.Element{Net: netip.MustParsePrefix("2001:db8:1::/48"), Timeout: time.Minute},
		enforcer.Element{Addr: canary4, Timeout: time.Hour}, // dropped: the canary's place
	)
	want := [][]string{slices.Concat(wireSets, []string{
		"DELSETELEM blocked4 (all)",
		"DELSETELEM blocked6 (all)",
		"DELSETELEM blocked4_net (all)",
		"DELSETELEM blocked6_net (all)",
		// Refresh does not matter after the flush: one add each. The
		// canaries come back without a timeout.
		"NEWSETELEM blocked4 1000: 198.18.0.0 timeout 1h0m0s .. 198.18.3.231 timeout 1h0m0s",
		"NEWSETELEM blocked4 501: 198.18.3.232 timeout 1h0m0s .. 255.255.255.255",
		"NEWSETELEM blocked6 2001:db8::1 timeout 1m0s, ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"NEWSETELEM blocked4_net 203.0.113.0 timeout 1h0m0s, 203.0.114.0 end",
		"NEWSETELEM blocked6_net 2001:db8:1:: timeout 1m0s, 2001:db8:2:: end",
		"DELSETELEM ports (all)",
		"NEWSETELEM ports 25",
		"NEWCHAIN syslog_guard",
		"DELRULE syslog_guard",
		fmt.Sprintf("NEWCHAIN prerouting hook %d priority -300 policy 1 type filter", unix.NF_INET_PRE_ROUTING),
		"DELRULE prerouting",
		"NEWRULE prerouting meta cmp payload lookup(@blocked4) meta cmp payload lookup(@ports) counter immediate(drop)",
		"NEWRULE prerouting meta cmp payload lookup(@blocked6) meta cmp payload lookup(@ports) counter immediate(drop)",
		"NEWRULE prerouting meta cmp payload lookup(@blocked4_net) meta cmp payload lookup(@ports) counter immediate(drop)",
		"NEWRULE prerouting meta cmp payload lookup(@blocked6_net) meta cmp payload lookup(@ports) counter immediate(drop)",
	})}
	f, fk := openFake(t, enforcer.NFTablesConfig{Ports: []uint16{25}})
	if err := f.Restore(t.Context(), elems); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if diff := cmp.Diff(want, describe(t, fk.taken())); diff != "" {
		t.Errorf("Restore batches (-want +got):\n%s", diff)
	}
}

// TestWireSetPorts: one batch refills the ports set and rewrites the
// rules, which look the ports up only when there are some.
func TestWireSetPorts(t *testing.T) {
	rules := func(ports bool) []string {
		var out []string
		for _, set := range []string{"blocked4", "blocked6", "blocked4_net", "blocked6_net"} {
			r := "NEWRULE prerouting meta cmp payload lookup(@" + set + ")"
			if ports {
				r += " meta cmp payload lookup(@ports)"
			}
			out = append(out, r+" counter immediate(drop)")
		}
		return out
	}
	batch := func(ports []string, withPorts bool) []string {
		return append(append(append([]string{"DELSETELEM ports (all)"}, ports...),
			"NEWCHAIN syslog_guard",
			"DELRULE syslog_guard",
			fmt.Sprintf("NEWCHAIN prerouting hook %d priority -300 policy 1 type filter", unix.NF_INET_PRE_ROUTING),
			"DELRULE prerouting"), rules(withPorts)...)
	}
	f, fk := openFake(t, enforcer.NFTablesConfig{Ports: []uint16{25}})
	for _, step := range []struct {
		ports []uint16
		want  []string
	}{
		{[]uint16{587, 2525, 587}, batch([]string{"NEWSETELEM ports 587, 2525"}, true)},
		{[]uint16{}, batch(nil, false)},
		{[]uint16{25}, batch([]string{"NEWSETELEM ports 25"}, true)},
	} {
		if err := f.SetPorts(t.Context(), step.ports); err != nil {
			t.Fatalf("SetPorts(%v): %v", step.ports, err)
		}
		if diff := cmp.Diff([][]string{step.want}, describe(t, fk.taken())); diff != "" {
			t.Errorf("SetPorts(%v) batches (-want +got):\n%s", step.ports, diff)
		}
	}
	// Later batches use the new ports.
	if err := f.SetPorts(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	fk.taken()
	if err := f.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := describe(t, fk.taken())
	if diff := cmp.Diff(rules(false), got[0][len(got[0])-4:]); diff != "" {
		t.Errorf("Setup after SetPorts(nil): rules (-want +got):\n%s", diff)
	}
}

// The element messages built here must be what google/nftables builds,
// apart from the expiration it cannot send.
func TestElemMsgMatchesGoogleNFTables(t *testing.T) {
	k := newKernel("wormgate", nil, options{})
	for _, tc := range []struct {
		name string
		set  *nftables.Set
		w    elemWrite
		add  func(*nftables.Conn, *nftables.Set, []nftables.SetElement) error
		typ  netlink.HeaderType
	}{
		{"ipv4 with timeout", k.set4, withTimeout, (*nftables.Conn).SetAddElements, typeNewSetElem},
		{"ipv6 with timeout", k.set6, withTimeout, (*nftables.Conn).SetAddElements, typeNewSetElem},
		{"ipv4 keys", k.set4, keysOnly, (*nftables.Conn).SetAddElements, typeNewSetElem},
		{"ipv6 delete", k.set6, keysOnly, (*nftables.Conn).SetDeleteElements, typeDelSetElem},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := addr("198.18.0.0")
			if tc.set == k.set6 {
				first = addr("2001:db8::")
			}
			var mine []elem
			var theirs []nftables.SetElement
			for i, a := range seqAddrs(first, 1000) {
				d := time.Duration(i+1) * time.Second
				mine = append(mine, elem{addr: a, timeout: d})
				se := nftables.SetElement{Key: a.AsSlice()}
				if tc.w == withTimeout {
					se.Timeout = d
				}
				theirs = append(theirs, se)
			}
			got, err := elemMsg(tc.typ, tc.set, mine, tc.w)
			if err != nil {
				t.Fatal(err)
			}
			want, err := record(func(c *nftables.Conn) error { return tc.add(c, tc.set, theirs) })
			if err != nil || len(want) != 1 {
				t.Fatalf("google/nftables: %d messages, %v", len(want), err)
			}
			if diff := cmp.Diff(want[0], got); diff != "" {
				t.Errorf("message (-google/nftables +here):\n%s", diff)
			}
		})
	}
}

// A call whose context ends while the owner goroutine still works must
// return at once and must not share memory with the work that goes on:
// under -race, a result written into the caller's variables after it
// returned is reported.
func TestCancelledCallsDoNotRace(t *testing.T) {
	// Two drop rules with counters, as the kernel would dump them.
	k := newKernel("wormgate", nil, options{})
	rules, err := record(func(c *nftables.Conn) error {
		for _, n := range []uint64{2, 3} {
			c.AddRule(&nftables.Rule{Table: k.table, Chain: k.chain, Exprs: []expr.Any{
				&expr.Counter{Packets: n, Bytes: 60 * n}, &expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, f *Firewall) (string, error)
		want string
	}{
		{"Counters", func(ctx context.Context, f *Firewall) (string, error) {
			c, err := f.Counters(ctx)
			return fmt.Sprintf("%d packets, %d bytes", c.BanPackets, c.BanBytes), err
		}, "5 packets, 300 bytes"},
		{"List", func(ctx context.Context, f *Firewall) (string, error) {
			elems, err := f.List(ctx)
			return fmt.Sprintf("%d elements", len(elems)), err
		}, "0 elements"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fk := &fakeKernel{rules: rules}
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			fk.hold = func(netlink.Message) {
				once.Do(func() {
					close(entered)
					<-release
				})
			}
			f, err := Open(testConfig(enforcer.NFTablesConfig{}), slog.New(slog.DiscardHandler), withTestDial(fk.dial))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer f.Close()
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, err := tc.call(ctx, f)
				done <- err
			}()
			<-entered
			cancel()
			// Released at once, not after the caller returned: waiting for
			// it would order the two goroutines and hide a race.
			close(release)
			// The call either saw the cancellation or, released in the
			// same instant, its own result: both are right; only a race
			// (under -race) or another error is wrong.
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("%s with a context cancelled in flight = %v, want %v or its result", tc.name, err, context.Canceled)
			}
			got, err := tc.call(t.Context(), f)
			if err != nil {
				t.Fatalf("%s after a cancelled call = %v", tc.name, err)
			}
			if got != tc.want {
				t.Errorf("%s after a cancelled call = %s, want %s", tc.name, got, tc.want)
			}
		})
	}
}
