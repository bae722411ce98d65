package enforcer

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/enforcer/store"
	"github.com/wormgate/wormgate/matcher"
)

// runningEnforcer is an enforcer with a real store in dir and a
// recording firewall, running until the test ends or stop is called.
type runningEnforcer struct {
	*Enforcer
	fw    *recordingFirewall
	clock *fakeClock
	stop  func()
}

func startEnforcer(t *testing.T, dir string, cfg Config, fw *recordingFirewall, clock *fakeClock) *runningEnforcer {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, c := newClockedEnforcer(t, cfg, fw, WithStore(st))
	if clock != nil {
		c = clock
		e.now = c.now
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	waitFor(t, e.Ready)
	return &runningEnforcer{Enforcer: e, fw: fw, clock: c, stop: stop}
}

func pfx(s string) netip.Prefix {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen())
	}
	return netip.MustParsePrefix(s)
}

// TestManualBanUnban: a manual ban is in the kernel and survives a
// restart; an unban lifts it for good, even from a kernel that kept the
// element (a failed delete) across a restart; the next real offence bans
// again as a first ban.
func TestManualBanUnban(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	e := startEnforcer(t, dir, cfg, newRecordingFirewall(), nil)
	ctx := t.Context()
	res, err := e.Ban(ctx, ManualBan{Net: pfx("203.0.113.70"), For: time.Hour, Reason: "test", By: "uid 0"})
	if err != nil || !res.Durable {
		t.Fatalf("Ban = %+v, %v; want durable", res, err)
	}
	if !e.fw.has("203.0.113.70") {
		t.Fatal("manual ban not in the kernel")
	}
	if _, err := e.Ban(ctx, ManualBan{Net: pfx("198.51.100.0/24"), For: time.Hour, By: "uid 0"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.fw.nets[pfx("198.51.100.0/24")]; !ok {
		t.Fatal("network ban not in the kernel's interval set")
	}
	clock := e.clock
	e.stop()

	// Restart: both come back from the record.
	fw2 := newRecordingFirewall()
	e = startEnforcer(t, dir, cfg, fw2, clock)
	w := e.Why(netip.MustParseAddr("203.0.113.70"))
	if w.Ban == nil || !w.Ban.Manual || w.Ban.Reason != "test" {
		t.Fatalf("after restart Why = %+v, want the manual ban with its reason", w)
	}
	if _, ok := fw2.nets[pfx("198.51.100.0/24")]; !ok {
		t.Fatal("network ban not restored")
	}
	res, err = e.Unban(ctx, []netip.Prefix{pfx("203.0.113.70"), pfx("198.51.100.0/24")}, "uid 0")
	if err != nil || !res.Durable {
		t.Fatalf("Unban = %+v, %v", res, err)
	}
	if fw2.has("203.0.113.70") || len(fw2.nets) != 0 {
		t.Fatal("unban left the kernel elements")
	}
	if _, err := e.Unban(ctx, []netip.Prefix{pfx("203.0.113.70")}, "uid 0"); !errors.Is(err, ErrNotBanned) {
		t.Errorf("second unban = %v, want ErrNotBanned", err)
	}
	e.stop()

	// A kernel that still holds the element (the delete failed before a
	// crash) does not bring it back at start-up.
	fw2.elems[netip.MustParseAddr("203.0.113.70")] = 30 * time.Minute
	fw2.nets[pfx("198.51.100.0/24")] = 30 * time.Minute
	e = startEnforcer(t, dir, cfg, fw2, clock)
	if fw2.has("203.0.113.70") || len(fw2.nets) != 0 || len(e.Bans()) != 0 {
		t.Fatalf("start-up adopted unbanned elements: kernel %v %v, bans %v", fw2.elems, fw2.nets, e.Bans())
	}
	// The next real offence bans, as a first ban (no escalation).
	d := e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.70"), Rule: "worm"})
	if d.Verdict != policy.VerdictBan || d.Ban.Duration != cfg.BanFor {
		t.Errorf("offence after unban = %v for %v, want ban for %v", d.Verdict, d.Ban.Duration, cfg.BanFor)
	}
	waitFor(t, func() bool { return fw2.has("203.0.113.70") })
	var verdicts []string
	for _, ev := range e.Why(netip.MustParseAddr("203.0.113.70")).Events {
		verdicts = append(verdicts, ev.Verdict)
	}
	if want := []string{"manual ban", "unban", "ban"}; !slices.Equal(verdicts, want) {
		t.Errorf("history verdicts %v, want %v", verdicts, want)
	}
}

// TestManualBadInput: every bad argument is refused with its own error
// and changes nothing.
func TestManualBadInput(t *testing.T) {
	e := startEnforcer(t, t.TempDir(), DefaultConfig(), newRecordingFirewall(), nil)
	ctx := t.Context()
	if _, err := e.Ban(ctx, ManualBan{Net: pfx("192.0.2.0/26"), For: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mb   ManualBan
		want error
	}{
		{"everything", ManualBan{Net: pfx("0.0.0.0/0"), For: time.Hour}, ErrTooWide},
		{"wider than /24", ManualBan{Net: pfx("203.0.0.0/16"), For: time.Hour}, ErrTooWide},
		{"wider than /48", ManualBan{Net: pfx("2001:db8::/32"), For: time.Hour}, ErrTooWide},
		{"loopback", ManualBan{Net: pfx("127.0.0.1"), For: time.Hour}, ErrProtected},
		{"covers link-local", ManualBan{Net: pfx("fe80::/64"), For: time.Hour}, ErrProtected},
		{"zero duration", ManualBan{Net: pfx("203.0.113.5"), For: 0}, ErrBadDuration},
		{"over a year", ManualBan{Net: pfx("203.0.113.5"), For: 400 * 24 * time.Hour}, ErrBadDuration},
		{"overlaps", ManualBan{Net: pfx("192.0.2.0/24"), For: time.Hour}, ErrNetOverlap},
		{"invalid", ManualBan{For: time.Hour}, ErrTooWide},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.Ban(ctx, tc.mb); !errors.Is(err, tc.want) {
				t.Errorf("Ban(%v) = %v, want %v", tc.mb.Net, err, tc.want)
			}
		})
	}
	if _, err := e.Ban(ctx, ManualBan{Net: netip.MustParsePrefix("203.0.113.7/24"), For: time.Hour}); err == nil {
		t.Error("Ban(203.0.113.7/24) with host bits accepted")
	}
	if n := len(e.Bans()); n != 1 || len(e.fw.nets) != 1 || len(e.fw.elems) != 0 {
		t.Errorf("refused bans changed something: %d bans (want the one network), kernel %v %v", n, e.fw.elems, e.fw.nets)
	}
	if _, err := e.Disallow(ctx, []netip.Prefix{pfx("203.0.113.0/24")}, "uid 0"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("Disallow(unknown) = %v, want ErrNotAllowed", err)
	}
}

// TestAllowLiftsAndProtects: an allow lifts the bans it covers, protects
// from later offences across a restart, and disallow ends that.
func TestAllowLiftsAndProtects(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	e := startEnforcer(t, dir, cfg, newRecordingFirewall(), nil)
	ctx := t.Context()
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.9"), Rule: "worm"})
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("198.51.100.9"), Rule: "worm"})
	waitFor(t, func() bool { return e.fw.has("203.0.113.9") })
	res, err := e.Allow(ctx, store.Allow{Net: pfx("203.0.113.0/24"), Reason: "partner relay", By: "uid 0"})
	if err != nil || len(res.Lifted) != 1 || res.Lifted[0] != pfx("203.0.113.9") {
		t.Fatalf("Allow = %+v, %v; want 203.0.113.9 lifted", res, err)
	}
	if e.fw.has("203.0.113.9") || !e.fw.has("198.51.100.9") {
		t.Fatal("allow did not lift exactly the covered ban")
	}
	fw, clock := e.fw, e.clock
	e.stop()
	e = startEnforcer(t, dir, cfg, fw, clock)
	if d := e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.10"), Rule: "worm"}); d.Verdict != policy.VerdictNeverBlock {
		t.Errorf("offence inside the allow after a restart = %v, want never_block", d.Verdict)
	}
	if _, err := e.Ban(ctx, ManualBan{Net: pfx("203.0.113.11"), For: time.Hour}); !errors.Is(err, ErrProtected) {
		t.Errorf("manual ban inside an allow = %v, want ErrProtected", err)
	}
	if got := e.Allows(); len(got) != 1 || got[0].Reason != "partner relay" {
		t.Errorf("Allows() = %+v", got)
	}
	if _, err := e.Disallow(ctx, []netip.Prefix{pfx("203.0.113.0/24")}, "uid 0"); err != nil {
		t.Fatal(err)
	}
	e.stop()
	e = startEnforcer(t, dir, cfg, fw, clock)
	if d := e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.10"), Rule: "worm"}); d.Verdict != policy.VerdictBan {
		t.Errorf("offence after disallow and restart = %v, want ban", d.Verdict)
	}
}

// TestReconfigure: a reload's never_block lifts covered bans, its ports
// reach the firewall, and its ban_for applies to the next ban.
func TestReconfigure(t *testing.T) {
	cfg := DefaultConfig()
	e := startEnforcer(t, t.TempDir(), cfg, newRecordingFirewall(), nil)
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("203.0.113.9"), Rule: "worm"})
	waitFor(t, func() bool { return e.fw.has("203.0.113.9") })
	next := cfg
	next.NeverBlock = []netip.Prefix{pfx("203.0.113.0/28")}
	next.NFTables.Ports = []uint16{25, 2525}
	next.BanFor = 2 * time.Hour
	res, err := e.Reconfigure(t.Context(), next, map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}})
	if err != nil || len(res.Lifted) != 1 {
		t.Fatalf("Reconfigure = %+v, %v; want one ban lifted", res, err)
	}
	if e.fw.has("203.0.113.9") {
		t.Error("ban covered by the new never_block still in the kernel")
	}
	if !slices.Equal(e.fw.ports, []uint16{25, 2525}) {
		t.Errorf("kernel ports %v, want [25 2525]", e.fw.ports)
	}
	if d := e.Offend(matcher.Offense{Addr: netip.MustParseAddr("198.51.100.1"), Rule: "worm"}); d.Ban.Duration != 2*time.Hour {
		t.Errorf("ban after reload for %v, want 2h", d.Ban.Duration)
	}
}

// TestEventsBounded: the offence history keeps the newest per address
// and in all, and comes back after a restart.
func TestEventsBounded(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Events = EventsConfig{PerAddress: 3, Total: 5, MaxAge: time.Hour}
	e := startEnforcer(t, dir, cfg, newRecordingFirewall(), nil)
	a := netip.MustParseAddr("203.0.113.1")
	for i := range 5 {
		e.clock.add(time.Second)
		e.Offend(matcher.Offense{Addr: a, Rule: "worm", QueueID: string(rune('A' + i)), Host: "mx1", Text: "5.7.1 Worm"})
	}
	for i := range 4 {
		e.clock.add(time.Second)
		e.Offend(matcher.Offense{Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Rule: "worm"})
	}
	got := e.Why(a).Events
	var qids string
	for _, ev := range got {
		qids += ev.QueueID
	}
	// Per address: C, D, E; in all 5: the four others push out C, D.
	if qids != "E" {
		t.Errorf("kept queue IDs %q, want %q", qids, "E")
	}
	if err := e.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	fw, clock := e.fw, e.clock
	e.stop()
	e = startEnforcer(t, dir, cfg, fw, clock)
	got = e.Why(a).Events
	if len(got) != 1 || got[0].QueueID != "E" || got[0].Host != "mx1" || got[0].Text != "5.7.1 Worm" || got[0].Verdict == "" {
		t.Errorf("history after restart = %+v, want the one event E", got)
	}
	clock.add(2 * time.Hour)
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("192.0.2.1"), Rule: "worm"})
	if got := e.Why(a).Events; len(got) != 0 {
		t.Errorf("events older than max_age kept: %+v", got)
	}
}
