package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer"
)

// publishBatch bounds the decisions taken from the queue at once.
const publishBatch = 512

// sweepEvery is how often forgotten keys and silent peers are dropped.
const sweepEvery = time.Minute

func jsonValue(v value) ([]byte, error) { return json.Marshal(v) }

// runPublisher publishes queued decisions while live and writes those
// that wait to the record, until ctx is done; then it waits for the
// acknowledgements in flight (they put back what failed).
func (f *Fleet) runPublisher(ctx context.Context, js jetstream.JetStream) {
	defer close(f.acks)
	spill := time.NewTicker(spillEvery)
	defer spill.Stop()
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-spill.C:
			f.spill(false)
		case <-sweep.C:
			f.sweep(time.Now())
		}
		for f.live.Load() && ctx.Err() == nil {
			if f.publishSome(ctx, js) == 0 {
				break
			}
		}
	}
}

// publishSome publishes up to publishBatch due decisions and returns how
// many it took from the queue.
func (f *Fleet) publishSome(ctx context.Context, js jetstream.JetStream) int {
	now := time.Now()
	f.mu.Lock()
	var take, later []*item
	n := 0
	for n < len(f.queue) && len(take) < publishBatch {
		it := f.queue[n]
		n++
		if f.byKey[it.key] != it {
			continue // replaced by a newer decision, or dropped
		}
		if it.notBefore.After(now) {
			later = append(later, it)
			continue
		}
		delete(f.byKey, it.key)
		take = append(take, it)
	}
	f.queue = append(later, f.queue[n:]...)
	f.inflight += len(take)
	f.mu.Unlock()
	for i, it := range take {
		var opts []jetstream.PublishOpt
		if it.offline {
			cur, ok := f.current(it.key, now)
			if ok && !it.val.overtakes(cur.val) {
				f.settle(it)
				f.m.superseded.Inc()
				continue
			}
			// Compare and set: if another gateway writes the key first,
			// the publish fails and the decision is checked again.
			opts = append(opts, jetstream.WithExpectLastSequencePerSubject(cur.rev))
		}
		if it.val.Op == enforcer.OpBan && !it.val.Until.After(now) {
			f.settle(it) // ended while it waited
			continue
		}
		if ttl := ttlOf(it.val, now); ttl > 0 {
			opts = append(opts, jetstream.WithMsgTTL(ttl))
		}
		fut, err := js.PublishMsgAsync(&nats.Msg{Subject: f.subject(it.key), Data: it.data}, opts...)
		if err != nil {
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				// NATS is slower than this gateway's decisions: they wait
				// at the head of the queue, as they were.
				f.requeueFront(take[i:])
				sleep(ctx, 5*time.Millisecond)
				return len(take)
			}
			for _, rest := range take[i:] {
				f.putBack(rest, err)
			}
			f.fail("publish", err)
			return len(take)
		}
		select {
		case f.acks <- pending{it: it, fut: fut}:
		case <-ctx.Done():
			f.putBack(it, ctx.Err())
		}
	}
	return len(take)
}

// current is the bucket's value of key, as the watch saw it.
func (f *Fleet) current(key string, now time.Time) (known, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.known[key]
	if ok && !k.expires.IsZero() && !k.expires.After(now) {
		return known{}, false
	}
	return k, ok
}

// runAcks waits for each publish's acknowledgement, in order.
func (f *Fleet) runAcks(ctx context.Context) {
	for p := range f.acks {
		select {
		case <-p.fut.Ok():
			f.m.published.Inc()
			f.settle(p.it)
		case err := <-p.fut.Err():
			f.m.pubErrors.Inc()
			f.putBack(p.it, err)
		case <-ctx.Done():
			f.putBack(p.it, ctx.Err())
		}
	}
}

// settle ends an item taken for publishing: published, or no longer to be.
func (f *Fleet) settle(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight--
	if it.spooled {
		f.done = append(f.done, it.seq)
	}
}

// putBack queues an item again after a failed publish, to be checked
// against the bucket before the next try, unless a newer decision of its
// key is queued meanwhile.
func (f *Fleet) putBack(it *item, err error) {
	var apiErr *jetstream.APIError
	cas := errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight--
	if newer := f.byKey[it.key]; newer != nil {
		if it.spooled {
			f.done = append(f.done, it.seq)
		}
		return
	}
	it.offline = true
	if cas {
		// The watch brings the other gateway's value in a moment.
		it.notBefore = time.Now().Add(50 * time.Millisecond)
	}
	f.queueLocked(it)
}

// requeueFront puts items taken for publishing back at the head of the
// queue, unchanged, unless a newer decision of their key came meanwhile.
func (f *Fleet) requeueFront(items []*item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var back []*item
	for _, it := range items {
		f.inflight--
		if f.byKey[it.key] != nil {
			if it.spooled {
				f.done = append(f.done, it.seq)
			}
			continue
		}
		f.byKey[it.key] = it
		back = append(back, it)
	}
	f.queue = append(back, f.queue...)
}

// spooled is an item as the record keeps it.
type spooled struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// spill writes to the record the queued decisions that have waited too
// long (all, with everything), and deletes the published ones.
func (f *Fleet) spill(everything bool) {
	now := time.Now()
	put := make(map[uint64][]byte)
	var marked []*item
	f.mu.Lock()
	if len(f.queue) > 2*len(f.byKey)+publishBatch {
		// Mostly replaced decisions: a long partition in a flood.
		f.queue = slices.DeleteFunc(f.queue, func(it *item) bool { return f.byKey[it.key] != it })
	}
	for _, it := range f.queue {
		if f.byKey[it.key] != it || it.spooled {
			continue
		}
		if everything || it.offline || now.Sub(it.created) >= spillAfter {
			b, err := json.Marshal(spooled{Key: it.key, Value: it.data})
			if err != nil {
				continue
			}
			put[it.seq] = b
			it.spooled = true
			marked = append(marked, it)
		}
	}
	done := f.done
	f.done = nil
	warn := f.spool == nil && len(put) > 0 && !f.warned
	f.warned = f.warned || warn
	f.mu.Unlock()
	if f.spool == nil {
		if warn {
			f.log.Warn("decisions wait for NATS in memory only (no enforcer.state_dir): a restart loses them")
		}
		return
	}
	if err := f.spool.CommitFleetQueue(put, done); err != nil {
		f.mu.Lock()
		for _, it := range marked {
			it.spooled = false
		}
		f.done = append(done, f.done...)
		f.mu.Unlock()
		f.fail("record", err)
	}
}

// loadSpool queues again what an earlier run could not publish.
func (f *Fleet) loadSpool() {
	if f.spool == nil {
		return
	}
	q, err := f.spool.FleetQueue()
	if err != nil {
		f.fail("record", err)
		return
	}
	var bad []uint64
	f.mu.Lock()
	for _, seq := range slices.Sorted(maps.Keys(q)) {
		var s spooled
		if err := json.Unmarshal(q[seq], &s); err != nil {
			bad = append(bad, seq)
			continue
		}
		ent, err := decodeEntry(s.Key, s.Value)
		if err != nil {
			bad = append(bad, seq)
			continue
		}
		f.nextSeq = max(f.nextSeq, seq)
		f.queueLocked(&item{seq: seq, key: s.Key, val: ent.val, data: []byte(s.Value), created: ent.val.Time, offline: true, spooled: true})
	}
	f.done = append(f.done, bad...)
	n := len(f.byKey)
	f.mu.Unlock()
	if n > 0 || len(bad) > 0 {
		f.log.Info("decisions queued by an earlier run", "queued", n, "unreadable", len(bad))
	}
}

// sweep forgets keys the bucket has forgotten and peers gone silent.
func (f *Fleet) sweep(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, v := range f.known {
		if !v.expires.IsZero() && v.expires.Before(now) {
			delete(f.known, k)
		}
	}
	for p, exp := range f.peers {
		if exp.Before(now) {
			delete(f.peers, p)
		}
	}
}

type metrics struct {
	applied    *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	published  prometheus.Counter
	pubErrors  prometheus.Counter
	superseded prometheus.Counter
	dropped    prometheus.Counter
}

func (m *metrics) register(reg prometheus.Registerer, f *Fleet) error {
	m.applied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wormgate_fleet_applied_total", Help: "Other gateways' decisions applied here, by op.",
	}, []string{"op"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wormgate_fleet_rejected_total", Help: "Bucket entries refused here, by reason (malformed, oversized, bad_key, never_block, too_wide, ...).",
	}, []string{"reason"})
	m.published = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wormgate_fleet_published_total", Help: "Local decisions published to the bucket.",
	})
	m.pubErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wormgate_fleet_publish_errors_total", Help: "Publishes that failed and were queued again.",
	})
	m.superseded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wormgate_fleet_superseded_total", Help: "Queued decisions dropped because the bucket held a newer one when they could be published.",
	})
	m.dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wormgate_fleet_queue_dropped_total", Help: "Local decisions not shared because the queue was full (enforced here all the same).",
	})
	for _, op := range []string{"ban", "unban", "allow", "disallow"} {
		m.applied.WithLabelValues(op)
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	gauge := func(name, help string, fn func(Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return fn(f.Status()) })
	}
	cs := []prometheus.Collector{
		m.applied, m.rejected, m.published, m.pubErrors, m.superseded, m.dropped,
		gauge("wormgate_fleet_connected", "1 while connected to NATS.", func(s Status) float64 { return b2f(s.Connected) }),
		gauge("wormgate_fleet_queued", "Local decisions not yet published to the fleet.", func(s Status) float64 { return float64(s.Queued) }),
		gauge("wormgate_fleet_peers", "Other gateways whose heartbeat is in the bucket.", func(s Status) float64 { return float64(len(s.Peers)) }),
		gauge("wormgate_fleet_lag_seconds", "Delay of the last applied decision from the bucket, or time since the connection was lost.", func(s Status) float64 { return s.LagSeconds }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
