package enforcer

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/enforcer/store"
)

// sinkRecorder is a DecisionSink that keeps what it is told.
type sinkRecorder struct {
	mu sync.Mutex
	ds []Decision
}

func (s *sinkRecorder) Decided(d Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ds = append(s.ds, d)
}

// ops returns "op net" of every decision told so far, and forgets them.
func (s *sinkRecorder) ops() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, d := range s.ds {
		out = append(out, string(d.Op)+" "+d.Net.String())
	}
	s.ds = nil
	return out
}

func newFleetEnforcer(t *testing.T) (*Enforcer, *recordingFirewall, *sinkRecorder) {
	t.Helper()
	fw := newRecordingFirewall()
	e, _ := newTestEnforcer(t, DefaultConfig(), fw)
	sink := &sinkRecorder{}
	e.sink = sink
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, e.Ready)
	return e, fw, sink
}

func TestDecisionSinkIsToldLocalDecisions(t *testing.T) {
	e, _, sink := newFleetEnforcer(t)
	ctx := t.Context()
	now := time.Now()
	e.Offend(off("203.0.113.5", "worm", 0))
	e.Offend(off("203.0.113.5", "worm", 0)) // within the ban: nothing new to tell
	if _, err := e.Ban(ctx, ManualBan{Net: netip.MustParsePrefix("198.51.100.0/24"), For: time.Hour, By: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Unban(ctx, []netip.Prefix{netip.MustParsePrefix("203.0.113.5/32")}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Allow(ctx, store.Allow{Net: netip.MustParsePrefix("203.0.113.9/32"), By: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Disallow(ctx, []netip.Prefix{netip.MustParsePrefix("203.0.113.9/32")}, "test"); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	first := sink.ds[0]
	sink.mu.Unlock()
	if first.Rule != "worm" || first.Bans != 1 || first.Until.Before(now.Add(23*time.Hour)) || first.Origin != "" {
		t.Errorf("automatic ban told as %+v", first)
	}
	want := []string{"ban 203.0.113.5/32", "ban 198.51.100.0/24", "unban 203.0.113.5/32", "allow 203.0.113.9/32", "disallow 203.0.113.9/32"}
	if diff := cmp.Diff(want, sink.ops()); diff != "" {
		t.Errorf("decisions told (-want +got):\n%s", diff)
	}
}

func TestApplyRemote(t *testing.T) {
	e, fw, sink := newFleetEnforcer(t)
	ctx := t.Context()
	now := time.Now()
	until := now.Add(time.Hour)
	if _, err := e.Allow(ctx, store.Allow{Net: netip.MustParsePrefix("203.0.113.64/26"), By: "local operator"}); err != nil {
		t.Fatal(err)
	}
	sink.ops()
	remote := func(op Op, net string) Decision {
		return Decision{Op: op, Net: netip.MustParsePrefix(net), Time: now, Until: until, Rule: "worm", Origin: "gw2", Bans: 1}
	}
	expired := remote(OpBan, "203.0.113.3/32")
	expired.Until = now.Add(-time.Second)
	errs := e.ApplyRemote(ctx, []Decision{
		remote(OpBan, "203.0.113.1/32"),
		remote(OpBan, "198.51.100.0/24"),
		remote(OpBan, "127.0.0.1/32"),
		remote(OpBan, "203.0.113.70/32"), // under the local allow: local wins
		remote(OpBan, "0.0.0.0/0"),
		expired,
		remote(OpDisallow, "203.0.113.64/26"), // the local operator's allow stays
	})
	for i, want := range []error{nil, nil, ErrProtected, ErrProtected, ErrTooWide, ErrExpired, nil} {
		if !errors.Is(errs[i], want) {
			t.Errorf("decision %d: err = %v, want %v", i, errs[i], want)
		}
	}
	waitFor(t, func() bool { return fw.has("203.0.113.1") })
	if fw.has("127.0.0.1") || fw.has("203.0.113.70") {
		t.Error("a protected address reached the firewall")
	}
	w := e.Why(netip.MustParseAddr("203.0.113.1"))
	if w.Ban == nil || w.Ban.Origin != "gw2" || !w.Ban.Until.Equal(until) {
		t.Errorf("remote ban = %+v, want origin gw2 until %v", w.Ban, until)
	}
	if w := e.Why(netip.MustParseAddr("198.51.100.7")); w.Ban == nil || w.Ban.Net.Bits() != 24 {
		t.Errorf("remote network ban = %+v", w.Ban)
	}
	if w := e.Why(netip.MustParseAddr("203.0.113.70")); w.Allow == nil {
		t.Error("a remote disallow removed the local operator's allow")
	}
	if errs := e.ApplyRemote(ctx, []Decision{remote(OpUnban, "203.0.113.1/32"), remote(OpAllow, "203.0.113.2/32")}); errs[0] != nil || errs[1] != nil {
		t.Fatalf("unban, allow: %v", errs)
	}
	if fw.has("203.0.113.1") {
		t.Error("a remote unban left the address in the firewall")
	}
	if a := e.Why(netip.MustParseAddr("203.0.113.2")).Allow; a == nil || a.Origin != "gw2" {
		t.Errorf("remote allow = %+v, want origin gw2", a)
	}
	if errs := e.ApplyRemote(ctx, []Decision{remote(OpDisallow, "203.0.113.2/32")}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	if a := e.Why(netip.MustParseAddr("203.0.113.2")).Allow; a != nil {
		t.Errorf("a remote disallow left the fleet's allow: %+v", a)
	}
	if got := sink.ops(); len(got) != 0 {
		t.Errorf("remote decisions told back to the sink: %v", got)
	}
}
