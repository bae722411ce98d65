package enforcer

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// nonZero renders a rule's buckets as "index:offences/bans" for the
// buckets that counted something.
func nonZero(rs RuleSeries) []string {
	var out []string
	for i := range rs.Offences {
		if rs.Offences[i] > 0 || rs.Bans[i] > 0 {
			out = append(out, fmt.Sprintf("%d:%d/%d", i, rs.Offences[i], rs.Bans[i]))
		}
	}
	return out
}

func timelineView(tl Timeline) map[string][]string {
	out := map[string][]string{}
	for _, rs := range tl.Rules {
		out[rs.Rule] = nonZero(rs)
	}
	return out
}

// TestTimeline feeds offences of two rules through Offend on a fake
// clock and reads them back in the three ranges: offences of every
// verdict count, bans only when new (not extensions), and each range
// puts them in the bucket of their time.
func TestTimeline(t *testing.T) {
	rules := map[string]policy.RulePolicy{
		"worm":  {Threshold: 1, Window: time.Hour},
		"guess": {Threshold: 3, Window: time.Hour},
	}
	e, err := New(DefaultConfig(), rules, newRecordingFirewall(), slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeClock{t: t0} // 18:00:00 UTC
	e.now = c.now
	at := func(d time.Duration, addr, rule string) policy.Verdict {
		c.t = t0.Add(d)
		return e.Offend(matcher.Offense{Addr: netip.MustParseAddr(addr), Rule: rule, Host: "mx1"}).Verdict
	}
	// Minute 0: two new worm bans and an extension.
	at(0, "203.0.113.1", "worm")
	at(10*time.Second, "203.0.113.2", "worm")
	if v := at(20*time.Second, "203.0.113.1", "worm"); v != policy.VerdictExtend {
		t.Fatalf("third worm offence: %v, want extend", v)
	}
	// Minutes 1-2: guessing, banned at the third hit.
	at(time.Minute, "198.51.100.7", "guess")
	at(time.Minute+30*time.Second, "198.51.100.7", "guess")
	if v := at(2*time.Minute, "198.51.100.7", "guess"); v != policy.VerdictBan {
		t.Fatalf("third guess offence: %v, want ban", v)
	}
	// A never-block offence counts as an offence, not a ban.
	at(2*time.Minute, "127.0.0.1", "worm")
	// Minute 7 of the next hour.
	at(67*time.Minute, "203.0.113.3", "worm")
	c.t = t0.Add(70 * time.Minute)

	got := timelineView(e.Timeline(Range1h))
	// 1h: 60 minute buckets ending at 19:10; 18:00 is before the first
	// (18:11), 19:07 is bucket 56.
	if diff := cmp.Diff(map[string][]string{"worm": {"56:1/1"}}, got); diff != "" {
		t.Errorf("1h (-want +got):\n%s", diff)
	}
	tl := e.Timeline(Range24h)
	if want := t0.Add(70*time.Minute - 24*time.Hour + 5*time.Minute); !tl.Start.Equal(want) || tl.StepSeconds != 300 {
		t.Errorf("24h start %v step %v, want %v 300", tl.Start, tl.StepSeconds, want)
	}
	// 24h: 288 buckets of 5 minutes, the last (19:10) is 287; 18:00 is
	// 287-14 = 273, 19:05 is 286.
	if diff := cmp.Diff(map[string][]string{"worm": {"273:4/2", "286:1/1"}, "guess": {"273:3/1"}}, timelineView(tl)); diff != "" {
		t.Errorf("24h (-want +got):\n%s", diff)
	}
	// 7d: 168 hours, the last (19:00) is 167.
	if diff := cmp.Diff(map[string][]string{"worm": {"166:4/2", "167:1/1"}, "guess": {"166:3/1"}}, timelineView(e.Timeline(Range7d))); diff != "" {
		t.Errorf("7d (-want +got):\n%s", diff)
	}
	for _, rs := range tl.Rules {
		if rs.Rule == "worm" && (rs.TotalOffences != 5 || rs.TotalBans != 3) {
			t.Errorf("worm totals %d/%d, want 5/3", rs.TotalOffences, rs.TotalBans)
		}
	}

	// A day and a half later the minute ring has lapped: the 24h range
	// is empty of the old minutes, the 7d range still has them.
	c.t = t0.Add(36 * time.Hour)
	if got := timelineView(e.Timeline(Range24h)); len(got) != 0 {
		t.Errorf("24h after 36h = %v, want nothing", got)
	}
	if diff := cmp.Diff(map[string][]string{"worm": {"131:4/2", "132:1/1"}, "guess": {"131:3/1"}}, timelineView(e.Timeline(Range7d))); diff != "" {
		t.Errorf("7d after 36h (-want +got):\n%s", diff)
	}
	c.t = t0.Add(8 * 24 * time.Hour)
	if got := timelineView(e.Timeline(Range7d)); len(got) != 0 {
		t.Errorf("7d after 8d = %v, want nothing", got)
	}
}

// TestTimelineBoundedRules: rule names past maxTimelineRules are summed
// in one series instead of growing the map.
func TestTimelineBoundedRules(t *testing.T) {
	tl := newTimeline()
	for i := range maxTimelineRules + 50 {
		tl.note(fmt.Sprintf("rule-%d", i), t0, false)
	}
	if n := len(tl.rules); n != maxTimelineRules+1 {
		t.Fatalf("%d series, want %d", n, maxTimelineRules+1)
	}
	got := tl.get(Range1h, t0)
	for _, rs := range got.Rules {
		if rs.Rule == otherRule && rs.TotalOffences != 50 {
			t.Errorf("%s holds %d offences, want 50", otherRule, rs.TotalOffences)
		}
	}
}

// TestTimelineSurvivesRestart: the timeline is not recorded, but a
// restart rebuilds it from the recorded offence history.
func TestTimelineSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: t0}
	e := startEnforcer(t, dir, DefaultConfig(), newRecordingFirewall(), clock)
	e.Offend(off("203.0.113.1", "worm", 0))
	clock.add(time.Minute)
	e.Offend(off("203.0.113.1", "worm", 0))
	e.Offend(off("203.0.113.2", "worm", 0))
	clock.add(time.Minute)
	want := timelineView(e.Timeline(Range1h))
	if diff := cmp.Diff(map[string][]string{"worm": {"57:1/1", "58:2/1"}}, want); diff != "" {
		t.Fatalf("before the restart (-want +got):\n%s", diff)
	}
	e.stop()
	e2 := startEnforcer(t, dir, DefaultConfig(), newRecordingFirewall(), clock)
	if diff := cmp.Diff(want, timelineView(e2.Timeline(Range1h))); diff != "" {
		t.Errorf("after the restart (-before +after):\n%s", diff)
	}
}

// TestTimelineConcurrent runs Offend and Timeline together for the race
// detector, and checks that no offence is lost.
func TestTimelineConcurrent(t *testing.T) {
	e, _ := newTestEnforcer(t, DefaultConfig(), newRecordingFirewall())
	const n = 2000
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := range n {
				e.Offend(matcher.Offense{Addr: netip.AddrFrom4([4]byte{198, 18, byte(g), byte(i)}), Rule: "worm"})
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			_ = e.Timeline(Range24h)
		}
	})
	wg.Wait()
	var total uint64
	for _, rs := range e.Timeline(Range1h).Rules {
		total += rs.TotalOffences
	}
	if total != 2*n {
		t.Errorf("%d offences in the timeline, want %d", total, 2*n)
	}
}
