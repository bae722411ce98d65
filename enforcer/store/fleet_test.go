package store

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/enforcer/policy"
)

func TestFleetQueueRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CommitFleetQueue(map[uint64][]byte{1: []byte("a"), 2: []byte("b"), 300: []byte("c")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitFleetQueue(map[uint64][]byte{4: []byte("d")}, []uint64{2, 99}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.FleetQueue()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]byte{1: []byte("a"), 4: []byte("d"), 300: []byte("c")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("queue after a reopen (-want +got):\n%s", diff)
	}
}

// TestBanV2StillReads: records written before the origin field decode,
// with no origin.
func TestBanV2StillReads(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := policy.Ban{Addr: netip.MustParseAddr("203.0.113.1"), Rule: "worm", Start: now, Until: now.Add(time.Hour), Hits: 2, Reason: "r", Hosts: []string{"mx1"}}
	v3 := encodeBan(b)
	v2 := append([]byte{banV2}, v3[1:len(v3)-1]...) // without the empty origin's length byte
	got, err := decodeBan(b.Addr.AsSlice(), v2)
	if err != nil {
		t.Fatal(err)
	}
	b.Duration = time.Hour
	if diff := cmp.Diff(b, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y }), cmp.Comparer(func(x, y time.Time) bool { return x.Equal(y) })); diff != "" {
		t.Errorf("v2 record (-want +got):\n%s", diff)
	}
	b.Origin = "gw2"
	if got, err := decodeBan(b.Addr.AsSlice(), encodeBan(b)); err != nil || got.Origin != "gw2" {
		t.Errorf("v3 origin = %q, %v", got.Origin, err)
	}
}
