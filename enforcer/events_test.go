package enforcer

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wormgate/wormgate/enforcer/policy"
)

// TestEventLogModel checks the ring against its definition: an event is
// kept while it is among the last Total to arrive, among the newest
// PerAddress of its address and not older than MaxAge; every event that
// stops being kept is reported dropped exactly once.
func TestEventLogModel(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 7))
		cfg := EventsConfig{PerAddress: 1 + r.IntN(4), Total: 1 + r.IntN(12), MaxAge: time.Duration(5+r.IntN(30)) * time.Second}
		l := newEventLog(cfg)
		var all []policy.Event
		dropped := map[uint64]int{}
		now := t0
		for i := range 400 {
			now = now.Add(time.Duration(r.IntN(3)) * time.Second)
			a := netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(6))})
			for _, k := range l.add(policy.Event{Time: now, Addr: a, QueueID: string(rune('A' + i%26))}, now) {
				dropped[k.Seq]++
			}
			all = append(all, policy.Event{Seq: uint64(i + 1), Time: now, Addr: a})
			// The model.
			want := map[uint64]bool{}
			for j := max(0, len(all)-cfg.Total); j < len(all); j++ {
				ev := all[j]
				newer := 0
				for _, o := range all[j+1:] {
					if o.Addr == ev.Addr {
						newer++
					}
				}
				if newer < cfg.PerAddress && !ev.Time.Before(now.Add(-cfg.MaxAge)) {
					want[ev.Seq] = true
				}
			}
			got := map[uint64]bool{}
			for a := range 6 {
				evs := l.of(netip.AddrFrom4([4]byte{192, 0, 2, byte(a)}))
				if !slices.IsSortedFunc(evs, func(x, y policy.Event) int { return int(x.Seq) - int(y.Seq) }) {
					t.Fatalf("seed %d: events of one address out of order", seed)
				}
				for _, ev := range evs {
					got[ev.Seq] = true
				}
			}
			for s := range want {
				if !got[s] {
					t.Fatalf("seed %d %+v, after %d events: event %d missing", seed, cfg, i+1, s)
				}
			}
			for s := range got {
				if !want[s] {
					t.Fatalf("seed %d %+v, after %d events: event %d kept", seed, cfg, i+1, s)
				}
			}
			for s := uint64(1); s <= uint64(i+1); s++ {
				if n := dropped[s]; (n != 0) == want[s] || n > 1 {
					t.Fatalf("seed %d: event %d dropped %d times, kept %v", seed, s, n, want[s])
				}
			}
		}
	}
}

// TestEventLogResize: a reload that changes Total keeps the newest events,
// each address's still linked in order, and reports the others dropped.
func TestEventLogResize(t *testing.T) {
	l := newEventLog(EventsConfig{PerAddress: 8, Total: 10, MaxAge: time.Hour})
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 3)}) }
	for i := range 9 {
		if d := l.add(policy.Event{Time: t0, Addr: addr(i)}, t0); len(d) != 0 {
			t.Fatalf("event %d dropped %v, with room for 10", i+1, d)
		}
	}
	l.cfg.Total = 4
	var dropped []uint64
	for _, k := range l.add(policy.Event{Time: t0, Addr: addr(9)}, t0) {
		dropped = append(dropped, k.Seq)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5, 6}, dropped); diff != "" {
		t.Errorf("dropped (-want +got):\n%s", diff)
	}
	got := map[netip.Addr][]uint64{}
	for i := range 3 {
		for _, ev := range l.of(addr(i)) {
			got[addr(i)] = append(got[addr(i)], ev.Seq)
		}
	}
	want := map[netip.Addr][]uint64{addr(0): {7, 10}, addr(1): {8}, addr(2): {9}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events by address (-want +got):\n%s", diff)
	}
	// The ring goes on from there.
	for _, k := range l.add(policy.Event{Time: t0, Addr: addr(1)}, t0) {
		if k.Seq != 7 {
			t.Errorf("dropped %d, want 7 (the oldest)", k.Seq)
		}
	}
	if got := len(l.of(addr(1))); got != 2 {
		t.Errorf("%v has %d events, want 2", addr(1), got)
	}
}
