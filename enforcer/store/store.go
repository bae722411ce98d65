package store

import (
	"bytes"
	"encoding/binary"
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
	recVersion  = 1
)

var (
	bansBucket    = []byte("bans")
	historyBucket = []byte("offenders")
)

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
			for _, b := range [][]byte{bansBucket, historyBucket} {
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

// Load returns the bans that have not expired at now and at most
// maxHistory offenders, the most recently seen. Expired bans and older
// history are deleted in the same transaction, so the file stays bounded.
func (s *Store) Load(now time.Time, maxHistory int) ([]policy.Ban, []policy.History, error) {
	bans, hist, err := s.load(now, maxHistory)
	if errors.Is(err, ErrCorrupt) {
		if err := s.moveAside(err); err != nil {
			return nil, nil, err
		}
		return nil, nil, nil
	}
	return bans, hist, err
}

func (s *Store) load(now time.Time, maxHistory int) ([]policy.Ban, []policy.History, error) {
	var bans []policy.Ban
	var hist []policy.History
	err := guard(func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			bans, hist = bans[:0], hist[:0]
			bb := tx.Bucket(bansBucket)
			var stale [][]byte
			err := bb.ForEach(func(k, v []byte) error {
				b, err := decodeBan(k, v)
				if err != nil || !b.Until.After(now) {
					stale = append(stale, slices.Clone(k))
					return nil
				}
				bans = append(bans, b)
				return nil
			})
			if err != nil {
				return err
			}
			for _, k := range stale {
				if err := bb.Delete(k); err != nil {
					return err
				}
			}
			hb := tx.Bucket(historyBucket)
			stale = stale[:0]
			err = hb.ForEach(func(k, v []byte) error {
				h, err := decodeHistory(k, v)
				if err != nil {
					stale = append(stale, slices.Clone(k))
					return nil
				}
				hist = append(hist, h)
				return nil
			})
			if err != nil {
				return err
			}
			if len(hist) > maxHistory {
				slices.SortFunc(hist, func(a, b policy.History) int { return b.LastSeen.Compare(a.LastSeen) })
				for _, h := range hist[maxHistory:] {
					stale = append(stale, h.Addr.AsSlice())
				}
				hist = hist[:maxHistory]
			}
			for _, k := range stale {
				if err := hb.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load store: %w", err)
	}
	return bans, hist, nil
}

// Commit writes bans and history and deletes the bans of dels, in one
// fsynced transaction. Deletions come first, so an address in both ends
// up banned.
func (s *Store) Commit(bans []policy.Ban, hist []policy.History, dels []netip.Addr) error {
	if len(bans) == 0 && len(hist) == 0 && len(dels) == 0 {
		return nil
	}
	// bbolt splits and rebalances pages on every out-of-order put: in key
	// order a big commit is about forty times cheaper.
	bans = slices.Clone(bans)
	slices.SortFunc(bans, func(a, b policy.Ban) int { return keyCompare(a.Addr, b.Addr) })
	hist = slices.Clone(hist)
	slices.SortFunc(hist, func(a, b policy.History) int { return keyCompare(a.Addr, b.Addr) })
	err := s.db.Update(func(tx *bolt.Tx) error {
		bb, hb := tx.Bucket(bansBucket), tx.Bucket(historyBucket)
		for _, a := range dels {
			if err := bb.Delete(a.Unmap().AsSlice()); err != nil {
				return err
			}
		}
		for _, b := range bans {
			if err := bb.Put(b.Addr.Unmap().AsSlice(), encodeBan(b)); err != nil {
				return err
			}
		}
		for _, h := range hist {
			if err := hb.Put(h.Addr.Unmap().AsSlice(), encodeHistory(h)); err != nil {
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

// A ban record: version, start, until (Unix ns), hits, a reserved byte
// (0), rule.
func encodeBan(b policy.Ban) []byte {
	out := make([]byte, 0, 22+len(b.Rule))
	out = append(out, recVersion)
	out = binary.BigEndian.AppendUint64(out, uint64(b.Start.UnixNano()))
	out = binary.BigEndian.AppendUint64(out, uint64(b.Until.UnixNano()))
	out = binary.BigEndian.AppendUint32(out, uint32(min(max(b.Hits, 0), 1<<31-1)))
	out = append(out, 0)
	return append(out, b.Rule...)
}

func decodeBan(k, v []byte) (policy.Ban, error) {
	a, ok := netip.AddrFromSlice(k)
	if !ok || len(v) < 22 || v[0] != recVersion {
		return policy.Ban{}, ErrCorruptRecord
	}
	start := time.Unix(0, int64(binary.BigEndian.Uint64(v[1:])))
	until := time.Unix(0, int64(binary.BigEndian.Uint64(v[9:])))
	return policy.Ban{
		Addr: a, Start: start, Until: until, Duration: until.Sub(start),
		Hits: int(binary.BigEndian.Uint32(v[17:])), Rule: string(v[22:]),
	}, nil
}

// A history record: version, hits, bans, first, last, banned until.
func encodeHistory(h policy.History) []byte {
	out := make([]byte, 0, 33)
	out = append(out, recVersion)
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
	if !ok || len(v) != 33 || v[0] != recVersion {
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
