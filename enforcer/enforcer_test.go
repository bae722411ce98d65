package enforcer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// recordingFirewall is the fast unit tier's firewall; the kernel tier is
// in nftables_test.go.
type recordingFirewall struct {
	mu       sync.Mutex
	elems    map[netip.Addr]time.Duration
	nets     map[netip.Prefix]time.Duration
	ports    []uint16
	failAdd  int // fail this many Add calls first
	adds     int
	restores int
	// added logs every Add's elements, failed ones too.
	added [][]Element
}

func newRecordingFirewall() *recordingFirewall {
	return &recordingFirewall{elems: map[netip.Addr]time.Duration{}, nets: map[netip.Prefix]time.Duration{}}
}

func (f *recordingFirewall) Setup(context.Context) error { return nil }
func (f *recordingFirewall) Check(context.Context) error { return nil }
func (f *recordingFirewall) Restore(_ context.Context, es []Element) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	clear(f.elems)
	clear(f.nets)
	f.put(es)
	return nil
}

func (f *recordingFirewall) put(es []Element) {
	for _, e := range es {
		if e.Net.IsValid() && !e.Net.IsSingleIP() {
			f.nets[e.Net] = e.Timeout
			continue
		}
		f.elems[e.Addr] = e.Timeout
	}
}
func (f *recordingFirewall) Close() error { return nil }
func (f *recordingFirewall) Add(_ context.Context, es []Element) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds++
	f.added = append(f.added, slices.Clone(es))
	if f.failAdd > 0 {
		f.failAdd--
		return errors.New("add: no buffer space available")
	}
	f.put(es)
	return nil
}
func (f *recordingFirewall) DeleteNets(_ context.Context, ns []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range ns {
		delete(f.nets, n)
	}
	return nil
}
func (f *recordingFirewall) Delete(_ context.Context, as []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range as {
		delete(f.elems, a)
	}
	return nil
}

func (f *recordingFirewall) List(context.Context) ([]Element, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Element
	for a, d := range f.elems {
		out = append(out, Element{Addr: a, Timeout: d})
	}
	for n, d := range f.nets {
		out = append(out, Element{Addr: n.Addr(), Net: n, Timeout: d})
	}
	return out, nil
}
func (f *recordingFirewall) has(a string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.elems[netip.MustParseAddr(a)]
	return ok
}

func newTestEnforcer(t *testing.T, cfg Config, fw Firewall) (*Enforcer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := New(cfg, map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}}, fw, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return e, reg
}

func TestEnforcerOffendWritesKernel(t *testing.T) {
	fw := newRecordingFirewall()
	e, reg := newTestEnforcer(t, DefaultConfig(), fw)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	e.Offend(off("203.0.113.66", "worm", 0))
	e.Offend(off("127.0.0.1", "worm", 0))
	waitFor(t, func() bool { return fw.has("203.0.113.66") })
	if fw.has("127.0.0.1") {
		t.Error("never-block address reached the firewall")
	}
	if got := testutil.ToFloat64(e.m.refused.WithLabelValues("never_block")); got != 1 {
		t.Errorf("never_block refusals = %v, want 1", got)
	}
	bans := e.Bans()
	if len(bans) != 1 || bans[0].Addr != netip.MustParseAddr("203.0.113.66") || bans[0].Rule != "worm" {
		t.Errorf("Bans() = %+v", bans)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, "wormgate_bans_active"); err != nil || n != 1 {
		t.Errorf("wormgate_bans_active series = %d, %v", n, err)
	}
}

func TestEnforcerRetriesFailedWrites(t *testing.T) {
	fw := newRecordingFirewall()
	fw.failAdd = 3
	e, _ := newTestEnforcer(t, DefaultConfig(), fw)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = e.Run(ctx) }()
	// After start-up, whose restore would carry the ban otherwise.
	waitFor(t, e.Ready)
	e.Offend(off("2001:db8:66::66", "worm", 0))
	waitFor(t, func() bool { return fw.has("2001:db8:66::66") })
	if got := testutil.ToFloat64(e.m.fwErrors.WithLabelValues("add")); got != 3 {
		t.Errorf("firewall add errors = %v, want 3", got)
	}
}

func TestEnforcerFinalFlushOnShutdown(t *testing.T) {
	fw := newRecordingFirewall()
	e, _ := newTestEnforcer(t, DefaultConfig(), fw)
	// Decided before Run even starts, then shut down at once: the ban
	// must still reach the kernel.
	e.Offend(off("198.51.100.7", "worm", 0))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !fw.has("198.51.100.7") {
		t.Error("pending ban lost on shutdown")
	}
}

func TestEnforcerCap(t *testing.T) {
	fw := newRecordingFirewall()
	cfg := DefaultConfig()
	cfg.MaxActiveBans = 2
	e, _ := newTestEnforcer(t, cfg, fw)
	for _, a := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		e.Offend(off(a, "worm", 0))
	}
	if err := e.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range e.Bans() {
		got = append(got, b.Addr.String())
	}
	if diff := cmp.Diff([]string{"203.0.113.1", "203.0.113.2"}, got); diff != "" {
		t.Errorf("bans (-want +got):\n%s", diff)
	}
	if fw.has("203.0.113.3") {
		t.Error("ban past the cap reached the kernel")
	}
	if got := testutil.ToFloat64(e.m.refused.WithLabelValues("cap")); got != 1 {
		t.Errorf("cap refusals = %v, want 1", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var t0 = time.Date(2026, 11, 26, 18, 0, 0, 0, time.UTC)

func off(addr string, rule string, at time.Duration) matcher.Offense {
	return matcher.Offense{Addr: netip.MustParseAddr(addr), Rule: rule, Host: "mx1", Time: t0.Add(at)}
}

// refreshes renders each Add as "addr new|refresh", sorted, and forgets
// them.
func (f *recordingFirewall) refreshes() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]string
	for _, es := range f.added {
		var line []string
		for _, e := range es {
			kind := "new"
			if e.Refresh {
				kind = "refresh"
			}
			line = append(line, e.Addr.String()+" "+kind)
		}
		slices.Sort(line)
		out = append(out, line)
	}
	f.added = nil
	return out
}

func TestEnforcerMarksRefreshes(t *testing.T) {
	fw := newRecordingFirewall()
	e, clock := newClockedEnforcer(t, DefaultConfig(), fw)
	ctx := t.Context()
	ban := func(addrs ...string) {
		t.Helper()
		for _, a := range addrs {
			if d := e.Offend(off(a, "worm", 0)); d.Verdict != policy.VerdictBan && d.Verdict != policy.VerdictExtend {
				t.Fatalf("Offend(%s) = %v, want a ban", a, d.Verdict)
			}
		}
	}
	flush := func() error {
		t.Helper()
		return e.Flush(ctx)
	}
	for _, step := range []struct {
		name    string
		do      func() error
		want    [][]string
		wantErr bool
	}{
		{"new bans", func() error { ban("192.0.2.1", "192.0.2.2"); return flush() },
			[][]string{{"192.0.2.1 new", "192.0.2.2 new"}}, false},
		{"an extension of a written ban is a refresh", func() error {
			clock.add(time.Minute)
			ban("192.0.2.1", "192.0.2.3")
			return flush()
		}, [][]string{{"192.0.2.1 refresh", "192.0.2.3 new"}}, false},
		{"an extension before the first write is still new", func() error {
			ban("192.0.2.4")
			clock.add(time.Minute)
			ban("192.0.2.4")
			return flush()
		}, [][]string{{"192.0.2.4 new"}}, false},
		{"a failed write is retried with its marks", func() error {
			fw.mu.Lock()
			fw.failAdd = 1
			fw.mu.Unlock()
			clock.add(time.Minute)
			ban("192.0.2.2", "192.0.2.5")
			if err := flush(); err == nil {
				return errors.New("write did not fail")
			}
			return flush()
		}, [][]string{{"192.0.2.2 refresh", "192.0.2.5 new"}, {"192.0.2.2 refresh", "192.0.2.5 new"}}, false},
	} {
		if err := step.do(); (err != nil) != step.wantErr {
			t.Fatalf("%s: %v", step.name, err)
		}
		if diff := cmp.Diff(step.want, fw.refreshes()); diff != "" {
			t.Errorf("%s: Add calls (-want +got):\n%s", step.name, diff)
		}
	}
	if got := e.ActiveCount(); got != 5 {
		t.Errorf("ActiveCount() = %d, want 5", got)
	}
}
func (f *recordingFirewall) SetPorts(_ context.Context, ports []uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ports = slices.Clone(ports)
	return nil
}
