package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/wormgate/wormgate/matcher"
)

// ErrNeverBlock is returned when an address on the never-block list would
// be banned; the error names the matching prefix.
var ErrNeverBlock = errors.New("address is on the never-block list")

// RulePolicy is what the enforcer needs to know about a matcher rule.
type RulePolicy struct {
	Threshold int
	Window    time.Duration
	// BanFor of zero means the enforcer's default.
	BanFor time.Duration
	DryRun bool
	// Evidence is the rule's strength. A weak rule's offense by an
	// authenticated or established client (as the matcher found it)
	// never bans; anything but weak is strong.
	Evidence matcher.Evidence
}

// Verdict says what Observe decided.
type Verdict int

const (
	// VerdictCounted: the hit was remembered, the threshold is not reached.
	VerdictCounted Verdict = iota
	// VerdictBan: a new ban starts.
	VerdictBan
	// VerdictExtend: the address was banned already; the ban is extended.
	VerdictExtend
	// VerdictNeverBlock: the address is protected.
	VerdictNeverBlock
	// VerdictDryRun: the rule would ban but is in dry-run mode.
	VerdictDryRun
	// VerdictUnknownRule: the offense names a rule without a policy.
	VerdictUnknownRule
	// VerdictTrustedClient: a weak rule's offense by an authenticated or
	// established client; nothing is held against the address.
	VerdictTrustedClient
)

var verdictNames = [...]string{"counted", "ban", "extend", "never_block", "dry_run", "unknown_rule", "trusted_client"}

func (v Verdict) String() string {
	if v >= 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// MarshalText makes JSON and structured logs carry the name, not a number
// that changes if the list ever does.
func (v Verdict) MarshalText() ([]byte, error) {
	return []byte(v.String()), nil
}

// Ban is a decision to block Addr for Duration, starting at Start.
type Ban struct {
	Addr     netip.Addr    `json:"addr"`
	Rule     string        `json:"rule"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"-"`
	Until    time.Time     `json:"until"`
	Hits     int           `json:"hits"`
	// Hosts are the MX hosts (syslog senders) that reported the offences,
	// at most maxHostsPerOffender.
	Hosts []string `json:"hosts,omitempty"`
	// Net, when valid and wider than one address, makes this a ban of a
	// whole network (only by hand); Addr is then Net.Addr().
	Net netip.Prefix `json:"net,omitzero"`
	// Manual marks a ban an operator made; Reason is their text.
	Manual bool   `json:"manual,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Origin names the gateway of the fleet that decided the ban; empty
	// for this gateway's own.
	Origin string `json:"origin,omitempty"`
}

// Offender is what is remembered about one address.
type Offender struct {
	Addr      netip.Addr
	Hits      int
	FirstSeen time.Time
	LastSeen  time.Time
	LastRule  string
	Hosts     []string
	// BannedUntil is the end of the current ban in offense time.
	BannedUntil time.Time
	// Bans counts the bans this address has had while remembered; each
	// earlier one multiplies the next ban's duration by the escalation
	// factor.
	Bans int
	// recent holds, per rule, the times of the last Threshold hits. A
	// slice, not a map: most offenders hit one rule, and a map would cost
	// hundreds of bytes for each of the LRU's entries.
	recent []ruleHits
}

type ruleHits struct {
	rule string
	hits []time.Time
}

// maxHostsPerOffender bounds the reporting-host list of one offender.
const maxHostsPerOffender = 16

// Decision is the result of one Observe, with what it was decided on, so
// that `wormgate check --explain` shows the policy's own count instead of
// keeping a second one that could drift from it.
type Decision struct {
	Verdict Verdict
	// Ban is set for VerdictBan, VerdictExtend and VerdictDryRun.
	Ban Ban
	// Prefix is the matching never-block prefix for VerdictNeverBlock.
	Prefix netip.Prefix
	// Trust is why the client was trusted, for VerdictTrustedClient.
	Trust Trust
	// HitsInWindow counts the rule's hits by the address inside Window,
	// this one included. The policy remembers at most Threshold of them
	// (bounded memory), so it never exceeds Threshold. Zero for
	// VerdictNeverBlock, VerdictUnknownRule and VerdictTrustedClient,
	// which count nothing.
	HitsInWindow int
	// Threshold and Window are the rule's; zero for VerdictNeverBlock,
	// VerdictUnknownRule and VerdictTrustedClient.
	Threshold int
	Window    time.Duration

	// History is the offender's durable part after a ban, extension or
	// dry run, for the enforcer's record (which then need not look the
	// offender up again).
	History History

	// prior is the offender's ban state before this decision, for Undo.
	prior prior
}

// Policy decides from offenses who is banned. It takes time from the
// offenses, never from the wall clock, so replays decide like the daemon.
// It is not safe for concurrent use.
type Policy struct {
	banFor    time.Duration
	maxBanFor time.Duration
	factor    float64
	// neverBlock is the built-in list and the configured one; added are
	// the prefixes AddNeverBlock protects (the gateway's own addresses,
	// the syslog senders), which a reload keeps; allowed are the
	// operator's run-time allows.
	neverBlock []netip.Prefix
	added      []netip.Prefix
	allowed    []netip.Prefix
	rules      map[string]RulePolicy
	offenders  *simplelru.LRU[netip.Addr, *Offender]
}

// NewPolicy builds a policy. cfg must be valid.
func NewPolicy(cfg Config, rules map[string]RulePolicy) (*Policy, error) {
	lru, err := simplelru.NewLRU[netip.Addr, *Offender](cfg.OffenderCacheSize, nil)
	if err != nil {
		return nil, fmt.Errorf("new policy: %w", err)
	}
	p := &Policy{
		banFor:     cfg.BanFor,
		maxBanFor:  cfg.MaxBanFor,
		factor:     cfg.EscalationFactor,
		neverBlock: slices.Concat(BuiltinNeverBlock, cfg.NeverBlock),
		offenders:  lru,
	}
	p.SetRules(rules)
	return p, nil
}

// SetRules replaces the rule policies; offender history is kept.
func (p *Policy) SetRules(rules map[string]RulePolicy) {
	p.rules = rules
}

// SetConfig applies a reloaded configuration: durations, escalation,
// the configured never-block list and the offender memory's size.
// Offenders, the added prefixes and the allows are kept.
func (p *Policy) SetConfig(cfg Config) {
	p.banFor, p.maxBanFor, p.factor = cfg.BanFor, cfg.MaxBanFor, cfg.EscalationFactor
	p.neverBlock = slices.Concat(BuiltinNeverBlock, cfg.NeverBlock)
	p.offenders.Resize(cfg.OffenderCacheSize)
}

// AddNeverBlock protects more prefixes, such as the gateway's own
// addresses and the syslog senders, which are only known at start-up.
func (p *Policy) AddNeverBlock(prefixes ...netip.Prefix) {
	for _, pfx := range prefixes {
		if pfx.IsValid() {
			p.added = append(p.added, pfx.Masked())
		}
	}
}

// SetAllowed replaces the operator's run-time never-block entries.
func (p *Policy) SetAllowed(prefixes []netip.Prefix) {
	p.allowed = slices.Clone(prefixes)
}

// Protected returns the never-block prefix containing addr, if any.
func (p *Policy) Protected(addr netip.Addr) (netip.Prefix, bool) {
	addr = addr.Unmap()
	for _, list := range [...][]netip.Prefix{p.neverBlock, p.added, p.allowed} {
		for _, pfx := range list {
			if pfx.Contains(addr) {
				return pfx, true
			}
		}
	}
	return netip.Prefix{}, false
}

// ProtectedNet returns a never-block prefix that overlaps n, if any: a
// network ban must not cover a protected address.
func (p *Policy) ProtectedNet(n netip.Prefix) (netip.Prefix, bool) {
	for _, list := range [...][]netip.Prefix{p.neverBlock, p.added, p.allowed} {
		for _, pfx := range list {
			if pfx.Overlaps(n) {
				return pfx, true
			}
		}
	}
	return netip.Prefix{}, false
}

// Lift forgets the current ban of addr, as an operator's unban or allow
// does: the ban was a mistake, so it does not count towards escalation
// and the hits that led to it are forgotten. The next offenses count
// from zero as usual. It returns the offender's new durable part.
func (p *Policy) Lift(addr netip.Addr) (History, bool) {
	o, ok := p.offenders.Peek(addr.Unmap())
	if !ok {
		return History{}, false
	}
	if !o.BannedUntil.IsZero() {
		o.Bans = max(o.Bans-1, 0)
	}
	o.BannedUntil = time.Time{}
	o.recent = nil
	return o.history(), true
}

// Offender returns a copy of what is remembered about addr.
func (p *Policy) Offender(addr netip.Addr) (Offender, bool) {
	o, ok := p.offenders.Peek(addr.Unmap())
	if !ok {
		return Offender{}, false
	}
	c := *o
	c.Hosts = slices.Clone(o.Hosts)
	c.recent = nil
	return c, true
}

// Observe records one offense and decides.
func (p *Policy) Observe(off matcher.Offense) Decision {
	addr := off.Addr.Unmap()
	if pfx, ok := p.Protected(addr); ok {
		return Decision{Verdict: VerdictNeverBlock, Prefix: pfx}
	}
	rp, ok := p.rules[off.Rule]
	if !ok {
		return Decision{Verdict: VerdictUnknownRule}
	}
	if rp.Evidence == matcher.EvidenceWeak && (off.Authenticated || off.Established) {
		// Decided before the offender is touched: a trusted client's
		// hits never add up to a ban or an escalation, not even later,
		// should it lose its standing.
		return Decision{Verdict: VerdictTrustedClient, Trust: trustOf(off)}
	}
	o, ok := p.offenders.Get(addr)
	if !ok {
		o = &Offender{Addr: addr, FirstSeen: off.Time}
		p.offenders.Add(addr, o)
	}
	was := prior{bans: o.Bans, until: o.BannedUntil}
	o.Hits++
	if off.Time.After(o.LastSeen) {
		o.LastSeen = off.Time
	}
	o.LastRule = off.Rule
	if off.Host != "" && !slices.Contains(o.Hosts, off.Host) && len(o.Hosts) < maxHostsPerOffender {
		o.Hosts = append(o.Hosts, off.Host)
	}

	// Keep only the hits inside the window, at most Threshold of them:
	// that is all the threshold test needs and it bounds the memory.
	ri := slices.IndexFunc(o.recent, func(r ruleHits) bool { return r.rule == off.Rule })
	if ri < 0 {
		o.recent = append(o.recent, ruleHits{rule: off.Rule})
		ri = len(o.recent) - 1
	}
	hits := o.recent[ri].hits
	cutoff := off.Time.Add(-rp.Window)
	hits = slices.DeleteFunc(hits, func(t time.Time) bool { return !t.After(cutoff) })
	hits = append(hits, off.Time)
	if len(hits) > rp.Threshold {
		hits = hits[len(hits)-rp.Threshold:]
	}
	o.recent[ri].hits = hits
	if len(hits) < rp.Threshold {
		return Decision{Verdict: VerdictCounted, HitsInWindow: len(hits), Threshold: rp.Threshold, Window: rp.Window}
	}

	d := rp.BanFor
	if d == 0 {
		d = p.banFor
	}
	banned := o.BannedUntil.After(off.Time)
	level := o.Bans
	if banned {
		// An extension keeps the level of the ban it extends.
		level = max(o.Bans-1, 0)
	}
	d = p.escalate(d, level)
	ban := Ban{Addr: addr, Rule: off.Rule, Start: off.Time, Duration: d, Until: off.Time.Add(d), Hits: o.Hits, Hosts: o.Hosts[:len(o.Hosts):len(o.Hosts)]}
	dec := Decision{Verdict: VerdictDryRun, Ban: ban, HitsInWindow: len(hits), Threshold: rp.Threshold, Window: rp.Window, prior: was}
	if !rp.DryRun {
		dec.Verdict = VerdictBan
		if banned {
			dec.Verdict = VerdictExtend
		} else {
			o.Bans++
		}
		if ban.Until.After(o.BannedUntil) {
			o.BannedUntil = ban.Until
		}
	}
	dec.History = o.history()
	return dec
}

// Trust is what made a client trusted against weak evidence.
type Trust struct {
	// Authenticated: the message's client= record showed SMTP AUTH.
	Authenticated bool
	// Established: the client's Accepted messages since Since made it an
	// established sender.
	Established bool
	Accepted    int
	Since       time.Time
}

func trustOf(off matcher.Offense) Trust {
	return Trust{Authenticated: off.Authenticated, Established: off.Established, Accepted: off.Accepted, Since: off.AcceptedSince}
}

// String is the reason `wormgate check --explain` and the log give:
// "authenticated", "established: 312 accepted since 2026-11-19T08:00:00Z",
// or both, separated by "; ".
func (t Trust) String() string {
	var s string
	if t.Authenticated {
		s = "authenticated"
	}
	if t.Established {
		if s != "" {
			s += "; "
		}
		s += fmt.Sprintf("established: %d accepted since %s", t.Accepted, t.Since.Format(time.RFC3339))
	}
	return s
}

// escalate multiplies d by the factor once per earlier ban, up to
// maxBanFor; a rule's own longer ban_for is never shortened.
func (p *Policy) escalate(d time.Duration, earlier int) time.Duration {
	limit := max(p.maxBanFor, d)
	if p.factor <= 1 || limit == 0 {
		return d
	}
	f := float64(d)
	for range earlier {
		f *= p.factor
		if f >= float64(limit) {
			return limit
		}
	}
	return time.Duration(f)
}

// prior is what Observe changes about an offender's bans, kept in the
// Decision so that Undo can put it back.
type prior struct {
	bans  int
	until time.Time
}

// Undo takes back the ban that d decided, when the caller could not
// enforce it (the enforcer's caps): the next offense then tries again as a
// first ban instead of counting as an escalation.
func (p *Policy) Undo(d Decision) {
	if o, ok := p.offenders.Peek(d.Ban.Addr); ok {
		o.Bans, o.BannedUntil = d.prior.bans, d.prior.until
	}
}

// History is the part of an offender that outlives a restart: enough to
// escalate the next ban.
type History struct {
	Addr        netip.Addr
	Hits        int
	Bans        int
	FirstSeen   time.Time
	LastSeen    time.Time
	BannedUntil time.Time
}

// history is the offender's durable part.
func (o *Offender) history() History {
	return History{Addr: o.Addr, Hits: o.Hits, Bans: o.Bans, FirstSeen: o.FirstSeen, LastSeen: o.LastSeen, BannedUntil: o.BannedUntil}
}

// RestoreHistory puts remembered offenders back, oldest first so that
// the LRU keeps the most recent ones.
func (p *Policy) RestoreHistory(hs []History) {
	hs = slices.Clone(hs)
	slices.SortFunc(hs, func(a, b History) int { return a.LastSeen.Compare(b.LastSeen) })
	for _, h := range hs {
		a := h.Addr.Unmap()
		if !a.IsValid() {
			continue
		}
		p.offenders.Add(a, &Offender{
			Addr: a, Hits: h.Hits, Bans: h.Bans, FirstSeen: h.FirstSeen, LastSeen: h.LastSeen,
			BannedUntil: h.BannedUntil,
		})
	}
}

// Event is one recorded offence as `wormgate why` shows it: what an MX
// host logged and what the policy decided.
type Event struct {
	// Seq orders events of the same time; unique within a record.
	Seq     uint64     `json:"seq"`
	Time    time.Time  `json:"time"`
	Addr    netip.Addr `json:"addr"`
	Host    string     `json:"host,omitempty"`
	QueueID string     `json:"queue_id,omitempty"`
	Kind    string     `json:"kind"`
	Rule    string     `json:"rule"`
	// Text is the reject text the MX host logged, bounded.
	Text    string `json:"text,omitempty"`
	Verdict string `json:"verdict"`
	// Detail says more about the verdict, e.g. "2 of 3 hits in 10m0s".
	Detail string `json:"detail,omitempty"`
}

// EventKey identifies an event in the record.
type EventKey struct {
	Addr netip.Addr
	Time time.Time
	Seq  uint64
}

// Key is e's key.
func (e Event) Key() EventKey { return EventKey{Addr: e.Addr, Time: e.Time, Seq: e.Seq} }
