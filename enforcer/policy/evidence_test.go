package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/matcher"
)

// TestWeakEvidence: a weak rule's offense never bans an authenticated or
// established client; a strong rule's bans everyone; an untrusted
// client is banned by either.
func TestWeakEvidence(t *testing.T) {
	rules := map[string]RulePolicy{
		"worm-signature":        {Threshold: 1, Window: time.Hour, BanFor: 24 * time.Hour, Evidence: matcher.EvidenceStrong},
		"executable-attachment": {Threshold: 1, Window: time.Hour, BanFor: 24 * time.Hour, Evidence: matcher.EvidenceWeak},
		// A rule built without a strength is strong.
		"unspecified": {Threshold: 1, Window: time.Hour, BanFor: time.Hour},
	}
	since := t0.Add(-7 * 24 * time.Hour)
	const addr = "198.51.100.77"
	a := netip.MustParseAddr(addr)
	authenticated := func(o matcher.Offense) matcher.Offense { o.Authenticated = true; return o }
	established := func(o matcher.Offense) matcher.Offense {
		o.Established, o.Accepted, o.AcceptedSince = true, 312, since
		return o
	}
	// Accepted mail short of established is no trust.
	newcomer := func(o matcher.Offense) matcher.Offense { o.Accepted, o.AcceptedSince = 5, t0; return o }
	both := func(o matcher.Offense) matcher.Offense { return authenticated(established(o)) }
	ban := func(rule string, d time.Duration) Decision {
		return Decision{
			Verdict: VerdictBan, Ban: Ban{Addr: a, Rule: rule, Start: t0, Duration: d, Until: t0.Add(d), Hits: 1, Hosts: []string{"mx1"}},
			HitsInWindow: 1, Threshold: 1, Window: time.Hour,
		}
	}
	tests := []struct {
		name       string
		off        matcher.Offense
		want       Decision
		wantReason string
	}{
		{"weak, untrusted", off(addr, "executable-attachment", 0), ban("executable-attachment", 24*time.Hour), ""},
		{"weak, accepted mail short of established", newcomer(off(addr, "executable-attachment", 0)), ban("executable-attachment", 24*time.Hour), ""},
		{
			"weak, authenticated", authenticated(off(addr, "executable-attachment", 0)),
			Decision{Verdict: VerdictTrustedClient, Trust: Trust{Authenticated: true}}, "authenticated",
		},
		{
			"weak, established", established(off(addr, "executable-attachment", 0)),
			Decision{Verdict: VerdictTrustedClient, Trust: Trust{Established: true, Accepted: 312, Since: since}},
			"established: 312 accepted since 2026-11-19T18:00:00Z",
		},
		{
			"weak, both", both(off(addr, "executable-attachment", 0)),
			Decision{Verdict: VerdictTrustedClient, Trust: Trust{Authenticated: true, Established: true, Accepted: 312, Since: since}},
			"authenticated; established: 312 accepted since 2026-11-19T18:00:00Z",
		},
		{"strong, untrusted", off(addr, "worm-signature", 0), ban("worm-signature", 24*time.Hour), ""},
		{"strong, authenticated", authenticated(off(addr, "worm-signature", 0)), ban("worm-signature", 24*time.Hour), ""},
		{"strong, established", established(off(addr, "worm-signature", 0)), ban("worm-signature", 24*time.Hour), ""},
		{"unspecified strength, established", established(off(addr, "unspecified", 0)), ban("unspecified", time.Hour), ""},
		{
			"never-block comes first", established(off("127.0.0.2", "executable-attachment", 0)),
			Decision{Verdict: VerdictNeverBlock, Prefix: netip.MustParsePrefix("127.0.0.0/8")}, "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPolicy(DefaultConfig(), rules)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Observe(tt.off)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.IgnoreUnexported(Decision{}), cmpopts.IgnoreFields(Decision{}, "History")); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantReason, got.Trust.String()); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTrustedHitsNotHeld: a trusted client's weak hits are not
// remembered, so they neither add up towards a threshold once its
// standing is gone nor escalate a later ban.
func TestTrustedHitsNotHeld(t *testing.T) {
	p, err := NewPolicy(DefaultConfig(), map[string]RulePolicy{
		"attachment": {Threshold: 2, Window: time.Hour, BanFor: time.Hour, Evidence: matcher.EvidenceWeak},
	})
	if err != nil {
		t.Fatal(err)
	}
	const addr = "198.51.100.77"
	trusted := off(addr, "attachment", 0)
	trusted.Established, trusted.Accepted, trusted.AcceptedSince = true, 40, t0.Add(-72*time.Hour)
	var got []Verdict
	for range 5 {
		got = append(got, p.Observe(trusted).Verdict)
	}
	if _, ok := p.Offender(netip.MustParseAddr(addr)); ok {
		t.Error("a trusted client's weak hits made it an offender")
	}
	// Its standing forgotten (the sender table evicted it), two hits
	// within the window are needed as for anyone.
	got = append(got, p.Observe(off(addr, "attachment", time.Minute)).Verdict)
	d := p.Observe(off(addr, "attachment", 2*time.Minute))
	got = append(got, d.Verdict)
	want := []Verdict{VerdictTrustedClient, VerdictTrustedClient, VerdictTrustedClient, VerdictTrustedClient, VerdictTrustedClient, VerdictCounted, VerdictBan}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	if d.Ban.Duration != time.Hour || d.Ban.Hits != 2 {
		t.Errorf("ban = %+v, want a first ban of 1h after 2 hits", d.Ban)
	}
}
