package policy

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPolicyEscalationAndExtension(t *testing.T) {
	type step struct {
		at      time.Duration
		verdict Verdict
		banFor  time.Duration
	}
	tests := []struct {
		name   string
		factor float64
		max    time.Duration
		rule   RulePolicy
		steps  []step
	}{
		{
			name: "doubles per earlier ban across expiries, capped", factor: 2, max: 5 * time.Hour,
			rule: RulePolicy{Threshold: 1, Window: time.Minute, BanFor: time.Hour},
			steps: []step{
				{0, VerdictBan, time.Hour},
				{2 * time.Hour, VerdictBan, 2 * time.Hour},
				{5 * time.Hour, VerdictBan, 4 * time.Hour},
				{10 * time.Hour, VerdictBan, 5 * time.Hour},
				{16 * time.Hour, VerdictBan, 5 * time.Hour},
			},
		},
		{
			name: "re-offence while banned extends at the same level", factor: 2, max: 24 * time.Hour,
			rule: RulePolicy{Threshold: 1, Window: time.Minute, BanFor: time.Hour},
			steps: []step{
				{0, VerdictBan, time.Hour},
				{30 * time.Minute, VerdictExtend, time.Hour},
				{80 * time.Minute, VerdictExtend, time.Hour},
				{3 * time.Hour, VerdictBan, 2 * time.Hour},
				{4 * time.Hour, VerdictExtend, 2 * time.Hour},
			},
		},
		{
			name: "factor 1 never escalates", factor: 1, max: 24 * time.Hour,
			rule: RulePolicy{Threshold: 1, Window: time.Minute, BanFor: time.Hour},
			steps: []step{
				{0, VerdictBan, time.Hour},
				{2 * time.Hour, VerdictBan, time.Hour},
				{4 * time.Hour, VerdictBan, time.Hour},
			},
		},
		{
			name: "a rule's longer ban_for is not shortened by the cap", factor: 2, max: time.Hour,
			rule: RulePolicy{Threshold: 1, Window: time.Minute, BanFor: 3 * time.Hour},
			steps: []step{
				{0, VerdictBan, 3 * time.Hour},
				{4 * time.Hour, VerdictBan, 3 * time.Hour},
			},
		},
		{
			name: "threshold and window apply to every ban", factor: 2, max: 24 * time.Hour,
			rule: RulePolicy{Threshold: 2, Window: 10 * time.Minute, BanFor: time.Hour},
			steps: []step{
				{0, VerdictCounted, 0},
				{11 * time.Minute, VerdictCounted, 0},
				{12 * time.Minute, VerdictBan, time.Hour},
				{3 * time.Hour, VerdictCounted, 0},
				{3*time.Hour + time.Minute, VerdictBan, 2 * time.Hour},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.EscalationFactor, cfg.MaxBanFor, cfg.BanFor = tc.factor, tc.max, time.Hour
			p, err := NewPolicy(cfg, map[string]RulePolicy{"r": tc.rule})
			if err != nil {
				t.Fatal(err)
			}
			var want, got []step
			for _, s := range tc.steps {
				want = append(want, s)
				d := p.Observe(off("203.0.113.5", "r", s.at))
				got = append(got, step{s.at, d.Verdict, d.Ban.Duration})
			}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(step{})); diff != "" {
				t.Errorf("decisions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyEscalationForgottenWithOffender(t *testing.T) {
	cfg := DefaultConfig()
	cfg.OffenderCacheSize = 1
	p, err := NewPolicy(cfg, map[string]RulePolicy{"r": {Threshold: 1, Window: time.Minute, BanFor: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	p.Observe(off("203.0.113.5", "r", 0))
	p.Observe(off("203.0.113.6", "r", time.Minute)) // evicts .5
	if d := p.Observe(off("203.0.113.5", "r", 3*time.Hour)); d.Ban.Duration != time.Hour {
		t.Errorf("ban of a forgotten offender = %v, want the base 1h", d.Ban.Duration)
	}
}
