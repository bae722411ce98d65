package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrStoreLocked means another process (another wormgate) holds the
// state file.
var ErrStoreLocked = errors.New("state file locked by another process")

// ErrCorruptRecord marks a record in the state file that cannot be decoded.
var ErrCorruptRecord = errors.New("corrupt record")

const (
	stateFile   = "state.db"
	lockTimeout = 2 * time.Second
	histV1      = 1
)

var (
	bansBucket       = []byte("bans")
	historyBucket    = []byte("offenders")
	eventsBucket     = []byte("events")
	allowsBucket     = []byte("allows")
	tombstonesBucket = []byte("tombstones")
	fleetBucket      = []byte("fleet_queue")
)

var buckets = [][]byte{bansBucket, historyBucket, eventsBucket, allowsBucket, tombstonesBucket, fleetBucket}

// Store is the durable record of active bans and offender history in a
// bbolt file. Every Commit is one fsynced transaction. The enforcer
// commits behind the kernel and adopts the kernel's bans at every start,
// so a record that fell behind, was lost or had to be replaced never
// lifts a ban.
type Store struct {
	db   *bolt.DB
	path string
	// recovered is where a file that could not be read was moved.
	recovered string
}

// ErrCorrupt marks a state file that bbolt cannot open or read.
var ErrCorrupt = errors.New("state file corrupt")

// Open opens (or creates) dir/state.db; dir is created 0700. A file that
// cannot be opened or read as a bbolt file (truncated, overwritten) is
// moved aside as state.db.corrupt-TIMESTAMP, never deleted, and a new one
// is made; Recovered names the old one.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{path: filepath.Join(dir, stateFile)}
	err := s.open()
	if errors.Is(err, ErrCorrupt) {
		err = s.moveAside(err)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Recovered is the path the unreadable file was moved to, or "".
func (s *Store) Recovered() string { return s.recovered }

// moveAside keeps the unreadable file for an operator and starts anew.
func (s *Store) moveAside(cause error) error {
	if s.db != nil {
		_ = guard(s.db.Close)
		s.db = nil
	}
	aside := fmt.Sprintf("%s.corrupt-%s", s.path, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(s.path, aside); err != nil {
		return fmt.Errorf("open store %s: %w; moving it aside: %w", s.path, cause, err)
	}
	s.recovered = aside
	return s.open()
}

// guard runs fn, turning bbolt's panics and memory faults on a damaged
// file (it maps the file and trusts its pages) into ErrCorrupt.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

func (s *Store) open() error {
	path := s.path
	var db *bolt.DB
	err := guard(func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout:        lockTimeout,
			NoFreelistSync: true,
			FreelistType:   bolt.FreelistMapType,
		})
		return err
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("open store %s: %w", path, ErrStoreLocked)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, ErrCorrupt):
		return fmt.Errorf("open store %s: %w: %w", path, ErrCorrupt, err)
	case err != nil:
		return fmt.Errorf("open store %s: %w", path, err)
	}
	s.db = db
	err = guard(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			for _, b := range buckets {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			_ = db.Close()
			s.db = nil
		}
		return fmt.Errorf("open store %s: %w", path, err)
	}
	return nil
}

// Close closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Limits bound what Load keeps; the rest is deleted in the same
// transaction, so the file stays bounded.
type Limits struct {
	// History is the number of offenders kept, the most recently seen.
	History int
	// Events is the number of offences kept in total, the newest;
	// EventAge drops older ones (0: no age limit).
	Events   int
	EventAge time.Duration
}

// Snapshot is what the record holds.
type Snapshot struct {
	Bans       []policy.Ban
	History    []policy.History
	Events     []policy.Event
	Allows     []Allow
	Tombstones []Tombstone
}

// Allow is a never-block entry an operator added at run time.
type Allow struct {
	Net    netip.Prefix `json:"net"`
	Added  time.Time    `json:"added"`
	Until  time.Time    `json:"until,omitzero"` // zero: until removed
	Reason string       `json:"reason,omitempty"`
	By     string       `json:"by,omitempty"`
	// Origin names the gateway of the fleet that made the allow; empty
	// for this gateway's operator.
	Origin string `json:"origin,omitempty"`
}

// Tombstone remembers a ban an operator lifted, so that start-up does
// not adopt it back from a kernel that still held it.
type Tombstone struct {
	Net   netip.Prefix `json:"net"`
	Until time.Time    `json:"until"`
}

// Change is one transaction of the record. Deletions come first, so
// an address both deleted and put ends up put.
type Change struct {
	Bans    []policy.Ban
	History []policy.History
	// Deletes are bans lifted or expired; a host as a single-IP prefix.
	Deletes        []netip.Prefix
	Events         []policy.Event
	DropEvents     []policy.EventKey
	Allows         []Allow
	Disallows      []netip.Prefix
	Tombstones     []Tombstone
	DropTombstones []netip.Prefix
}

// Empty reports whether c changes nothing.
func (c *Change) Empty() bool {
	return len(c.Bans)+len(c.History)+len(c.Deletes)+len(c.Events)+len(c.DropEvents)+
		len(c.Allows)+len(c.Disallows)+len(c.Tombstones)+len(c.DropTombstones) == 0
}

// Load returns what the record holds that has not expired at now, within
// lim. Expired and surplus entries are deleted in the same transaction.
// A file that turns out to be unreadable is moved aside (see Recovered)
// and an empty snapshot returned.
func (s *Store) Load(now time.Time, lim Limits) (Snapshot, error) {
	snap, err := s.load(now, lim)
	if errors.Is(err, ErrCorrupt) {
		if err := s.moveAside(err); err != nil {
			return Snapshot{}, err
		}
		return Snapshot{}, nil
	}
	return snap, err
}

// forEachLive decodes every record of b, deleting those that do not
// decode or that keep reports false.
func forEachLive[T any](b *bolt.Bucket, decode func(k, v []byte) (T, error), keep func(T) bool, out *[]T) error {
	var stale [][]byte
	err := b.ForEach(func(k, v []byte) error {
		x, err := decode(k, v)
		if err != nil || !keep(x) {
			stale = append(stale, slices.Clone(k))
			return nil
		}
		*out = append(*out, x)
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) load(now time.Time, lim Limits) (Snapshot, error) {
	var snap Snapshot
	err := guard(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			snap = Snapshot{}
			live := func(b policy.Ban) bool { return b.Until.After(now) }
			if err := forEachLive(tx.Bucket(bansBucket), decodeBan, live, &snap.Bans); err != nil {
				return err
			}
			hb := tx.Bucket(historyBucket)
			if err := forEachLive(hb, decodeHistory, func(policy.History) bool { return true }, &snap.History); err != nil {
				return err
			}
			if len(snap.History) > lim.History {
				slices.SortFunc(snap.History, func(a, b policy.History) int { return b.LastSeen.Compare(a.LastSeen) })
				for _, h := range snap.History[lim.History:] {
					if err := hb.Delete(h.Addr.Unmap().AsSlice()); err != nil {
						return err
					}
				}
				snap.History = snap.History[:lim.History]
			}
			eb := tx.Bucket(eventsBucket)
			fresh := func(ev policy.Event) bool { return lim.EventAge <= 0 || now.Sub(ev.Time) <= lim.EventAge }
			if err := forEachLive(eb, decodeEvent, fresh, &snap.Events); err != nil {
				return err
			}
			if len(snap.Events) > lim.Events {
				slices.SortFunc(snap.Events, func(a, b policy.Event) int {
					return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(b.Seq, a.Seq))
				})
				for _, ev := range snap.Events[lim.Events:] {
					if err := eb.Delete(eventKey(ev.Key())); err != nil {
						return err
					}
				}
				snap.Events = snap.Events[:lim.Events]
			}
			liveAllow := func(a Allow) bool { return a.Until.IsZero() || a.Until.After(now) }
			if err := forEachLive(tx.Bucket(allowsBucket), decodeJSON[Allow], liveAllow, &snap.Allows); err != nil {
				return err
			}
			liveTomb := func(t Tombstone) bool { return t.Until.After(now) }
			return forEachLive(tx.Bucket(tombstonesBucket), decodeJSON[Tombstone], liveTomb, &snap.Tombstones)
		})
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("load store: %w", err)
	}
	return snap, nil
}

// Commit writes c in one fsynced transaction.
func (s *Store) Commit(c Change) error {
	if c.Empty() {
		return nil
	}
	// bbolt splits and rebalances pages on every out-of-order put: in key
	// order a big commit is about forty times cheaper.
	bans := slices.Clone(c.Bans)
	slices.SortFunc(bans, func(a, b policy.Ban) int { return bytes.Compare(banKey(a), banKey(b)) })
	hist := slices.Clone(c.History)
	slices.SortFunc(hist, func(a, b policy.History) int { return keyCompare(a.Addr, b.Addr) })
	err := s.db.Update(func(tx *bolt.Tx) error {
		bb, hb, eb := tx.Bucket(bansBucket), tx.Bucket(historyBucket), tx.Bucket(eventsBucket)
		ab, tb := tx.Bucket(allowsBucket), tx.Bucket(tombstonesBucket)
		for _, p := range c.Deletes {
			if err := bb.Delete(prefixKey(p)); err != nil {
				return err
			}
		}
		for _, b := range bans {
			if err := bb.Put(banKey(b), encodeBan(b)); err != nil {
				return err
			}
		}
		for _, h := range hist {
			if err := hb.Put(h.Addr.Unmap().AsSlice(), encodeHistory(h)); err != nil {
				return err
			}
		}
		for _, k := range c.DropEvents {
			if err := eb.Delete(eventKey(k)); err != nil {
				return err
			}
		}
		for _, ev := range c.Events {
			v, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if err := eb.Put(eventKey(ev.Key()), v); err != nil {
				return err
			}
		}
		for _, p := range c.Disallows {
			if err := ab.Delete(prefixKey(p)); err != nil {
				return err
			}
		}
		for _, a := range c.Allows {
			if err := putJSON(ab, prefixKey(a.Net), a); err != nil {
				return err
			}
		}
		for _, p := range c.DropTombstones {
			if err := tb.Delete(prefixKey(p)); err != nil {
				return err
			}
		}
		for _, t := range c.Tombstones {
			if err := putJSON(tb, prefixKey(t.Net), t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit store: %w", err)
	}
	return nil
}

// prefixKey is the key of a host (its 4 or 16 bytes, as the first
// version of the file had them) or of a network (the bytes and the
// prefix length).
func prefixKey(p netip.Prefix) []byte {
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-(p.Addr().BitLen()-p.Addr().Unmap().BitLen())).Masked()
	k := p.Addr().AsSlice()
	if p.IsSingleIP() {
		return k
	}
	return append(k, byte(p.Bits()))
}

func banKey(b policy.Ban) []byte {
	if b.Net.IsValid() && !b.Net.IsSingleIP() {
		return prefixKey(b.Net)
	}
	a := b.Addr.Unmap()
	return a.AsSlice()
}

func keyPrefix(k []byte) (netip.Prefix, bool) {
	switch len(k) {
	case 4, 16:
		a, _ := netip.AddrFromSlice(k)
		return netip.PrefixFrom(a, a.BitLen()), true
	case 5, 17:
		a, _ := netip.AddrFromSlice(k[:len(k)-1])
		p := netip.PrefixFrom(a, int(k[len(k)-1]))
		return p, p.IsValid() && p.Masked() == p
	}
	return netip.Prefix{}, false
}

// eventKey orders an address's offences by time: the address in 16
// bytes, then time and sequence number.
func eventKey(k policy.EventKey) []byte {
	a := k.Addr.Unmap().As16()
	out := make([]byte, 0, 32)
	out = append(out, a[:]...)
	out = binary.BigEndian.AppendUint64(out, uint64(k.Time.UnixNano()))
	return binary.BigEndian.AppendUint64(out, k.Seq)
}

func decodeEvent(k, v []byte) (policy.Event, error) {
	var ev policy.Event
	if len(k) != 32 || json.Unmarshal(v, &ev) != nil || !ev.Addr.IsValid() {
		return policy.Event{}, ErrCorruptRecord
	}
	return ev, nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, buf)
}

func decodeJSON[T any](k, v []byte) (T, error) {
	var x T
	if _, ok := keyPrefix(k); !ok || json.Unmarshal(v, &x) != nil {
		return x, ErrCorruptRecord
	}
	return x, nil
}

// keyCompare orders addresses as bbolt orders their keys (the address's
// bytes: 4 for IPv4, 16 for IPv6).
func keyCompare(a, b netip.Addr) int {
	a, b = a.Unmap(), b.Unmap()
	if a.Is4() == b.Is4() {
		// Within a family netip's order is the bytes' order.
		return a.Compare(b)
	}
	if a.Is4() {
		a4, b16 := a.As4(), b.As16()
		return bytes.Compare(a4[:], b16[:])
	}
	a16, b4 := a.As16(), b.As4()
	return bytes.Compare(a16[:], b4[:])
}

// A ban record: version, start, until (Unix ns), hits, flags, rule;
// version 2 adds, each length-prefixed (uvarint), the reason and the
// hosts; version 3 the origin gateway (fleet). The key holds the address
// or network.
const (
	banV1      = 1
	banV2      = 2
	banV3      = 3
	flagManual = 1
)

func encodeBan(b policy.Ban) []byte {
	out := make([]byte, 0, 32+len(b.Rule)+len(b.Reason))
	out = append(out, banV3)
	out = binary.BigEndian.AppendUint64(out, uint64(b.Start.UnixNano()))
	out = binary.BigEndian.AppendUint64(out, uint64(b.Until.UnixNano()))
	out = binary.BigEndian.AppendUint32(out, uint32(min(max(b.Hits, 0), 1<<31-1)))
	var flags byte
	if b.Manual {
		flags |= flagManual
	}
	out = append(out, flags)
	out = appendString(out, b.Rule)
	out = appendString(out, b.Reason)
	out = binary.AppendUvarint(out, uint64(len(b.Hosts)))
	for _, h := range b.Hosts {
		out = appendString(out, h)
	}
	return appendString(out, b.Origin)
}

func appendString(out []byte, s string) []byte {
	return append(binary.AppendUvarint(out, uint64(len(s))), s...)
}

func readString(v []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(v)
	if k <= 0 || n > uint64(len(v)-k) {
		return "", nil, false
	}
	return string(v[k : k+int(n)]), v[k+int(n):], true
}

func decodeBan(k, v []byte) (policy.Ban, error) {
	p, ok := keyPrefix(k)
	if !ok || len(v) < 22 || v[0] < banV1 || v[0] > banV3 {
		return policy.Ban{}, ErrCorruptRecord
	}
	start := time.Unix(0, int64(binary.BigEndian.Uint64(v[1:])))
	until := time.Unix(0, int64(binary.BigEndian.Uint64(v[9:])))
	b := policy.Ban{
		Addr: p.Addr(), Start: start, Until: until, Duration: until.Sub(start),
		Hits: int(binary.BigEndian.Uint32(v[17:])), Manual: v[21]&flagManual != 0,
	}
	if !p.IsSingleIP() {
		b.Net = p
	}
	if v[0] == banV1 {
		b.Rule = string(v[22:])
		return b, nil
	}
	rest := v[22:]
	if b.Rule, rest, ok = readString(rest); !ok {
		return policy.Ban{}, ErrCorruptRecord
	}
	if b.Reason, rest, ok = readString(rest); !ok {
		return policy.Ban{}, ErrCorruptRecord
	}
	n, m := binary.Uvarint(rest)
	if m <= 0 || n > uint64(len(rest)) {
		return policy.Ban{}, ErrCorruptRecord
	}
	rest = rest[m:]
	for range n {
		var h string
		if h, rest, ok = readString(rest); !ok {
			return policy.Ban{}, ErrCorruptRecord
		}
		b.Hosts = append(b.Hosts, h)
	}
	if v[0] == banV3 {
		if b.Origin, _, ok = readString(rest); !ok {
			return policy.Ban{}, ErrCorruptRecord
		}
	}
	return b, nil
}

// A history record: version, hits, bans, first, last, banned until.
func encodeHistory(h policy.History) []byte {
	out := make([]byte, 0, 33)
	out = append(out, histV1)
	out = binary.BigEndian.AppendUint32(out, uint32(min(max(h.Hits, 0), 1<<31-1)))
	out = binary.BigEndian.AppendUint32(out, uint32(min(max(h.Bans, 0), 1<<31-1)))
	for _, t := range []time.Time{h.FirstSeen, h.LastSeen, h.BannedUntil} {
		var n int64
		if !t.IsZero() {
			n = t.UnixNano()
		}
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	return out
}

func decodeHistory(k, v []byte) (policy.History, error) {
	a, ok := netip.AddrFromSlice(k)
	if !ok || len(v) != 33 || v[0] != histV1 {
		return policy.History{}, ErrCorruptRecord
	}
	ts := make([]time.Time, 3)
	for i := range ts {
		if n := int64(binary.BigEndian.Uint64(v[9+8*i:])); n != 0 {
			ts[i] = time.Unix(0, n)
		}
	}
	return policy.History{
		Addr: a, Hits: int(binary.BigEndian.Uint32(v[1:])), Bans: int(binary.BigEndian.Uint32(v[5:])),
		FirstSeen: ts[0], LastSeen: ts[1], BannedUntil: ts[2],
	}, nil
}
