package enforcer

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// maxEventText bounds the text kept per event: a client writes part of
// a reject text, an operator the reason of a manual change.
const maxEventText = matcher.MaxOffenseText

// eventLog is the offence history `wormgate why` reads: the newest
// PerAddress offences of each address, at most Total in all, none older
// than MaxAge. It lives in memory (the record keeps a copy for restarts)
// and is not safe for concurrent use.
//
// The events sit in one ring in the order they came, so the oldest is
// always at the head (the total and age bounds drop from there); each
// links to the previous and next event of its address, and addrs knows
// an address's newest, oldest and count, so that keeping an event costs
// the same however many its address has, and reading them is a short
// walk. A ring of values costs about half of a slice per address plus a
// queue of keys.
type eventLog struct {
	cfg  EventsConfig
	seq  uint64
	ring []eventSlot
	// head is the oldest slot, n the slots in use (live or dropped).
	head, n int
	addrs   map[netip.Addr]addrEvents
}

type eventSlot struct {
	ev policy.Event
	// prev and next are the slots of the address's previous and next
	// events, or -1.
	prev, next int32
	live       bool
}

// addrEvents are an address's live events: the slots of the newest and
// the oldest, and how many.
type addrEvents struct {
	newest, oldest, count int32
}

func newEventLog(cfg EventsConfig) *eventLog {
	return &eventLog{cfg: cfg, addrs: make(map[netip.Addr]addrEvents)}
}

// restore puts recorded events back, oldest first.
func (l *eventLog) restore(evs []policy.Event, now time.Time) (dropped []policy.EventKey) {
	evs = slices.Clone(evs)
	slices.SortFunc(evs, func(a, b policy.Event) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Seq, b.Seq))
	})
	for _, ev := range evs {
		l.seq = max(l.seq, ev.Seq)
		dropped = append(dropped, l.keep(ev, now)...)
	}
	return dropped
}

// add numbers ev, keeps it and returns the keys of the events it pushed
// out.
func (l *eventLog) add(ev policy.Event, now time.Time) []policy.EventKey {
	l.seq++
	ev.Seq = l.seq
	return l.keep(ev, now)
}

func (l *eventLog) keep(ev policy.Event, now time.Time) (dropped []policy.EventKey) {
	ev.Addr = ev.Addr.Unmap()
	if len(ev.Text) > maxEventText {
		ev.Text = ev.Text[:maxEventText]
	}
	total := max(l.cfg.Total, 1)
	if cap(l.ring) != total {
		l.resize(total, &dropped)
	}
	// The age bound and the total bound drop from the head.
	cutoff := now.Add(-l.cfg.MaxAge)
	for l.n > 0 && (l.n == total || l.ring[l.head].ev.Time.Before(cutoff)) {
		if k, ok := l.dropHead(); ok {
			dropped = append(dropped, k)
		}
	}
	// The address's own bound: drop its oldest when it has too many.
	st, ok := l.addrs[ev.Addr]
	if ok && int(st.count) >= l.cfg.PerAddress {
		dropped = append(dropped, l.ring[st.oldest].ev.Key())
		l.ring[st.oldest].live = false
		st = l.unlinkOldest(st)
	}
	l.push(ev, st, ok && st.count > 0, total)
	return dropped
}

// push puts ev in the next free slot, after st, its address's events
// (any when has is set).
func (l *eventLog) push(ev policy.Event, st addrEvents, has bool, total int) {
	i := int32((l.head + l.n) % total)
	if int(i) >= len(l.ring) {
		l.ring = l.ring[:i+1]
	}
	prev := int32(-1)
	if has {
		prev = st.newest
		l.ring[prev].next = i
	} else {
		st = addrEvents{oldest: i}
	}
	l.ring[i] = eventSlot{ev: ev, prev: prev, next: -1, live: true}
	l.n++
	st.newest = i
	st.count++
	l.addrs[ev.Addr] = st
}

// unlinkOldest takes the oldest event off st, its address's events.
func (l *eventLog) unlinkOldest(st addrEvents) addrEvents {
	next := l.ring[st.oldest].next
	st.count--
	if next >= 0 {
		l.ring[next].prev = -1
	}
	st.oldest = next
	return st
}

// dropHead frees the oldest slot; a live event there is the oldest of
// its address.
func (l *eventLog) dropHead() (policy.EventKey, bool) {
	s := &l.ring[l.head]
	l.head = (l.head + 1) % cap(l.ring)
	l.n--
	if !s.live {
		return policy.EventKey{}, false
	}
	s.live = false
	a := s.ev.Addr
	if st := l.unlinkOldest(l.addrs[a]); st.count > 0 {
		l.addrs[a] = st
	} else {
		delete(l.addrs, a)
	}
	k := s.ev.Key()
	s.ev = policy.Event{} // let its strings go
	return k, true
}

// resize makes the ring hold total slots (a reload changed the bound),
// keeping the newest events.
func (l *eventLog) resize(total int, dropped *[]policy.EventKey) {
	var live []policy.Event
	for k := range l.n {
		s := l.ring[(l.head+k)%cap(l.ring)]
		if s.live {
			live = append(live, s.ev)
		}
	}
	if over := len(live) - total; over > 0 {
		for _, ev := range live[:over] {
			*dropped = append(*dropped, ev.Key())
		}
		live = live[over:]
	}
	l.ring, l.head, l.n = make([]eventSlot, 0, total), 0, 0
	clear(l.addrs)
	for _, ev := range live {
		st, ok := l.addrs[ev.Addr]
		l.push(ev, st, ok, total)
	}
}

// of returns a copy of addr's events, oldest first.
func (l *eventLog) of(addr netip.Addr) []policy.Event {
	var out []policy.Event
	for i := l.newestOf(addr); i >= 0; i = l.ring[i].prev {
		out = append(out, l.ring[i].ev)
	}
	slices.Reverse(out)
	return out
}

func (l *eventLog) newestOf(addr netip.Addr) int32 {
	if st, ok := l.addrs[addr.Unmap()]; ok {
		return st.newest
	}
	return -1
}

// last returns addr's newest event.
func (l *eventLog) last(addr netip.Addr) policy.Event {
	return l.ring[l.newestOf(addr)].ev
}
