package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/matcher"
)

// TestDecisionExplains checks what a Decision says it was decided on: the
// numbers `wormgate check --explain` prints come from here and nowhere
// else.
func TestDecisionExplains(t *testing.T) {
	rules := map[string]RulePolicy{
		"sasl":  {Threshold: 5, Window: 10 * time.Minute, BanFor: time.Hour},
		"trial": {Threshold: 2, Window: time.Hour, BanFor: 3 * time.Hour, DryRun: true},
	}
	const addr = "203.0.113.7"
	a := netip.MustParseAddr(addr)
	sasl := func(at ...time.Duration) []matcher.Offense {
		var offs []matcher.Offense
		for _, d := range at {
			offs = append(offs, off(addr, "sasl", d))
		}
		return offs
	}
	ban := func(rule string, at, dur time.Duration, hits int) Ban {
		return Ban{Addr: a, Rule: rule, Start: t0.Add(at), Duration: dur, Until: t0.Add(at + dur), Hits: hits, Hosts: []string{"mx1"}}
	}
	tests := []struct {
		name string
		offs []matcher.Offense
		// want is the last offense's decision.
		want Decision
	}{
		{
			name: "threshold not reached: 2 of 5 in 10m",
			offs: sasl(0, time.Minute),
			want: Decision{Verdict: VerdictCounted, HitsInWindow: 2, Threshold: 5, Window: 10 * time.Minute},
		},
		{
			name: "hits that left the window no longer count",
			offs: sasl(0, 6*time.Minute, 12*time.Minute),
			want: Decision{Verdict: VerdictCounted, HitsInWindow: 2, Threshold: 5, Window: 10 * time.Minute},
		},
		{
			name: "threshold reached",
			offs: sasl(0, time.Minute, 2*time.Minute, 3*time.Minute, 4*time.Minute),
			want: Decision{
				Verdict: VerdictBan, Ban: ban("sasl", 4*time.Minute, time.Hour, 5),
				HitsInWindow: 5, Threshold: 5, Window: 10 * time.Minute,
			},
		},
		{
			name: "re-offence while banned extends; the count stops at the threshold",
			offs: sasl(0, time.Minute, 2*time.Minute, 3*time.Minute, 4*time.Minute, 5*time.Minute),
			want: Decision{
				Verdict: VerdictExtend, Ban: ban("sasl", 5*time.Minute, time.Hour, 6),
				HitsInWindow: 5, Threshold: 5, Window: 10 * time.Minute,
			},
		},
		{
			name: "never-block is decided before anything is counted",
			offs: []matcher.Offense{off("127.0.0.2", "sasl", 0)},
			want: Decision{Verdict: VerdictNeverBlock, Prefix: netip.MustParsePrefix("127.0.0.0/8")},
		},
		{
			name: "dry-run says what it would have banned",
			offs: []matcher.Offense{off(addr, "trial", 0), off(addr, "trial", time.Minute)},
			want: Decision{
				Verdict: VerdictDryRun, Ban: ban("trial", time.Minute, 3*time.Hour, 2),
				HitsInWindow: 2, Threshold: 2, Window: time.Hour,
			},
		},
		{
			name: "unknown rule",
			offs: []matcher.Offense{off(addr, "gone", 0)},
			want: Decision{Verdict: VerdictUnknownRule},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPolicy(DefaultConfig(), rules)
			if err != nil {
				t.Fatal(err)
			}
			var got Decision
			for _, o := range tt.offs {
				got = p.Observe(o)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.IgnoreUnexported(Decision{}), cmpopts.IgnoreFields(Decision{}, "History")); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerdictText(t *testing.T) {
	var got []string
	for v := VerdictCounted; v <= VerdictTrustedClient+1; v++ {
		b, err := v.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(b))
	}
	want := []string{"counted", "ban", "extend", "never_block", "dry_run", "unknown_rule", "trusted_client", "verdict(7)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdict names (-want +got):\n%s", diff)
	}
}

// TestDecisionHistory: a ban's Decision carries the offender's durable
// part as it stands after the ban, which the enforcer records.
func TestDecisionHistory(t *testing.T) {
	p, err := NewPolicy(DefaultConfig(), map[string]RulePolicy{"worm": {Threshold: 1, Window: time.Hour, BanFor: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	d1 := p.Observe(off("203.0.113.7", "worm", 0))
	d2 := p.Observe(off("203.0.113.7", "worm", 2*time.Hour))
	want := History{Addr: netip.MustParseAddr("203.0.113.7"), Hits: 2, Bans: 2, FirstSeen: t0, LastSeen: t0.Add(2 * time.Hour), BannedUntil: t0.Add(4 * time.Hour)}
	if diff := cmp.Diff(want, d2.History, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("second ban's History (-want +got):\n%s", diff)
	}
	if d1.History.Bans != 1 || d1.History.BannedUntil != t0.Add(time.Hour) {
		t.Errorf("first ban's History = %+v", d1.History)
	}
}
