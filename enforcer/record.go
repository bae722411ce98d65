package enforcer

import (
	"context"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/enforcer/store"
)

// maxRecordBatch bounds the bans of one record commit, so that a flood is
// committed in slices of bounded time and memory rather than in one
// transaction that holds everything.
const maxRecordBatch = 10_000

// maxRecordDelay bounds how long the record lets the kernel go first:
// while bans are on their way to the kernel, commits wait (they would
// compete for the CPU that the kernel writes need), but never longer than
// this. wormgate_record_lag shows the gap.
const maxRecordDelay = time.Second

// commitStall is how long a record commit may take before Status calls
// the record failing: a hung disk (fsfreeze, a dead NFS server) never
// returns an error by itself.
const commitStall = 5 * time.Second

// adoptTimeout bounds reading the kernel back at start-up.
const adoptTimeout = 10 * time.Second

// adoptedRule names the bans taken over from the kernel at start-up
// because the record did not hold them (it fell behind before a crash).
const adoptedRule = "adopted"

// Record is the durable record the enforcer writes behind the kernel
// (enforcer/store, or a proxy to it in another process).
type Record interface {
	// Load returns what the record holds that is live at now, within lim;
	// an unreadable record is moved aside and reads as empty.
	Load(now time.Time, lim store.Limits) (store.Snapshot, error)
	// Commit writes c durably (one fsynced transaction) or not at all.
	Commit(c store.Change) error
	// Recovered names the file an unreadable record was moved to, or "".
	Recovered() string
}

// record commits to the store up to maxRecordBatch bans that it does not
// hold yet, with their offender history, and the pending deletions, in
// one transaction. A failure puts them back; the kernel is not affected.
func (e *Enforcer) record() error {
	if e.store == nil {
		return nil
	}
	e.rmu.Lock()
	defer e.rmu.Unlock()
	now := e.now()
	e.mu.Lock()
	if len(e.unrecorded) == 0 && len(e.dels) == 0 && e.ctl.Empty() {
		e.mu.Unlock()
		return nil
	}
	// The common case takes the whole map; only a flood of more than a
	// batch between two commits is sliced, so the lock is held briefly.
	var batch map[netip.Addr]unrecorded
	if len(e.unrecorded) <= maxRecordBatch {
		batch = e.unrecorded
		e.unrecorded = make(map[netip.Addr]unrecorded)
	} else {
		batch = make(map[netip.Addr]unrecorded, maxRecordBatch)
		for a, u := range e.unrecorded {
			if len(batch) == maxRecordBatch {
				break
			}
			batch[a] = u
			delete(e.unrecorded, a)
		}
	}
	dels := make([]netip.Prefix, 0, len(e.dels))
	for a := range e.dels {
		dels = append(dels, netip.PrefixFrom(a, a.BitLen()))
	}
	clear(e.dels)
	ctl := e.ctl
	e.ctl = store.Change{}
	more := len(e.unrecorded) > 0
	// The offence history of a flood goes in slices too: an event pushed
	// out before it was committed cancels its deletion first, so what
	// stays behind holds no deletion of an event this commit carries.
	dropUncommittedEvents(&ctl)
	if len(ctl.Events) > maxRecordBatch {
		e.ctl.Events = slices.Clone(ctl.Events[maxRecordBatch:])
		ctl.Events = ctl.Events[:maxRecordBatch:maxRecordBatch]
		more = true
	}
	e.recInflight = len(batch) + len(dels) + ctlSize(&ctl)
	e.mu.Unlock()

	bans := make([]policy.Ban, 0, len(batch))
	hist := make([]policy.History, 0, len(batch))
	for _, u := range batch {
		if !u.ban.Until.After(now) {
			continue
		}
		bans = append(bans, u.ban)
		if u.hasHist {
			hist = append(hist, u.hist)
		}
	}

	e.commitSince.Store(time.Now().UnixNano())
	c := ctl
	c.Bans = append(c.Bans, bans...)
	c.History = append(c.History, hist...)
	c.Deletes = append(c.Deletes, dels...)
	dropUncommittedEvents(&c)
	err := e.store.Commit(c)
	e.commitSince.Store(0)

	e.mu.Lock()
	e.recInflight = 0
	if err != nil {
		for a, u := range batch {
			if _, again := e.unrecorded[a]; !again {
				if _, ok := e.active[a]; ok {
					e.unrecorded[a] = u
				}
			}
		}
		for _, p := range dels {
			if _, ok := e.active[p.Addr()]; !ok {
				e.dels[p.Addr()] = struct{}{}
			}
		}
		e.ctl = mergeChange(ctl, e.ctl)
	}
	e.mu.Unlock()
	if err != nil {
		e.m.storeErrs.Inc()
		e.fail(partRecord, err)
		return fmt.Errorf("record %d bans: %w", len(bans), err)
	}
	e.succeed(partRecord)
	if more {
		kick(e.recKick)
	}
	return nil
}

// ctlSize counts the entries of c for the record's lag: what enforcement
// needs after a restart (the offence history is not counted).
func ctlSize(c *store.Change) int {
	return len(c.Bans) + len(c.History) + len(c.Deletes) +
		len(c.Allows) + len(c.Disallows) + len(c.Tombstones) + len(c.DropTombstones)
}

// mergeChange puts a change that failed to commit (older) back in front
// of what came since (newer). Where both touch the same key, newer wins:
// the store applies deletions before puts within one commit, so an older
// put must not survive a newer deletion or the other way round.
func mergeChange(older, newer store.Change) store.Change {
	netOf := func(b policy.Ban) netip.Prefix { return b.Net }
	older.Bans = dropKeys(older.Bans, netOf, newer.Deletes)
	older.Deletes = dropKeys(older.Deletes, self, slices.Collect(mapKeys(newer.Bans, netOf)))
	allowNet := func(a store.Allow) netip.Prefix { return a.Net }
	older.Allows = dropKeys(older.Allows, allowNet, newer.Disallows)
	older.Disallows = dropKeys(older.Disallows, self, slices.Collect(mapKeys(newer.Allows, allowNet)))
	tombNet := func(t store.Tombstone) netip.Prefix { return t.Net }
	older.Tombstones = dropKeys(older.Tombstones, tombNet, newer.DropTombstones)
	older.DropTombstones = dropKeys(older.DropTombstones, self, slices.Collect(mapKeys(newer.Tombstones, tombNet)))
	return store.Change{
		Bans: append(older.Bans, newer.Bans...), History: append(older.History, newer.History...),
		Deletes: append(older.Deletes, newer.Deletes...), Events: append(older.Events, newer.Events...),
		DropEvents: append(older.DropEvents, newer.DropEvents...), Allows: append(older.Allows, newer.Allows...),
		Disallows: append(older.Disallows, newer.Disallows...), Tombstones: append(older.Tombstones, newer.Tombstones...),
		DropTombstones: append(older.DropTombstones, newer.DropTombstones...),
	}
}

func self(p netip.Prefix) netip.Prefix { return p }

func mapKeys[T any](xs []T, key func(T) netip.Prefix) iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		for _, x := range xs {
			if !yield(key(x)) {
				return
			}
		}
	}
}

// dropKeys removes the entries of xs whose key is in keys.
func dropKeys[T any](xs []T, key func(T) netip.Prefix, keys []netip.Prefix) []T {
	if len(keys) == 0 {
		return xs
	}
	return slices.DeleteFunc(xs, func(x T) bool { return slices.Contains(keys, key(x)) })
}

// dropUncommittedEvents leaves out of c the events that were pushed out
// of the history before they ever reached the record, and their
// deletions.
func dropUncommittedEvents(c *store.Change) {
	if len(c.DropEvents) == 0 || len(c.Events) == 0 {
		return
	}
	gone := make(map[uint64]struct{}, len(c.DropEvents))
	for _, k := range c.DropEvents {
		gone[k.Seq] = struct{}{}
	}
	kept := c.Events[:0]
	for _, ev := range c.Events {
		if _, ok := gone[ev.Seq]; ok {
			delete(gone, ev.Seq)
			continue
		}
		kept = append(kept, ev)
	}
	c.Events = kept
	c.DropEvents = slices.DeleteFunc(c.DropEvents, func(k policy.EventKey) bool {
		_, ok := gone[k.Seq]
		return !ok
	})
}

// unrecorded is a ban the record does not hold yet, with the offender
// history that goes with it.
type unrecorded struct {
	ban     policy.Ban
	hist    policy.History
	hasHist bool
}

// recordLagLocked is what the record does not hold yet.
func (e *Enforcer) recordLagLocked() int {
	return len(e.unrecorded) + len(e.dels) + ctlSize(&e.ctl) + e.recInflight
}

// runRecorder commits behind the kernel until ctx is done, retrying a
// failing disk with a backoff that a busy enforcer cannot postpone.
func (e *Enforcer) runRecorder(ctx context.Context) {
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.recKick:
		case <-retry:
		}
		e.yieldToKernel(ctx)
		if err := e.record(); err != nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			retry = time.After(backoff)
			e.log.Error("record write failed; the bans are enforced and the record will catch up", "err", err, "retry_in", backoff)
			continue
		}
		backoff, retry = 0, nil
	}
}

// yieldToKernel waits while bans are on their way to the kernel, up to
// maxRecordDelay.
func (e *Enforcer) yieldToKernel(ctx context.Context) {
	deadline := time.Now().Add(maxRecordDelay)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		busy := len(e.pending)+e.inflight > 0
		e.mu.Unlock()
		if !busy {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// recordCaughtUp commits until the record lacks nothing.
func (e *Enforcer) recordCaughtUp() error {
	for {
		if err := e.record(); err != nil {
			return err
		}
		e.mu.Lock()
		lag := e.recordLagLocked()
		e.mu.Unlock()
		if lag == 0 {
			return nil
		}
	}
}

// recordAll commits everything the record lacks, within d: at shutdown,
// where a hung disk must not hold the process.
func (e *Enforcer) recordAll(d time.Duration) {
	done := make(chan error, 1)
	go func() { done <- e.recordCaughtUp() }()
	select {
	case err := <-done:
		if err != nil {
			e.log.Error("final record write failed", "err", err)
		}
	case <-time.After(d):
		e.log.Error("record not written at shutdown: the disk does not answer", "waited", d)
	}
}

// adopt takes over the kernel's elements that the active bans lack, with
// their remaining time: after a crash the record may be behind the kernel,
// and restoring the record alone would lift those bans. It reports
// whether the kernel could be read.
func (e *Enforcer) adopt(ctx context.Context) bool {
	// Bounded: reading a big set back must not hold up the start for
	// long; start then keeps the kernel's elements without reading them.
	lctx, cancel := context.WithTimeout(ctx, adoptTimeout)
	defer cancel()
	start := time.Now()
	elems, err := e.fw.List(lctx)
	if err != nil {
		e.log.Warn("the kernel's sets could not be read back; keeping their elements and adding the record's", "err", err)
		return false
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	adopted := 0
	for _, el := range elems {
		a := el.Addr.Unmap()
		if el.Timeout <= 0 {
			continue // not wormgate's: added by hand without a timeout
		}
		if el.Net.IsValid() && !el.Net.IsSingleIP() {
			if e.adoptNetLocked(el, now) {
				adopted++
			}
			continue
		}
		if _, ok := e.active[a]; ok {
			continue
		}
		if _, ok := e.policy.Protected(a); ok {
			continue
		}
		if e.tombstonedLocked(netip.PrefixFrom(a, a.BitLen()), now) {
			continue
		}
		b := policy.Ban{Addr: a, Rule: adoptedRule, Start: now, Duration: el.Timeout, Until: now.Add(el.Timeout)}
		e.active[a] = b
		e.nextExpiry = time.Time{}
		if e.store != nil {
			e.unrecorded[a] = unrecorded{ban: b}
		}
		adopted++
	}
	if adopted > 0 {
		e.log.Warn("the kernel held bans the record did not (a crash, or a lost or damaged record): adopted", "adopted", adopted, "kernel", len(elems), "took", time.Since(start))
		kick(e.recKick)
	}
	return true
}

// adoptNetLocked takes over a network ban the record lacks.
func (e *Enforcer) adoptNetLocked(el Element, now time.Time) bool {
	n := el.Net.Masked()
	if _, ok := e.nets[n]; ok || e.tombstonedLocked(n, now) {
		return false
	}
	if _, ok := e.policy.ProtectedNet(n); ok {
		return false
	}
	b := policy.Ban{Addr: n.Addr(), Net: n, Rule: adoptedRule, Start: now, Duration: el.Timeout, Until: now.Add(el.Timeout), Manual: true}
	e.nets[n] = b
	e.ctl.Bans = append(e.ctl.Bans, b)
	return true
}

// tombstonedLocked reports whether an operator lifted the ban of n and
// it would not have ended yet.
func (e *Enforcer) tombstonedLocked(n netip.Prefix, now time.Time) bool {
	until, ok := e.tombs[n]
	return ok && until.After(now)
}
