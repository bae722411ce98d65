//go:build linux

package nft

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/wormgate/wormgate/enforcer"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestIntervals(t *testing.T) {
	start := func(a string, d time.Duration) nftables.SetElement {
		return nftables.SetElement{Key: addr(a).AsSlice(), Expires: d}
	}
	end := func(a string) nftables.SetElement {
		return nftables.SetElement{Key: addr(a).AsSlice(), IntervalEnd: true}
	}
	for _, tc := range []struct {
		name  string
		elems []nftables.SetElement
		want  []string
	}{
		{"as the kernel dumps them, last first", []nftables.SetElement{
			end("203.0.114.0"), start("203.0.113.0", time.Hour), end("192.0.3.0"), start("192.0.2.0", time.Minute),
		}, []string{"192.0.2.0/24 1m0s", "203.0.113.0/24 1h0m0s"}},
		{"touching intervals", []nftables.SetElement{
			start("192.0.3.0", time.Hour), end("192.0.4.0"), end("192.0.3.0"), start("192.0.2.0", time.Hour),
		}, []string{"192.0.2.0/24 1h0m0s", "192.0.3.0/24 1h0m0s"}},
		{"end left behind by an expired interval, and nft's leading end", []nftables.SetElement{
			end("0.0.0.0"), end("198.51.101.0"), start("203.0.113.0", time.Hour), end("203.0.114.0"),
		}, []string{"203.0.113.0/24 1h0m0s"}},
		{"up to the last address", []nftables.SetElement{start("255.255.255.0", time.Hour)},
			[]string{"255.255.255.0/24 1h0m0s"}},
		{"a range that is no prefix", []nftables.SetElement{start("198.51.100.1", 0), end("198.51.100.7")},
			[]string{"198.51.100.1/32 0s", "198.51.100.2/31 0s", "198.51.100.4/31 0s", "198.51.100.6/32 0s"}},
		{"ipv6", []nftables.SetElement{start("2001:db8::", time.Hour), end("2001:db8:1::")},
			[]string{"2001:db8::/48 1h0m0s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ivs, err := intervals(tc.elems)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, iv := range ivs {
				for _, p := range prefixes(iv.first, iv.last) {
					got = append(got, p.String()+" "+iv.expires.String())
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("intervals (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := intervals([]nftables.SetElement{{Key: []byte{1, 2, 3}}}); err == nil {
		t.Error("intervals of a 3-byte key: no error")
	}
}

// TestNFTablesNets: networks block real packets for their timeout; the
// kernel refuses overlaps, which come back as ErrOverlap; an expired
// network leaves its end element behind without harm; DeleteNets removes
// exactly what was added.
func TestNFTablesNets(t *testing.T) {
	gw, f, dial := newLab(t, enforcer.NFTablesConfig{}, "25", "80")
	ctx := t.Context()
	list := func() []string {
		t.Helper()
		elems, err := f.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var out []string
		for _, e := range elems {
			if e.Net.IsValid() {
				if e.Addr != e.Net.Addr() {
					t.Errorf("List: Addr %v of network %v", e.Addr, e.Net)
				}
				out = append(out, e.Net.String())
			} else {
				out = append(out, e.Addr.String())
			}
		}
		return out
	}
	const ban = 3 * time.Second
	added := time.Now()
	err := f.Add(ctx, []enforcer.Element{
		{Net: pfx("192.0.2.64/26"), Timeout: ban},
		{Net: pfx("2001:db8::/64"), Timeout: ban},
		{Net: pfx("198.51.100.0/24"), Timeout: time.Hour},
		{Net: pfx("255.255.255.0/24"), Timeout: time.Hour},
		{Net: pfx("203.0.113.9/32"), Timeout: time.Hour}, // one address: a host
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	want := []string{"192.0.2.64/26", "198.51.100.0/24", "203.0.113.9", "255.255.255.0/24", "2001:db8::/64"}
	if diff := cmp.Diff(want, list()); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	for _, target := range []string{"192.0.2.1:25", "[2001:db8::1]:25"} {
		dropped(t, dial, target)
	}
	if err := dial("192.0.2.1:80"); err != nil {
		t.Errorf("banned network cannot reach the unfiltered port: %v", err)
	}

	for _, p := range []string{"192.0.2.0/24", "192.0.2.96/27", "192.0.2.0/25", "2001:db8::/48"} {
		if err := f.Add(ctx, []enforcer.Element{{Net: pfx(p), Timeout: time.Hour}}); !errors.Is(err, enforcer.ErrOverlap) {
			t.Errorf("Add(%s) over 192.0.2.64/26 and 2001:db8::/64 = %v, want %v", p, err, enforcer.ErrOverlap)
		}
	}
	// Touching is no overlap; the same network again is a refresh.
	err = f.Add(ctx, []enforcer.Element{
		{Net: pfx("192.0.2.128/26"), Timeout: time.Hour},
		{Net: pfx("198.51.100.0/24"), Timeout: 2 * time.Hour, Refresh: true},
	})
	if err != nil {
		t.Fatalf("Add touching and again: %v", err)
	}
	elems, err := f.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range elems {
		if e.Net == pfx("198.51.100.0/24") && e.Timeout < 119*time.Minute {
			t.Errorf("198.51.100.0/24 after a refresh to 2h: %v left", e.Timeout)
		}
	}

	// Expiry: the packets pass again, the networks leave List, and a
	// network over what was left behind can be added.
	for dial("192.0.2.1:25") != nil {
		if time.Since(added) > 2*ban {
			t.Fatalf("192.0.2.64/26 still blocks %v after a %v ban", time.Since(added), ban)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if since := time.Since(added); since < ban-500*time.Millisecond {
		t.Errorf("network ban lifted after %v, want about %v", since, ban)
	}
	time.Sleep(time.Until(added.Add(ban + 100*time.Millisecond)))
	if err := dial("[2001:db8::1]:25"); err != nil {
		t.Errorf("2001:db8::/64 still blocks after its timeout: %v", err)
	}
	want = []string{"192.0.2.128/26", "198.51.100.0/24", "203.0.113.9", "255.255.255.0/24"}
	if diff := cmp.Diff(want, list()); diff != "" {
		t.Errorf("List after expiry (-want +got):\n%s", diff)
	}
	if err := f.Add(ctx, []enforcer.Element{{Net: pfx("192.0.2.0/25"), Timeout: time.Hour}, {Net: pfx("2001:db8::/48"), Timeout: time.Hour}}); err != nil {
		t.Fatalf("Add over expired networks: %v", err)
	}
	for _, target := range []string{"192.0.2.1:25", "[2001:db8::1]:25"} {
		dropped(t, dial, target)
	}

	// DeleteNets removes networks as they were added, and addresses given
	// as one-address prefixes; anything else is not an error and changes
	// nothing.
	err = f.DeleteNets(ctx, []netip.Prefix{
		pfx("192.0.2.0/25"), pfx("2001:db8::/48"), pfx("203.0.113.9/32"),
		pfx("198.51.100.0/25"), // part of a network
		pfx("198.0.0.0/8"),     // covers one
		pfx("10.0.0.0/8"),      // absent
	})
	if err != nil {
		t.Fatalf("DeleteNets: %v", err)
	}
	want = []string{"192.0.2.128/26", "198.51.100.0/24", "255.255.255.0/24"}
	if diff := cmp.Diff(want, list()); diff != "" {
		t.Errorf("List after DeleteNets (-want +got):\n%s", diff)
	}
	if err := f.DeleteNets(ctx, []netip.Prefix{{}}); !errors.Is(err, enforcer.ErrInvalidElement) {
		t.Errorf("DeleteNets(invalid) = %v, want %v", err, enforcer.ErrInvalidElement)
	}

	// Restore replaces the networks too.
	if err := f.Restore(ctx, []enforcer.Element{{Net: pfx("203.0.113.0/24"), Timeout: time.Hour}}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if diff := cmp.Diff([]string{"203.0.113.0/24"}, list()); diff != "" {
		t.Errorf("List after Restore (-want +got):\n%s", diff)
	}
	err = f.Restore(ctx, []enforcer.Element{{Net: pfx("203.0.113.0/24"), Timeout: time.Hour}, {Net: pfx("203.0.113.128/25"), Timeout: time.Hour}})
	if !errors.Is(err, enforcer.ErrOverlap) {
		t.Errorf("Restore of overlapping networks = %v, want %v", err, enforcer.ErrOverlap)
	}
	if diff := cmp.Diff([]string{"203.0.113.0/24"}, list()); diff != "" {
		t.Errorf("List after a failed Restore (-want +got):\n%s", diff)
	}
	// A range added by hand that is no prefix comes back as prefixes.
	gw.Run(t, "nft", "add", "element", "inet", "wormgate", "blocked4_net", "{ 198.51.100.1-198.51.100.6 }")
	want = []string{"198.51.100.1", "198.51.100.2/31", "198.51.100.4/31", "198.51.100.6", "203.0.113.0/24"}
	if diff := cmp.Diff(want, list()); diff != "" {
		t.Errorf("List with a range added by hand (-want +got):\n%s", diff)
	}
}
