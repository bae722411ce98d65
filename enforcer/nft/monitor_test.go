//go:build linux

package nft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// inKernel runs fn on the owner goroutine, for tests that look inside.
func inKernel[T any](t testing.TB, f *Firewall, fn func(k *kernel) (T, error)) T {
	t.Helper()
	v, err := call(context.Background(), f, "test", func(_ context.Context, k *kernel) (T, error) { return fn(k) })
	if err != nil {
		t.Fatalf("in the kernel goroutine: %v", err)
	}
	return v
}

func dumps(t testing.TB, f *Firewall) int {
	return inKernel(t, f, func(k *kernel) (int, error) { return k.dumps, nil })
}

func generation(t testing.TB, f *Firewall) uint32 {
	return inKernel(t, f, func(k *kernel) (uint32, error) { return k.genID() })
}

// restoreOK restores elems and fails unless Check then finds all in order.
func restoreOK(t *testing.T, f *Firewall, elems []enforcer.Element) {
	t.Helper()
	if err := f.Restore(t.Context(), elems); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if err := f.Check(t.Context()); err != nil {
		t.Fatalf("Check after Restore = %v", err)
	}
}

// wantDrift fails unless Check reports drift that names why.
func wantDrift(t *testing.T, f *Firewall, why string) {
	t.Helper()
	err := f.Check(t.Context())
	if !errors.Is(err, enforcer.ErrDrift) || !strings.Contains(err.Error(), why) {
		t.Fatalf("Check = %v, want %v naming %q", err, enforcer.ErrDrift, why)
	}
}

func TestMonitorNoticesForeignChanges(t *testing.T) {
	ns, f := openNS(t, enforcer.NFTablesConfig{})
	ctx := t.Context()
	base := []enforcer.Element{
		{Addr: addr("192.0.2.5"), Timeout: time.Hour},
		{Addr: addr("2001:db8::5"), Timeout: time.Hour},
		{Net: pfx("203.0.113.0/24"), Timeout: time.Hour},
	}
	for _, tc := range []struct {
		name, cmd, why string
	}{
		{"foreign element", "add element inet wormgate blocked4 { 192.0.2.200 }", "element added to set blocked4 by another process"},
		{"deleted element", "delete element inet wormgate blocked6 { 2001:db8::5 }", "element deleted from set blocked6"},
		{"flushed set", "flush set inet wormgate blocked4", "element deleted from set blocked4"},
		{"foreign network", "add element inet wormgate blocked6_net { 2001:db8:1::/48 }", "element added to set blocked6_net"},
		{"deleted network", "delete element inet wormgate blocked4_net { 203.0.113.0/24 }", "element deleted from set blocked4_net"},
		{"ports", "add element inet wormgate ports { 22 }", "element added to set ports"},
		{"rule added", "add rule inet wormgate prerouting counter", "table changed by another process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restoreOK(t, f, base)
			before := dumps(t, f)
			ns.Run(t, "nft", tc.cmd)
			wantDrift(t, f, tc.why)
			// Until a restore, whatever runs in between.
			if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.6"), Timeout: time.Hour}}); err != nil {
				t.Fatal(err)
			}
			wantDrift(t, f, tc.why)
			if n := dumps(t, f) - before; n != 0 {
				t.Errorf("the checks read the blocked sets %d times", n)
			}
			restoreOK(t, f, base)
		})
	}

	t.Run("other tables", func(t *testing.T) {
		restoreOK(t, f, base)
		before, gen := dumps(t, f), generation(t, f)
		// A table of the same name in another family is another table.
		ns.Run(t, "nft", "add table inet other; add set inet other s { type ipv4_addr; }; add element inet other s { 192.0.2.1 }; "+
			"add table ip wormgate; add set ip wormgate blocked4 { type ipv4_addr; }; add element ip wormgate blocked4 { 192.0.2.1 }; "+
			"delete element ip wormgate blocked4 { 192.0.2.1 }; flush set inet other s")
		if generation(t, f) == gen {
			t.Fatal("the ruleset generation did not move: the test changed nothing")
		}
		for range 2 {
			if err := f.Check(ctx); err != nil {
				t.Errorf("Check after changes to other tables = %v", err)
			}
		}
		if n := dumps(t, f) - before; n != 0 {
			t.Errorf("changes to other tables made the checks read the blocked sets %d times", n)
		}
	})
}

// TestMonitorIgnoresOwnWritesAndExpiry: nothing wormgate writes, and no
// element or network that expires, counts as a change; expiry does not
// even move the ruleset generation.
func TestMonitorIgnoresOwnWritesAndExpiry(t *testing.T) {
	var logs bytes.Buffer
	ns, f := openLogged(t, slog.New(slog.NewTextHandler(&logs, nil)), enforcer.NFTablesConfig{})
	ctx := t.Context()
	check := func(after string) {
		t.Helper()
		if err := f.Check(ctx); err != nil {
			t.Fatalf("Check after %s = %v", after, err)
		}
	}
	if err := f.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	check("Setup")
	// 20,000 addresses (a quiet batch, see sendQuietly) and networks.
	var long []enforcer.Element
	for i, a := range append(seqAddrs(addr("198.18.0.0"), 15_000), seqAddrs(addr("2001:db8::1:0"), 5_000)...) {
		long = append(long, enforcer.Element{Addr: a, Timeout: time.Hour + time.Duration(i)*time.Millisecond})
	}
	long = append(long, enforcer.Element{Net: pfx("198.51.100.0/24"), Timeout: time.Hour})
	if err := f.Restore(ctx, long); err != nil {
		t.Fatal(err)
	}
	check("a large Restore")
	if strings.Contains(logs.String(), "large batch") {
		t.Errorf("a quiet batch without other writers counted changes by others:\n%s", logs.String())
	}
	var short []enforcer.Element
	for _, a := range seqAddrs(addr("192.0.2.0"), 200) {
		short = append(short, enforcer.Element{Addr: a, Timeout: time.Second})
	}
	for i := range 16 {
		short = append(short, enforcer.Element{Net: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(16 * i)}), 28), Timeout: time.Second})
	}
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"Add", func() error { return f.Add(ctx, short) }},
		{"a refresh", func() error {
			return f.Add(ctx, []enforcer.Element{{Addr: addr("198.18.0.1"), Timeout: 2 * time.Hour, Refresh: true}})
		}},
		{"Delete", func() error { return f.Delete(ctx, []netip.Addr{addr("198.18.0.2"), addr("192.0.2.99")}) }},
		{"DeleteNets", func() error { return f.DeleteNets(ctx, []netip.Prefix{pfx("203.0.113.240/28"), pfx("10.0.0.0/8")}) }},
		{"SetPorts", func() error { return f.SetPorts(ctx, []uint16{25}) }},
		{"Setup", func() error { return f.Setup(ctx) }},
		// A failed operation replaces the connection, whose events the
		// monitor must then drop instead. The kernel gives a new socket the
		// port ID the old one had when it is free: hold it meanwhile.
		{"a write on a new connection", func() error {
			pids := inKernel(t, f, func(k *kernel) ([2]uint32, error) {
				old, err := portID(k.nl)
				if err != nil {
					return [2]uint32{}, err
				}
				_ = k.close()
				hold, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ns.Fd()})
				if err != nil {
					return [2]uint32{}, err
				}
				t.Cleanup(func() { _ = hold.Close() })
				if err := k.open(); err != nil {
					return [2]uint32{}, err
				}
				now, err := portID(k.nl)
				return [2]uint32{old, now}, err
			})
			if pids[0] == pids[1] {
				return fmt.Errorf("the new connection has the old port ID %d", pids[0])
			}
			return f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.251"), Timeout: time.Hour}})
		}},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		check(step.name)
	}
	gen, before := generation(t, f), dumps(t, f)
	time.Sleep(2500 * time.Millisecond)
	if got := generation(t, f); got != gen {
		t.Errorf("generation %d after expiry, was %d: expiry commits", got, gen)
	}
	check("expiry")
	// A write to the sets collects expired elements (and the end elements
	// of expired networks) in the same transaction.
	if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.250"), Timeout: time.Hour}, {Net: pfx("203.0.113.0/28"), Timeout: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	check("expiry and a write")
	if n := dumps(t, f) - before; n != 0 {
		t.Errorf("Check read the blocked sets %d times", n)
	}
	got, err := f.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(long) - 1 + 3; len(got) != want {
		t.Errorf("List has %d elements after expiry, want %d", len(got), want)
	}
}

// TestMonitorLostEvents: a foreign flush of 100k elements overflows the
// monitor's queue; the lost events count as a change.
func TestMonitorLostEvents(t *testing.T) {
	ns, f := openNS(t, enforcer.NFTablesConfig{})
	elems := make([]enforcer.Element, 100_000)
	for i, a := range seqAddrs(addr("198.18.0.0"), len(elems)) {
		elems[i] = enforcer.Element{Addr: a, Timeout: time.Hour}
	}
	restoreOK(t, f, elems)
	ns.Run(t, "nft", "flush", "set", "inet", "wormgate", "blocked4")
	wantDrift(t, f, "the kernel dropped events")
	restoreOK(t, f, elems)
}

// TestCanaries: a set flushed through wormgate's own connection (whose
// events the monitor drops, as if they were lost) is found by its missing
// canary; List never shows the canaries, nor does nftest.Blocked.
func TestCanaries(t *testing.T) {
	ns, f := openNS(t, enforcer.NFTablesConfig{})
	ctx := t.Context()
	if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.7"), Timeout: time.Hour}, {Addr: canary6, Timeout: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	got, err := f.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Addr != addr("192.0.2.7") {
		t.Errorf("List = %v, want only 192.0.2.7", got)
	}
	if m, err := nftest.Blocked(ns.Name, "wormgate"); err != nil || len(m) != 1 {
		t.Errorf("nftest.Blocked = %v, %v; want only 192.0.2.7", m, err)
	}
	if err := f.Delete(ctx, []netip.Addr{canary4, canary6}); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(ctx); err != nil {
		t.Fatalf("Check after deleting the canaries' addresses (which must not delete them) = %v", err)
	}
	for _, s := range []string{"blocked4", "blocked6"} {
		inKernel(t, f, func(k *kernel) (struct{}, error) {
			msgs, err := record(func(c *nftables.Conn) error {
				c.FlushSet(&nftables.Set{Table: k.table, Name: s})
				return nil
			})
			if err == nil {
				err = k.sendBatch(msgs)
			}
			return struct{}{}, err
		})
		wantDrift(t, f, "set "+s+" lost its canary")
		restoreOK(t, f, nil)
	}
}

// TestMonitorReopens: a monitor that breaks is opened again at the next
// operation, and what it may have missed counts as a change.
func TestMonitorReopens(t *testing.T) {
	_, f := openNS(t, enforcer.NFTablesConfig{})
	inKernel(t, f, func(k *kernel) (struct{}, error) { return struct{}{}, k.watch.mon.conn.Close() })
	wantDrift(t, f, "event monitor failed")
	restoreOK(t, f, nil)
	if !inKernel(t, f, func(k *kernel) (bool, error) { return k.watch.mon != nil, nil }) {
		t.Error("no monitor after the Restore")
	}
}

// TestQuietBatchUnderChurn: while large batches are written with the
// monitor out of the event group, another process commits to its own
// table all the time. None of that is a change to wormgate's table, the
// commits it could not see are logged, and a flush of wormgate's set that
// happens among them is still found.
func TestQuietBatchUnderChurn(t *testing.T) {
	var logs syncBuffer
	ns, f := openLogged(t, slog.New(slog.NewTextHandler(&logs, nil)), enforcer.NFTablesConfig{})
	ctx := t.Context()
	ns.Run(t, "nft", "add table inet other; add set inet other s { type ipv4_addr; }")
	elems := make([]enforcer.Element, 50_000)
	for i, a := range seqAddrs(addr("198.18.0.0"), len(elems)) {
		elems[i] = enforcer.Element{Addr: a, Timeout: time.Hour}
	}
	churn, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; churn.Err() == nil; i++ {
			_ = exec.CommandContext(churn, "ip", "netns", "exec", ns.Name, "nft",
				fmt.Sprintf("add element inet other s { 192.0.2.%d }", i%250)).Run()
		}
	})
	for i := range 8 {
		if err := f.Restore(ctx, elems); err != nil {
			t.Fatal(err)
		}
		if err := f.Check(ctx); err != nil {
			t.Fatalf("Check after Restore %d under churn = %v", i, err)
		}
	}
	stop()
	wg.Wait()
	if !strings.Contains(logs.String(), "while a large batch was written") {
		t.Errorf("8 large batches under churn, none with an unseen commit logged:\n%s", logs.String())
	}
	// The generation moved: the next check compares objects and canaries.
	ns.Run(t, "nft", "flush", "set", "inet", "wormgate", "blocked6")
	wantDrift(t, f, "blocked6")
}

// syncBuffer is a bytes.Buffer for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCanariesMatchNftest(t *testing.T) {
	if got := []string{canary4.String(), canary6.String()}; !slices.Equal(got, nftest.Canaries) {
		t.Errorf("canaries %v, nftest.Canaries %v", got, nftest.Canaries)
	}
}

// BenchmarkNFTablesCheck is the reconcile loop's check every second with
// 100k and 1M elements in the sets: when nothing was committed since the
// last check (idle), and when the generation moved, here by a change to
// another table, which costs the comparison of objects and canaries. Its
// cost must not grow with the sets.
func BenchmarkNFTablesCheck(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		_, f := openNS(b, enforcer.NFTablesConfig{})
		ctx := context.Background()
		elems := make([]enforcer.Element, n)
		for i, a := range seqAddrs(addr("2001:db8::"), n) {
			elems[i] = enforcer.Element{Addr: a, Timeout: time.Hour}
		}
		if err := f.Restore(ctx, elems); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dk/idle", n/1000), func(b *testing.B) {
			for b.Loop() {
				if err := f.Check(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("%dk/generation-moved", n/1000), func(b *testing.B) {
			other := &nftables.Table{Name: "other", Family: nftables.TableFamilyINet}
			for b.Loop() {
				b.StopTimer()
				inKernel(b, f, func(k *kernel) (struct{}, error) {
					msgs, err := record(func(c *nftables.Conn) error { c.AddTable(other); c.DelTable(other); return nil })
					if err == nil {
						_, err = k.send(msgs)
					}
					return struct{}{}, err
				})
				b.StartTimer()
				if err := f.Check(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = f.Close()
	}
}

// BenchmarkNFTablesRestore100k shows why big batches leave the event
// group (sendQuietly): with another listener, such as nft monitor, the
// kernel writes an event per element and the same restore takes longer.
func BenchmarkNFTablesRestore100k(b *testing.B) {
	elems := make([]enforcer.Element, 100_000)
	for i, a := range seqAddrs(addr("198.18.0.0"), len(elems)) {
		elems[i] = enforcer.Element{Addr: a, Timeout: time.Hour}
	}
	for _, listener := range []bool{false, true} {
		b.Run(map[bool]string{false: "quiet", true: "other-listener"}[listener], func(b *testing.B) {
			ns, f := openNS(b, enforcer.NFTablesConfig{})
			if listener {
				m, err := openMonitor(ns.Fd(), "other", 0)
				if err != nil {
					b.Fatal(err)
				}
				defer m.close()
			}
			for b.Loop() {
				if err := f.Restore(context.Background(), elems); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
