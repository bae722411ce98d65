//go:build linux

package nft

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/store"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
	"github.com/wormgate/wormgate/enforcer/policy"
)

func TestNFTablesRestoreAndCheck(t *testing.T) {
	ns, f := openNS(t, enforcer.NFTablesConfig{})
	ctx := t.Context()
	if err := f.Check(ctx); err != nil {
		t.Fatalf("Check after Setup = %v", err)
	}
	stale := addr("203.0.113.99")
	if err := f.Add(ctx, []enforcer.Element{{Addr: stale, Timeout: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	// 3,000 IPv4 and 2,000 IPv6: several messages in the one batch.
	want := append(seqAddrs(addr("198.18.0.0"), 3000), seqAddrs(addr("2001:db8::1:0"), 2000)...)
	elems := make([]enforcer.Element, len(want))
	for i, a := range want {
		elems[i] = enforcer.Element{Addr: a, Timeout: time.Duration(i%50+10) * time.Minute}
	}
	restoreAndCompare := func(t *testing.T) {
		t.Helper()
		if err := f.Restore(ctx, elems); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		got, err := f.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(strs(sortedAddrs(want)), strs(addrsOf(got))); diff != "" {
			t.Fatalf("sets after Restore (-want +got):\n%s", diff)
		}
		byAddr := map[netip.Addr]time.Duration{}
		for _, e := range got {
			byAddr[e.Addr] = e.Timeout
		}
		for _, e := range elems {
			if d := byAddr[e.Addr] - e.Timeout; d > 0 || d < -2*time.Second {
				t.Fatalf("%v has %v left, want %v", e.Addr, byAddr[e.Addr], e.Timeout)
			}
		}
		if err := f.Check(ctx); err != nil {
			t.Fatalf("Check after Restore = %v", err)
		}
	}
	restoreAndCompare(t)

	for _, tc := range []struct {
		name string
		cmd  []string
	}{
		{"flush ruleset", []string{"nft", "flush", "ruleset"}},
		{"delete table", []string{"nft", "delete", "table", "inet", "wormgate"}},
		{"delete set", []string{"sh", "-c", "nft flush chain inet wormgate prerouting && nft delete set inet wormgate blocked6"}},
		{"delete chain", []string{"sh", "-c", "nft delete chain inet wormgate prerouting"}},
		{"flush chain", []string{"nft", "flush", "chain", "inet", "wormgate", "prerouting"}},
		{"extra rule", []string{"nft", "add", "rule", "inet", "wormgate", "prerouting", "accept"}},
		{"changed ports", []string{"nft", "add", "element", "inet", "wormgate", "ports", "{ 22 }"}},
		{"changed hook", []string{"sh", "-c", "nft delete chain inet wormgate prerouting && nft add chain inet wormgate prerouting '{ type filter hook input priority 0; }'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns.Run(t, tc.cmd...)
			if err := f.Check(ctx); !errors.Is(err, enforcer.ErrDrift) {
				t.Fatalf("Check after %s = %v, want ErrDrift", tc.name, err)
			}
			restoreAndCompare(t)
		})
	}
}

func strs(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// recordBans writes a record in a new directory holding n bans of
// 198.18.0.0 onwards, each until(i) from now, and returns the directory.
func recordBans(tb testing.TB, n int, until func(i int) time.Duration) (string, []policy.Ban) {
	tb.Helper()
	dir := tb.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	bans := make([]policy.Ban, 0, n)
	for i, a := range seqAddrs(addr("198.18.0.0"), n) {
		bans = append(bans, policy.Ban{Addr: a, Rule: "worm-signature", Start: now, Until: now.Add(until(i)), Hits: 1})
	}
	if err := st.Commit(store.Change{Bans: bans}); err != nil {
		tb.Fatal(err)
	}
	if err := st.Close(); err != nil {
		tb.Fatal(err)
	}
	return dir, bans
}

// runEnforcer runs a real enforcer with the record in dir on a real
// firewall in ns until it is ready, and returns the function that stops it.
func runEnforcer(tb testing.TB, ns *nftest.NS, dir string, reg *prometheus.Registry) (stop func()) {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f, err := Open(testConfig(enforcer.NFTablesConfig{}), log, WithNetNS(ns.Fd()))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := enforcer.New(enforcer.DefaultConfig(), nil, f, log, reg, enforcer.WithStore(st))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	for !e.Ready() {
		select {
		case err := <-done:
			tb.Fatalf("Run: %v", err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
		_ = st.Close()
		_ = f.Close()
	}
}

// timedBans counts the elements of blocked4 that have a timeout: the
// bans, without the canary. Right after a restore the set's hash table is
// resized, and a dump then may miss elements (see kernel.list), so a count
// other than want is read again a few times.
func timedBans(tb testing.TB, ns *nftest.NS, want int) int {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		out := ns.Run(tb, "sh", "-c", "nft list set inet wormgate blocked4 | grep -o expires | wc -l")
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			tb.Fatalf("count of bans %q: %v", out, err)
		}
		if n == want || attempt == 5 {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkStartup100k measures a daemon start with 100,000 active bans
// in the record: opening the store, loading it and the one restore batch
// that puts them all in the kernel, until Ready.
func BenchmarkStartup100k(b *testing.B) {
	nftest.Require(b, "ip", "nft")
	dir, bans := recordBans(b, 100_000, func(i int) time.Duration { return time.Hour + time.Duration(i)*time.Millisecond })
	for b.Loop() {
		b.StopTimer()
		ns := nftest.NewNS(b)
		b.StartTimer()
		stop := runEnforcer(b, ns, dir, prometheus.NewRegistry())
		b.StopTimer()
		if n := timedBans(b, ns, len(bans)); n != len(bans) {
			b.Fatalf("%d bans in the kernel after start-up, want %d", n, len(bans))
		}
		stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(bans)), "bans/op")
}

// restores reads wormgate_firewall_restores_total.
func restores(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "wormgate_firewall_restores_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no wormgate_firewall_restores_total")
	return 0
}

// TestEnforcerRepairsTamperedSets (issue 10, acceptance 5): with 100k
// bans, a flushed set, a deleted element and a foreign element are
// repaired from the record within 2 s, by the real enforcer on the real
// kernel.
func TestEnforcerRepairsTamperedSets(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	ns := nftest.NewNS(t)
	dir, bans := recordBans(t, 100_000, func(int) time.Duration { return time.Hour })
	reg := prometheus.NewRegistry()
	t.Cleanup(runEnforcer(t, ns, dir, reg))
	has := func(a string) bool {
		return ns.Command(context.Background(), "nft", "get", "element", "inet", "wormgate", "blocked4", "{ "+a+" }").Run() == nil
	}
	for _, tc := range []struct {
		name, cmd string
		then      func(t *testing.T)
	}{
		{"flush set", "flush set inet wormgate blocked4", nil},
		{"delete element", "delete element inet wormgate blocked4 { 198.18.1.2 }", func(t *testing.T) {
			if !has("198.18.1.2") {
				t.Error("the deleted ban is not back")
			}
		}},
		{"foreign element", "add element inet wormgate blocked4 { 192.0.2.200 }", func(t *testing.T) {
			if has("192.0.2.200") {
				t.Error("the foreign element is still there")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := restores(t, reg)
			start := time.Now()
			ns.Run(t, "nft", tc.cmd)
			for restores(t, reg) == before {
				if time.Since(start) > 2*time.Second {
					t.Fatalf("no restore within 2s after %s", tc.cmd)
				}
				time.Sleep(10 * time.Millisecond)
			}
			took := time.Since(start)
			if n := timedBans(t, ns, len(bans)); n != len(bans) {
				t.Fatalf("%d bans in the kernel %v after %s, want %d", n, took, tc.cmd, len(bans))
			}
			if tc.then != nil {
				tc.then(t)
			}
			t.Logf("%s: repaired after %v", tc.name, took)
		})
	}
}

// TestEnforcerExpiryIsNoDrift: thousands of bans that expire in the
// kernel, and changes to another table meanwhile, cause no restore.
func TestEnforcerExpiryIsNoDrift(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	ns := nftest.NewNS(t)
	const long = 100
	dir, _ := recordBans(t, 5_000+long, func(i int) time.Duration {
		if i < long {
			return time.Hour
		}
		return time.Second + time.Duration(i)*100*time.Microsecond // 1 to 1.5 s
	})
	reg := prometheus.NewRegistry()
	t.Cleanup(runEnforcer(t, ns, dir, reg))
	ns.Run(t, "nft", "add table inet other; add set inet other s { type ipv4_addr; flags timeout; }; add element inet other s { 192.0.2.1 timeout 1s }")
	// Three reconcile ticks after the last expiry.
	time.Sleep(4500 * time.Millisecond)
	ns.Run(t, "nft", "add element inet other s { 192.0.2.2 timeout 1s }")
	time.Sleep(1500 * time.Millisecond)
	if n := timedBans(t, ns, long); n != long {
		t.Fatalf("%d bans in the kernel, want the %d that did not expire", n, long)
	}
	if r := restores(t, reg); r != 0 {
		t.Errorf("%v restores after expiry, want 0", r)
	}
}
