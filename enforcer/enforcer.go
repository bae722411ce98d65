package enforcer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wormgate/wormgate/enforcer/store"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// ErrCapReached is returned when a ban would exceed MaxActiveBans.
var ErrCapReached = errors.New("active ban cap reached")

// ErrRateLimited is returned when a new ban would exceed
// MaxNewBansPerSecond.
var ErrRateLimited = errors.New("new ban rate limit reached")

const (
	// flushTimeout bounds the whole shutdown: the last kernel write, then
	// what the record can take; the record's disk may hang, and the
	// kernel keeps every ban anyway (the next start adopts them).
	flushTimeout = 4 * time.Second
	// reconcileEvery is how often the ruleset is checked; a deleted table
	// is back within this plus one restore.
	reconcileEvery = 500 * time.Millisecond
	// auditEvery is how often the kernel sets are read back and compared
	// with the record; reading 100k elements takes about a second.
	auditEvery = 10 * time.Minute
	// auditSlack skips bans that may have expired in the kernel by the
	// time it is read.
	auditSlack = 2 * time.Second
	// recordShutdownWait bounds what shutdown spends on the record after
	// the kernel has every ban; the next start adopts what it lacks.
	recordShutdownWait = 2500 * time.Millisecond
	// startAttempts bounds the start-up retries of the first kernel write.
	startAttempts = 5
)

// Enforcer is the live side of the policy: it keeps the active bans in
// memory (the source of truth; the kernel is only read back to audit) and
// is the only writer of the firewall. With a Store it also keeps a durable
// record, written behind the kernel: a ban never waits for the disk, and
// a record that fell behind (a crash, a full or hung disk) is made whole
// from the kernel at the next start (see start).
type Enforcer struct {
	log       *slog.Logger
	fw        Firewall
	store     Record
	maxActive int
	history   int
	now       func() time.Time
	m         metrics

	reconcileEvery time.Duration
	auditEvery     time.Duration

	kick        chan struct{}
	banLog      logLimiter
	ready       atomic.Bool
	needRestore atomic.Bool
	restores    atomic.Uint64
	// wmu orders firewall writes, so that a deletion can never be
	// overtaken by an add of the same address that was already on its way.
	wmu sync.Mutex
	// rmu orders record commits.
	rmu sync.Mutex
	// commitSince is when the running record commit began (Unix ns), 0
	// when none runs; the watchdog in Status reads it.
	commitSince atomic.Int64
	recKick     chan struct{}

	mu     sync.Mutex
	policy *policy.Policy
	active map[netip.Addr]policy.Ban
	// pending are the bans to write to the kernel, with what a write needs
	// of them, so that it can take the whole map and build its batch
	// without holding mu.
	pending map[netip.Addr]pendingBan
	// inflight counts the bans a write took from pending and has not yet
	// finished writing: until then they are not in the kernel either.
	inflight int
	// unrecorded are bans decided (and maybe in the kernel) but not yet
	// committed to the store; recInflight counts those a commit holds.
	unrecorded  map[netip.Addr]unrecorded
	recInflight int
	// dels are bans to delete from the store (expired or lifted).
	dels map[netip.Addr]struct{}
	// kdels are lifted bans still to delete from the kernel.
	kdels map[netip.Addr]struct{}
	// nets are the manual bans of networks.
	nets map[netip.Prefix]policy.Ban
	// allows are the operator's run-time never-block entries; tombs the
	// bans they lifted by hand, which start-up must not adopt back.
	allows map[netip.Prefix]store.Allow
	tombs  map[netip.Prefix]time.Time
	// ports is the kernel's port set as last written (Reconfigure).
	ports []uint16
	// ctl is what operators and the offence history changed in the
	// record since the last commit (host bans go through unrecorded).
	ctl    store.Change
	events *eventLog
	// timeline counts offences and new bans per rule over time.
	timeline *timeline
	manual   ManualConfig
	// sink is told of every decision made here, for the fleet.
	sink DecisionSink
	// nextExpiry is no later than the earliest Until in active, or zero
	// when unknown (after a load or an adoption), so that a sweep can be
	// skipped when nothing can have expired.
	nextExpiry time.Time
	// The new-ban token bucket.
	rate   float64
	tokens float64
	filled time.Time

	smu       sync.Mutex
	lastErr   string
	lastErrAt time.Time
	// failing holds the parts whose last operation failed: "firewall",
	// "record".
	failing map[string]bool
}

type metrics struct {
	// counters caches the offense and ban counters by (vec, rule,
	// verdict): looking a labelled child up hashes its labels, which a
	// flood of offenses would pay for every time.
	counters   sync.Map
	offenses   *prometheus.CounterVec
	added      *prometheus.CounterVec
	refused    *prometheus.CounterVec
	fwErrors   *prometheus.CounterVec
	fwDuration prometheus.Histogram
	restores   prometheus.Counter
	audit      *prometheus.CounterVec
	storeErrs  prometheus.Counter
}

// Option adjusts an Enforcer at construction.
type Option func(*Enforcer)

// WithStore makes the enforcer durable: Run loads the active bans and the
// offender history from s and commits every ban to s behind the kernel.
// The caller closes s after Run returned.
func WithStore(s Record) Option { return func(e *Enforcer) { e.store = s } }

// WithIntervals sets how often the ruleset is checked and the sets are
// audited (defaults 1s and 10m); tests shorten them.
func WithIntervals(reconcile, audit time.Duration) Option {
	return func(e *Enforcer) {
		if reconcile > 0 {
			e.reconcileEvery = reconcile
		}
		if audit > 0 {
			e.auditEvery = audit
		}
	}
}

// New builds an enforcer writing to fw. cfg must be valid.
func New(cfg Config, rules map[string]policy.RulePolicy, fw Firewall, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Enforcer, error) {
	p, err := policy.NewPolicy(cfg.Config, rules)
	if err != nil {
		return nil, err
	}
	rate := float64(cfg.MaxNewBansPerSecond)
	if rate <= 0 {
		rate = math.Inf(1)
	}
	e := &Enforcer{
		log:            log,
		fw:             fw,
		maxActive:      cfg.MaxActiveBans,
		history:        cfg.OffenderCacheSize,
		now:            time.Now,
		reconcileEvery: reconcileEvery,
		auditEvery:     auditEvery,
		kick:           make(chan struct{}, 1),
		recKick:        make(chan struct{}, 1),
		unrecorded:     make(map[netip.Addr]unrecorded),
		failing:        make(map[string]bool),
		policy:         p,
		active:         make(map[netip.Addr]policy.Ban),
		pending:        make(map[netip.Addr]pendingBan),
		dels:           make(map[netip.Addr]struct{}),
		kdels:          make(map[netip.Addr]struct{}),
		nets:           make(map[netip.Prefix]policy.Ban),
		allows:         make(map[netip.Prefix]store.Allow),
		tombs:          make(map[netip.Prefix]time.Time),
		events:         newEventLog(cfg.Events),
		timeline:       newTimeline(),
		manual:         cfg.Manual,
		ports:          slices.Clone(cfg.NFTables.Ports),
		rate:           rate,
		tokens:         rate,
	}
	for _, o := range opts {
		o(e)
	}
	e.m = metrics{
		offenses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_offenses_total", Help: "Offenses seen by the enforcer, by rule and verdict.",
		}, []string{"rule", "verdict"}),
		added: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_bans_added_total", Help: "Bans started or extended, by rule.",
		}, []string{"rule"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_bans_refused_total", Help: "Bans not made, by reason (never_block, cap, rate, dry_run).",
		}, []string{"reason"}),
		fwErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_firewall_errors_total", Help: "Failed firewall operations (they are retried), by operation.",
		}, []string{"op"}),
		fwDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wormgate_firewall_write_duration_seconds", Help: "Time of one batched firewall write.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormgate_firewall_restores_total", Help: "Rulesets rebuilt from the record after they were deleted or changed.",
		}),
		audit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_firewall_audit_differences_total", Help: "Differences the audit found and repaired between the kernel sets and the record, by kind (missing, extra).",
		}, []string{"kind"}),
		storeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormgate_store_errors_total", Help: "Failed commits to the durable record (they are retried).",
		}),
	}
	for _, r := range []string{"never_block", "cap", "rate", "dry_run"} {
		e.m.refused.WithLabelValues(r)
	}
	for _, op := range []string{"setup", "restore", "check", "add", "delete", "list"} {
		e.m.fwErrors.WithLabelValues(op)
	}
	for _, k := range []string{"missing", "extra"} {
		e.m.audit.WithLabelValues(k)
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wormgate_bans_active", Help: "Addresses banned now.",
	}, func() float64 { return float64(e.ActiveCount()) })
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wormgate_firewall_pending", Help: "Bans decided but not yet written to the kernel.",
	}, func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return float64(len(e.pending) + e.inflight)
	})
	degraded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wormgate_firewall_degraded", Help: "1 while the last firewall or record write failed and has not yet succeeded.",
	}, func() float64 {
		if e.Status().Degraded {
			return 1
		}
		return 0
	})
	recordLag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wormgate_record_lag", Help: "Bans and deletions enforced but not yet committed to the durable record.",
	}, func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return float64(e.recordLagLocked())
	})
	for _, c := range []prometheus.Collector{e.m.offenses, e.m.added, e.m.refused, e.m.fwErrors, e.m.fwDuration,
		e.m.restores, e.m.audit, e.m.storeErrs, active, pending, degraded, recordLag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("new enforcer: register metrics: %w", err)
		}
	}
	return e, nil
}

// AddNeverBlock protects more prefixes (the gateway's own addresses, the
// syslog senders). Call it before Run: bans in the record that it
// protects are dropped at start-up.
// Bans they cover are lifted (a syslog sender learned late, say): out of
// the kernel by the writer, out of the record by the recorder.
func (e *Enforcer) AddNeverBlock(prefixes ...netip.Prefix) {
	e.mu.Lock()
	e.policy.AddNeverBlock(prefixes...)
	hosts, nets := e.liftProtectedLocked()
	e.mu.Unlock()
	if len(hosts)+len(nets) == 0 {
		return
	}
	if len(nets) > 0 {
		e.needRestore.Store(true)
	}
	kick(e.kick)
	for _, n := range liftedPrefixes(hosts, nets) {
		e.log.Warn("ban lifted: the address is now on the never-block list", "net", n)
	}
}

// SetRules swaps the rule policies (config reload); history is kept.
func (e *Enforcer) SetRules(rules map[string]policy.RulePolicy) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policy.SetRules(rules)
}

// Offend feeds one offense through the policy. The daemon's clock, not
// the sender's timestamp, times live offenses: MX clocks may disagree.
func (e *Enforcer) Offend(off matcher.Offense) policy.Decision {
	now := e.now()
	off.Time = now
	e.mu.Lock()
	d := e.policy.Observe(off)
	var shared policy.Ban
	switch d.Verdict {
	case policy.VerdictBan, policy.VerdictExtend:
		before := e.active[d.Ban.Addr].Until
		if err := e.activateLocked(d.Ban, &d.History, now, true); err != nil {
			// Undo the policy's ban, so that the next offense tries again
			// and does not count as an escalation.
			e.policy.Undo(d)
			reason := "cap"
			if errors.Is(err, ErrRateLimited) {
				reason = "rate"
			}
			e.noteOffenseLocked(off, d, "refused: "+reason)
			e.mu.Unlock()
			e.timeline.note(off.Rule, now, false)
			e.m.offenses.WithLabelValues(off.Rule, reason).Inc()
			e.log.Debug("ban refused", "addr", d.Ban.Addr, "rule", off.Rule, "err", err)
			return d
		}
		if b := e.active[d.Ban.Addr]; e.sink != nil && (!before.After(now) || b.Until.Sub(before) >= shareExtension) {
			shared = b
		}
	case policy.VerdictNeverBlock:
		e.m.refused.WithLabelValues("never_block").Inc()
	case policy.VerdictDryRun:
		e.m.refused.WithLabelValues("dry_run").Inc()
	}
	e.noteOffenseLocked(off, d, d.Verdict.String())
	e.mu.Unlock()
	e.timeline.note(off.Rule, now, d.Verdict == policy.VerdictBan)
	if shared.Addr.IsValid() {
		e.decided(Decision{Op: OpBan, Net: netip.PrefixFrom(shared.Addr, shared.Addr.BitLen()), Time: now, Until: shared.Until,
			Rule: shared.Rule, Hits: shared.Hits, Bans: d.History.Bans})
	}
	e.counter(e.m.offenses, off.Rule, d.Verdict.String()).Inc()
	switch d.Verdict {
	case policy.VerdictBan, policy.VerdictExtend:
		e.counter(e.m.added, off.Rule, "").Inc()
		if e.banLog.allow(now) {
			e.log.Info("ban", "addr", d.Ban.Addr, "rule", off.Rule, "for", d.Ban.Duration, "extend", d.Verdict == policy.VerdictExtend, "host", off.Host, "queue_id", off.QueueID)
		}
	case policy.VerdictNeverBlock:
		e.log.Warn("offender on the never-block list", "addr", off.Addr, "prefix", d.Prefix, "rule", off.Rule)
	case policy.VerdictDryRun:
		e.log.Info("dry-run rule would ban", "addr", d.Ban.Addr, "rule", off.Rule, "for", d.Ban.Duration)
	case policy.VerdictTrustedClient:
		// Counted in wormgate_offenses_total; one line each at debug
		// level, as a provider relaying an outbreak repeats it.
		e.log.Debug("weak evidence against a trusted client; not banned", "addr", off.Addr, "rule", off.Rule, "trust", d.Trust.String(), "host", off.Host, "queue_id", off.QueueID)
	default:
		e.log.Debug("offense", "addr", off.Addr, "rule", off.Rule, "verdict", d.Verdict)
	}
	return d
}

// activateLocked records b as active from now and queues its kernel
// write. limited subjects a new ban to the rate limit.
func (e *Enforcer) activateLocked(b policy.Ban, hist *policy.History, now time.Time, limited bool) error {
	b.Start = now
	b.Until = now.Add(b.Duration)
	old, exists := e.active[b.Addr]
	refresh := exists && old.Until.After(now)
	if p, queued := e.pending[b.Addr]; queued {
		// Not written yet: the kernel holds what it held before.
		refresh = p.refresh
	}
	if exists && old.Until.After(now) {
		if !b.Until.After(old.Until) {
			return nil
		}
		b.Start = old.Start
	} else {
		if len(e.active) >= e.maxActive {
			// Sweep only when a ban can have expired: at the cap every
			// refused offense would otherwise scan every ban.
			if !now.Before(e.nextExpiry) {
				e.sweepLocked(now)
			}
			if len(e.active) >= e.maxActive {
				e.m.refused.WithLabelValues("cap").Inc()
				// A sentinel, not a formatted error: under a flood
				// every refusal would pay for the formatting.
				return ErrCapReached
			}
		}
		if limited && !e.takeTokenLocked(now) {
			e.m.refused.WithLabelValues("rate").Inc()
			return ErrRateLimited
		}
	}
	delete(e.dels, b.Addr)
	if len(e.tombs) > 0 {
		// Banned again after an unban: start-up may adopt it again.
		e.dropTombstoneLocked(netip.PrefixFrom(b.Addr, b.Addr.BitLen()))
	}
	e.active[b.Addr] = b
	if b.Until.Before(e.nextExpiry) {
		// Zero stays zero: unknown until the next sweep.
		e.nextExpiry = b.Until
	}
	e.pending[b.Addr] = pendingBan{until: b.Until, refresh: refresh}
	kick(e.kick)
	if e.store != nil {
		u := unrecorded{ban: b}
		if hist != nil {
			u.hist, u.hasHist = *hist, true
		}
		e.unrecorded[b.Addr] = u
		kick(e.recKick)
	}
	return nil
}

type counterKey struct {
	vec           *prometheus.CounterVec
	rule, verdict string
}

// counter is vec's child for rule (and verdict, when not empty).
func (e *Enforcer) counter(vec *prometheus.CounterVec, rule, verdict string) prometheus.Counter {
	k := counterKey{vec, rule, verdict}
	if c, ok := e.m.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	var c prometheus.Counter
	if verdict == "" {
		c = vec.WithLabelValues(rule)
	} else {
		c = vec.WithLabelValues(rule, verdict)
	}
	e.m.counters.Store(k, c)
	return c
}

// waitTimeout waits for wg at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// kick wakes the goroutine that waits on c, without blocking.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// takeTokenLocked is a token bucket holding one second's worth of bans.
func (e *Enforcer) takeTokenLocked(now time.Time) bool {
	if math.IsInf(e.rate, 1) {
		return true
	}
	if el := now.Sub(e.filled); el > 0 {
		e.tokens = min(e.rate, e.tokens+el.Seconds()*e.rate)
	}
	e.filled = now
	if e.tokens < 1 {
		return false
	}
	e.tokens--
	return true
}

// Bans returns the active bans, soonest expiry first.
func (e *Enforcer) Bans() []policy.Ban {
	now := e.now()
	e.mu.Lock()
	bans := make([]policy.Ban, 0, len(e.active))
	for _, b := range e.active {
		if b.Until.After(now) {
			bans = append(bans, b)
		}
	}
	for _, b := range e.nets {
		if b.Until.After(now) {
			bans = append(bans, b)
		}
	}
	e.mu.Unlock()
	slices.SortFunc(bans, func(a, b policy.Ban) int {
		return cmp.Or(a.Until.Compare(b.Until), a.Addr.Compare(b.Addr))
	})
	return bans
}

// ActiveCount is the number of bans in the record, in constant time for
// the metrics scrape. Bans that expired within the last minute count
// until the minute's sweep forgets them; Bans is exact but sorts.
func (e *Enforcer) ActiveCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.active)
}

// Status is the enforcer's health as the status page shows it.
type Status struct {
	Ready bool `json:"ready"`
	// Degraded is true while the last firewall or record operation
	// failed; bans are kept and retried.
	Degraded bool `json:"degraded"`
	// Failing names the parts whose last operation failed: "firewall"
	// (bans may be missing from the kernel) or "record" (bans are
	// enforced but not yet on disk).
	Failing     []string  `json:"failing,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Pending     int       `json:"pending"`
	// RecordLag is the number of bans and deletions not yet committed to
	// the record.
	RecordLag int    `json:"record_lag"`
	Restores  uint64 `json:"restores"`
	Durable   bool   `json:"durable"`
}

// Status reports readiness and the last failure.
func (e *Enforcer) Status() Status {
	e.mu.Lock()
	pending := len(e.pending) + e.inflight
	lag := e.recordLagLocked()
	e.mu.Unlock()
	e.smu.Lock()
	defer e.smu.Unlock()
	var failing []string
	lastErr, lastErrAt := e.lastErr, e.lastErrAt
	for _, part := range []string{partFirewall, partRecord} {
		if e.failing[part] {
			failing = append(failing, part)
		}
	}
	if since := e.commitSince.Load(); since != 0 {
		if stalled := time.Since(time.Unix(0, since)); stalled > commitStall {
			if !slices.Contains(failing, partRecord) {
				failing = append(failing, partRecord)
			}
			lastErr = fmt.Sprintf("record commit has not returned for %v: the disk does not answer", stalled.Round(time.Second))
			lastErrAt = time.Unix(0, since).Add(commitStall)
		}
	}
	return Status{
		Ready: e.ready.Load(), Degraded: len(failing) > 0, Failing: failing, LastError: lastErr, LastErrorAt: lastErrAt,
		Pending: pending, RecordLag: lag, Restores: e.restores.Load(), Durable: e.store != nil,
	}
}

// The parts whose health Status reports.
const (
	partFirewall = "firewall"
	partRecord   = "record"
)

func (e *Enforcer) fail(part string, err error) {
	e.smu.Lock()
	defer e.smu.Unlock()
	e.failing[part] = true
	e.lastErr = err.Error()
	e.lastErrAt = e.now()
}

func (e *Enforcer) succeed(part string) {
	e.smu.Lock()
	defer e.smu.Unlock()
	delete(e.failing, part)
}

// sweepLocked forgets expired bans (the kernel expires them by itself)
// and queues their deletion from the record.
func (e *Enforcer) sweepLocked(now time.Time) {
	var next time.Time
	for a, b := range e.active {
		if !b.Until.After(now) {
			delete(e.active, a)
			if e.store != nil {
				e.dels[a] = struct{}{}
			}
			continue
		}
		if next.IsZero() || b.Until.Before(next) {
			next = b.Until
		}
	}
	for n, b := range e.nets {
		if !b.Until.After(now) {
			delete(e.nets, n)
			if e.store != nil {
				e.ctl.Deletes = append(e.ctl.Deletes, n)
			}
		}
	}
	for n, until := range e.tombs {
		if !until.After(now) {
			delete(e.tombs, n)
		}
	}
	for n, a := range e.allows {
		if !a.Until.IsZero() && !a.Until.After(now) {
			delete(e.allows, n)
			e.applyAllowsLocked()
			e.log.Info("allow expired", "net", n)
		}
	}
	e.nextExpiry = next
}

// load fills the active bans from the store; protected addresses are
// dropped. A record that could not be read was moved aside by the store,
// which said so.
func (e *Enforcer) load() error {
	now := e.now()
	snap, err := e.store.Load(now, store.Limits{History: e.history, Events: e.events.cfg.Total, EventAge: e.events.cfg.MaxAge})
	bans, hist := snap.Bans, snap.History
	if err != nil {
		return err
	}
	if aside := e.store.Recovered(); aside != "" {
		e.log.Error("the record could not be read and was moved aside; starting from the kernel's bans", "moved_to", aside)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policy.RestoreHistory(hist)
	for _, a := range snap.Allows {
		e.allows[a.Net] = a
	}
	e.applyAllowsLocked()
	for _, t := range snap.Tombstones {
		e.tombs[t.Net] = t.Until
	}
	e.ctl.DropEvents = append(e.ctl.DropEvents, e.events.restore(snap.Events, now)...)
	e.timeline.seed(snap.Events)
	if len(e.active) == 0 {
		// Sized once: growing a map to 100k entries rehashes it many times.
		e.active = make(map[netip.Addr]policy.Ban, len(bans))
	}
	dropped := 0
	for _, b := range bans {
		if b.Net.IsValid() {
			if pfx, ok := e.policy.ProtectedNet(b.Net); ok {
				e.log.Warn("recorded network ban dropped: it overlaps the never-block list", "net", b.Net, "prefix", pfx)
				e.ctl.Deletes = append(e.ctl.Deletes, b.Net)
				dropped++
				continue
			}
			e.nets[b.Net] = b
			continue
		}
		if pfx, ok := e.policy.Protected(b.Addr); ok {
			e.log.Warn("recorded ban dropped: address is on the never-block list", "addr", b.Addr, "prefix", pfx)
			e.dels[b.Addr] = struct{}{}
			dropped++
			continue
		}
		e.active[b.Addr] = b
	}
	e.nextExpiry = time.Time{}
	e.log.Info("record loaded", "bans", len(bans)-dropped, "offenders", len(hist), "dropped", dropped,
		"events", len(snap.Events), "allows", len(snap.Allows))
	return nil
}

// Run loads the record, sets up the firewall with every recorded ban in
// one batch and then writes decided bans in batches until ctx is done;
// what is still pending then is written with a fresh deadline, so a
// shutdown does not lose a decided ban. Every second it checks the
// ruleset and restores it from the record if it was deleted or changed.
func (e *Enforcer) Run(ctx context.Context) error {
	if err := e.start(ctx); err != nil {
		return fmt.Errorf("enforcer: %w", err)
	}
	e.ready.Store(true)
	e.log.Info("firewall ready", "bans", e.ActiveCount(), "durable", e.store != nil)
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	reconcile := time.NewTicker(e.reconcileEvery)
	defer reconcile.Stop()
	audit := time.NewTicker(e.auditEvery)
	defer audit.Stop()
	recCtx, recStop := context.WithCancel(context.WithoutCancel(ctx))
	var recWG sync.WaitGroup
	if e.store != nil {
		recWG.Go(func() { e.runRecorder(recCtx) })
		kick(e.recKick) // what start-up adopted or dropped
	}
	// shutdown waits for the recorder, within its deadline: one stuck in
	// a commit on a hung disk is left behind, never waited for.
	defer recStop()
	// retry is armed only by a failed write and survives the other
	// cases, so that the reconcile tick cannot keep postponing it.
	backoff := time.Duration(0)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return e.shutdown(ctx, recStop, &recWG)
		case <-sweep.C:
			e.mu.Lock()
			e.sweepLocked(e.now())
			e.mu.Unlock()
			kick(e.recKick)
		case <-reconcile.C:
			e.reconcile(ctx)
			if n := e.banLog.suppressed(); n > 0 {
				e.log.Info("more bans than are logged one by one", "bans", n, "see", "/api/v1/bans")
			}
			continue
		case <-audit.C:
			if _, _, err := e.Audit(ctx); err != nil {
				e.log.Error("audit failed", "err", err)
			}
			continue
		case <-e.kick:
		case <-retry:
		}
		if err := e.flush(ctx); err != nil {
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			retry = time.After(backoff)
			e.log.Error("firewall write failed; retrying", "err", err, "retry_in", backoff)
			continue
		}
		backoff, retry = 0, nil
	}
}

// shutdown writes what is pending to the kernel, then to the record; each
// step has its own deadline, so a hung disk cannot hold the process.
func (e *Enforcer) shutdown(ctx context.Context, recStop context.CancelFunc, recWG *sync.WaitGroup) error {
	deadline := time.Now().Add(flushTimeout)
	fctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	err := e.write(fctx, false)
	cancel()
	recStop()
	if n := e.banLog.suppressed(); n > 0 {
		e.log.Info("more bans than are logged one by one", "bans", n, "see", "/api/v1/bans")
	}
	// The record gets what is left of the deadline, at most
	// recordShutdownWait: with SIGTERM during a disk stall the process
	// must still exit within systemd's patience and the operator's (a
	// commit the watchdog already calls hung gets nothing).
	if d := time.Now().Add(recordShutdownWait); d.Before(deadline) {
		deadline = d
	}
	wait := time.Until(deadline)
	if since := e.commitSince.Load(); since != 0 && time.Since(time.Unix(0, since)) > commitStall {
		wait = 0
	}
	if !waitTimeout(recWG, wait) {
		// The recorder is stuck in a commit on a hung disk: the kernel has
		// every ban, and the next start adopts what the record lacks.
		e.log.Error("record writer did not stop: the disk does not answer", "waited", wait.Round(time.Millisecond))
	} else if e.store != nil {
		e.recordAll(time.Until(deadline))
	}
	if err != nil {
		return fmt.Errorf("enforcer: final flush: %w", err)
	}
	return nil
}

// start brings the kernel and the active bans in line before anything
// else is written, and never shrinks what the kernel enforces: the
// kernel's own elements are adopted first (the record may be behind it
// after a crash, or lost, rolled back or corrupt). When the kernel could
// be read, one restore batch then holds record and kernel together; when
// it could not, the table is set up without touching its elements and
// every active ban is added on top.
func (e *Enforcer) start(ctx context.Context) error {
	if e.store != nil {
		if err := e.load(); err != nil {
			return err
		}
	}
	read := e.adopt(ctx)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var err error
		if read {
			err = e.write(ctx, true)
		} else {
			err = e.setupAndAdd(ctx)
		}
		if err == nil {
			return nil
		}
		if attempt == startAttempts || errors.Is(err, ErrIncompatibleSet) || ctx.Err() != nil {
			return err
		}
		e.log.Error("firewall set-up failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff *= 2
	}
}

// setupAndAdd sets the table up keeping its elements and adds every active
// ban as a refresh (the kernel may hold it already).
func (e *Enforcer) setupAndAdd(ctx context.Context) error {
	if err := e.fw.Setup(ctx); err != nil {
		e.m.fwErrors.WithLabelValues("setup").Inc()
		e.fail(partFirewall, err)
		return err
	}
	e.mu.Lock()
	for a, b := range e.active {
		e.pending[a] = pendingBan{until: b.Until, refresh: true}
	}
	e.mu.Unlock()
	return e.write(ctx, false)
}

// reconcile checks the ruleset and restores it when it drifted or when an
// earlier restore failed.
func (e *Enforcer) reconcile(ctx context.Context) {
	if !e.needRestore.Load() {
		err := e.fw.Check(ctx)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrDrift) {
			e.m.fwErrors.WithLabelValues("check").Inc()
			e.fail(partFirewall, err)
			e.log.Error("firewall check failed", "err", err)
			return
		}
		e.log.Warn("ruleset changed behind wormgate's back; restoring it from the record", "why", err)
	}
	start := time.Now()
	if err := e.write(ctx, true); err != nil {
		e.needRestore.Store(true)
		e.log.Error("ruleset restore failed; retrying", "err", err)
		return
	}
	e.needRestore.Store(false)
	e.restores.Add(1)
	e.m.restores.Inc()
	e.log.Warn("ruleset restored", "bans", e.ActiveCount(), "took", time.Since(start))
}

// Audit reads the kernel sets back and repairs differences with the
// record: recorded bans missing from the kernel are re-added, kernel
// elements the record does not hold are removed. It is slow on big sets
// and holds up other writes meanwhile.
func (e *Enforcer) Audit(ctx context.Context) (missing, extra int, err error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	elems, err := e.fw.List(ctx)
	if err != nil {
		e.m.fwErrors.WithLabelValues("list").Inc()
		return 0, 0, fmt.Errorf("audit: %w", err)
	}
	now := e.now()
	inKernel := make(map[netip.Addr]struct{}, len(elems))
	netsIn := make(map[netip.Prefix]struct{})
	var extras []netip.Addr
	var extraNets []netip.Prefix
	var missingNets []Element
	e.mu.Lock()
	for _, el := range elems {
		if el.Net.IsValid() && !el.Net.IsSingleIP() {
			netsIn[el.Net] = struct{}{}
			if b, ok := e.nets[el.Net]; !ok || !b.Until.After(now) {
				extraNets = append(extraNets, el.Net)
			}
			continue
		}
		a := el.Addr.Unmap()
		inKernel[a] = struct{}{}
		if b, ok := e.active[a]; !ok || !b.Until.After(now) {
			extras = append(extras, a)
		}
	}
	for n, b := range e.nets {
		if _, ok := netsIn[n]; !ok && b.Until.Sub(now) >= auditSlack {
			missingNets = append(missingNets, Element{Addr: n.Addr(), Net: n, Timeout: b.Until.Sub(now)})
		}
	}
	for a, b := range e.active {
		if _, ok := inKernel[a]; ok || b.Until.Sub(now) < auditSlack {
			continue
		}
		if _, ok := e.pending[a]; ok {
			continue
		}
		missing++
		e.pending[a] = pendingBan{until: b.Until}
	}
	e.mu.Unlock()
	missing += len(missingNets)
	extra = len(extras) + len(extraNets)
	e.m.audit.WithLabelValues("missing").Add(float64(missing))
	e.m.audit.WithLabelValues("extra").Add(float64(extra))
	if missing > 0 || extra > 0 {
		e.log.Warn("audit found differences between kernel and record", "missing", missing, "extra", extra)
	}
	if missing > 0 {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	if len(extras) > 0 {
		if err := e.fw.Delete(ctx, extras); err != nil {
			e.m.fwErrors.WithLabelValues("delete").Inc()
			return missing, extra, fmt.Errorf("audit: %w", err)
		}
	}
	if len(extraNets) > 0 {
		if err := e.fw.DeleteNets(ctx, extraNets); err != nil {
			e.m.fwErrors.WithLabelValues("delete").Inc()
			return missing, extra, fmt.Errorf("audit: %w", err)
		}
	}
	if len(missingNets) > 0 {
		if err := e.fw.Add(ctx, missingNets); err != nil {
			e.m.fwErrors.WithLabelValues("add").Inc()
			return missing, extra, fmt.Errorf("audit: %w", err)
		}
	}
	return missing, extra, nil
}

// Ready reports whether the firewall has been set up.
func (e *Enforcer) Ready() bool { return e.ready.Load() }

// Flush writes everything pending now, to the kernel and then to the
// record. Tests and benchmarks use it to wait for both; the daemon relies
// on Run.
func (e *Enforcer) Flush(ctx context.Context) error {
	if err := e.flush(ctx); err != nil {
		return err
	}
	return e.recordCaughtUp()
}

func (e *Enforcer) flush(ctx context.Context) error { return e.write(ctx, false) }

// write sends the pending bans to the kernel: with full, all active bans
// in one restore batch, else the pending ones. It never waits for the
// record, which follows on its own (record). A failure puts everything
// back to be retried.
func (e *Enforcer) write(ctx context.Context, full bool) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	now := e.now()
	e.mu.Lock()
	if !full && len(e.pending) == 0 && len(e.kdels) == 0 {
		e.mu.Unlock()
		return nil
	}
	queued := e.pending
	e.pending = make(map[netip.Addr]pendingBan)
	e.inflight = len(queued)
	defer func() {
		e.mu.Lock()
		e.inflight = 0
		e.mu.Unlock()
	}()
	var elems []Element
	var kdels []netip.Addr
	if full {
		elems = make([]Element, 0, len(e.active)+len(e.nets))
		for a, b := range e.active {
			if b.Until.After(now) {
				elems = append(elems, Element{Addr: a, Timeout: b.Until.Sub(now)})
			}
		}
		for n, b := range e.nets {
			if b.Until.After(now) {
				elems = append(elems, Element{Addr: n.Addr(), Net: n, Timeout: b.Until.Sub(now)})
			}
		}
		clear(e.kdels) // a restore writes exactly the active bans
	} else {
		for a := range e.kdels {
			kdels = append(kdels, a)
		}
	}
	e.mu.Unlock()
	if len(kdels) > 0 {
		// Lifted bans whose kernel delete failed: before any add, so that
		// a later ban of the same address is not deleted after it.
		if err := e.fw.Delete(ctx, kdels); err != nil {
			e.m.fwErrors.WithLabelValues("delete").Inc()
			e.requeue(queued)
			e.fail(partFirewall, err)
			return fmt.Errorf("delete %d lifted bans: %w", len(kdels), err)
		}
		e.mu.Lock()
		for _, a := range kdels {
			delete(e.kdels, a)
		}
		e.mu.Unlock()
	}
	if !full {
		// Offend goes on meanwhile: the batch is built from the map this
		// write took, not under mu.
		elems = make([]Element, 0, len(queued))
		for a, p := range queued {
			if p.until.After(now) {
				elems = append(elems, Element{Addr: a, Timeout: p.until.Sub(now), Refresh: p.refresh})
			}
		}
	}

	if !full && len(elems) == 0 {
		e.succeed(partFirewall)
		return nil
	}
	start := time.Now()
	var err error
	op := "add"
	if full {
		op = "restore"
		err = e.fw.Restore(ctx, elems)
	} else {
		err = e.fw.Add(ctx, elems)
	}
	e.m.fwDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		e.m.fwErrors.WithLabelValues(op).Inc()
		// The retry recomputes the remaining time.
		e.requeue(queued)
		e.fail(partFirewall, err)
		return fmt.Errorf("%s %d bans: %w", op, len(elems), err)
	}
	e.succeed(partFirewall)
	e.log.Debug("bans written", "op", op, "n", len(elems), "took", time.Since(start))
	return nil
}

// requeue puts a failed write back. A ban activated again meanwhile is a
// refresh if either write says so: refreshing an absent element is only
// dearer, adding a present one as new may not restart its timeout.
func (e *Enforcer) requeue(queued map[netip.Addr]pendingBan) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for a, p := range queued {
		b, ok := e.active[a]
		if !ok {
			continue
		}
		cur, again := e.pending[a]
		e.pending[a] = pendingBan{until: b.Until, refresh: p.refresh || (again && cur.refresh)}
	}
}

// pendingBan is a ban on its way to the kernel.
type pendingBan struct {
	until time.Time
	// refresh is set when the kernel holds an earlier write of the ban.
	refresh bool
}

// Ban lines logged one by one per second; past them a flood is summed up
// once a second, so that 100,000 bans do not cost 100,000 log writes.
const banLogPerSecond = 50

// logLimiter lets banLogPerSecond log lines through per second and counts
// the rest.
type logLimiter struct {
	mu     sync.Mutex
	second int64
	n      int
	held   int
}

func (l *logLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := now.Unix(); s != l.second {
		l.second, l.n = s, 0
	}
	if l.n < banLogPerSecond {
		l.n++
		return true
	}
	l.held++
	return false
}

// suppressed returns and resets the count of lines not logged.
func (l *logLimiter) suppressed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.held
	l.held = 0
	return n
}
