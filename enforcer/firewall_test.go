package enforcer

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestElementNormalize(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		in   Element
		want Element
		err  error
	}{
		{"address", Element{Addr: a("192.0.2.1"), Timeout: time.Hour, Refresh: true},
			Element{Addr: a("192.0.2.1"), Timeout: time.Hour, Refresh: true}, nil},
		{"4in6, zone, sub-millisecond", Element{Addr: a("::ffff:192.0.2.1"), Timeout: 1500 * time.Microsecond},
			Element{Addr: a("192.0.2.1"), Timeout: 2 * time.Millisecond}, nil},
		{"at least 1 ms", Element{Addr: a("fe80::1%eth0"), Timeout: time.Nanosecond},
			Element{Addr: a("fe80::1"), Timeout: time.Millisecond}, nil},
		{"network, masked, Addr ignored", Element{Addr: a("198.51.100.1"), Net: p("203.0.113.77/24"), Timeout: time.Hour},
			Element{Addr: a("203.0.113.0"), Net: p("203.0.113.0/24"), Timeout: time.Hour}, nil},
		{"4in6 network", Element{Net: p("::ffff:203.0.113.0/120"), Timeout: time.Hour},
			Element{Addr: a("203.0.113.0"), Net: p("203.0.113.0/24"), Timeout: time.Hour}, nil},
		{"ipv6 network", Element{Net: p("2001:db8:1:2::/48"), Timeout: time.Hour},
			Element{Addr: a("2001:db8:1::"), Net: p("2001:db8:1::/48"), Timeout: time.Hour}, nil},
		{"network of one address is an address", Element{Net: p("2001:db8::7/128"), Timeout: time.Hour},
			Element{Addr: a("2001:db8::7"), Timeout: time.Hour}, nil},
		{"4in6 network of one address", Element{Net: p("::ffff:192.0.2.9/128"), Timeout: time.Hour},
			Element{Addr: a("192.0.2.9"), Timeout: time.Hour}, nil},
		{"zero address", Element{Timeout: time.Hour}, Element{}, ErrInvalidElement},
		{"no timeout", Element{Addr: a("192.0.2.1")}, Element{}, ErrInvalidElement},
		{"negative timeout", Element{Net: p("192.0.2.0/24"), Timeout: -time.Second}, Element{}, ErrInvalidElement},
		{"invalid prefix", Element{Net: netip.PrefixFrom(a("192.0.2.0"), 33), Timeout: time.Hour}, Element{}, ErrInvalidElement},
		{"every address", Element{Net: p("0.0.0.0/0"), Timeout: time.Hour}, Element{}, ErrInvalidElement},
		{"every IPv4 address as 4in6", Element{Net: p("::ffff:0.0.0.0/96"), Timeout: time.Hour}, Element{}, ErrInvalidElement},
		{"every IPv6 address", Element{Net: p("::/0"), Timeout: time.Hour}, Element{}, ErrInvalidElement},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.Normalize()
			if !errors.Is(err, tc.err) {
				t.Fatalf("Normalize(%+v) error = %v, want %v", tc.in, err, tc.err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
				cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
				t.Errorf("Normalize(%+v) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}
