package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/wormgate/wormgate/matcher"
)

// TestNoteFleetBanEscalates: an address the fleet has banned twice gets
// this gateway's third-ban duration on its first offence here.
func TestNoteFleetBanEscalates(t *testing.T) {
	p, err := NewPolicy(DefaultConfig(), map[string]RulePolicy{"worm": {Threshold: 1, Window: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.5")
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	h := p.NoteFleetBan(a, 2, t0.Add(time.Hour), t0)
	if h.Bans != 2 || !h.BannedUntil.Equal(t0.Add(time.Hour)) {
		t.Fatalf("history = %+v, want 2 bans until %v", h, t0.Add(time.Hour))
	}
	// A lower count from a gateway that knows less keeps the higher.
	if h := p.NoteFleetBan(a, 1, t0.Add(30*time.Minute), t0); h.Bans != 2 || !h.BannedUntil.Equal(t0.Add(time.Hour)) {
		t.Fatalf("history after an older note = %+v", h)
	}
	d := p.Observe(matcher.Offense{Addr: a, Rule: "worm", Time: t0.Add(2 * time.Hour)})
	if d.Verdict != VerdictBan || d.Ban.Duration != 96*time.Hour {
		t.Errorf("first offence here: %v for %v, want ban for 96h (24h doubled twice)", d.Verdict, d.Ban.Duration)
	}
}
