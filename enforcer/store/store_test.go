package store

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
)

// TestKeyCompareIsBboltOrder: keyCompare sorts addresses exactly as bbolt
// sorts their keys, across both families and 4in6 forms.
func TestKeyCompareIsBboltOrder(t *testing.T) {
	addrs := []netip.Addr{
		netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("0.0.0.1"), netip.MustParseAddr("255.255.255.255"),
		netip.MustParseAddr("::ffff:198.51.100.7"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("fe80::1"), netip.MustParseAddr("32.1.13.184"), netip.MustParseAddr("2001:db8::"),
	}
	for range 100 {
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		got := slices.Clone(addrs)
		slices.SortFunc(got, keyCompare)
		want := slices.Clone(addrs)
		slices.SortFunc(want, func(a, b netip.Addr) int { return bytes.Compare(a.Unmap().AsSlice(), b.Unmap().AsSlice()) })
		if !slices.Equal(got, want) {
			t.Fatalf("keyCompare order %v, want %v", got, want)
		}
	}
}

// BenchmarkStoreCommit100k commits 100,000 new bans with their history in
// one transaction, in random order as the enforcer's maps hand them over.
func BenchmarkStoreCommit100k(b *testing.B) {
	now := time.Now()
	bans := make([]policy.Ban, 100_000)
	hist := make([]policy.History, len(bans))
	for i := range bans {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		bans[i] = policy.Ban{Addr: a, Rule: "worm-signature", Start: now, Until: now.Add(time.Hour), Duration: time.Hour, Hits: 1}
		hist[i] = policy.History{Addr: a, Hits: 1, Bans: 1, FirstSeen: now, LastSeen: now, BannedUntil: now.Add(time.Hour)}
	}
	rand.Shuffle(len(bans), func(i, j int) { bans[i], bans[j] = bans[j], bans[i]; hist[i], hist[j] = hist[j], hist[i] })
	for b.Loop() {
		b.StopTimer()
		st, err := Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := st.Commit(bans, hist, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = st.Close()
		b.StartTimer()
	}
}
