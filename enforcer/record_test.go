package enforcer

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/store"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// TestRecordFailureNeverStopsTheKernel: with a record that cannot be
// written, new bans still reach the kernel; the status names the record
// as failing and counts what it lacks.
func TestRecordFailureNeverStopsTheKernel(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fw := newRecordingFirewall()
	e, _ := newClockedEnforcer(t, DefaultConfig(), fw, WithStore(st))
	// A closed bbolt file fails every commit, as a full or broken disk does.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"203.0.113.1", "2001:db8::2"} {
		e.Offend(matcher.Offense{Addr: netip.MustParseAddr(a), Rule: "worm"})
	}
	if err := e.flush(t.Context()); err != nil {
		t.Fatalf("kernel write with a failing record: %v", err)
	}
	if !fw.has("203.0.113.1") || !fw.has("2001:db8::2") {
		t.Fatal("bans did not reach the kernel")
	}
	if err := e.record(); err == nil {
		t.Fatal("record() on a closed store succeeded")
	}
	s := e.Status()
	if !s.Degraded || !slices.Contains(s.Failing, partRecord) || slices.Contains(s.Failing, partFirewall) {
		t.Errorf("status = %+v, want degraded with the record failing and the firewall not", s)
	}
	if s.RecordLag != 2 || s.Pending != 0 {
		t.Errorf("record lag %d, pending %d; want 2 and 0", s.RecordLag, s.Pending)
	}
}

// TestCleanShutdownAndAdoption: a clean shutdown marks the record
// complete, and the next start does not read the kernel back; a start
// without the mark (a crash) adopts the kernel's bans that the record
// lacks, and records them.
func TestCleanShutdownAndAdoption(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rules := map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}}
	run := func(fw *listingFirewall, offend ...string) (*Enforcer, *store.Store) {
		t.Helper()
		st, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		e, err := New(DefaultConfig(), rules, fw, log, prometheus.NewRegistry(), WithStore(st))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		waitFor(t, e.Ready)
		for _, a := range offend {
			e.Offend(matcher.Offense{Addr: netip.MustParseAddr(a), Rule: "worm"})
		}
		waitFor(t, func() bool { return e.Status().Pending == 0 })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return e, st
	}

	fw := &listingFirewall{recordingFirewall: newRecordingFirewall()}
	_, st := run(fw, "203.0.113.1")
	st.Close()
	if fw.lists != 1 {
		t.Errorf("a first start (no record yet) listed the kernel %d times, want 1", fw.lists)
	}
	fw.lists = 0

	// Clean: the kernel is not listed, its extra element is not adopted
	// (the restore replaces it).
	fw.elems[netip.MustParseAddr("203.0.113.9")] = time.Hour
	e, st := run(fw)
	if fw.lists != 0 {
		t.Errorf("a start after a clean shutdown listed the kernel %d times", fw.lists)
	}
	if got := e.ActiveCount(); got != 1 {
		t.Errorf("active after a clean start = %d, want 1", got)
	}
	// A crash: the mark is gone (TakeClean), the run is never stopped.
	if _, err := st.TakeClean(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	fw.elems[netip.MustParseAddr("203.0.113.9")] = time.Hour
	fw.elems[netip.MustParseAddr("2001:db8::9")] = 30 * time.Minute
	fw.lists = 0
	e, st = run(fw)
	defer st.Close()
	if fw.lists != 1 {
		t.Errorf("a start after a crash listed the kernel %d times, want 1", fw.lists)
	}
	var got []string
	for _, b := range e.Bans() {
		got = append(got, b.Addr.String()+" "+b.Rule)
	}
	slices.Sort(got)
	want := []string{"2001:db8::9 adopted", "203.0.113.1 worm", "203.0.113.9 adopted"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bans after a crash (-want +got):\n%s", diff)
	}
	recorded, _, err := st.Load(time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) != 3 {
		t.Errorf("%d bans in the record after the adoption, want 3", len(recorded))
	}
}

// listingFirewall is a recordingFirewall whose List returns what it holds
// and counts the calls.
type listingFirewall struct {
	*recordingFirewall
	lists int
}

func (f *listingFirewall) List(context.Context) ([]Element, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	var out []Element
	for a, d := range f.elems {
		out = append(out, Element{Addr: a, Timeout: d})
	}
	return out, nil
}
