package enforcer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/matcher"
)

// ErrCapReached is returned when a ban would exceed MaxActiveBans.
var ErrCapReached = errors.New("active ban cap reached")

// flushTimeout bounds the last write to the kernel after shutdown began.
const flushTimeout = 5 * time.Second

// Enforcer is the live side of the policy: it keeps the record of active
// bans (the source of truth; the kernel is only read back to audit) and is
// the only writer of the firewall.
type Enforcer struct {
	log       *slog.Logger
	fw        Firewall
	maxActive int
	now       func() time.Time
	m         metrics

	kick  chan struct{}
	ready atomic.Bool
	// wmu orders firewall writes, so an unban can never be overtaken by
	// an add of the same address that was already on its way.
	wmu sync.Mutex

	mu      sync.Mutex
	policy  *Policy
	active  map[netip.Addr]Ban
	pending map[netip.Addr]struct{}
}

type metrics struct {
	offenses   *prometheus.CounterVec
	added      *prometheus.CounterVec
	refused    *prometheus.CounterVec
	fwErrors   *prometheus.CounterVec
	fwDuration prometheus.Histogram
}

// New builds an enforcer writing to fw. cfg must be valid.
func New(cfg Config, rules map[string]RulePolicy, fw Firewall, log *slog.Logger, reg prometheus.Registerer) (*Enforcer, error) {
	p, err := NewPolicy(cfg, rules)
	if err != nil {
		return nil, err
	}
	e := &Enforcer{
		log:       log,
		fw:        fw,
		maxActive: cfg.MaxActiveBans,
		now:       time.Now,
		kick:      make(chan struct{}, 1),
		policy:    p,
		active:    make(map[netip.Addr]Ban),
		pending:   make(map[netip.Addr]struct{}),
	}
	e.m = metrics{
		offenses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_offenses_total", Help: "Offenses seen by the enforcer, by rule and verdict.",
		}, []string{"rule", "verdict"}),
		added: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_bans_added_total", Help: "Bans started or extended, by rule.",
		}, []string{"rule"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_bans_refused_total", Help: "Bans not made, by reason (never_block, cap, dry_run).",
		}, []string{"reason"}),
		fwErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wormgate_firewall_errors_total", Help: "Failed firewall operations (they are retried), by operation.",
		}, []string{"op"}),
		fwDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wormgate_firewall_write_duration_seconds", Help: "Time of one batched firewall write.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
	}
	for _, r := range []string{"never_block", "cap", "dry_run"} {
		e.m.refused.WithLabelValues(r)
	}
	for _, op := range []string{"setup", "add", "delete"} {
		e.m.fwErrors.WithLabelValues(op)
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wormgate_bans_active", Help: "Addresses banned now.",
	}, func() float64 { return float64(len(e.Bans())) })
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wormgate_firewall_pending", Help: "Bans decided but not yet written to the kernel.",
	}, func() float64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return float64(len(e.pending))
	})
	for _, c := range []prometheus.Collector{e.m.offenses, e.m.added, e.m.refused, e.m.fwErrors, e.m.fwDuration, active, pending} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("new enforcer: register metrics: %w", err)
		}
	}
	return e, nil
}

// SetRules swaps the rule policies (config reload); history is kept.
func (e *Enforcer) SetRules(rules map[string]RulePolicy) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policy.SetRules(rules)
}

// Offend feeds one offense through the policy. The daemon's clock, not
// the sender's timestamp, times live offenses: MX clocks may disagree.
func (e *Enforcer) Offend(off matcher.Offense) Decision {
	now := e.now()
	off.Time = now
	e.mu.Lock()
	d := e.policy.Observe(off)
	switch d.Verdict {
	case VerdictBan, VerdictExtend:
		if err := e.activateLocked(d.Ban, now); err != nil {
			e.mu.Unlock()
			e.m.offenses.WithLabelValues(off.Rule, "cap").Inc()
			e.log.Warn("ban refused", "addr", d.Ban.Addr, "rule", off.Rule, "err", err)
			return d
		}
	case VerdictNeverBlock:
		e.m.refused.WithLabelValues("never_block").Inc()
	case VerdictDryRun:
		e.m.refused.WithLabelValues("dry_run").Inc()
	}
	e.mu.Unlock()
	e.m.offenses.WithLabelValues(off.Rule, d.Verdict.String()).Inc()
	switch d.Verdict {
	case VerdictBan, VerdictExtend:
		e.m.added.WithLabelValues(off.Rule).Inc()
		e.log.Info("ban", "addr", d.Ban.Addr, "rule", off.Rule, "for", d.Ban.Duration, "extend", d.Verdict == VerdictExtend, "host", off.Host, "queue_id", off.QueueID)
	case VerdictNeverBlock:
		e.log.Warn("offender on the never-block list", "addr", off.Addr, "prefix", d.Prefix, "rule", off.Rule)
	case VerdictDryRun:
		e.log.Info("dry-run rule would ban", "addr", d.Ban.Addr, "rule", off.Rule, "for", d.Ban.Duration)
	default:
		e.log.Debug("offense", "addr", off.Addr, "rule", off.Rule, "verdict", d.Verdict)
	}
	return d
}

// activateLocked records b as active from now and queues its kernel write.
func (e *Enforcer) activateLocked(b Ban, now time.Time) error {
	b.Start = now
	b.Until = now.Add(b.Duration)
	old, exists := e.active[b.Addr]
	if exists && old.Until.After(now) {
		if !b.Until.After(old.Until) {
			return nil
		}
		b.Start = old.Start
	} else if len(e.active) >= e.maxActive {
		e.sweepLocked(now)
		if len(e.active) >= e.maxActive {
			e.m.refused.WithLabelValues("cap").Inc()
			return fmt.Errorf("ban %v: %w (%d)", b.Addr, ErrCapReached, e.maxActive)
		}
	}
	e.active[b.Addr] = b
	e.pending[b.Addr] = struct{}{}
	select {
	case e.kick <- struct{}{}:
	default:
	}
	return nil
}

// Ban bans addr by hand for d. It refuses protected addresses with an
// error naming the prefix.
func (e *Enforcer) Ban(addr netip.Addr, d time.Duration, reason string) (Ban, error) {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return Ban{}, fmt.Errorf("ban: invalid address")
	}
	if d <= 0 {
		return Ban{}, fmt.Errorf("ban %v: duration must be positive", addr)
	}
	if reason == "" {
		reason = "manual"
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if pfx, ok := e.policy.Protected(addr); ok {
		e.m.refused.WithLabelValues("never_block").Inc()
		return Ban{}, fmt.Errorf("ban %v: %w (%v)", addr, ErrNeverBlock, pfx)
	}
	b := Ban{Addr: addr, Rule: reason, Duration: d, Manual: true}
	if err := e.activateLocked(b, now); err != nil {
		return Ban{}, err
	}
	e.m.added.WithLabelValues(reason).Inc()
	return e.active[addr], nil
}

// Unban lifts a ban now, in the record and in the kernel.
func (e *Enforcer) Unban(ctx context.Context, addr netip.Addr) error {
	addr = addr.Unmap()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	e.mu.Lock()
	delete(e.active, addr)
	delete(e.pending, addr)
	e.mu.Unlock()
	if err := e.fw.Delete(ctx, []netip.Addr{addr}); err != nil {
		e.m.fwErrors.WithLabelValues("delete").Inc()
		return fmt.Errorf("unban %v: %w", addr, err)
	}
	return nil
}

// Bans returns the active bans, soonest expiry first.
func (e *Enforcer) Bans() []Ban {
	now := e.now()
	e.mu.Lock()
	bans := make([]Ban, 0, len(e.active))
	for _, b := range e.active {
		if b.Until.After(now) {
			bans = append(bans, b)
		}
	}
	e.mu.Unlock()
	slices.SortFunc(bans, func(a, b Ban) int {
		return cmp.Or(a.Until.Compare(b.Until), a.Addr.Compare(b.Addr))
	})
	return bans
}

// Offender returns what the policy remembers about addr.
func (e *Enforcer) Offender(addr netip.Addr) (Offender, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.policy.Offender(addr)
}

// sweepLocked forgets expired bans; the kernel expires them by itself.
func (e *Enforcer) sweepLocked(now time.Time) {
	for a, b := range e.active {
		if !b.Until.After(now) {
			delete(e.active, a)
		}
	}
}

// Run sets up the firewall and then writes decided bans to it in
// batches until ctx is done; what is still pending then is written with
// a fresh deadline, so a shutdown does not lose a decided ban.
func (e *Enforcer) Run(ctx context.Context) error {
	if err := e.fw.Setup(ctx); err != nil {
		e.m.fwErrors.WithLabelValues("setup").Inc()
		return fmt.Errorf("enforcer: %w", err)
	}
	e.ready.Store(true)
	e.log.Info("firewall ready")
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	backoff := time.Duration(0)
	for {
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			err := e.flush(fctx)
			cancel()
			if err != nil {
				return fmt.Errorf("enforcer: final flush: %w", err)
			}
			return nil
		case <-sweep.C:
			e.mu.Lock()
			e.sweepLocked(e.now())
			e.mu.Unlock()
			continue
		case <-e.kick:
		case <-retry:
		}
		if err := e.flush(ctx); err != nil {
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			e.log.Error("firewall write failed; retrying", "err", err, "retry_in", backoff)
			continue
		}
		backoff = 0
	}
}

// Ready reports whether the firewall has been set up.
func (e *Enforcer) Ready() bool { return e.ready.Load() }

// Flush writes everything pending now. Tests and benchmarks use it to
// wait for the kernel; the daemon relies on Run.
func (e *Enforcer) Flush(ctx context.Context) error { return e.flush(ctx) }

func (e *Enforcer) flush(ctx context.Context) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	now := e.now()
	e.mu.Lock()
	if len(e.pending) == 0 {
		e.mu.Unlock()
		return nil
	}
	elems := make([]Element, 0, len(e.pending))
	for a := range e.pending {
		if b, ok := e.active[a]; ok && b.Until.After(now) {
			elems = append(elems, Element{Addr: a, Timeout: b.Until.Sub(now)})
		}
	}
	clear(e.pending)
	e.mu.Unlock()
	if len(elems) == 0 {
		return nil
	}
	start := time.Now()
	err := e.fw.Add(ctx, elems)
	e.m.fwDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		e.m.fwErrors.WithLabelValues("add").Inc()
		// Put them back; the retry recomputes the remaining time.
		e.mu.Lock()
		for _, el := range elems {
			if _, ok := e.active[el.Addr]; ok {
				e.pending[el.Addr] = struct{}{}
			}
		}
		e.mu.Unlock()
		return fmt.Errorf("flush %d bans: %w", len(elems), err)
	}
	e.log.Debug("bans written", "n", len(elems), "took", time.Since(start))
	return nil
}
