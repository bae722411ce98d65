package enforcer

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// pageEnforcer is an enforcer whose bans come from offenses of three
// rules (threshold 1) reported by one of three MX hosts, with no rate
// limit.
func pageEnforcer(tb testing.TB) *Enforcer {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.MaxNewBansPerSecond = 1 << 30
	rules := map[string]policy.RulePolicy{}
	for _, r := range pageRules {
		rules[r] = policy.RulePolicy{Threshold: 1, Window: time.Hour}
	}
	e, err := New(cfg, rules, newRecordingFirewall(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

var (
	pageRules = []string{"worm", "sasl", "relay"}
	pageHosts = []string{"mx1", "mx2", "mx3"}
)

// pageAddr is the i-th test address: IPv4 from 198.18.0.0/15 for even i
// (benchmark space, enough for 200k), IPv6 from 2001:db8::/32 for odd i.
func pageAddr(i int) netip.Addr {
	if i%2 == 0 {
		return netip.AddrFrom4([4]byte{198, 18 + byte(i>>17), byte(i >> 9), byte(i >> 1)})
	}
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
}

// fillBans bans n addresses through Offend; ban i has rule i%3 and
// host (i/3)%3.
func fillBans(tb testing.TB, e *Enforcer, n int) {
	tb.Helper()
	for i := range n {
		d := e.Offend(matcher.Offense{Addr: pageAddr(i), Rule: pageRules[i%3], Host: pageHosts[(i/3)%3]})
		if d.Verdict != policy.VerdictBan {
			tb.Fatalf("offense %d: verdict %v, want a ban", i, d.Verdict)
		}
	}
}

// pageSummary is what a test compares of a BansPage.
type pageSummary struct {
	Bans  []string
	Total int
	More  bool
	Next  string
}

func summarize(p BansPage) pageSummary {
	s := pageSummary{Bans: pageAddrs(p.Bans), Total: p.Total, More: p.More}
	if p.Next.IsValid() {
		s.Next = p.Next.String()
	}
	return s
}

func pageAddrs(bans []policy.Ban) []string {
	out := make([]string, 0, len(bans))
	for _, b := range bans {
		out = append(out, b.Addr.String())
	}
	return out
}

func TestBansPageFilters(t *testing.T) {
	e := pageEnforcer(t)
	for _, o := range []struct{ addr, rule, host string }{
		{"203.0.113.9", "worm", "mx1"},
		{"192.0.2.20", "sasl", "mx2"},
		{"192.0.2.3", "worm", "mx2"},
		{"2001:db8::7", "relay", "mx1"},
		{"2001:db8:1::5", "worm", "mx3"},
		{"198.51.100.200", "sasl", "mx1"},
	} {
		e.Offend(matcher.Offense{Addr: netip.MustParseAddr(o.addr), Rule: o.rule, Host: o.host})
	}
	// A second host reports 192.0.2.20: it is on both hosts' pages.
	e.Offend(matcher.Offense{Addr: netip.MustParseAddr("192.0.2.20"), Rule: "sasl", Host: "mx3"})
	now := time.Now()
	e.mu.Lock()
	// No API makes network bans or keeps expired ones yet: set them up as
	// the enforcer holds them.
	net := netip.MustParsePrefix("203.0.113.128/25")
	e.active[net.Addr()] = policy.Ban{Addr: net.Addr(), Net: net, Rule: "manual", Manual: true, Reason: "abuse desk", Start: now, Until: now.Add(time.Hour)}
	e.active[netip.MustParseAddr("192.0.2.1")] = policy.Ban{Addr: netip.MustParseAddr("192.0.2.1"), Rule: "worm", Hosts: []string{"mx1"}, Start: now.Add(-2 * time.Hour), Until: now.Add(-time.Hour)}
	e.mu.Unlock()

	all := []string{"192.0.2.3", "192.0.2.20", "198.51.100.200", "203.0.113.9", "203.0.113.128", "2001:db8::7", "2001:db8:1::5"}
	// The expired 192.0.2.1 is held until the sweep: counted, not listed.
	tests := []struct {
		name string
		q    BansQuery
		want pageSummary
	}{
		{name: "all, address order", q: BansQuery{Limit: 100}, want: pageSummary{all, 8, false, ""}},
		{name: "first page, short by the expired ban", q: BansQuery{Limit: 3}, want: pageSummary{all[:2], 8, true, "192.0.2.20"}},
		{name: "after a cursor", q: BansQuery{Limit: 3, After: netip.MustParseAddr("198.51.100.200")}, want: pageSummary{all[3:6], 8, true, "2001:db8::7"}},
		{name: "last page", q: BansQuery{Limit: 3, After: netip.MustParseAddr("2001:db8::7")}, want: pageSummary{all[6:], 8, false, ""}},
		{name: "cursor of a ban gone since", q: BansQuery{Limit: 2, After: netip.MustParseAddr("192.0.2.4")}, want: pageSummary{all[1:3], 8, true, "198.51.100.200"}},
		{name: "cursor past the end", q: BansQuery{Limit: 2, After: netip.MustParseAddr("2001:db8:ffff::")}, want: pageSummary{[]string{}, 8, false, ""}},
		{name: "count only", q: BansQuery{Limit: 0}, want: pageSummary{[]string{}, 8, true, ""}},
		{name: "rule", q: BansQuery{Limit: 100, Rule: "worm"}, want: pageSummary{[]string{"192.0.2.3", "203.0.113.9", "2001:db8:1::5"}, 4, false, ""}},
		{name: "unknown rule", q: BansQuery{Limit: 100, Rule: "wor"}, want: pageSummary{[]string{}, 0, false, ""}},
		{name: "host", q: BansQuery{Limit: 100, Host: "mx3"}, want: pageSummary{[]string{"192.0.2.20", "2001:db8:1::5"}, 2, false, ""}},
		{name: "host and rule", q: BansQuery{Limit: 100, Host: "mx2", Rule: "sasl"}, want: pageSummary{[]string{"192.0.2.20"}, 1, false, ""}},
		{name: "within a prefix, network ban overlapping", q: BansQuery{Limit: 100, Within: netip.MustParsePrefix("203.0.113.0/24")}, want: pageSummary{[]string{"203.0.113.9", "203.0.113.128"}, 2, false, ""}},
		{name: "within a single address inside a network ban", q: BansQuery{Limit: 100, Within: netip.MustParsePrefix("203.0.113.200/32")}, want: pageSummary{[]string{"203.0.113.128"}, 1, false, ""}},
		{name: "within an IPv6 prefix", q: BansQuery{Limit: 100, Within: netip.MustParsePrefix("2001:db8:1::/48")}, want: pageSummary{[]string{"2001:db8:1::5"}, 1, false, ""}},
		{name: "text", q: BansQuery{Limit: 100, Text: ".2."}, want: pageSummary{[]string{"192.0.2.3", "192.0.2.20"}, 3, false, ""}},
		{name: "text of IPv6", q: BansQuery{Limit: 100, Text: "db8::"}, want: pageSummary{[]string{"2001:db8::7"}, 1, false, ""}},
		{name: "text and rule, paged", q: BansQuery{Limit: 1, Text: "0", Rule: "sasl"}, want: pageSummary{[]string{"192.0.2.20"}, 2, true, "192.0.2.20"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, summarize(e.BansPage(tc.q))); diff != "" {
				t.Errorf("page (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("ban fields", func(t *testing.T) {
		p := e.BansPage(BansQuery{Limit: 1, Within: netip.MustParsePrefix("192.0.2.20/32")})
		if len(p.Bans) != 1 {
			t.Fatalf("bans = %v", p.Bans)
		}
		b := p.Bans[0]
		if diff := cmp.Diff([]string{"mx2", "mx3"}, b.Hosts); diff != "" || b.Rule != "sasl" || !b.Until.After(now) {
			t.Errorf("ban = %+v; hosts (-want +got):\n%s", b, diff)
		}
	})
}

// TestBansPageWalk walks every page of 10,000 bans, unfiltered and with
// filters and odd page sizes: each matching ban shows up exactly once, in
// address order, and the pages add up to the total.
func TestBansPageWalk(t *testing.T) {
	const n = 10_000
	e := pageEnforcer(t)
	fillBans(t, e, n)
	for _, tc := range []struct {
		name  string
		q     BansQuery
		match func(i int) bool
	}{
		{"all", BansQuery{Limit: 1000}, func(int) bool { return true }},
		{"rule", BansQuery{Limit: 97, Rule: "sasl"}, func(i int) bool { return i%3 == 1 }},
		{"host and rule", BansQuery{Limit: 13, Rule: "relay", Host: "mx3"}, func(i int) bool { return i%3 == 2 && (i/3)%3 == 2 }},
		{"IPv6 prefix", BansQuery{Limit: 500, Within: netip.MustParsePrefix("2001:db8::/32")}, func(i int) bool { return i%2 == 1 }},
		{"small pages", BansQuery{Limit: 3, Rule: "worm", Host: "mx1"}, func(i int) bool { return i%3 == 0 && (i/3)%3 == 0 }},
		{"text", BansQuery{Limit: 100, Text: ":1"}, func(i int) bool { return strings.Contains(pageAddr(i).String(), ":1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []netip.Addr
			for i := range n {
				if tc.match(i) {
					want = append(want, pageAddr(i))
				}
			}
			slices.SortFunc(want, netip.Addr.Compare)
			var got []netip.Addr
			q := tc.q
			for pages := 0; ; pages++ {
				p := e.BansPage(q)
				if p.Total != len(want) {
					t.Fatalf("page %d: total %d, want %d", pages, p.Total, len(want))
				}
				if len(p.Bans) > q.Limit {
					t.Fatalf("page %d: %d bans, limit %d", pages, len(p.Bans), q.Limit)
				}
				for _, b := range p.Bans {
					got = append(got, b.Addr)
				}
				if !p.More {
					break
				}
				if pages > n {
					t.Fatal("no end of pages")
				}
				q.After = p.Next
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("walked bans (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBansPageConcurrent pages while offenses keep adding bans: the
// pages stay in order and hold every ban that was there before the walk,
// whether the scan reads the addresses only or the bans. Run it with
// -race: the scan releases the lock between chunks.
func TestBansPageConcurrent(t *testing.T) {
	const before, during = 3 * scanChunk, 5000
	for _, q := range []BansQuery{{Limit: 700}, {Limit: 700, Rule: "worm"}} {
		t.Run(fmt.Sprintf("rule=%q", q.Rule), func(t *testing.T) {
			e := pageEnforcer(t)
			for i := range before {
				e.Offend(matcher.Offense{Addr: pageAddr(i), Rule: "worm", Host: "mx1"})
			}
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := range during {
					e.Offend(matcher.Offense{Addr: pageAddr(before + i), Rule: "worm", Host: "mx1"})
				}
			})
			seen := map[netip.Addr]bool{}
			var last netip.Addr
			for {
				p := e.BansPage(q)
				for _, b := range p.Bans {
					if last.IsValid() && b.Addr.Compare(last) <= 0 {
						t.Fatalf("%v after %v: out of order", b.Addr, last)
					}
					last = b.Addr
					seen[b.Addr] = true
				}
				if !p.More {
					break
				}
				q.After = p.Next
			}
			wg.Wait()
			for i := range before {
				if !seen[pageAddr(i)] {
					t.Errorf("ban %v present before the walk is missing from it", pageAddr(i))
				}
			}
			if got := e.BansPage(BansQuery{}).Total; got != before+during {
				t.Errorf("total after the walk = %d, want %d", got, before+during)
			}
		})
	}
}

// BenchmarkBansPage pages through 200,000 bans. chunk-µs is the time per
// op over the number of chunks: about how long the scan holds the
// enforcer lock at a time, which is what an Offend can wait for.
func BenchmarkBansPage(b *testing.B) {
	const n = 200_000
	e := pageEnforcer(b)
	fillBans(b, e, n)
	mid := pageAddr(n / 2)
	for _, bc := range []struct {
		name string
		q    BansQuery
	}{
		{"first-100", BansQuery{Limit: 100}},
		{"first-1000", BansQuery{Limit: 1000}},
		{"middle-1000", BansQuery{Limit: 1000, After: mid}},
		{"rule-host-1000", BansQuery{Limit: 1000, Rule: "worm", Host: "mx2"}},
		{"text-100", BansQuery{Limit: 100, Text: "db8::1"}},
		{"prefix-100", BansQuery{Limit: 100, Within: netip.MustParsePrefix("198.19.0.0/16")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p := e.BansPage(bc.q); p.Total == 0 {
					b.Fatal("empty page")
				}
			}
			chunks := (n + scanChunk - 1) / scanChunk
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(chunks), "chunk-µs")
		})
	}
}

// BenchmarkOffendWhilePaging measures what the ban path waits for while
// another goroutine pages through 200,000 bans without pause, against a
// baseline with nobody paging: each op is one Offend of a new address;
// p99-µs and max-µs are its 99th percentile and its longest (the max is
// mostly the garbage collector's and the machine's, as the baseline shows).
func BenchmarkOffendWhilePaging(b *testing.B) {
	for _, paging := range []bool{false, true} {
		b.Run(map[bool]string{false: "idle", true: "paging"}[paging], func(b *testing.B) {
			const n = 200_000
			e := pageEnforcer(b)
			fillBans(b, e, n)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if paging {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
							e.BansPage(BansQuery{Limit: 1000})
						}
					}
				})
			}
			lat := make([]time.Duration, 0, 1<<20)
			i := n
			for b.Loop() {
				start := time.Now()
				e.Offend(matcher.Offense{Addr: pageAddr(i), Rule: "worm", Host: "mx1"})
				lat = append(lat, time.Since(start))
				i++
			}
			close(stop)
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
		})
	}
}

func ExampleEnforcer_BansPage() {
	e, err := New(DefaultConfig(), map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}},
		newRecordingFirewall(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	for _, a := range []string{"203.0.113.7", "192.0.2.9", "2001:db8::1", "198.51.100.4"} {
		e.Offend(matcher.Offense{Addr: netip.MustParseAddr(a), Rule: "worm", Host: "mx1"})
	}
	q := BansQuery{Limit: 3}
	for {
		p := e.BansPage(q)
		fmt.Println(pageAddrs(p.Bans), p.Total, p.More)
		if !p.More {
			break
		}
		q.After = p.Next
	}
	// Output:
	// [192.0.2.9 198.51.100.4 203.0.113.7] 4 true
	// [2001:db8::1] 4 false
}

// TestBansPageSorted walks every page of each sort order and compares
// with the bans sorted independently: each ban once, in order, ties by
// address.
func TestBansPageSorted(t *testing.T) {
	const n = 3000
	e := pageEnforcer(t)
	clock := t0
	e.now = func() time.Time { return clock }
	for i := range n {
		// Hits from 1 to 4; starts a second apart, in a shuffled order.
		clock = t0.Add(time.Duration((i*7919)%n) * time.Second)
		for range 1 + i%4 {
			e.Offend(matcher.Offense{Addr: pageAddr(i), Rule: pageRules[i%3], Host: pageHosts[(i/3)%3]})
		}
	}
	clock = t0.Add(n * time.Second)
	all := e.Bans()
	for _, tc := range []struct {
		sort string
		desc bool
		key  func(b policy.Ban) int
	}{
		{SortHits, true, func(b policy.Ban) int { return b.Hits }},
		{SortRule, false, func(b policy.Ban) int { return slices.Index(pageRules, b.Rule) }},
		{SortStart, true, func(b policy.Ban) int { return int(b.Start.Unix()) }},
		{SortUntil, false, func(b policy.Ban) int { return int(b.Until.Unix()) }},
		{SortAddr, true, func(policy.Ban) int { return 0 }},
	} {
		t.Run(fmt.Sprintf("%s desc=%v", tc.sort, tc.desc), func(t *testing.T) {
			want := slices.Clone(all)
			slices.SortFunc(want, func(a, b policy.Ban) int {
				ka, kb := tc.key(a), tc.key(b)
				if tc.sort == SortRule {
					ka, kb = strings.Compare(a.Rule, b.Rule), 0
				}
				c := ka - kb
				if tc.desc {
					c = -c
				}
				if c != 0 {
					return c
				}
				if tc.sort == SortAddr && tc.desc {
					return b.Addr.Compare(a.Addr)
				}
				return a.Addr.Compare(b.Addr)
			})
			q := BansQuery{Limit: 111, Sort: tc.sort, Desc: tc.desc}
			var got []string
			for pages := 0; ; pages++ {
				p := e.BansPage(q)
				got = append(got, pageAddrs(p.Bans)...)
				if !p.More {
					break
				}
				if pages > n {
					t.Fatal("no end of pages")
				}
				q.After, q.AfterKey = p.Next, p.NextKey
			}
			if diff := cmp.Diff(pageAddrs(want), got); diff != "" {
				t.Errorf("walked bans (-want +got):\n%s", diff)
			}
		})
	}
}
