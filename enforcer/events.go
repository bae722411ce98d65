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
// links to the previous event of its address, and newest points at the
// last one, so an address's events are a short walk. A ring of values
// costs about half of a slice per address plus a queue of keys.
type eventLog struct {
	cfg  EventsConfig
	seq  uint64
	ring []eventSlot
	// head is the oldest slot, n the slots in use (live or dropped).
	head, n int
	newest  map[netip.Addr]int32
}

type eventSlot struct {
	ev policy.Event
	// prev is the slot of the address's previous event, or -1.
	prev int32
	live bool
}

func newEventLog(cfg EventsConfig) *eventLog {
	return &eventLog{cfg: cfg, newest: make(map[netip.Addr]int32)}
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
	// The address's own bound: drop its oldest while it has too many.
	prev, ok := l.newest[ev.Addr]
	if !ok {
		prev = -1
	}
	if count, oldest, before := l.chain(prev); count >= l.cfg.PerAddress {
		dropped = append(dropped, l.ring[oldest].ev.Key())
		l.ring[oldest].live = false
		if before >= 0 {
			l.ring[before].prev = -1
		} else {
			prev = -1
		}
	}
	i := (l.head + l.n) % total
	if i >= len(l.ring) {
		l.ring = l.ring[:i+1]
	}
	l.ring[i] = eventSlot{ev: ev, prev: prev, live: true}
	l.n++
	l.newest[ev.Addr] = int32(i)
	return dropped
}

// chain walks an address's events from slot i back: how many, the
// oldest, and the one after the oldest (-1 when the oldest is i).
func (l *eventLog) chain(i int32) (count int, oldest, before int32) {
	oldest, before = -1, -1
	for ; i >= 0; i = l.ring[i].prev {
		count++
		before, oldest = oldest, i
	}
	return count, oldest, before
}

// dropHead frees the oldest slot; a live event there is the oldest of
// its address, so its address's chain ends before it.
func (l *eventLog) dropHead() (policy.EventKey, bool) {
	s := &l.ring[l.head]
	i := int32(l.head)
	l.head = (l.head + 1) % cap(l.ring)
	l.n--
	if !s.live {
		return policy.EventKey{}, false
	}
	s.live = false
	a := s.ev.Addr
	if l.newest[a] == i {
		delete(l.newest, a)
	} else {
		for j := l.newest[a]; j >= 0; j = l.ring[j].prev {
			if l.ring[j].prev == i {
				l.ring[j].prev = -1
				break
			}
		}
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
	clear(l.newest)
	for _, ev := range live {
		i := l.n
		prev, ok := l.newest[ev.Addr]
		if !ok {
			prev = -1
		}
		l.ring = append(l.ring, eventSlot{ev: ev, prev: prev, live: true})
		l.n++
		l.newest[ev.Addr] = int32(i)
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
	if i, ok := l.newest[addr.Unmap()]; ok {
		return i
	}
	return -1
}

// last returns addr's newest event.
func (l *eventLog) last(addr netip.Addr) policy.Event {
	return l.ring[l.newestOf(addr)].ev
}
