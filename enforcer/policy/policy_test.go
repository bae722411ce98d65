package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/matcher"
)

var t0 = time.Date(2026, 11, 26, 18, 0, 0, 0, time.UTC)

func off(addr string, rule string, at time.Duration) matcher.Offense {
	return matcher.Offense{Addr: netip.MustParseAddr(addr), Rule: rule, Host: "mx1", Time: t0.Add(at)}
}

func TestPolicyObserve(t *testing.T) {
	rules := map[string]RulePolicy{
		"worm":  {Threshold: 1, Window: time.Hour, BanFor: 24 * time.Hour},
		"sasl":  {Threshold: 3, Window: 10 * time.Minute},
		"trial": {Threshold: 1, Window: time.Hour, DryRun: true},
	}
	tests := []struct {
		name string
		cfg  func(*Config)
		offs []matcher.Offense
		want []Verdict
	}{
		{
			name: "first hit bans at threshold 1",
			offs: []matcher.Offense{off("203.0.113.66", "worm", 0)},
			want: []Verdict{VerdictBan},
		},
		{
			name: "threshold reached inside the window",
			offs: []matcher.Offense{off("203.0.113.7", "sasl", 0), off("203.0.113.7", "sasl", time.Minute), off("203.0.113.7", "sasl", 2*time.Minute)},
			want: []Verdict{VerdictCounted, VerdictCounted, VerdictBan},
		},
		{
			name: "hits spread wider than the window do not ban",
			offs: []matcher.Offense{off("203.0.113.7", "sasl", 0), off("203.0.113.7", "sasl", 6*time.Minute), off("203.0.113.7", "sasl", 12*time.Minute), off("203.0.113.7", "sasl", 18*time.Minute)},
			want: []Verdict{VerdictCounted, VerdictCounted, VerdictCounted, VerdictCounted},
		},
		{
			name: "hits of different addresses do not add up",
			offs: []matcher.Offense{off("203.0.113.7", "sasl", 0), off("203.0.113.8", "sasl", 0), off("203.0.113.9", "sasl", 0)},
			want: []Verdict{VerdictCounted, VerdictCounted, VerdictCounted},
		},
		{
			name: "re-offence while banned extends",
			offs: []matcher.Offense{off("2001:db8:66::66", "worm", 0), off("2001:db8:66::66", "worm", time.Hour)},
			want: []Verdict{VerdictBan, VerdictExtend},
		},
		{
			name: "after expiry a new offence is a new ban",
			offs: []matcher.Offense{off("198.51.100.9", "worm", 0), off("198.51.100.9", "worm", 25*time.Hour)},
			want: []Verdict{VerdictBan, VerdictBan},
		},
		{
			name: "built-in never-block",
			offs: []matcher.Offense{off("127.0.0.1", "worm", 0), off("::1", "worm", 0), off("fe80::1", "worm", 0), off("::ffff:127.0.0.2", "worm", 0)},
			want: []Verdict{VerdictNeverBlock, VerdictNeverBlock, VerdictNeverBlock, VerdictNeverBlock},
		},
		{
			name: "configured never-block",
			cfg:  func(c *Config) { c.NeverBlock = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")} },
			offs: []matcher.Offense{off("198.51.100.25", "worm", 0), off("198.51.101.25", "worm", 0)},
			want: []Verdict{VerdictNeverBlock, VerdictBan},
		},
		{
			name: "dry-run rule",
			offs: []matcher.Offense{off("203.0.113.66", "trial", 0)},
			want: []Verdict{VerdictDryRun},
		},
		{
			name: "unknown rule",
			offs: []matcher.Offense{off("203.0.113.66", "gone", 0)},
			want: []Verdict{VerdictUnknownRule},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			p, err := NewPolicy(cfg, rules)
			if err != nil {
				t.Fatal(err)
			}
			var got []Verdict
			for _, o := range tt.offs {
				got = append(got, p.Observe(o).Verdict)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyBanDuration(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BanFor = 2 * time.Hour
	p, err := NewPolicy(cfg, map[string]RulePolicy{
		"own":     {Threshold: 1, Window: time.Hour, BanFor: 30 * time.Minute},
		"default": {Threshold: 1, Window: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := []Ban{p.Observe(off("203.0.113.1", "own", 0)).Ban, p.Observe(off("::ffff:203.0.113.2", "default", 0)).Ban}
	want := []Ban{
		{Addr: netip.MustParseAddr("203.0.113.1"), Rule: "own", Start: t0, Duration: 30 * time.Minute, Until: t0.Add(30 * time.Minute), Hits: 1, Hosts: []string{"mx1"}},
		{Addr: netip.MustParseAddr("203.0.113.2"), Rule: "default", Start: t0, Duration: 2 * time.Hour, Until: t0.Add(2 * time.Hour), Hits: 1, Hosts: []string{"mx1"}},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("bans (-want +got):\n%s", diff)
	}
}

func TestPolicyOffenderBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.OffenderCacheSize = 100
	p, err := NewPolicy(cfg, map[string]RulePolicy{"sasl": {Threshold: 5, Window: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10_000 {
		a := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		p.Observe(matcher.Offense{Addr: a, Rule: "sasl", Time: t0, Host: "mx1"})
	}
	remembered := 0
	for i := range 10_000 {
		if _, ok := p.Offender(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})); ok {
			remembered++
		}
	}
	if remembered != 100 {
		t.Errorf("offenders remembered = %d, want 100", remembered)
	}
	o, ok := p.Offender(netip.AddrFrom4([4]byte{203, 0, 39, 15})) // the last one, i = 9999
	if !ok || o.Hits != 1 || o.LastRule != "sasl" || !cmp.Equal(o.Hosts, []string{"mx1"}) {
		t.Errorf("last offender = %+v, %v", o, ok)
	}
}
