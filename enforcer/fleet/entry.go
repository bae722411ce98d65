package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/wormgate/wormgate/enforcer"
)

// Why an entry of the bucket is refused before it reaches the enforcer;
// each is a reason label of wormgate_fleet_rejected_total.
var (
	// ErrOversized: a value longer than maxValue.
	ErrOversized = errors.New("oversized")
	// ErrBadKey: a key that names no address or network, or not in its
	// one canonical form.
	ErrBadKey = errors.New("bad key")
	// ErrMalformed: a value that is not a decision.
	ErrMalformed = errors.New("malformed")
)

// maxValue bounds a value; a decision is about 200 bytes.
const maxValue = 1024

// Bounds of a value's texts.
const (
	maxRule   = 64
	maxReason = 512
	maxBy     = 128
)

// Key prefixes: what a key's first token says it holds.
const (
	banPrefix   = "ban."
	allowPrefix = "allow."
	peerPrefix  = "gw."
)

// value is what one key holds: the latest decision about it.
type value struct {
	Op     enforcer.Op `json:"op"`
	Origin string      `json:"origin"`
	Time   time.Time   `json:"time"`
	Until  time.Time   `json:"until,omitzero"`
	Rule   string      `json:"rule,omitempty"`
	Reason string      `json:"reason,omitempty"`
	By     string      `json:"by,omitempty"`
	Hits   int         `json:"hits,omitempty"`
	Bans   int         `json:"bans,omitempty"`
	Manual bool        `json:"manual,omitempty"`
}

// opPeer is the op of a heartbeat.
const opPeer enforcer.Op = "peer"

// netToken writes an address or network as a key token: NATS keys
// cannot hold ':', so IPv6's colons become '_'; a network keeps its
// "/bits". IPv4 dots make more tokens, which keys allow.
func netToken(n netip.Prefix) string {
	s := n.Addr().String()
	if !n.IsSingleIP() {
		s = n.String()
	}
	return strings.ReplaceAll(s, ":", "_")
}

// keyOf is the key of a decision.
func keyOf(op enforcer.Op, n netip.Prefix) string {
	if op == enforcer.OpAllow || op == enforcer.OpDisallow {
		return allowPrefix + netToken(n)
	}
	return banPrefix + netToken(n)
}

// parseNetKey reads the address or network of a ban. or allow. key; only
// the canonical form that keyOf writes is accepted, so that one address
// has one key.
func parseNetKey(rest string) (netip.Prefix, error) {
	s := strings.ReplaceAll(rest, "_", ":")
	var n netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: %q", ErrBadKey, rest)
		}
		n = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: %q", ErrBadKey, rest)
		}
		n = netip.PrefixFrom(a, a.BitLen())
	}
	if n.Addr().Zone() != "" || n.Addr().Is4In6() || n.Masked() != n || netToken(n) != rest {
		return netip.Prefix{}, fmt.Errorf("%w: %q is not canonical", ErrBadKey, rest)
	}
	return n, nil
}

// entry is one decoded key of the bucket.
type entry struct {
	key string
	// net is the address or network (ban and allow keys).
	net netip.Prefix
	// peer is the gateway a heartbeat is from.
	peer string
	val  value
}

// decodeEntry reads and checks one key and its value. It never trusts the
// bucket: whoever can write to NATS may write anything.
func decodeEntry(key string, data []byte) (entry, error) {
	if len(data) > maxValue {
		return entry{}, fmt.Errorf("%w: %d bytes (at most %d)", ErrOversized, len(data), maxValue)
	}
	e := entry{key: key}
	var ops []enforcer.Op
	switch {
	case strings.HasPrefix(key, banPrefix):
		ops = []enforcer.Op{enforcer.OpBan, enforcer.OpUnban}
	case strings.HasPrefix(key, allowPrefix):
		ops = []enforcer.Op{enforcer.OpAllow, enforcer.OpDisallow}
	case strings.HasPrefix(key, peerPrefix):
		ops = []enforcer.Op{opPeer}
	default:
		return entry{}, fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	if ops[0] == opPeer {
		e.peer = key[len(peerPrefix):]
		if !nameRE.MatchString(e.peer) {
			return entry{}, fmt.Errorf("%w: %q", ErrBadKey, key)
		}
	} else {
		n, err := parseNetKey(key[strings.IndexByte(key, '.')+1:])
		if err != nil {
			return entry{}, err
		}
		e.net = n
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&e.val); err != nil {
		return entry{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return entry{}, fmt.Errorf("%w: more than one JSON value", ErrMalformed)
	}
	if err := e.val.check(ops); err != nil {
		return entry{}, err
	}
	if e.peer != "" && e.val.Origin != e.peer {
		return entry{}, fmt.Errorf("%w: heartbeat of %q from %q", ErrMalformed, e.peer, e.val.Origin)
	}
	return e, nil
}

// check validates a value for a key that holds ops.
func (v value) check(ops []enforcer.Op) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	ok := false
	for _, op := range ops {
		ok = ok || v.Op == op
	}
	switch {
	case !ok:
		return bad("op %q on this key", v.Op)
	case !nameRE.MatchString(v.Origin):
		return bad("origin %q", v.Origin)
	case v.Time.IsZero():
		return bad("no time")
	case v.Op == enforcer.OpBan && v.Until.IsZero():
		return bad("a ban without until")
	case len(v.Rule) > maxRule, len(v.Reason) > maxReason, len(v.By) > maxBy:
		return bad("text too long")
	case v.Hits < 0 || v.Bans < 0:
		return bad("negative count")
	}
	return nil
}

// decision is the enforcer's view of a ban or allow entry.
func (e entry) decision() enforcer.Decision {
	v := e.val
	return enforcer.Decision{
		Op: v.Op, Net: e.net, Time: v.Time, Until: v.Until, Rule: v.Rule, Reason: v.Reason, By: v.By,
		Hits: v.Hits, Bans: v.Bans, Manual: v.Manual, Origin: v.Origin,
	}
}

// valueOf is the value that publishes a local decision.
func valueOf(d enforcer.Decision, origin string) value {
	return value{
		Op: d.Op, Origin: origin, Time: d.Time.UTC(), Until: utcOrZero(d.Until), Rule: clip(d.Rule, maxRule),
		Reason: clip(d.Reason, maxReason), By: clip(d.By, maxBy), Hits: d.Hits, Bans: d.Bans, Manual: d.Manual,
	}
}

func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Per-key TTLs. A tombstone outlives the ban it lifted by at least
// minTombstone, so that a gateway cut off for a while cannot publish an
// older ban over it; a disallow is kept as long, for the same reason.
const (
	minTombstone = time.Hour
	minTTL       = time.Second
	peerTTL      = 15 * time.Second
)

// ttlOf is how long the bucket keeps v; 0: until it is replaced.
func ttlOf(v value, now time.Time) time.Duration {
	switch v.Op {
	case enforcer.OpBan:
		return max(v.Until.Sub(now), minTTL)
	case enforcer.OpUnban:
		return max(v.Until.Sub(now), minTombstone)
	case enforcer.OpAllow:
		if v.Until.IsZero() {
			return 0
		}
		return max(v.Until.Sub(now), minTTL)
	case opPeer:
		return peerTTL
	}
	return minTombstone
}

// overtakes reports whether a queued value may still be published over
// cur, the key's value in the bucket: only a newer decision does, or a
// ban that ends later than the ban there (it extends it).
func (v value) overtakes(cur value) bool {
	if v.Time.After(cur.Time) {
		return true
	}
	return v.Op == enforcer.OpBan && cur.Op == enforcer.OpBan && v.Until.After(cur.Until)
}
