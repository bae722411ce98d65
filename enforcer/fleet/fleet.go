package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer"
)

// Applier is what the fleet needs of the local enforcer.
type Applier interface {
	// ApplyRemote applies decisions other gateways made, in order, and
	// returns for each why it was refused (nil: applied, or nothing to
	// do). It must not tell them back to the fleet.
	ApplyRemote(ctx context.Context, ds []enforcer.Decision) []error
	// Ready reports whether the firewall is set up; the fleet applies
	// nothing before.
	Ready() bool
}

// Spool keeps the decisions that wait for NATS across a restart (the
// record, enforcer/store).
type Spool interface {
	// FleetQueue returns what an earlier run left queued, by sequence.
	FleetQueue() (map[uint64][]byte, error)
	// CommitFleetQueue adds put and removes done in one durable write.
	CommitFleetQueue(put map[uint64][]byte, done []uint64) error
}

// Tunables. The connection notices a dead server within about
// pingInterval*(maxPingsOut+1) and tries again every reconnectWait.
const (
	pingInterval  = time.Second
	maxPingsOut   = 2
	reconnectWait = 250 * time.Millisecond
	dialTimeout   = time.Second
	// ackTimeout bounds the wait for JetStream's acknowledgement of a
	// publish; past it the decision is queued again.
	ackTimeout = 5 * time.Second
	// maxInflight bounds the publishes awaiting their acknowledgement.
	maxInflight = 4096
	// spillAfter is how long a decision may wait unacknowledged before
	// it is written to the record; while NATS is down it is written at
	// once (at the next spillEvery).
	spillAfter = time.Second
	spillEvery = 200 * time.Millisecond
	// maxQueue bounds the queue of a gateway cut off during a flood;
	// past it new decisions are enforced here but not shared (counted).
	maxQueue = 1_000_000
	// applyBatch bounds the bucket entries applied in one enforcer batch.
	applyBatch = 4096
	// heartbeatEvery refreshes this gateway's gw.<name> key (peerTTL).
	heartbeatEvery = 2 * time.Second
	// watchSilence is how long a live watch may deliver nothing, not even
	// this gateway's own heartbeat, before it is started anew: its
	// consumer lived on a NATS node that died, which the connection (to
	// another node) does not notice.
	watchSilence = 3 * heartbeatEvery
	// markerTTL is how long the bucket keeps the marker of an expired key.
	markerTTL = 10 * time.Minute
	// bucketMaxValue is the server's own bound on a value; the fleet's is
	// maxValue (below it), so that an oversized value is counted here.
	bucketMaxValue = 4096
	bindRetry      = time.Second
)

// Fleet publishes this gateway's decisions and applies the others'.
type Fleet struct {
	cfg   Config
	name  string
	log   *slog.Logger
	app   Applier
	spool Spool
	m     metrics

	kick   chan struct{}
	connCh chan struct{}
	// gen counts disconnections: a watch started in an older generation
	// may have missed entries and is restarted.
	gen     atomic.Uint64
	lastRev atomic.Uint64
	live    atomic.Bool
	closing atomic.Bool
	acks    chan pending

	mu        sync.Mutex
	queue     []*item
	byKey     map[string]*item
	inflight  int
	nextSeq   uint64
	done      []uint64
	known     map[string]known
	peers     map[string]time.Time
	connected bool
	server    string
	downSince time.Time
	lag       time.Duration
	lastErr   string
	lastErrAt time.Time
	warned    bool
}

// item is a decision waiting to be published.
type item struct {
	seq     uint64
	key     string
	val     value
	data    []byte
	created time.Time
	// offline is set on a decision made, or put back, while NATS was
	// unreachable: before it is published it is checked against the
	// bucket, which may hold a newer decision by now.
	offline   bool
	spooled   bool
	notBefore time.Time
}

// known is what the bucket holds for a key, as far as the watch saw.
type known struct {
	rev uint64
	val value
	// expires is when the bucket forgets the key.
	expires time.Time
}

type pending struct {
	it  *item
	fut jetstream.PubAckFuture
}

// New builds a fleet member named name (cfg.Name, or the host name) that
// applies through app and queues durably in spool (nil: in memory only).
// Attach app with SetApplier when it is built after the fleet.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, spool Spool) (*Fleet, error) {
	name := cfg.Name
	if name == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("fleet: name: %w", err)
		}
		name = SanitizeName(host)
	}
	f := &Fleet{
		cfg: cfg, name: name, log: log.With("fleet", name), spool: spool,
		kick: make(chan struct{}, 1), connCh: make(chan struct{}, 1), acks: make(chan pending, maxInflight),
		byKey: make(map[string]*item), known: make(map[string]known), peers: make(map[string]time.Time),
		downSince: time.Now(),
	}
	if err := f.m.register(reg, f); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return f, nil
}

// SetApplier attaches the enforcer; call it before Run.
func (f *Fleet) SetApplier(app Applier) { f.app = app }

// Name is this gateway's name in the fleet.
func (f *Fleet) Name() string { return f.name }

// Decided queues a local decision for the fleet; it never blocks.
func (f *Fleet) Decided(d enforcer.Decision) {
	v := valueOf(d, f.name)
	f.enqueue(&item{key: keyOf(d.Op, d.Net), val: v, created: time.Now()})
}

func (f *Fleet) enqueue(it *item) {
	data, err := jsonValue(it.val)
	if err != nil {
		f.log.Error("decision not shared: it does not encode", "key", it.key, "err", err)
		return
	}
	it.data = data
	f.mu.Lock()
	if len(f.byKey)+f.inflight >= maxQueue {
		f.mu.Unlock()
		f.m.dropped.Inc()
		return
	}
	if it.seq == 0 {
		f.nextSeq++
		it.seq = f.nextSeq
	}
	it.offline = it.offline || !f.live.Load()
	f.queueLocked(it)
	f.mu.Unlock()
	kick(f.kick)
}

// queueLocked appends it; a decision for the same key still waiting is
// replaced: only the latest of a key is worth publishing.
func (f *Fleet) queueLocked(it *item) {
	if old := f.byKey[it.key]; old != nil {
		f.dropLocked(old)
	}
	f.byKey[it.key] = it
	f.queue = append(f.queue, it)
}

// dropLocked forgets a queued item (it stays in the queue slice, where
// the publisher skips it as no longer byKey's).
func (f *Fleet) dropLocked(it *item) {
	if f.byKey[it.key] == it {
		delete(f.byKey, it.key)
	}
	if it.spooled {
		f.done = append(f.done, it.seq)
	}
}

// Run connects, watches the bucket and publishes until ctx is done. NATS
// being unreachable is not an error: the gateway enforces alone and
// tries again. It returns an error only for what a retry cannot mend (an
// unreadable credentials or TLS file).
func (f *Fleet) Run(ctx context.Context) error {
	if f.app == nil {
		return errors.New("fleet: no enforcer attached")
	}
	for _, p := range []string{f.cfg.CredentialsFile, f.cfg.TLS.CA, f.cfg.TLS.Cert, f.cfg.TLS.Key} {
		if p == "" {
			continue
		}
		if _, err := os.ReadFile(p); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
	}
	f.loadSpool()
	nc, err := nats.Connect(joinURLs(f.cfg.URLs), f.natsOptions()...)
	if err != nil {
		return fmt.Errorf("fleet: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*maxInflight), jetstream.WithPublishAsyncTimeout(ackTimeout))
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	f.noteConn(nc)
	f.log.Info("fleet member starting", "urls", f.cfg.URLs, "bucket", f.cfg.Bucket, "queued", f.Status().Queued)

	var wg sync.WaitGroup
	wg.Go(func() { f.runAcks(ctx) })
	wg.Go(func() { f.runPublisher(ctx, js) })
	wg.Go(func() { f.runHeartbeat(ctx, js) })

	var kv jetstream.KeyValue
	for ctx.Err() == nil {
		if !f.waitFor(ctx, func() bool { return nc.IsConnected() && f.app.Ready() }) {
			break
		}
		if kv == nil {
			if kv, err = f.bind(ctx, js); err != nil {
				kv = nil
				f.fail("bucket", err)
				sleep(ctx, bindRetry)
				continue
			}
		}
		if err := f.watch(ctx, kv); err != nil && ctx.Err() == nil {
			f.fail("watch", err)
			sleep(ctx, reconnectWait)
		}
	}
	f.live.Store(false)
	f.closing.Store(true)
	wg.Wait() // what was not acknowledged is back in the queue
	f.spill(true)
	return nil
}

func joinURLs(urls []string) string {
	out := ""
	for i, u := range urls {
		if i > 0 {
			out += ","
		}
		out += u
	}
	return out
}

func (f *Fleet) natsOptions() []nats.Option {
	opts := []nats.Option{
		nats.Name("wormgate " + f.name),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait), nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		nats.Timeout(dialTimeout), nats.PingInterval(pingInterval), nats.MaxPingsOutstanding(maxPingsOut),
		// Nothing is buffered while disconnected: a publish fails at
		// once and the decision waits in the queue, which is durable.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(f.noteConn),
		nats.ReconnectHandler(f.noteConn),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) { f.noteDown(err) }),
		nats.ClosedHandler(func(nc *nats.Conn) { f.noteDown(nats.ErrConnectionClosed) }),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) { f.noteConnectErr(err) }),
	}
	if f.cfg.tlsWanted() {
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	if f.cfg.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(f.cfg.TLS.CA))
	}
	if f.cfg.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(f.cfg.TLS.Cert, f.cfg.TLS.Key))
	}
	if f.cfg.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(f.cfg.CredentialsFile))
	}
	return opts
}

func (f *Fleet) noteConn(nc *nats.Conn) {
	if !nc.IsConnected() {
		return
	}
	f.mu.Lock()
	was := f.connected
	f.connected, f.server = true, nc.ConnectedUrlRedacted()
	f.mu.Unlock()
	if !was {
		f.log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted())
	}
	kick(f.connCh)
}

func (f *Fleet) noteDown(err error) {
	f.gen.Add(1)
	f.live.Store(false)
	f.mu.Lock()
	was := f.connected
	if was {
		f.downSince = time.Now()
	}
	f.connected = false
	f.mu.Unlock()
	if was && !f.closing.Load() {
		f.log.Warn("NATS connection lost; enforcing alone and queueing decisions", "err", err)
	}
	kick(f.connCh)
}

// noteConnectErr keeps why a connection attempt failed for the status;
// the attempts go on every reconnectWait, so only the first of a run of
// the same error is logged.
func (f *Fleet) noteConnectErr(err error) {
	if err == nil {
		return
	}
	msg := "connect: " + err.Error()
	f.mu.Lock()
	repeated := f.lastErr == msg
	f.lastErr, f.lastErrAt = msg, time.Now()
	f.mu.Unlock()
	if !repeated {
		f.log.Warn("cannot connect to NATS; enforcing alone and retrying", "err", err)
	}
}

// bind creates the bucket, or binds to it when another gateway did.
func (f *Fleet) bind(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(bctx, jetstream.KeyValueConfig{
		Bucket: f.cfg.Bucket, Description: "wormgate fleet decisions", History: 1, Replicas: f.cfg.Replicas,
		Storage: jetstream.FileStorage, LimitMarkerTTL: markerTTL, MaxValueSize: bucketMaxValue,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(bctx, f.cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", f.cfg.Bucket, err)
	}
	st, err := kv.Status(bctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", f.cfg.Bucket, err)
	}
	if st.LimitMarkerTTL() == 0 {
		return nil, fmt.Errorf("bucket %s: %w", f.cfg.Bucket, ErrNoKeyTTL)
	}
	return kv, nil
}

// ErrNoKeyTTL: a bucket made without per-key TTL (limit_marker_ttl).
var ErrNoKeyTTL = errors.New("the bucket has no per-key TTL (it needs limit_marker_ttl; delete it and let wormgate create it)")

// watch applies the bucket's entries from the last revision applied on
// (all of them the first time) until the connection drops. Once caught
// up the gateway is live: queued decisions are published.
func (f *Fleet) watch(ctx context.Context, kv jetstream.KeyValue) error {
	gen := f.gen.Load()
	var opts []jetstream.WatchOpt
	if rev := f.lastRev.Load(); rev > 0 {
		opts = append(opts, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(rev+1))
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.WatchAll(wctx, opts...)
	if err != nil {
		return fmt.Errorf("watch %s: %w", f.cfg.Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	start := time.Now()
	caught := false
	batch := make([]jetstream.KeyValueEntry, 0, applyBatch)
	silence := time.NewTimer(watchSilence)
	defer silence.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-silence.C:
			return fmt.Errorf("watch %s: %w", f.cfg.Bucket, errWatchSilent)
		case <-f.connCh:
			if f.gen.Load() != gen {
				return nil // a disconnection: watch anew from the last revision
			}
			continue
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch %s: %w", f.cfg.Bucket, errWatchClosed)
			}
			silence.Reset(watchSilence)
			batch = batch[:0]
			done := e == nil
			if e != nil {
				batch = append(batch, e)
			}
		drain:
			for !done && len(batch) < applyBatch {
				select {
				case e, ok := <-w.Updates():
					if !ok {
						break drain
					}
					if e == nil {
						done = true
						break drain
					}
					batch = append(batch, e)
				default:
					break drain
				}
			}
			f.apply(ctx, batch)
			if done && !caught {
				caught = true
				f.mu.Lock()
				f.lag = 0
				f.mu.Unlock()
				f.live.Store(true)
				kick(f.kick)
				f.log.Info("caught up with the fleet", "revision", f.lastRev.Load(), "took", time.Since(start))
			}
		}
	}
}

var (
	errWatchClosed = errors.New("watch closed")
	errWatchSilent = errors.New("no entry, not even this gateway's heartbeat, for " + watchSilence.String())
)

// apply decodes a batch of entries and applies the other gateways'
// decisions in one enforcer batch.
func (f *Fleet) apply(ctx context.Context, batch []jetstream.KeyValueEntry) {
	now := time.Now()
	ds := make([]enforcer.Decision, 0, len(batch))
	var newest time.Time
	f.mu.Lock()
	for _, e := range batch {
		rev := e.Revision()
		if rev <= f.lastRev.Load() {
			continue // delivered again after a reconnect
		}
		f.lastRev.Store(rev)
		key := e.Key()
		if e.Operation() != jetstream.KeyValuePut {
			// Deleted, purged, or expired (a marker): nothing to undo, a
			// ban ends in the kernel by itself.
			f.known[key] = known{rev: rev, expires: now.Add(markerTTL)}
			if len(key) > len(peerPrefix) && key[:len(peerPrefix)] == peerPrefix {
				delete(f.peers, key[len(peerPrefix):])
			}
			continue
		}
		ent, err := decodeEntry(key, e.Value())
		if err != nil {
			// Remember the revision (a publish over it must name it) but
			// nothing of the value.
			f.known[key] = known{rev: rev, expires: now.Add(minTombstone)}
			f.m.rejected.WithLabelValues(reasonOf(err)).Inc()
			f.log.Debug("fleet entry refused", "key", key, "revision", rev, "err", err)
			continue
		}
		f.known[key] = known{rev: rev, val: ent.val, expires: expiryOf(ent.val, e.Created())}
		if ent.peer != "" {
			if ent.peer != f.name {
				f.peers[ent.peer] = now.Add(peerTTL)
			}
			continue
		}
		if ent.val.Origin == f.name {
			continue // this gateway's own decision, in force here already
		}
		ds = append(ds, ent.decision())
		newest = e.Created()
	}
	f.mu.Unlock()
	if len(ds) == 0 {
		return
	}
	errs := f.app.ApplyRemote(ctx, ds)
	refused := 0
	for i, err := range errs {
		if err == nil {
			f.m.applied.WithLabelValues(string(ds[i].Op)).Inc()
			continue
		}
		refused++
		f.m.rejected.WithLabelValues(reasonOf(err)).Inc()
		f.log.Debug("fleet decision refused", "op", ds[i].Op, "net", ds[i].Net, "origin", ds[i].Origin, "err", err)
	}
	if refused > 0 {
		f.log.Info("fleet decisions refused here", "refused", refused, "of", len(ds), "see", "wormgate_fleet_rejected_total")
	}
	f.mu.Lock()
	f.lag = max(time.Since(newest), 0)
	f.mu.Unlock()
}

// expiryOf is when the bucket forgets a key written at created.
func expiryOf(v value, created time.Time) time.Time {
	ttl := ttlOf(v, created)
	if ttl == 0 {
		return time.Time{}
	}
	return created.Add(ttl + markerTTL)
}

// reasonOf is the wormgate_fleet_rejected_total label of a refusal.
func reasonOf(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{ErrOversized, "oversized"}, {ErrBadKey, "bad_key"}, {ErrMalformed, "malformed"},
		{enforcer.ErrProtected, "never_block"}, {enforcer.ErrTooWide, "too_wide"},
		{enforcer.ErrBadDuration, "bad_duration"}, {enforcer.ErrCapReached, "cap"},
		{enforcer.ErrNetOverlap, "overlap"}, {enforcer.ErrExpired, "expired"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "invalid"
}

var rejectReasons = []string{"oversized", "bad_key", "malformed", "never_block", "too_wide", "bad_duration", "cap", "overlap", "expired", "invalid"}

// runHeartbeat keeps gw.<name> in the bucket while live, so that the
// others count this gateway among their peers.
func (f *Fleet) runHeartbeat(ctx context.Context, js jetstream.JetStream) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last time.Time
	wasLive := false
	for {
		live := f.live.Load()
		if live && (!wasLive || time.Since(last) >= heartbeatEvery) {
			last = time.Now()
			data, err := jsonValue(value{Op: opPeer, Origin: f.name, Time: last.UTC()})
			if err == nil {
				hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err = js.PublishMsg(hctx, &nats.Msg{Subject: f.subject(peerPrefix + f.name), Data: data}, jetstream.WithMsgTTL(peerTTL))
				cancel()
			}
			if err != nil {
				f.log.Debug("heartbeat not published", "err", err)
			}
		}
		wasLive = live
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// subject is the JetStream subject of a key of the bucket.
func (f *Fleet) subject(key string) string { return "$KV." + f.cfg.Bucket + "." + key }

func (f *Fleet) waitFor(ctx context.Context, cond func() bool) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-f.connCh:
		case <-t.C:
		}
	}
	return true
}

func (f *Fleet) fail(what string, err error) {
	f.mu.Lock()
	f.lastErr, f.lastErrAt = what+": "+err.Error(), time.Now()
	f.mu.Unlock()
	f.log.Warn("fleet: "+what+" failed; retrying", "err", err)
}

// Status is the fleet's state as the status page shows it.
type Status struct {
	Enabled   bool   `json:"enabled"`
	Name      string `json:"name,omitempty"`
	Bucket    string `json:"bucket,omitempty"`
	Connected bool   `json:"connected"`
	// Live is true once connected and caught up with the bucket.
	Live   bool   `json:"live"`
	Server string `json:"server,omitempty"`
	// Queued are local decisions not yet published (or not yet
	// acknowledged).
	Queued int `json:"queued"`
	// Peers are the other gateways whose heartbeat is in the bucket.
	Peers []string `json:"peers"`
	// LagSeconds is how long the last applied decision took from the
	// bucket to here, or, while disconnected, how long that has lasted.
	LagSeconds  float64   `json:"lag_seconds"`
	Revision    uint64    `json:"revision"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Status reports the fleet's state.
func (f *Fleet) Status() Status {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	st := Status{
		Enabled: true, Name: f.name, Bucket: f.cfg.Bucket, Connected: f.connected, Live: f.live.Load(), Server: f.server,
		Queued: len(f.byKey) + f.inflight, Peers: []string{}, Revision: f.lastRev.Load(), LastError: f.lastErr, LastErrorAt: f.lastErrAt,
	}
	for p, exp := range f.peers {
		if exp.After(now) {
			st.Peers = append(st.Peers, p)
		}
	}
	slices.Sort(st.Peers)
	st.LagSeconds = f.lag.Seconds()
	if !f.connected {
		st.LagSeconds = now.Sub(f.downSince).Seconds()
	}
	return st
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
