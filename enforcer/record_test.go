package enforcer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
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

// TestStartAdoptsTheKernel: every start takes over the kernel's timed
// elements that the record lacks (a crash, a lost or damaged record) and
// records them; a start whose kernel cannot be read keeps the kernel's
// elements (set-up and add, no restore), so no start ever lifts a ban.
func TestStartAdoptsTheKernel(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rules := map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}}
	run := func(fw Firewall, offend ...string) *Enforcer {
		t.Helper()
		st, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
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
		return e
	}
	bans := func(e *Enforcer) []string {
		var out []string
		for _, b := range e.Bans() {
			out = append(out, b.Addr.String()+" "+b.Rule)
		}
		slices.Sort(out)
		return out
	}

	fw := &listingFirewall{recordingFirewall: newRecordingFirewall()}
	run(fw, "203.0.113.1")
	// The kernel gained bans the record never saw, and one without a
	// timeout (added by hand).
	fw.elems[netip.MustParseAddr("203.0.113.9")] = time.Hour
	fw.elems[netip.MustParseAddr("2001:db8::9")] = 30 * time.Minute
	fw.elems[netip.MustParseAddr("198.51.100.1")] = 0
	e := run(fw)
	want := []string{"2001:db8::9 adopted", "203.0.113.1 worm", "203.0.113.9 adopted"}
	if diff := cmp.Diff(want, bans(e)); diff != "" {
		t.Errorf("bans after the start (-want +got):\n%s", diff)
	}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Load(time.Now(), store.Limits{})
	recorded := snap.Bans
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) != 3 {
		t.Errorf("%d bans in the record after the adoption, want 3", len(recorded))
	}

	// A kernel that cannot be read: its elements stay, the record's are
	// added, nothing is restored away.
	blind := &blindFirewall{recordingFirewall: newRecordingFirewall()}
	blind.elems[netip.MustParseAddr("203.0.113.77")] = time.Hour
	run(blind)
	if blind.restores != 0 || !blind.has("203.0.113.77") || !blind.has("203.0.113.1") {
		t.Errorf("unreadable kernel: %d restores, kernel %v; want no restore, 203.0.113.77 kept, 203.0.113.1 added", blind.restores, blind.elems)
	}
}

// blindFirewall cannot read its sets back.
type blindFirewall struct{ *recordingFirewall }

func (f *blindFirewall) List(context.Context) ([]Element, error) {
	return nil, errors.New("list: no buffer space available")
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

// TestCommitWatchdog: a commit that does not return (a frozen disk never
// fails by itself) makes Status report the record failing after
// commitStall, with the reason.
func TestCommitWatchdog(t *testing.T) {
	e, _ := newTestEnforcer(t, DefaultConfig(), newRecordingFirewall())
	e.commitSince.Store(time.Now().Add(-commitStall / 2).UnixNano())
	if s := e.Status(); s.Degraded {
		t.Errorf("a commit running %v: status %+v, want not degraded yet", commitStall/2, s)
	}
	e.commitSince.Store(time.Now().Add(-2 * commitStall).UnixNano())
	s := e.Status()
	if !s.Degraded || !slices.Contains(s.Failing, partRecord) || !strings.Contains(s.LastError, "has not returned") {
		t.Errorf("a commit running %v: status %+v, want the record failing with the reason", 2*commitStall, s)
	}
	e.commitSince.Store(0)
	if s := e.Status(); s.Degraded {
		t.Errorf("after the commit returned: status %+v, want healthy", s)
	}
}
