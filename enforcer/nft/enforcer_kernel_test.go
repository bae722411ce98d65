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

// BenchmarkStartup100k measures a daemon start with 100,000 active bans
// in the record: opening the store, loading it and the one restore batch
// that puts them all in the kernel, until Ready.
func BenchmarkStartup100k(b *testing.B) {
	nftest.Require(b, "ip", "nft")
	dir := b.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	bans := make([]policy.Ban, 0, 100_000)
	for i, a := range seqAddrs(addr("198.18.0.0"), 100_000) {
		bans = append(bans, policy.Ban{Addr: a, Rule: "worm-signature", Start: now, Until: now.Add(time.Hour + time.Duration(i)*time.Millisecond), Hits: 1})
	}
	if err := st.Commit(store.Change{Bans: bans}); err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for b.Loop() {
		b.StopTimer()
		ns := nftest.NewNS(b)
		b.StartTimer()
		f, err := Open(testConfig(enforcer.NFTablesConfig{}), log, WithNetNS(ns.Fd()))
		if err != nil {
			b.Fatal(err)
		}
		st, err := store.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		e, err := enforcer.New(enforcer.DefaultConfig(), nil, f, log, prometheus.NewRegistry(), enforcer.WithStore(st))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		for !e.Ready() {
			select {
			case err := <-done:
				b.Fatalf("Run: %v", err)
			default:
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		out := ns.Run(b, "sh", "-c", "nft list set inet wormgate blocked4 | grep -o expires | wc -l")
		if n, _ := strconv.Atoi(strings.TrimSpace(out)); n != len(bans) {
			b.Fatalf("%d bans in the kernel after start-up, want %d", n, len(bans))
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		_ = st.Close()
		_ = f.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(bans)), "bans/op")
}
