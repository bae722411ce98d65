package store

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// FleetQueue returns the fleet's decisions that were queued while NATS
// could not take them, by sequence number. The record keeps them as the
// fleet gave them; it does not read them.
func (s *Store) FleetQueue() (map[uint64][]byte, error) {
	out := make(map[uint64][]byte)
	err := guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(fleetBucket).ForEach(func(k, v []byte) error {
				if len(k) == 8 {
					out[binary.BigEndian.Uint64(k)] = slices.Clone(v)
				}
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load fleet queue: %w", err)
	}
	return out, nil
}

// CommitFleetQueue adds put and removes done in one fsynced transaction.
func (s *Store) CommitFleetQueue(put map[uint64][]byte, done []uint64) error {
	if len(put)+len(done) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(fleetBucket)
		for _, seq := range done {
			if err := b.Delete(binary.BigEndian.AppendUint64(nil, seq)); err != nil {
				return err
			}
		}
		for _, seq := range slices.Sorted(maps.Keys(put)) {
			if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), put[seq]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit fleet queue: %w", err)
	}
	return nil
}
