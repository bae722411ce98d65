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
type eventLog struct {
	cfg EventsConfig
	seq uint64
	by  map[netip.Addr][]policy.Event
	// fifo holds the keys in the order they came, oldest first, for the
	// total and age bounds; keys an address's own bound already dropped
	// stay until they reach the front (live counts the others).
	fifo []policy.EventKey
	live int
}

func newEventLog(cfg EventsConfig) *eventLog {
	return &eventLog{cfg: cfg, by: make(map[netip.Addr][]policy.Event)}
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
	list := append(l.by[ev.Addr], ev)
	if over := len(list) - l.cfg.PerAddress; over > 0 {
		for _, old := range list[:over] {
			dropped = append(dropped, old.Key())
		}
		l.live -= over
		list = slices.Delete(list, 0, over)
	}
	l.by[ev.Addr] = list
	l.fifo = append(l.fifo, ev.Key())
	l.live++
	cutoff := now.Add(-l.cfg.MaxAge)
	for len(l.fifo) > 0 && (l.live > l.cfg.Total || l.fifo[0].Time.Before(cutoff)) {
		k := l.fifo[0]
		l.fifo = l.fifo[1:]
		if l.remove(k) {
			dropped = append(dropped, k)
		}
	}
	if len(l.fifo) > 2*l.cfg.Total+64 {
		l.compact()
	}
	return dropped
}

// remove drops the event k if it is still kept.
func (l *eventLog) remove(k policy.EventKey) bool {
	list := l.by[k.Addr]
	i := slices.IndexFunc(list, func(ev policy.Event) bool { return ev.Seq == k.Seq })
	if i < 0 {
		return false
	}
	l.live--
	if len(list) == 1 {
		delete(l.by, k.Addr)
		return true
	}
	l.by[k.Addr] = slices.Delete(list, i, i+1)
	return true
}

// compact drops the keys of events that are gone, so that one address
// repeating itself cannot grow the queue without bound.
func (l *eventLog) compact() {
	kept := l.fifo[:0]
	for _, k := range l.fifo {
		if slices.ContainsFunc(l.by[k.Addr], func(ev policy.Event) bool { return ev.Seq == k.Seq }) {
			kept = append(kept, k)
		}
	}
	clear(l.fifo[len(kept):])
	l.fifo = slices.Clip(kept)
}

// of returns a copy of addr's events, oldest first.
func (l *eventLog) of(addr netip.Addr) []policy.Event {
	return slices.Clone(l.by[addr.Unmap()])
}

// last returns addr's newest event.
func (l *eventLog) last(addr netip.Addr) policy.Event {
	list := l.by[addr.Unmap()]
	return list[len(list)-1]
}
