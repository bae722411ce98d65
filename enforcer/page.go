package enforcer

import (
	"bytes"
	"net/netip"
	"runtime"
	"slices"

	"github.com/wormgate/wormgate/enforcer/policy"
)

// scanChunk is how many bans BansPage looks at per hold of the lock. A
// page scans every ban (the map has no order), and 200k of them under one
// hold would stall the ban path for milliseconds; between chunks Offend
// gets its turn.
const scanChunk = 4096

// BansQuery selects one page of the active bans, in address order
// (netip.Addr.Compare: IPv4 before IPv6). Empty filters match every ban.
type BansQuery struct {
	// After is the Next of the previous page; the zero Addr starts at
	// the first ban.
	After netip.Addr
	// Limit is the page size; 0 asks only for Total.
	Limit int
	// Rule keeps the bans of this rule only.
	Rule string
	// Host keeps the bans that this MX host reported.
	Host string
	// Within, when valid, keeps the bans inside it (a network ban: that
	// overlap it).
	Within netip.Prefix
	// Text keeps the bans whose address, as netip.Addr.String writes it
	// (lower case), contains it.
	Text string
}

// BansPage is one page of bans.
type BansPage struct {
	// Bans are at most Limit bans after the query's After, in address
	// order. Their Hosts slices are shared with the enforcer: read, never
	// write them.
	Bans []policy.Ban
	// Total counts the matching bans held, on all pages. Like
	// wormgate_bans_active it includes bans that expired since the last
	// sweep (at most a minute ago), which no page lists.
	Total int
	// More is set when further matching bans follow; the next page
	// starts after Next. Next may lie past the last of Bans (and Bans
	// may be short of Limit) when bans on this page expired or were
	// lifted while it was read.
	More bool
	Next netip.Addr
}

// BansPage returns one page of the bans matching q, in O(n log limit)
// time and O(limit) memory: a bounded max-heap keeps the lowest addresses
// after q.After while every ban is looked at, and only the page's bans
// are copied. Without Rule, Host and Within filters only the map's keys
// are read, which is about ten times faster: a policy.Ban is too big to
// be stored in the map itself, and reading each means a cache miss.
//
// Between chunks the lock is released, so a page is not one snapshot: a
// ban added or removed meanwhile may or may not be on it (Go's map
// iteration allows changes between steps).
func (e *Enforcer) BansPage(q BansQuery) BansPage {
	var (
		page  BansPage
		heap  = make(addrHeap, 0, min(max(q.Limit, 0), 1024))
		after int // matches after q.After
		buf   [64]byte
	)
	byValue := q.Rule != "" || q.Host != "" || q.Within.IsValid()
	consider := func(a netip.Addr) {
		page.Total++
		if q.After.IsValid() && a.Compare(q.After) <= 0 {
			return
		}
		after++
		heap.offer(a, q.Limit)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	yield := func() {
		if n++; n%scanChunk == 0 {
			e.mu.Unlock()
			// Unlock readies a waiting Offend but does not run it:
			// without yielding, this loop would take the lock back first.
			runtime.Gosched()
			e.mu.Lock()
		}
	}
	if byValue {
		for a, b := range e.active {
			yield()
			if q.matchesAddr(a, buf[:0]) && q.matchesBan(&b) {
				consider(a)
			}
		}
	} else {
		for a := range e.active {
			yield()
			if q.matchesAddr(a, buf[:0]) {
				consider(a)
			}
		}
	}
	// The manual network bans (a handful) are listed at their network
	// address; one that shares it with a host ban takes a slot of its own.
	nets := make(map[netip.Addr]policy.Ban, len(e.nets))
	for n, b := range e.nets {
		if q.matchesAddr(n.Addr(), buf[:0]) && q.matchesBan(&b) {
			nets[n.Addr()] = b
			consider(n.Addr())
		}
	}
	slices.SortFunc(heap, netip.Addr.Compare)
	now := e.now()
	page.Bans = make([]policy.Ban, 0, len(heap))
	for i, a := range heap {
		if i > 0 && heap[i-1] == a {
			continue
		}
		// Lifted, expired or changed since it was chosen: left out.
		if b, ok := e.active[a]; ok && b.Until.After(now) && q.matchesBan(&b) {
			page.Bans = append(page.Bans, b)
		}
		if b, ok := nets[a]; ok && b.Until.After(now) {
			page.Bans = append(page.Bans, b)
		}
	}
	if page.More = after > len(heap); page.More && len(heap) > 0 {
		page.Next = heap[len(heap)-1]
	}
	return page
}

// matchesAddr applies the filters that the address alone decides; buf
// is scratch space for its text.
func (q *BansQuery) matchesAddr(a netip.Addr, buf []byte) bool {
	return q.Text == "" || bytes.Contains(a.AppendTo(buf), []byte(q.Text))
}

// matchesBan applies the filters that need the ban.
func (q *BansQuery) matchesBan(b *policy.Ban) bool {
	if q.Rule != "" && b.Rule != q.Rule {
		return false
	}
	if q.Host != "" && !slices.Contains(b.Hosts, q.Host) {
		return false
	}
	if q.Within.IsValid() {
		if b.Net.IsValid() {
			return q.Within.Overlaps(b.Net)
		}
		return q.Within.Contains(b.Addr)
	}
	return true
}

// addrHeap is a max-heap of addresses: its root is the highest of the
// lowest addresses seen, the one a lower address replaces.
type addrHeap []netip.Addr

// offer keeps a if it is among the limit lowest addresses offered.
func (h *addrHeap) offer(a netip.Addr, limit int) {
	s := *h
	switch {
	case len(s) < limit:
		s = append(s, a)
		for i := len(s) - 1; i > 0; {
			p := (i - 1) / 2
			if s[p].Compare(s[i]) >= 0 {
				break
			}
			s[p], s[i] = s[i], s[p]
			i = p
		}
		*h = s
	case limit > 0 && a.Compare(s[0]) < 0:
		s[0] = a
		for i := 0; ; {
			l, r, top := 2*i+1, 2*i+2, i
			if l < len(s) && s[l].Compare(s[top]) > 0 {
				top = l
			}
			if r < len(s) && s[r].Compare(s[top]) > 0 {
				top = r
			}
			if top == i {
				break
			}
			s[i], s[top] = s[top], s[i]
			i = top
		}
	}
}
