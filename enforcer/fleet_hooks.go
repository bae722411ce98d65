package enforcer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/enforcer/store"
)

// shareExtension is the least extension of a ban the sink is told of: a
// worm that keeps hitting extends its ban on every offence, and the fleet
// need not hear of each.
const shareExtension = time.Minute

// ErrExpired: a decision from the fleet whose ban has already ended.
var ErrExpired = errors.New("already expired")

// Op is what a decision shared with the fleet does.
type Op string

// The decisions a gateway shares with the fleet.
const (
	OpBan      Op = "ban"
	OpUnban    Op = "unban"
	OpAllow    Op = "allow"
	OpDisallow Op = "disallow"
)

// Decision is one decision about an address or network, made here (for
// the fleet to publish) or by another gateway (for ApplyRemote).
type Decision struct {
	Op Op
	// Net is the address (a single-IP prefix) or the network.
	Net netip.Prefix
	// Time is when the decision was made.
	Time time.Time
	// Until is when a ban ends; for an unban, when the lifted ban would
	// have ended (its tombstone lasts as long); for an allow, when it
	// ends (zero: until removed).
	Until  time.Time
	Rule   string
	Reason string
	By     string
	Hits   int
	// Bans counts the offender's bans so far, for the fleet's escalation.
	Bans   int
	Manual bool
	// Origin names the gateway that decided; empty for this one.
	Origin string
}

// DecisionSink is told of every decision this gateway makes: automatic
// bans and extensions, manual bans, unbans, allows and disallows. It is
// never told of what ApplyRemote applies.
type DecisionSink interface {
	// Decided is called once the decision is in force, without the
	// enforcer's lock held, on the deciding goroutine: it must not block.
	Decided(d Decision)
}

// WithDecisionSink makes the enforcer tell s of every local decision.
func WithDecisionSink(s DecisionSink) Option { return func(e *Enforcer) { e.sink = s } }

func (e *Enforcer) decided(d Decision) {
	if e.sink != nil {
		e.sink.Decided(d)
	}
}

// ApplyRemote applies decisions that other gateways made, in order, as
// one batch: bans go to the kernel through the batched writer, unbans
// leave tombstones as a local unban does, allows carry their origin. This
// gateway's never-block list and allows win: a ban they cover is refused
// with ErrProtected. A remote disallow removes only an allow that came
// from the fleet. The result holds, for each decision, why it was refused
// (nil: applied or nothing to do). Nothing is told to the sink.
func (e *Enforcer) ApplyRemote(ctx context.Context, ds []Decision) []error {
	errs := make([]error, len(ds))
	nets := make([]netip.Prefix, len(ds))
	for i, d := range ds {
		nets[i], errs[i] = e.CheckNet(d.Net)
	}
	now := e.now()
	var (
		hosts         []netip.Addr
		netDels       []netip.Prefix
		netAdds       []policy.Ban
		events        []policy.Event
		allowsChanged bool
	)
	detail := func(n netip.Prefix, d Decision) string { return fmt.Sprintf("%v by %s on %s", n, d.By, d.Origin) }
	e.mu.Lock()
	maxFor := e.manual.MaxDuration
	for i, d := range ds {
		if errs[i] != nil {
			continue
		}
		n := nets[i]
		switch d.Op {
		case OpBan:
			var nb *policy.Ban
			nb, errs[i] = e.remoteBanLocked(d, n, now, maxFor)
			if nb != nil {
				netAdds = append(netAdds, *nb)
			}
		case OpUnban:
			if !e.bannedLocked(n, now) {
				continue
			}
			e.unbanLocked(n, &hosts, &netDels)
			events = append(events, policy.Event{Time: now, Addr: n.Addr(), Kind: "fleet", Rule: manualRule, Verdict: "unban", Detail: detail(n, d)})
		case OpAllow:
			if !d.Until.IsZero() && !d.Until.After(now) {
				errs[i] = ErrExpired
				continue
			}
			if old, ok := e.allows[n]; ok && old.Origin == "" {
				continue // this gateway's own allow stays as its operator made it
			}
			e.putAllowLocked(store.Allow{Net: n, Added: now, Until: d.Until, Reason: d.Reason, By: d.By, Origin: d.Origin})
			allowsChanged = true
			events = append(events, policy.Event{Time: now, Addr: n.Addr(), Kind: "fleet", Rule: manualRule, Text: d.Reason, Verdict: "allow", Detail: detail(n, d)})
		case OpDisallow:
			if a, ok := e.allows[n]; !ok || a.Origin == "" {
				continue // local wins: only the fleet's allows are the fleet's to remove
			}
			e.dropAllowLocked(n)
			allowsChanged = true
			events = append(events, policy.Event{Time: now, Addr: n.Addr(), Kind: "fleet", Rule: manualRule, Verdict: "disallow", Detail: detail(n, d)})
		default:
			errs[i] = fmt.Errorf("%w: unknown op %q", ErrBadDecision, d.Op)
		}
	}
	if allowsChanged {
		e.applyAllowsLocked()
		h, n := e.liftProtectedLocked()
		hosts = append(hosts, h...)
		netDels = append(netDels, n...)
	}
	e.mu.Unlock()
	var kerr error
	if len(hosts)+len(netDels) > 0 {
		kerr = e.deleteFromKernel(ctx, hosts, netDels)
	}
	for _, b := range netAdds {
		kerr = errors.Join(kerr, e.writeNet(ctx, b, now))
	}
	if kerr != nil {
		// Retried by the writer and the reconcile loop; the decisions
		// stand in wormgate.
		e.log.Error("fleet decisions applied, but a kernel write failed (retried)", "err", kerr)
	}
	for _, ev := range events {
		e.noteEvent(ev)
	}
	return errs
}

// ErrBadDecision: a decision from the fleet that does not make sense.
var ErrBadDecision = errors.New("bad decision")

// remoteBanLocked makes the ban another gateway decided: it replaces this
// gateway's ban of the same address (the latest decision wins). A network
// ban is returned for the caller to write to the kernel.
func (e *Enforcer) remoteBanLocked(d Decision, n netip.Prefix, now time.Time, maxFor time.Duration) (*policy.Ban, error) {
	if !d.Until.After(now) {
		return nil, ErrExpired
	}
	if d.Until.Sub(now) > maxFor {
		return nil, fmt.Errorf("%w: ends in %v (at most %v)", ErrBadDuration, d.Until.Sub(now).Round(time.Second), maxFor)
	}
	start := d.Time
	if start.IsZero() || start.After(now) {
		start = now // the other gateway's clock runs ahead of ours
	}
	b := policy.Ban{
		Addr: n.Addr(), Rule: d.Rule, Start: start, Duration: d.Until.Sub(start), Until: d.Until,
		Hits: d.Hits, Manual: d.Manual, Reason: d.Reason, Origin: d.Origin,
	}
	if !n.IsSingleIP() {
		if pfx, ok := e.policy.ProtectedNet(n); ok {
			return nil, fmt.Errorf("%v: %w (%v)", n, ErrProtected, pfx)
		}
		for other := range e.nets {
			if other.Overlaps(n) && other != n {
				return nil, fmt.Errorf("%v: %w (%v)", n, ErrNetOverlap, other)
			}
		}
		b.Net = n
		b.Manual = true
		e.nets[n] = b
		e.dropTombstoneLocked(n)
		e.ctl.Bans = append(slices.DeleteFunc(e.ctl.Bans, func(x policy.Ban) bool { return x.Net == n }), b)
		kick(e.recKick)
		return &b, nil
	}
	a := n.Addr()
	if pfx, ok := e.policy.Protected(a); ok {
		return nil, fmt.Errorf("%v: %w (%v)", a, ErrProtected, pfx)
	}
	old, exists := e.active[a]
	live := exists && old.Until.After(now)
	if live && old.Until.Equal(b.Until) && old.Origin == b.Origin {
		return nil, nil // seen before (a reconnect's catch-up)
	}
	if !live && len(e.active) >= e.maxActive {
		e.m.refused.WithLabelValues("cap").Inc()
		return nil, ErrCapReached
	}
	if exists {
		b.Hosts = old.Hosts
		b.Hits = max(b.Hits, old.Hits)
	}
	e.putActiveLocked(b, live)
	if len(e.tombs) > 0 {
		e.dropTombstoneLocked(n)
	}
	h := e.policy.NoteFleetBan(a, d.Bans, d.Until, now)
	if e.store != nil {
		e.unrecorded[a] = unrecorded{ban: b, hist: h, hasHist: true}
	}
	return nil, nil
}
