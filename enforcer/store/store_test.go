package store

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
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
		if err := st.Commit(Change{Bans: bans, History: hist}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = st.Close()
		b.StartTimer()
	}
}

// damages are the ways a state file is found broken: each must open (a
// corrupt file moved aside, never deleted), never panic.
var damages = []struct {
	name    string
	damage  func(t *testing.T, path string)
	corrupt bool // moved aside
}{
	{"deleted", func(t *testing.T, p string) { mustDo(t, os.Remove(p)) }, false},
	{"truncated to 0", func(t *testing.T, p string) { mustDo(t, os.Truncate(p, 0)) }, false},
	{"truncated to 8 KiB", func(t *testing.T, p string) { mustDo(t, os.Truncate(p, 8<<10)) }, true},
	{"garbage in meta page 0", func(t *testing.T, p string) { overwrite(t, p, 0, 4096) }, false},
	{"garbage in both meta pages", func(t *testing.T, p string) { overwrite(t, p, 0, 8192) }, true},
	{"garbage in data pages", func(t *testing.T, p string) { overwrite(t, p, 16<<10, 64<<10) }, true},
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// overwrite fills [off, off+n) of the file with random bytes.
func overwrite(t *testing.T, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	mustDo(t, err)
	defer f.Close()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.IntN(256))
	}
	_, err = f.WriteAt(b, off)
	mustDo(t, err)
}

// TestDamagedStateFile: a damaged file never panics Open or Load; a
// corrupt one is moved aside (kept for the operator) and replaced by an
// empty record, which the enforcer fills from the kernel.
func TestDamagedStateFile(t *testing.T) {
	now := time.Now()
	for _, tc := range damages {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := Open(dir)
			mustDo(t, err)
			bans := make([]policy.Ban, 1000)
			for i := range bans {
				a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
				bans[i] = policy.Ban{Addr: a, Rule: "worm-signature", Start: now, Until: now.Add(time.Hour), Duration: time.Hour, Hits: 1}
			}
			mustDo(t, st.Commit(Change{Bans: bans}))
			mustDo(t, st.Close())
			tc.damage(t, filepath.Join(dir, stateFile))

			st, err = Open(dir)
			if err != nil {
				t.Fatalf("Open of a damaged file: %v", err)
			}
			defer st.Close()
			snap, err := st.Load(now, Limits{History: 100})
			got := snap.Bans
			if err != nil {
				t.Fatalf("Load of a damaged file: %v", err)
			}
			if len(got) > len(bans) {
				t.Errorf("Load returned %d bans, more than were written", len(got))
			}
			aside, _ := filepath.Glob(filepath.Join(dir, stateFile+".corrupt-*"))
			if tc.corrupt != (st.Recovered() != "") || len(aside) != map[bool]int{true: 1, false: 0}[tc.corrupt] {
				t.Errorf("Recovered() = %q, files aside %v; want moved aside: %v", st.Recovered(), aside, tc.corrupt)
			}
			// The new record works.
			mustDo(t, st.Commit(Change{Bans: bans[:1]}))
		})
	}
}
