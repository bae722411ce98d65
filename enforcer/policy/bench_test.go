package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/wormgate/wormgate/matcher"
)

// BenchmarkObserve is one offense of a known address: what every line of
// a replay that matches costs the policy. Its allocations guard the
// Decision, which is returned by value and must not add any.
func BenchmarkObserve(b *testing.B) {
	p, err := NewPolicy(DefaultConfig(), map[string]RulePolicy{"sasl": {Threshold: 5, Window: 10 * time.Minute}})
	if err != nil {
		b.Fatal(err)
	}
	o := matcher.Offense{Addr: netip.MustParseAddr("203.0.113.7"), Rule: "sasl", Host: "mx1", Time: t0}
	b.ReportAllocs()
	for b.Loop() {
		o.Time = o.Time.Add(time.Second)
		if d := p.Observe(o); d.Verdict == VerdictUnknownRule {
			b.Fatal(d.Verdict)
		}
	}
}

// TestObserveAllocs: a Decision with everything --explain prints costs no
// allocation; only the bounded hit list is (rarely) regrown.
func TestObserveAllocs(t *testing.T) {
	p, err := NewPolicy(DefaultConfig(), map[string]RulePolicy{"sasl": {Threshold: 5, Window: 10 * time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	o := matcher.Offense{Addr: netip.MustParseAddr("203.0.113.7"), Rule: "sasl", Host: "mx1", Time: t0}
	p.Observe(o)
	if a := testing.AllocsPerRun(1000, func() {
		o.Time = o.Time.Add(time.Second)
		p.Observe(o)
	}); a > 0 {
		t.Errorf("Observe allocates %v times per offense, want 0", a)
	}
}
