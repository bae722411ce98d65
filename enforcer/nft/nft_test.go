//go:build linux

package nft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// openNS gives a test a namespace with wormgate's ruleset set up in it.
func openNS(t testing.TB, cfg enforcer.NFTablesConfig, opts ...Option) (*nftest.NS, *Firewall) {
	t.Helper()
	return openLogged(t, slog.New(slog.DiscardHandler), cfg, opts...)
}

// openLogged is openNS with the firewall logging to log.
func openLogged(t testing.TB, log *slog.Logger, cfg enforcer.NFTablesConfig, opts ...Option) (*nftest.NS, *Firewall) {
	t.Helper()
	nftest.Require(t, "ip", "nft")
	ns := nftest.NewNS(t)
	f, err := Open(testConfig(cfg), log, append([]Option{WithNetNS(ns.Fd())}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if err := f.Setup(context.Background()); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return ns, f
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// newLab links a gateway namespace (192.0.2.1, 2001:db8::1) with a client
// namespace (192.0.2.66, 2001:db8::66), listens on the gateway's TCP ports,
// sets up a firewall with cfg in the gateway and gives a dial from the
// client that fails after a second.
func newLab(t *testing.T, cfg enforcer.NFTablesConfig, ports ...string) (gw *nftest.NS, f *Firewall, dial func(target string) error) {
	t.Helper()
	nftest.Require(t, "ip", "nft")
	gw, client := nftest.NewNS(t), nftest.NewNS(t)
	nftest.Link(t,
		gw, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64")},
		client, []netip.Prefix{netip.MustParsePrefix("192.0.2.66/24"), netip.MustParsePrefix("2001:db8::66/64")})
	for _, port := range ports {
		l, err := gw.Listen("tcp", ":"+port)
		if err != nil {
			t.Fatalf("listen on port %s in gateway: %v", port, err)
		}
		t.Cleanup(func() { _ = l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
	}
	f, err := Open(testConfig(cfg), slog.New(slog.DiscardHandler), WithNetNS(gw.Fd()))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if err := f.Setup(t.Context()); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return gw, f, func(target string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := client.Dial(ctx, "tcp", target)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// dropped fails the test unless dialling target times out: the SYN must
// vanish without an answer, not be refused.
func dropped(t *testing.T, dial func(string) error, target string) {
	t.Helper()
	err := dial(target)
	if err == nil {
		t.Fatalf("banned client connected to %s", target)
	}
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Fatalf("dial %s while banned: %v, want a timeout", target, err)
	}
}

func TestNFTablesBlocksAndExpires(t *testing.T) {
	_, f, dial := newLab(t, enforcer.NFTablesConfig{}, "25", "80")
	ctx := context.Background()
	for _, tc := range []struct {
		name, client, smtp, web string
	}{
		{"ipv4", "192.0.2.66", "192.0.2.1:25", "192.0.2.1:80"},
		{"ipv6", "2001:db8::66", "[2001:db8::1]:25", "[2001:db8::1]:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := dial(tc.smtp); err != nil {
				t.Fatalf("before the ban, dial %s: %v", tc.smtp, err)
			}
			const ban = 3 * time.Second
			added := time.Now()
			if err := f.Add(ctx, []enforcer.Element{{Addr: addr(tc.client), Timeout: ban}}); err != nil {
				t.Fatalf("Add: %v", err)
			}
			dropped(t, dial, tc.smtp)
			if err := dial(tc.web); err != nil {
				t.Fatalf("banned client could not reach unfiltered port, dial %s: %v", tc.web, err)
			}
			for {
				err := dial(tc.smtp)
				if err == nil {
					break
				}
				if time.Since(added) > 2*ban {
					t.Fatalf("dial %s still fails %v after a %v ban: %v", tc.smtp, time.Since(added), ban, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if since := time.Since(added); since < ban-500*time.Millisecond {
				t.Errorf("ban lifted after %v, want about %v", since, ban)
			}
		})
	}
	c, err := f.Counters(ctx)
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	if c.BanPackets < 2 || c.BanBytes == 0 {
		t.Errorf("Counters = %+v; want at least one dropped SYN per family", c)
	}
}

// nftJSON runs `nft -j` in ns and returns the objects under "nftables"
// without metainfo, with counters zeroed and handles removed, so that the
// result compares across runs.
func nftJSON(t *testing.T, ns *nftest.NS, args ...string) []map[string]any {
	t.Helper()
	out := ns.Run(t, append([]string{"nft", "-j"}, args...)...)
	var doc struct {
		Nftables []map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j %s: %v: %s", strings.Join(args, " "), err, out)
	}
	var objs []map[string]any
	for _, o := range doc.Nftables {
		if _, ok := o["metainfo"]; ok {
			continue
		}
		for _, v := range o {
			if m, ok := v.(map[string]any); ok {
				delete(m, "handle")
				if ex, ok := m["expr"].([]any); ok {
					for _, e := range ex {
						if c, ok := e.(map[string]any)["counter"].(map[string]any); ok {
							c["packets"], c["bytes"] = 0.0, 0.0
						}
					}
				}
			}
		}
		objs = append(objs, o)
	}
	return objs
}

func mustJSON(t *testing.T, s string) []map[string]any {
	t.Helper()
	var v []map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("test JSON: %v", err)
	}
	return v
}

func wantChain(t *testing.T, table string, ports bool) []map[string]any {
	rule := func(proto, set string) string {
		ex := fmt.Sprintf(`{"match": {"op": "==", "left": {"payload": {"protocol": %q, "field": "saddr"}}, "right": "@%s"}}`, proto, set)
		if ports {
			ex += `, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@ports"}}`
		}
		ex += `, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}`
		return fmt.Sprintf(`{"rule": {"family": "inet", "table": %q, "chain": "prerouting", "expr": [%s]}}`, table, ex)
	}
	return mustJSON(t, fmt.Sprintf(`[
		{"chain": {"family": "inet", "table": %q, "name": "prerouting", "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}},
		%s, %s, %s, %s]`, table, rule("ip", "blocked4"), rule("ip6", "blocked6"), rule("ip", "blocked4_net"), rule("ip6", "blocked6_net")))
}

func TestNFTablesRuleset(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       enforcer.NFTablesConfig
		wantPorts []any
	}{
		{"defaults", enforcer.NFTablesConfig{}, []any{25.0, 465.0, 587.0}},
		{"custom", enforcer.NFTablesConfig{Table: "wg2", Ports: []uint16{587, 25, 25}}, []any{25.0, 587.0}},
		{"all traffic", enforcer.NFTablesConfig{Ports: []uint16{}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, f := openNS(t, tc.cfg)
			table := tc.cfg.Table
			if table == "" {
				table = "wormgate"
			}
			ctx := context.Background()
			if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.7"), Timeout: time.Hour}, {Addr: addr("2001:db8::7"), Timeout: time.Hour}}); err != nil {
				t.Fatalf("Add: %v", err)
			}
			// The second Setup must adopt everything: same rules once, elements kept.
			if err := f.Setup(ctx); err != nil {
				t.Fatalf("second Setup: %v", err)
			}
			if diff := cmp.Diff(wantChain(t, table, tc.wantPorts != nil), nftJSON(t, ns, "list", "chain", "inet", table, "prerouting")); diff != "" {
				t.Errorf("chain after two Setups (-want +got):\n%s", diff)
			}
			var gotPorts []any
			for _, o := range nftJSON(t, ns, "list", "set", "inet", table, "ports") {
				if el, ok := o["set"].(map[string]any)["elem"].([]any); ok {
					gotPorts = el
				}
			}
			if diff := cmp.Diff(tc.wantPorts, gotPorts); diff != "" {
				t.Errorf("ports set (-want +got):\n%s", diff)
			}
			got, err := f.List(ctx)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if diff := cmp.Diff([]netip.Addr{addr("192.0.2.7"), addr("2001:db8::7")}, addrsOf(got), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("elements after second Setup (-want +got):\n%s", diff)
			}
		})
	}
}

func addrsOf(elems []enforcer.Element) []netip.Addr {
	var out []netip.Addr
	for _, e := range elems {
		out = append(out, e.Addr)
	}
	return out
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestNFTablesLeavesOtherTablesAlone(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	ns := nftest.NewNS(t)
	ns.Run(t, "nft", `
		table inet other {
			set s { type ipv4_addr; elements = { 192.0.2.8 } }
			chain input { type filter hook input priority 0; policy accept; tcp dport 22 counter accept; }
		}
		table ip wormgate {
			chain prerouting { type filter hook prerouting priority -300; ip saddr 198.51.100.1 counter drop; }
		}`)
	before := ns.Run(t, "nft", "list", "ruleset")
	f, err := Open(testConfig(enforcer.NFTablesConfig{}), slog.New(slog.DiscardHandler), WithNetNS(ns.Fd()))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx := context.Background()
	if err := f.Setup(ctx); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.8"), Timeout: time.Hour}}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := f.Delete(ctx, []netip.Addr{addr("192.0.2.8")}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ns.Run(t, "nft", "delete", "table", "inet", "wormgate")
	if after := ns.Run(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("foreign tables changed.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestNFTablesIncompatibleSet(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	ns := nftest.NewNS(t)
	ns.Run(t, "nft", "table inet wormgate { set blocked4 { type ipv6_addr; }; }")
	before := ns.Run(t, "nft", "list", "ruleset")
	f, err := Open(testConfig(enforcer.NFTablesConfig{}), slog.New(slog.DiscardHandler), WithNetNS(ns.Fd()))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer f.Close()
	err = f.Setup(context.Background())
	if !errors.Is(err, enforcer.ErrIncompatibleSet) || !strings.Contains(err.Error(), "blocked4") {
		t.Fatalf("Setup over a set of the wrong type: %v, want %v naming blocked4", err, enforcer.ErrIncompatibleSet)
	}
	if after := ns.Run(t, "nft", "list", "ruleset"); after != before {
		t.Errorf("failed Setup changed the ruleset.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// remaining returns the kernel's remaining time of a.
func remaining(t *testing.T, f enforcer.Firewall, a netip.Addr) time.Duration {
	t.Helper()
	elems, err := f.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, e := range elems {
		if e.Addr == a {
			return e.Timeout
		}
	}
	t.Fatalf("%v not in the set: %v", a, elems)
	return 0
}

func TestNFTablesReAddRefreshesTimeout(t *testing.T) {
	// The kernel's own timeout update where it has one, and the delete and
	// re-add that older kernels need, which work everywhere.
	modes := []struct {
		name string
		on   bool
	}{{"delete and add", false}}
	if timeoutUpdateSupported() {
		modes = append(modes, struct {
			name string
			on   bool
		}{"timeout update", true})
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			_, f := openNS(t, enforcer.NFTablesConfig{}, withTimeoutUpdate(mode.on))
			ctx := context.Background()
			for _, a := range []netip.Addr{addr("192.0.2.10"), addr("2001:db8::10")} {
				for i, step := range []struct {
					timeout  time.Duration
					wait     time.Duration
					min, max time.Duration
				}{
					{10 * time.Second, 0, 9 * time.Second, 10 * time.Second},
					{time.Hour, 0, 59 * time.Minute, time.Hour},               // longer
					{20 * time.Second, 0, 19 * time.Second, 20 * time.Second}, // shorter again
					// The same timeout again restarts the clock; a plain re-add
					// would leave 18.5s on Linux 6.18.
					{20 * time.Second, 1500 * time.Millisecond, 19 * time.Second, 20 * time.Second},
				} {
					time.Sleep(step.wait)
					if err := f.Add(ctx, []enforcer.Element{{Addr: a, Timeout: step.timeout, Refresh: i > 0}}); err != nil {
						t.Fatalf("Add(%v, %v): %v", a, step.timeout, err)
					}
					if got := remaining(t, f, a); got < step.min || got > step.max {
						t.Errorf("after Add(%v, %v): %v left, want %v..%v", a, step.timeout, got, step.min, step.max)
					}
				}
			}
			// Refreshing an element that is not there (expired, deleted
			// behind wormgate's back) must still add it.
			gone := addr("192.0.2.13")
			if err := f.Add(ctx, []enforcer.Element{{Addr: gone, Timeout: time.Minute, Refresh: true}}); err != nil {
				t.Fatalf("refresh of an absent element: %v", err)
			}
			if got := remaining(t, f, gone); got < 59*time.Second {
				t.Errorf("refreshed absent element: %v left, want about 1m", got)
			}
		})
	}
}

func TestNFTablesAddDeleteList(t *testing.T) {
	_, f := openNS(t, enforcer.NFTablesConfig{})
	ctx := context.Background()
	err := f.Add(ctx, []enforcer.Element{
		{Addr: addr("::ffff:192.0.2.3"), Timeout: time.Hour}, // 4in6 lands in blocked4
		{Addr: addr("192.0.2.4"), Timeout: 1500 * time.Microsecond},
		{Addr: addr("2001:db8::4"), Timeout: time.Hour},
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // lets 192.0.2.4 expire
	err = f.Delete(ctx, []netip.Addr{
		addr("2001:db8::4"),
		addr("192.0.2.4"),    // expired, maybe not yet collected
		addr("198.51.100.9"), // never blocked
		addr("2001:db8::99"), // never blocked
	})
	if err != nil {
		t.Fatalf("Delete with absent addresses: %v", err)
	}
	got, err := f.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff([]netip.Addr{addr("192.0.2.3")}, addrsOf(got), addrCmp); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	for _, bad := range [][]enforcer.Element{
		{{Addr: addr("192.0.2.5"), Timeout: 0}},
		{{Addr: addr("192.0.2.5"), Timeout: -time.Second}},
		{{Timeout: time.Second}},
	} {
		if err := f.Add(ctx, bad); !errors.Is(err, enforcer.ErrInvalidElement) {
			t.Errorf("Add(%v) = %v, want %v", bad, err, enforcer.ErrInvalidElement)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.Add(cancelled, []enforcer.Element{{Addr: addr("192.0.2.6"), Timeout: time.Hour}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Add with a cancelled context = %v, want %v", err, context.Canceled)
	}
}

// seqAddrs returns n consecutive addresses from first.
func seqAddrs(first netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = first
		first = first.Next()
	}
	return out
}

func TestNFTablesManyElements(t *testing.T) {
	_, f := openNS(t, enforcer.NFTablesConfig{})
	// 198.18.0.0/15 (RFC 2544, benchmarking) is the only reserved IPv4 range
	// with room for 10,000 addresses; they never leave the namespace.
	want := append(seqAddrs(addr("198.18.0.0"), 10_000), seqAddrs(addr("2001:db8::1:0"), 5_000)...)
	elems := make([]enforcer.Element, len(want))
	for i, a := range want {
		elems[i] = enforcer.Element{Addr: a, Timeout: time.Hour}
	}
	ctx := context.Background()
	if err := f.Add(ctx, elems); err != nil {
		t.Fatalf("Add: %v", err)
	}
	got, err := f.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff(want, addrsOf(got), addrCmp); diff != "" {
		t.Errorf("List after adding %d elements (-want +got):\n%s", len(want), diff)
	}
	if err := f.Delete(ctx, want[:7_500]); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	got, err = f.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff(want[7_500:], addrsOf(got), addrCmp); diff != "" {
		t.Errorf("List after deleting 7,500 (-want +got):\n%s", diff)
	}
}

func TestNFTablesCloseKeepsBans(t *testing.T) {
	ns, f := openNS(t, enforcer.NFTablesConfig{})
	ctx := context.Background()
	if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.11"), Timeout: time.Hour}}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.12"), Timeout: time.Hour}}); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Add after Close = %v, want %v", err, enforcer.ErrClosed)
	}
	if _, err := f.List(ctx); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("List after Close = %v, want %v", err, enforcer.ErrClosed)
	}
	if out := ns.Run(t, "nft", "list", "set", "inet", "wormgate", "blocked4"); !strings.Contains(out, "192.0.2.11") {
		t.Errorf("ban gone from the kernel after Close:\n%s", out)
	}
	// A restarted daemon adopts the table and sees the ban.
	g, err := Open(testConfig(enforcer.NFTablesConfig{}), slog.New(slog.DiscardHandler), WithNetNS(ns.Fd()))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer g.Close()
	if err := g.Setup(ctx); err != nil {
		t.Fatalf("Setup after reopen: %v", err)
	}
	if left := remaining(t, g, addr("192.0.2.11")); left < 59*time.Minute {
		t.Errorf("after reopen %v left, want about 1h", left)
	}
}

func TestNFTablesConcurrentCallers(t *testing.T) {
	_, f := openNS(t, enforcer.NFTablesConfig{})
	ctx := context.Background()
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := range 50 {
				a := netip.AddrFrom4([4]byte{203, 0, 113, byte(g*25 + i%25)})
				if err = f.Add(ctx, []enforcer.Element{{Addr: a, Timeout: time.Hour}}); err != nil {
					break
				}
				if _, err = f.Counters(ctx); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Add: %v", err)
		}
	}
	got, err := f.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff(seqAddrs(addr("203.0.113.0"), 200), addrsOf(got), addrCmp); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
}

func BenchmarkNFTablesAdd100k(b *testing.B) {
	elems := make([]enforcer.Element, 100_000)
	for i, a := range seqAddrs(addr("198.18.0.0"), len(elems)) {
		elems[i] = enforcer.Element{Addr: a, Timeout: time.Hour}
	}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		nftest.Require(b, "ip", "nft")
		ns := nftest.NewNS(b)
		f, err := Open(testConfig(enforcer.NFTablesConfig{}), slog.New(slog.NewTextHandler(io.Discard, nil)), WithNetNS(ns.Fd()))
		if err != nil {
			b.Fatalf("Open: %v", err)
		}
		if err := f.Setup(ctx); err != nil {
			b.Fatalf("Setup: %v", err)
		}
		b.StartTimer()
		if err := f.Add(ctx, elems); err != nil {
			b.Fatalf("Add: %v", err)
		}
		b.StopTimer()
		_ = f.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(elems)), "elems/op")
}

// testConfig fills in the configuration's defaults, which Open leaves to
// the configuration: table wormgate, the SMTP ports.
func testConfig(c enforcer.NFTablesConfig) enforcer.NFTablesConfig {
	d := enforcer.DefaultConfig().NFTables
	if c.Table == "" {
		c.Table = d.Table
	}
	if c.Ports == nil {
		c.Ports = d.Ports
	}
	return c
}

// TestNFTablesSetPorts: a reload's new ports reach the kernel at once: a
// banned client is dropped on a port just added and connects to one just
// removed; no ports drops everything; the checks that follow find no drift.
func TestNFTablesSetPorts(t *testing.T) {
	_, f, dial := newLab(t, enforcer.NFTablesConfig{Ports: []uint16{25}}, "25", "2525", "80")
	ctx := t.Context()
	if err := f.Add(ctx, []enforcer.Element{{Addr: addr("192.0.2.66"), Timeout: time.Hour}}); err != nil {
		t.Fatalf("Add: %v", err)
	}
	for _, step := range []struct {
		ports          []uint16
		blocked, conns []string
	}{
		{[]uint16{25}, []string{"25"}, []string{"2525", "80"}},
		{[]uint16{2525}, []string{"2525"}, []string{"25", "80"}},
		{nil, []string{"25", "2525", "80"}, nil},
		{[]uint16{80, 25}, []string{"25", "80"}, []string{"2525"}},
	} {
		if err := f.SetPorts(ctx, step.ports); err != nil {
			t.Fatalf("SetPorts(%v): %v", step.ports, err)
		}
		// Setup and Check use the new ports: no drift, nothing undone.
		for range 2 {
			if err := f.Check(ctx); err != nil {
				t.Fatalf("Check after SetPorts(%v): %v", step.ports, err)
			}
			if err := f.Setup(ctx); err != nil {
				t.Fatalf("Setup after SetPorts(%v): %v", step.ports, err)
			}
		}
		for _, p := range step.blocked {
			dropped(t, dial, "192.0.2.1:"+p)
		}
		for _, p := range step.conns {
			if err := dial("192.0.2.1:" + p); err != nil {
				t.Errorf("ports %v: banned client cannot reach port %s, which is not filtered: %v", step.ports, p, err)
			}
		}
	}
}
