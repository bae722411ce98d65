//go:build linux

package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"

	"github.com/wormgate/wormgate/enforcer"
)

// Networks live in the interval sets blocked4_net and blocked6_net (flags
// interval,timeout). The kernel keeps an interval as two elements: its
// first address, which carries the timeout, and the first address after
// it, flagged as the end, which must not carry one (EINVAL). When the
// first element expires, the end element stays behind until the next
// change to the set collects it; it matches nothing and reading the set
// skips it. An interval that reaches the last address has no end element,
// as nft writes it. The kernel refuses an interval that overlaps another
// with EEXIST, also without NLM_F_EXCL (TestNFTablesNets shows all this).

// appendNet appends p's elements to elems: its first address with el's
// timeout and refresh mark, and its end.
func appendNet(elems []elem, p netip.Prefix, el elem) []elem {
	el.addr = p.Addr()
	elems = append(elems, el)
	if end := lastAddr(p).Next(); end.IsValid() {
		elems = append(elems, elem{addr: end, end: true, refresh: el.refresh})
	}
	return elems
}

// lastAddr is p's last address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := max(p.Bits(), 0); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// interval is one range as the kernel holds it.
type interval struct {
	first, last netip.Addr
	// end is the key of the end element; not valid when there is none.
	end     netip.Addr
	expires time.Duration
}

// intervals pairs the elements of an interval set, in any order: each
// first element runs to the next element, which is its end element unless
// someone wrote the set otherwise. End elements left alone are skipped.
func intervals(elems []nftables.SetElement) ([]interval, error) {
	type item struct {
		a       netip.Addr
		end     bool
		expires time.Duration
	}
	all := make([]item, 0, len(elems))
	for _, e := range elems {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, fmt.Errorf("element key of %d bytes", len(e.Key))
		}
		all = append(all, item{a, e.IntervalEnd, e.Expires})
	}
	// At the same address an end comes first: [a, b) and [b, c) touch.
	slices.SortFunc(all, func(x, y item) int {
		if c := x.a.Compare(y.a); c != 0 || x.end == y.end {
			return c
		}
		if x.end {
			return -1
		}
		return 1
	})
	var out []interval
	for i := 0; i < len(all); i++ {
		if all[i].end {
			continue
		}
		iv := interval{first: all[i].a, expires: all[i].expires}
		switch {
		case i+1 == len(all):
			iv.last = lastAddr(netip.PrefixFrom(iv.first, 0))
		case all[i+1].end:
			iv.end, iv.last = all[i+1].a, all[i+1].a.Prev()
			i++
		default:
			iv.last = all[i+1].a.Prev()
		}
		out = append(out, iv)
	}
	return out, nil
}

// prefixes splits [first, last] into the fewest prefixes; an interval
// that wormgate wrote is one.
func prefixes(first, last netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for first.IsValid() && first.Compare(last) <= 0 {
		var p netip.Prefix
		for bits := 0; bits <= first.BitLen(); bits++ {
			if p = netip.PrefixFrom(first, bits); p.Masked().Addr() == first && lastAddr(p).Compare(last) <= 0 {
				break
			}
		}
		out = append(out, p)
		first = lastAddr(p).Next()
	}
	return out
}

// listNets reads the interval sets that exist (a table made by an older
// wormgate has none) as elements, networks with Net set.
func (k *kernel) listNets() ([]enforcer.Element, error) {
	sets, err := k.conn.GetSets(k.table)
	if err != nil {
		return nil, fmt.Errorf("read sets: %w", err)
	}
	var out []enforcer.Element
	for _, s := range []*nftables.Set{k.net4, k.net6} {
		if !slices.ContainsFunc(sets, func(have *nftables.Set) bool { return have.Name == s.Name }) {
			continue
		}
		ivs, err := k.readIntervals(s)
		if err != nil {
			return nil, err
		}
		for _, iv := range ivs {
			for _, p := range prefixes(iv.first, iv.last) {
				e := enforcer.Element{Addr: p.Addr(), Timeout: iv.expires}
				if !p.IsSingleIP() {
					e.Net = p
				}
				out = append(out, e)
			}
		}
	}
	return out, nil
}

func (k *kernel) readIntervals(s *nftables.Set) ([]interval, error) {
	elems, err := k.conn.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("read set %s: %w", s.Name, err)
	}
	ivs, err := intervals(elems)
	if err != nil {
		return nil, fmt.Errorf("set %s: %w", s.Name, err)
	}
	return ivs, nil
}

// removeNets deletes the addresses in hosts and the intervals that are
// exactly one of nets, in one batch. An interval that expires between
// the read and the batch fails it with ENOENT; the caller tries again.
func (k *kernel) removeNets(hosts elemSets, nets []netip.Prefix) error {
	msgs, err := k.removeMsgs(hosts.v4, hosts.v6)
	if err != nil {
		return err
	}
	for _, s := range []*nftables.Set{k.net4, k.net6} {
		want := slices.DeleteFunc(slices.Clone(nets), func(p netip.Prefix) bool { return p.Addr().Is4() != (s == k.net4) })
		if len(want) == 0 {
			continue
		}
		ivs, err := k.readIntervals(s)
		if err != nil {
			return err
		}
		var del []elem
		for _, p := range want {
			i := slices.IndexFunc(ivs, func(iv interval) bool { return iv.first == p.Addr() && iv.last == lastAddr(p) })
			if i < 0 {
				continue
			}
			del = append(del, elem{addr: p.Addr()})
			if ivs[i].end.IsValid() {
				del = append(del, elem{addr: ivs[i].end, end: true})
			}
		}
		if msgs, err = appendElemMsgs(msgs, typeDelSetElem, s, del, keysOnly); err != nil {
			return err
		}
	}
	return k.sendBatch(msgs)
}

// removeMsgs are the messages that delete addresses: adding them first in
// the same batch makes an absent one a no-op instead of an ENOENT that
// would abort it.
func (k *kernel) removeMsgs(v4, v6 []elem) ([]netlink.Message, error) {
	var msgs []netlink.Message
	for _, x := range []struct {
		s     *nftables.Set
		elems []elem
	}{{k.set4, v4}, {k.set6, v6}} {
		var err error
		if msgs, err = appendElemMsgs(msgs, typeNewSetElem, x.s, x.elems, keysOnly); err != nil {
			return nil, err
		}
		if msgs, err = appendElemMsgs(msgs, typeDelSetElem, x.s, x.elems, keysOnly); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

// checkOverlap refuses networks that overlap each other or, with held,
// one the kernel holds; the same network twice is a refresh. The kernel
// itself misses an overlap when both intervals end at the same address
// (it then shares the end element, and deleting one network leaves the
// other running to the next element: a wrong block), so the sets are
// read first; they hold only the networks banned by hand.
func (k *kernel) checkOverlap(nets []netip.Prefix, held bool) error {
	if len(nets) == 0 {
		return nil
	}
	spans := make([]interval, 0, len(nets))
	for _, p := range nets {
		spans = append(spans, interval{first: p.Addr(), last: lastAddr(p)})
	}
	for _, s := range []*nftables.Set{k.net4, k.net6} {
		if !held || !slices.ContainsFunc(nets, func(p netip.Prefix) bool { return p.Addr().Is4() == (s == k.net4) }) {
			continue
		}
		ivs, err := k.readIntervals(s)
		if err != nil {
			return err
		}
		for _, iv := range ivs {
			spans = append(spans, interval{first: iv.first, last: iv.last})
		}
	}
	slices.SortFunc(spans, func(x, y interval) int {
		if c := x.first.Compare(y.first); c != 0 {
			return c
		}
		return x.last.Compare(y.last)
	})
	spans = slices.Compact(spans)
	// Sorted by first address, an interval that overlaps any later one
	// overlaps the next.
	for i := 1; i < len(spans); i++ {
		a, b := spans[i-1], spans[i]
		if a.first.BitLen() == b.first.BitLen() && b.first.Compare(a.last) <= 0 {
			return fmt.Errorf("%w: %v overlaps %v", enforcer.ErrOverlap, showRange(b), showRange(a))
		}
	}
	return nil
}

// showRange names an interval as a prefix where it is one.
func showRange(iv interval) string {
	if ps := prefixes(iv.first, iv.last); len(ps) == 1 {
		return ps[0].String()
	}
	return iv.first.String() + "-" + iv.last.String()
}
