package enforcer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
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
// bbolt file. Every Commit is one fsynced transaction; the enforcer
// commits a batch before it writes the same batch to the kernel, so that a
// crash can never leave a ban in the kernel that the record does not know.
type Store struct {
	db *bolt.DB
}

// OpenStore opens (or creates) dir/state.db. dir is created 0700.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, stateFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        lockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w", path, ErrStoreLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bansBucket, historyBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db}, nil
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
	var bans []policy.Ban
	var hist []policy.History
	err := s.db.Update(func(tx *bolt.Tx) error {
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
