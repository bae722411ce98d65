package enforcer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/store"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// fakeClock is a settable clock for the enforcer.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClockedEnforcer(t *testing.T, cfg Config, fw Firewall, opts ...Option) (*Enforcer, *fakeClock) {
	t.Helper()
	e, err := New(cfg, map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}}, fw,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeClock{t: t0}
	e.now = c.now
	return e, c
}

func TestEnforcerNeverBlock(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NeverBlock = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/25")}
	e, _ := newClockedEnforcer(t, cfg, newRecordingFirewall())
	e.AddNeverBlock(netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8:5::/48"))
	tests := []struct {
		addr, prefix string
	}{
		{"198.51.100.20", "198.51.100.0/25"},
		{"192.0.2.1", "192.0.2.1/32"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"2001:db8:5::25", "2001:db8:5::/48"},
		{"127.0.0.1", "127.0.0.0/8"},
		{"fe80::1", "fe80::/10"},
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.addr)
		d := e.Offend(matcher.Offense{Addr: a, Rule: "worm"})
		if d.Verdict != policy.VerdictNeverBlock || d.Prefix.String() != tc.prefix {
			t.Errorf("Offend(%s) = %v %v, want never_block %s", tc.addr, d.Verdict, d.Prefix, tc.prefix)
		}
	}
	if n := len(e.Bans()); n != 0 {
		t.Errorf("%d bans of protected addresses", n)
	}
	if d := e.Offend(matcher.Offense{Addr: netip.MustParseAddr("198.51.100.200"), Rule: "worm"}); d.Verdict != policy.VerdictBan {
		t.Errorf("Offend(outside the prefix) = %v, want ban", d.Verdict)
	}
}

func TestEnforcerRateCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxNewBansPerSecond = 2
	e, clock := newClockedEnforcer(t, cfg, newRecordingFirewall())
	verdicts := func(addrs ...string) []string {
		var out []string
		for _, a := range addrs {
			d := e.Offend(matcher.Offense{Addr: netip.MustParseAddr(a), Rule: "worm"})
			if _, ok := e.active[netip.MustParseAddr(a)]; !ok {
				out = append(out, a+" refused")
				continue
			}
			out = append(out, a+" "+d.Verdict.String())
		}
		return out
	}
	got := verdicts("203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.1")
	want := []string{"203.0.113.1 ban", "203.0.113.2 ban", "203.0.113.3 refused", "203.0.113.1 extend"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("same second (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(e.m.refused.WithLabelValues("rate")); n != 1 {
		t.Errorf("rate refusals = %v, want 1", n)
	}
	clock.add(time.Second)
	got = verdicts("203.0.113.3")
	// A refused ban was undone in the policy: the retry is a first ban
	// with the base duration, not an escalated one.
	if diff := cmp.Diff([]string{"203.0.113.3 ban"}, got); diff != "" {
		t.Errorf("next second (-want +got):\n%s", diff)
	}
	if b := e.active[netip.MustParseAddr("203.0.113.3")]; b.Until.Sub(b.Start) != cfg.BanFor {
		t.Errorf("retried ban lasts %v, want %v", b.Until.Sub(b.Start), cfg.BanFor)
	}
}

// TestEnforcerStoreRestart runs two enforcer lives on one state file: the
// second restores the first one's bans with their remaining time and
// escalates a repeat offender.
func TestEnforcerStoreRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.BanFor = time.Hour

	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fw1 := newRecordingFirewall()
	e1, clock := newClockedEnforcer(t, cfg, fw1, WithStore(st))
	e1.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.1"), Rule: "worm"})
	clock.add(10 * time.Minute)
	e1.Offend(matcher.Offense{Addr: netip.MustParseAddr("2001:db8::2"), Rule: "worm"})
	if err := e1.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(dir); !errors.Is(err, store.ErrStoreLocked) {
		t.Errorf("second OpenStore = %v, want store.ErrStoreLocked", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// 55 minutes after the first ban: it has 5 minutes left.
	clock.add(45 * time.Minute)
	st2, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	fw2 := newRecordingFirewall()
	e2, err := New(cfg, map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}}, fw2,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), WithStore(st2))
	if err != nil {
		t.Fatal(err)
	}
	e2.now = clock.now
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e2.Run(ctx) }()
	waitFor(t, e2.Ready)
	fw2.mu.Lock()
	got := map[string]time.Duration{}
	for a, d := range fw2.elems {
		got[a.String()] = d
	}
	restores := fw2.restores
	fw2.mu.Unlock()
	want := map[string]time.Duration{
		"203.0.113.1": 5 * time.Minute,
		"2001:db8::2": 15 * time.Minute,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kernel after restart (-want +got):\n%s", diff)
	}
	if restores != 1 {
		t.Errorf("start-up wrote the kernel in %d restores, want 1", restores)
	}
	// After its ban expired, the first offender's next ban is doubled:
	// the history came back from the record.
	clock.add(10 * time.Minute)
	d := e2.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.1"), Rule: "worm"})
	if d.Verdict != policy.VerdictBan || d.Ban.Duration != 2*time.Hour {
		t.Errorf("repeat offender after restart: %v for %v, want ban for 2h", d.Verdict, d.Ban.Duration)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// driftingFirewall reports drift a given number of times.
type driftingFirewall struct {
	*recordingFirewall
	mu     sync.Mutex
	drifts int
}

func (f *driftingFirewall) Check(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.drifts > 0 {
		f.drifts--
		return ErrDrift
	}
	return nil
}

func TestEnforcerReconcileRestores(t *testing.T) {
	fw := &driftingFirewall{recordingFirewall: newRecordingFirewall()}
	e, err := New(DefaultConfig(), map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}}, fw,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), WithIntervals(10*time.Millisecond, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = e.Run(ctx) }()
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.7"), Rule: "worm"})
	waitFor(t, func() bool { return fw.has("203.0.113.7") })
	// Someone flushes the ruleset: the kernel loses the element and the
	// check sees drift.
	fw.recordingFirewall.mu.Lock()
	clear(fw.elems)
	fw.recordingFirewall.mu.Unlock()
	fw.mu.Lock()
	fw.drifts = 1
	fw.mu.Unlock()
	waitFor(t, func() bool { return fw.has("203.0.113.7") })
	if got := testutil.ToFloat64(e.m.restores); got != 1 {
		t.Errorf("restores = %v, want 1", got)
	}
	if st := e.Status(); st.Restores != 1 || st.Degraded {
		t.Errorf("status = %+v", st)
	}
}

func TestEnforcerAudit(t *testing.T) {
	fw := newRecordingFirewall()
	e, _ := newClockedEnforcer(t, DefaultConfig(), fw)
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.7"), Rule: "worm"})
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.8"), Rule: "worm"})
	if err := e.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	fw.mu.Lock()
	delete(fw.elems, netip.MustParseAddr("203.0.113.7"))
	fw.elems[netip.MustParseAddr("203.0.113.99")] = time.Hour
	fw.mu.Unlock()
	missing, extra, err := e.Audit(t.Context())
	if err != nil || missing != 1 || extra != 1 {
		t.Fatalf("Audit() = %d missing, %d extra, %v; want 1, 1", missing, extra, err)
	}
	if err := e.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !fw.has("203.0.113.7") || fw.has("203.0.113.99") {
		t.Errorf("audit did not repair: %v", fw.elems)
	}
}

// failingFirewall fails every write, as with netlink gone.
type failingFirewall struct{ *recordingFirewall }

func (failingFirewall) Add(context.Context, []Element) error {
	return errors.New("add: netlink receive: no buffer space available")
}

func TestEnforcerStatusDegraded(t *testing.T) {
	e, _ := newClockedEnforcer(t, DefaultConfig(), failingFirewall{newRecordingFirewall()})
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.7"), Rule: "worm"})
	if err := e.Flush(t.Context()); err == nil {
		t.Fatal("Flush() succeeded on a failing firewall")
	}
	st := e.Status()
	if !st.Degraded || !strings.Contains(st.LastError, "no buffer space") || st.Pending != 1 {
		t.Errorf("status = %+v, want degraded with the error and the ban still pending", st)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := t0
	bans := []policy.Ban{
		{Addr: netip.MustParseAddr("203.0.113.1"), Rule: "worm", Start: now.Add(-time.Hour), Until: now.Add(time.Hour), Hits: 3},
		{Addr: netip.MustParseAddr("2001:db8::1"), Rule: "manual", Start: now, Until: now.Add(time.Minute), Hits: 0, Manual: true, Reason: "partner relay, ticket 42"},
		{Addr: netip.MustParseAddr("198.51.100.0"), Net: netip.MustParsePrefix("198.51.100.0/24"), Rule: "manual", Start: now, Until: now.Add(time.Hour), Manual: true},
		{Addr: netip.MustParseAddr("192.0.2.7"), Rule: "worm", Start: now, Until: now.Add(time.Hour), Hits: 1, Hosts: []string{"mx1", "mx2.example.net"}, Origin: "gw2"},
		{Addr: netip.MustParseAddr("203.0.113.2"), Rule: "old", Start: now.Add(-2 * time.Hour), Until: now.Add(-time.Second)},
	}
	events := []policy.Event{
		{Seq: 1, Time: now.Add(-time.Minute), Addr: netip.MustParseAddr("192.0.2.7"), Host: "mx1", QueueID: "4Xq1", Kind: "header_reject", Rule: "worm", Text: "Worm: Sobig.F", Verdict: "ban"},
		{Seq: 2, Time: now.Add(-40 * 24 * time.Hour), Addr: netip.MustParseAddr("192.0.2.7"), Kind: "header_reject", Rule: "worm", Verdict: "ban"},
	}
	allows := []store.Allow{{Net: netip.MustParsePrefix("192.0.2.0/28"), Added: now, Reason: "partner", Origin: "gw3"}, {Net: netip.MustParsePrefix("192.0.2.64/28"), Added: now, Until: now.Add(-time.Second)}}
	tombs := []store.Tombstone{{Net: netip.MustParsePrefix("203.0.113.70/32"), Until: now.Add(time.Hour)}}
	hist := []policy.History{
		{Addr: netip.MustParseAddr("203.0.113.1"), Hits: 3, Bans: 2, FirstSeen: now.Add(-time.Hour), LastSeen: now, BannedUntil: now.Add(time.Hour)},
		{Addr: netip.MustParseAddr("203.0.113.9"), Hits: 1, LastSeen: now.Add(-time.Hour)},
	}
	if err := st.Commit(store.Change{Bans: bans, History: hist, Events: events, Allows: allows, Tombstones: tombs}); err != nil {
		t.Fatal(err)
	}
	snap, err := st.Load(now, store.Limits{History: 1, Events: 10, EventAge: 30 * 24 * time.Hour})
	gotBans, gotHist := snap.Bans, snap.History
	if err != nil {
		t.Fatal(err)
	}
	for i := range bans {
		bans[i].Duration = bans[i].Until.Sub(bans[i].Start)
	}
	eq := cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })
	less := func(a, b policy.Ban) bool { return a.Addr.Less(b.Addr) }
	addrs := cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})
	if diff := cmp.Diff(bans[:4], gotBans, eq, addrs, cmpSortBans(less)); diff != "" {
		t.Errorf("bans (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(hist[:1], gotHist, eq, addrs); diff != "" {
		t.Errorf("history, newest 1 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(events[:1], snap.Events, eq, addrs); diff != "" {
		t.Errorf("events within max age (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(allows[:1], snap.Allows, eq, addrs); diff != "" {
		t.Errorf("live allows (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(tombs, snap.Tombstones, eq, addrs); diff != "" {
		t.Errorf("tombstones (-want +got):\n%s", diff)
	}
	// Load deleted the expired ban, the older history, the old event and
	// the expired allow, even when read at an earlier time.
	snap, err = st.Load(now.Add(-time.Hour), store.Limits{History: 10, Events: 10})
	got := []int{len(snap.Bans), len(snap.History), len(snap.Events), len(snap.Allows)}
	if err != nil || !slices.Equal(got, []int{4, 1, 1, 1}) {
		t.Errorf("second Load = %v bans, history, events, allows, %v; want [4 1 1 1]", got, err)
	}
}

func cmpSortBans(less func(a, b policy.Ban) bool) cmp.Option {
	return cmp.Transformer("sort", func(in []policy.Ban) []policy.Ban {
		out := append([]policy.Ban(nil), in...)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if less(out[j], out[i]) {
					out[i], out[j] = out[j], out[i]
				}
			}
		}
		return out
	})
}

// TestEnforcerCapSweepsWhenDue: at the cap a refusal does not scan the
// bans, yet a ban that has expired frees its place for the next offender.
func TestEnforcerCapSweepsWhenDue(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxActiveBans = 2
	cfg.BanFor = time.Hour
	e, clock := newClockedEnforcer(t, cfg, newRecordingFirewall())
	verdict := func(a string) string {
		e.Offend(matcher.Offense{Addr: netip.MustParseAddr(a), Rule: "worm"})
		if _, ok := e.active[netip.MustParseAddr(a)]; ok {
			return a + " banned"
		}
		return a + " refused"
	}
	got := []string{verdict("203.0.113.1")}
	clock.add(30 * time.Minute)
	got = append(got, verdict("203.0.113.2"), verdict("203.0.113.3"))
	clock.add(31 * time.Minute) // .1 expired, .2 has not
	got = append(got, verdict("203.0.113.4"), verdict("203.0.113.5"))
	want := []string{"203.0.113.1 banned", "203.0.113.2 banned", "203.0.113.3 refused", "203.0.113.4 banned", "203.0.113.5 refused"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// BenchmarkRefusalAtCap: one op is an offense by a new address refused at
// the cap, with 1,000,000 active bans. It must not scan them.
func BenchmarkRefusalAtCap(b *testing.B) {
	cfg := DefaultConfig()
	cfg.MaxActiveBans = 1_000_000
	cfg.MaxNewBansPerSecond = 1 << 30
	e, err := New(cfg, map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}}, newRecordingFirewall(),
		slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr("2001:db8::")
	for range cfg.MaxActiveBans {
		ip = ip.Next()
		e.Offend(matcher.Offense{Addr: ip, Rule: "worm"})
	}
	if n := e.ActiveCount(); n != cfg.MaxActiveBans {
		b.Fatalf("%d active bans, want %d", n, cfg.MaxActiveBans)
	}
	b.ResetTimer()
	for range b.N {
		ip = ip.Next()
		if d := e.Offend(matcher.Offense{Addr: ip, Rule: "worm"}); d.Verdict != policy.VerdictBan {
			b.Fatalf("verdict %v", d.Verdict)
		}
	}
	b.StopTimer()
	if n := e.ActiveCount(); n != cfg.MaxActiveBans {
		b.Fatalf("%d active bans after the refusals, want %d", n, cfg.MaxActiveBans)
	}
}
