package enforcer

import (
	"bytes"
	"cmp"
	"net/netip"
	"runtime"
	"slices"
	"strings"

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
	// Sort orders the page: SortAddr (the default), SortUntil, SortStart,
	// SortHits or SortRule, ties by address; Desc reverses the key.
	Sort string
	Desc bool
	// AfterKey is the NextKey of the previous page, for sorts other than
	// by address.
	AfterKey PageKey
}

// The orders of BansQuery.Sort.
const (
	SortAddr  = "addr"
	SortUntil = "until"
	SortStart = "start"
	SortHits  = "hits"
	SortRule  = "rule"
)

// SortKeys are the valid values of BansQuery.Sort.
var SortKeys = []string{SortAddr, SortUntil, SortStart, SortHits, SortRule}

// PageKey is a ban's sort key: a number (times in Unix nanoseconds, hits)
// or a text (rule).
type PageKey struct {
	N int64  `json:"n,omitempty"`
	S string `json:"s,omitempty"`
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
	// NextKey goes with Next for sorts other than by address.
	NextKey PageKey
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
		ord   = q.order()
		heap  = pageHeap{cmp: ord.cmp, items: make([]pageItem, 0, min(max(q.Limit, 0), 1024))}
		after int // matches after the cursor
		buf   [64]byte
		from  = pageItem{key: q.AfterKey, addr: q.After}
	)
	byValue := q.Rule != "" || q.Host != "" || q.Within.IsValid() || ord.key != nil
	consider := func(it pageItem) {
		page.Total++
		if q.After.IsValid() && ord.cmp(it, from) <= 0 {
			return
		}
		after++
		heap.offer(it, q.Limit)
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
				consider(pageItem{key: ord.keyOf(&b), addr: a})
			}
		}
	} else {
		for a := range e.active {
			yield()
			if q.matchesAddr(a, buf[:0]) {
				consider(pageItem{addr: a})
			}
		}
	}
	// The manual network bans (a handful) are listed at their network
	// address; one that shares it with a host ban takes a slot of its own.
	nets := make(map[netip.Addr]policy.Ban, len(e.nets))
	for n, b := range e.nets {
		if q.matchesAddr(n.Addr(), buf[:0]) && q.matchesBan(&b) {
			nets[n.Addr()] = b
			consider(pageItem{key: ord.keyOf(&b), addr: n.Addr()})
		}
	}
	items := heap.items
	slices.SortFunc(items, ord.cmp)
	now := e.now()
	page.Bans = make([]policy.Ban, 0, len(items))
	for i, it := range items {
		if i > 0 && items[i-1].addr == it.addr {
			continue
		}
		// Lifted, expired or changed since it was chosen: left out.
		if b, ok := e.active[it.addr]; ok && b.Until.After(now) && q.matchesBan(&b) {
			page.Bans = append(page.Bans, b)
		}
		if b, ok := nets[it.addr]; ok && b.Until.After(now) {
			page.Bans = append(page.Bans, b)
		}
	}
	if page.More = after > len(items); page.More && len(items) > 0 {
		last := items[len(items)-1]
		page.Next, page.NextKey = last.addr, last.key
	}
	return page
}

// pageItem is a ban as a page orders it.
type pageItem struct {
	key  PageKey
	addr netip.Addr
}

// pageOrder is the order of one query.
type pageOrder struct {
	// keyOf is nil when the address is the only key.
	keyOf func(b *policy.Ban) PageKey
	key   func(b *policy.Ban) PageKey
	cmp   func(a, b pageItem) int
}

func (q *BansQuery) order() pageOrder {
	var keyOf func(b *policy.Ban) PageKey
	switch q.Sort {
	case SortUntil:
		keyOf = func(b *policy.Ban) PageKey { return PageKey{N: b.Until.UnixNano()} }
	case SortStart:
		keyOf = func(b *policy.Ban) PageKey { return PageKey{N: b.Start.UnixNano()} }
	case SortHits:
		keyOf = func(b *policy.Ban) PageKey { return PageKey{N: int64(b.Hits)} }
	case SortRule:
		keyOf = func(b *policy.Ban) PageKey { return PageKey{S: b.Rule} }
	}
	sign := 1
	if q.Desc {
		sign = -1
	}
	o := pageOrder{key: keyOf}
	if keyOf == nil {
		o.keyOf = func(*policy.Ban) PageKey { return PageKey{} }
		o.cmp = func(a, b pageItem) int { return sign * a.addr.Compare(b.addr) }
		return o
	}
	o.keyOf = keyOf
	o.cmp = func(a, b pageItem) int {
		if c := cmp.Or(cmp.Compare(a.key.N, b.key.N), strings.Compare(a.key.S, b.key.S)); c != 0 {
			return sign * c
		}
		return a.addr.Compare(b.addr)
	}
	return o
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

// pageHeap is a max-heap in the page's order: its root is the highest of
// the lowest items seen, the one a lower item replaces.
type pageHeap struct {
	cmp   func(a, b pageItem) int
	items []pageItem
}

// offer keeps it if it is among the limit lowest items offered.
func (h *pageHeap) offer(it pageItem, limit int) {
	s := h.items
	switch {
	case len(s) < limit:
		s = append(s, it)
		for i := len(s) - 1; i > 0; {
			p := (i - 1) / 2
			if h.cmp(s[p], s[i]) >= 0 {
				break
			}
			s[p], s[i] = s[i], s[p]
			i = p
		}
		h.items = s
	case limit > 0 && h.cmp(it, s[0]) < 0:
		s[0] = it
		for i := 0; ; {
			l, r, top := 2*i+1, 2*i+2, i
			if l < len(s) && h.cmp(s[l], s[top]) > 0 {
				top = l
			}
			if r < len(s) && h.cmp(s[r], s[top]) > 0 {
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
