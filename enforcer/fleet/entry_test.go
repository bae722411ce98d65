package fleet

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/enforcer"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		op   enforcer.Op
		net  string
		want string
	}{
		{enforcer.OpBan, "203.0.113.5/32", "ban.203.0.113.5"},
		{enforcer.OpUnban, "2001:db8::1/128", "ban.2001_db8__1"},
		{enforcer.OpBan, "198.51.100.0/24", "ban.198.51.100.0/24"},
		{enforcer.OpAllow, "2001:db8:1::/48", "allow.2001_db8_1__/48"},
		{enforcer.OpDisallow, "192.0.2.7/32", "allow.192.0.2.7"},
	} {
		n := netip.MustParsePrefix(tc.net)
		key := keyOf(tc.op, n)
		if key != tc.want {
			t.Errorf("keyOf(%s, %v) = %q, want %q", tc.op, n, key, tc.want)
		}
		got, err := parseNetKey(key[strings.IndexByte(key, '.')+1:])
		if err != nil || got != n {
			t.Errorf("parseNetKey(%q) = %v, %v; want %v", key, got, err, n)
		}
	}
}

func TestDecodeEntry(t *testing.T) {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	until := now.Add(time.Hour)
	ban := `{"op":"ban","origin":"gw1","time":"2026-11-27T09:00:00Z","until":"2026-11-27T10:00:00Z","rule":"worm","hits":2,"bans":1}`
	for _, tc := range []struct {
		name, key, val string
		want           entry
		err            error
	}{
		{name: "ban", key: "ban.203.0.113.5", val: ban, want: entry{key: "ban.203.0.113.5", net: netip.MustParsePrefix("203.0.113.5/32"),
			val: value{Op: enforcer.OpBan, Origin: "gw1", Time: now, Until: until, Rule: "worm", Hits: 2, Bans: 1}}},
		{name: "network unban", key: "ban.2001_db8_1__/48", val: `{"op":"unban","origin":"gw3","time":"2026-11-27T09:00:00Z","until":"2026-11-27T10:00:00Z"}`,
			want: entry{key: "ban.2001_db8_1__/48", net: netip.MustParsePrefix("2001:db8:1::/48"), val: value{Op: enforcer.OpUnban, Origin: "gw3", Time: now, Until: until}}},
		{name: "heartbeat", key: "gw.gw2", val: `{"op":"peer","origin":"gw2","time":"2026-11-27T09:00:00Z"}`,
			want: entry{key: "gw.gw2", peer: "gw2", val: value{Op: opPeer, Origin: "gw2", Time: now}}},
		{name: "garbage", key: "ban.203.0.113.5", val: "\x00{{", err: ErrMalformed},
		{name: "two values", key: "ban.203.0.113.5", val: ban + ban, err: ErrMalformed},
		{name: "oversized", key: "ban.203.0.113.5", val: strings.Repeat(" ", maxValue+1), err: ErrOversized},
		{name: "allow on a ban key", key: "ban.203.0.113.5", val: strings.Replace(ban, `"ban"`, `"allow"`, 1), err: ErrMalformed},
		{name: "ban without until", key: "ban.203.0.113.5", val: `{"op":"ban","origin":"gw1","time":"2026-11-27T09:00:00Z"}`, err: ErrMalformed},
		{name: "no origin", key: "ban.203.0.113.5", val: strings.Replace(ban, `"gw1"`, `""`, 1), err: ErrMalformed},
		{name: "origin with dots", key: "ban.203.0.113.5", val: strings.Replace(ban, `"gw1"`, `"a.b"`, 1), err: ErrMalformed},
		{name: "negative hits", key: "ban.203.0.113.5", val: strings.Replace(ban, `"hits":2`, `"hits":-2`, 1), err: ErrMalformed},
		{name: "long reason", key: "ban.203.0.113.5", val: strings.Replace(ban, `"rule":"worm"`, `"reason":"`+strings.Repeat("x", maxReason+1)+`"`, 1), err: ErrMalformed},
		{name: "heartbeat of another", key: "gw.gw2", val: `{"op":"peer","origin":"gw1","time":"2026-11-27T09:00:00Z"}`, err: ErrMalformed},
		{name: "leading zeros", key: "ban.203.0.113.005", val: ban, err: ErrBadKey},
		{name: "host bits", key: "ban.198.51.100.1/24", val: ban, err: ErrBadKey},
		{name: "uncanonical IPv6", key: "ban.2001_0db8__1", val: ban, err: ErrBadKey},
		{name: "mapped IPv4", key: "ban.__ffff_203.0.113.5", val: ban, err: ErrBadKey},
		{name: "zone", key: "ban.fe80__1%eth0", val: ban, err: ErrBadKey},
		{name: "unknown prefix", key: "other.203.0.113.5", val: ban, err: ErrBadKey},
		{name: "not an address", key: "ban.nonsense", val: ban, err: ErrBadKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeEntry(tc.key, []byte(tc.val))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(entry{}), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("decodeEntry (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValueOvertakes(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	ban := func(at, until time.Duration) value {
		return value{Op: enforcer.OpBan, Time: t0.Add(at), Until: t0.Add(until)}
	}
	unban := value{Op: enforcer.OpUnban, Time: t0.Add(time.Minute), Until: t0.Add(time.Hour)}
	for _, tc := range []struct {
		name      string
		queued    value
		cur       value
		overtakes bool
	}{
		{"a newer ban", ban(2*time.Minute, time.Hour), unban, true},
		{"an older ban over a tombstone", ban(0, 2*time.Hour), unban, false},
		{"an older ban that ends later extends", ban(0, 2*time.Hour), ban(time.Minute, time.Hour), true},
		{"an older ban that ends sooner", ban(0, 30*time.Minute), ban(time.Minute, time.Hour), false},
		{"the same decision, published already", ban(0, time.Hour), ban(0, time.Hour), false},
		{"an older unban over a newer ban", value{Op: enforcer.OpUnban, Time: t0}, ban(time.Minute, time.Hour), false},
		{"over a garbage value", ban(0, time.Hour), value{}, true},
	} {
		if got := tc.queued.overtakes(tc.cur); got != tc.overtakes {
			t.Errorf("%s: overtakes = %v, want %v", tc.name, got, tc.overtakes)
		}
	}
}

func TestTTL(t *testing.T) {
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    value
		want time.Duration
	}{
		{value{Op: enforcer.OpBan, Until: now.Add(24 * time.Hour)}, 24 * time.Hour},
		{value{Op: enforcer.OpBan, Until: now.Add(-time.Hour)}, minTTL},
		{value{Op: enforcer.OpUnban, Until: now.Add(24 * time.Hour)}, 24 * time.Hour},
		{value{Op: enforcer.OpUnban, Until: now.Add(time.Minute)}, minTombstone},
		{value{Op: enforcer.OpAllow}, 0},
		{value{Op: enforcer.OpAllow, Until: now.Add(time.Hour)}, time.Hour},
		{value{Op: enforcer.OpDisallow}, minTombstone},
		{value{Op: opPeer}, peerTTL},
	} {
		if got := ttlOf(tc.v, now); got != tc.want {
			t.Errorf("ttlOf(%s until %v) = %v, want %v", tc.v.Op, tc.v.Until, got, tc.want)
		}
	}
}
