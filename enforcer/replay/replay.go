package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/logfile"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// Config is what a replay decides with: the daemon's matcher and policy
// configuration.
type Config struct {
	Matcher matcher.Config
	Policy  policy.Config
	// Rules is the policy's view of the matcher's rules.
	Rules map[string]policy.RulePolicy
	// Explain, if valid, keeps every offense of this address as a Hit.
	Explain netip.Addr
	// Since and Until, when not zero, bound the log time of the lines
	// whose offenses count (both included). Lines before Since still
	// teach the matcher their client= records and accepted messages, as
	// the daemon would have seen them; lines after Until are skipped.
	Since, Until time.Time
	// Format, unless "" or FormatAuto, is the only line format read:
	// lines of any other shape count as unparsable.
	Format Format
}

// Ban is one address that would be banned.
type Ban struct {
	Addr netip.Addr `json:"addr"`
	Rule string     `json:"rule"`
	// Hits counts the address's offenses under every rule.
	Hits  int       `json:"hits"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Banned is when the threshold was first reached.
	Banned time.Time `json:"banned"`
	Until  time.Time `json:"until"`
}

// Hit is one offense of the explained address and what the policy made
// of it.
type Hit struct {
	File    string       `json:"file"`
	Line    int          `json:"line"`
	Time    time.Time    `json:"time"`
	Rule    string       `json:"rule"`
	Kind    matcher.Kind `json:"kind"`
	Host    string       `json:"host"`
	QueueID string       `json:"queue_id,omitempty"`
	// Count is the policy's own HitsInWindow, not a second count that
	// could disagree with what it decided; it stops at Threshold.
	Count     int            `json:"count"`
	Threshold int            `json:"threshold"`
	Window    time.Duration  `json:"window"`
	Verdict   policy.Verdict `json:"verdict"`
	// Until is the end of the ban for ban, extend and dry_run.
	Until time.Time `json:"until,omitzero"`
	// Prefix is the never-block prefix that protected the address.
	Prefix netip.Prefix `json:"prefix,omitzero"`
	// Reason is why a trusted_client was trusted: "authenticated",
	// "established: N accepted since DATE", or both.
	Reason string `json:"reason,omitempty"`
	Text   string `json:"text"`
}

// MarshalJSON writes Window as time.Duration writes it ("1h0m0s"), not in
// nanoseconds.
func (h Hit) MarshalJSON() ([]byte, error) {
	type plain Hit
	return json.Marshal(struct {
		plain
		Window string `json:"window"`
	}{plain(h), h.Window.String()})
}

// Counts is what was read and decided, for the summary.
type Counts struct {
	Files int
	// Lines counts every line, including the ones below.
	Lines int
	// Unparsable counts the lines that are no syslog message, or not in
	// Config.Format; WrongFormat counts the latter.
	Unparsable  int
	WrongFormat int
	TooLong     int
	// Blank counts empty lines and journalctl's comment lines.
	Blank int
	// OutOfRange counts the lines outside Config.Since and Until.
	OutOfRange int
	Offenses   int
	NeverBlock int
	DryRun     int
	// Trusted counts weak rules' offenses by authenticated or established
	// clients (verdict trusted_client); TrustedAuthenticated and
	// TrustedEstablished count them by reason (a client can be both).
	Trusted              int
	TrustedAuthenticated int
	TrustedEstablished   int
	// OffensesByRule, BansByRule and TrustedByRule are keyed by rule name.
	OffensesByRule map[string]int
	BansByRule     map[string]int
	TrustedByRule  map[string]int
	// PerFile has the line counts of each file scanned, in scan order.
	PerFile []FileCounts
}

// FileCounts is what was read of one file.
type FileCounts struct {
	Name                                           string
	Lines, Unparsable, WrongFormat, TooLong, Blank int
	OutOfRange                                     int
	// Err says why the file ended early (a damaged or truncated file);
	// the lines before it were replayed.
	Err error
}

// Unreadable reports whether the file had lines but none of them was a
// message in a format that check reads: most likely a format it does
// not know, or the wrong --format.
func (c FileCounts) Unreadable() bool {
	n := c.Lines - c.Blank - c.TooLong
	return n > 0 && c.Unparsable == n
}

// Replay is one run of check. It is not safe for concurrent use.
type Replay struct {
	m            *matcher.Matcher
	policy       *policy.Policy
	explain      netip.Addr
	since, until time.Time
	format       Format
	// forced: format is not FormatAuto, so lines are checked for it.
	forced bool

	bans map[netip.Addr]*Ban
	// order is the bans' insertion order, which breaks ties of Banned.
	order []netip.Addr
	hits  []Hit
	n     Counts
	// offs is reused for every message: Match appends to it.
	offs []matcher.Offense
}

// New builds a replay from a validated configuration.
func New(cfg Config) (*Replay, error) {
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return nil, fmt.Errorf("new replay: %w", err)
	}
	p, err := policy.NewPolicy(cfg.Policy, cfg.Rules)
	if err != nil {
		return nil, fmt.Errorf("new replay: %w", err)
	}
	explain := cfg.Explain
	if explain.IsValid() {
		explain = explain.Unmap().WithZone("")
	}
	if !cfg.Since.IsZero() && !cfg.Until.IsZero() && cfg.Until.Before(cfg.Since) {
		return nil, fmt.Errorf("new replay: %w: until %s is before since %s", ErrRange, cfg.Until.Format(time.RFC3339), cfg.Since.Format(time.RFC3339))
	}
	format := cfg.Format
	if format == "" {
		format = FormatAuto
	}
	if _, err := ParseFormat(string(format)); err != nil {
		return nil, fmt.Errorf("new replay: %w", err)
	}
	return &Replay{
		m: m, policy: p, explain: explain, since: cfg.Since, until: cfg.Until, format: format, forced: format != FormatAuto,
		bans: make(map[netip.Addr]*Ban),
		n:    Counts{OffensesByRule: make(map[string]int), BansByRule: make(map[string]int), TrustedByRule: make(map[string]int)},
	}, nil
}

// ErrRange is the error of New for a time range that ends before it
// starts.
var ErrRange = errors.New("empty time range")

// Scan replays f to its end. Files must be scanned in time order (as
// logfile.OpenAll orders them): a queue's client= record may sit in the
// file before the one with its reject. A file that cannot be read to its
// end (damaged, a truncated gzip) is an error naming the last line
// read; the lines before it were replayed and count.
func (r *Replay) Scan(f *logfile.File) error {
	r.n.Files++
	before := r.n
	var l logfile.Line
	var err error
	for {
		if err = f.Next(&l); err != nil {
			break
		}
		r.line(f.Name, &l)
	}
	fc := FileCounts{
		Name: f.Name, Lines: r.n.Lines - before.Lines, Unparsable: r.n.Unparsable - before.Unparsable,
		WrongFormat: r.n.WrongFormat - before.WrongFormat, TooLong: r.n.TooLong - before.TooLong,
		Blank: r.n.Blank - before.Blank, OutOfRange: r.n.OutOfRange - before.OutOfRange,
	}
	if !errors.Is(err, io.EOF) {
		fc.Err = fmt.Errorf("scan %s: after line %d: %w", f.Name, fc.Lines, err)
	}
	r.n.PerFile = append(r.n.PerFile, fc)
	return fc.Err
}

func (r *Replay) line(file string, l *logfile.Line) {
	r.n.Lines++
	if l.Err != nil {
		switch {
		case errors.Is(l.Err, logfile.ErrLineTooLong):
			r.n.TooLong++
		case errors.Is(l.Err, syslog.ErrEmpty), errors.Is(l.Err, syslog.ErrComment):
			r.n.Blank++
		default:
			r.n.Unparsable++
		}
		return
	}
	if r.forced && !r.format.accepts(shape(l.Text)) {
		r.n.Unparsable++
		r.n.WrongFormat++
		return
	}
	if !r.since.IsZero() && l.Msg.Time.Before(r.since) {
		r.n.OutOfRange++
		r.m.Learn(l.Msg)
		return
	}
	if !r.until.IsZero() && l.Msg.Time.After(r.until) {
		r.n.OutOfRange++
		return
	}
	r.offs = r.m.Match(r.offs[:0], l.Msg)
	for _, o := range r.offs {
		r.n.Offenses++
		r.n.OffensesByRule[o.Rule]++
		d := r.observe(o)
		if r.explain.IsValid() && o.Addr.Unmap() == r.explain {
			r.hits = append(r.hits, hit(file, l, o, d))
		}
	}
}

func (r *Replay) observe(o matcher.Offense) policy.Decision {
	d := r.policy.Observe(o)
	switch d.Verdict {
	case policy.VerdictDryRun:
		r.n.DryRun++
	case policy.VerdictNeverBlock:
		r.n.NeverBlock++
	case policy.VerdictTrustedClient:
		r.n.Trusted++
		r.n.TrustedByRule[o.Rule]++
		if d.Trust.Authenticated {
			r.n.TrustedAuthenticated++
		}
		if d.Trust.Established {
			r.n.TrustedEstablished++
		}
	}
	bans := d.Verdict == policy.VerdictBan || d.Verdict == policy.VerdictExtend
	if b, ok := r.bans[o.Addr.Unmap()]; ok {
		b.Hits++
		b.Last = o.Time
		if bans {
			b.Until = d.Ban.Until
		}
		return d
	}
	if bans {
		off, _ := r.policy.Offender(d.Ban.Addr)
		r.bans[d.Ban.Addr] = &Ban{
			Addr: d.Ban.Addr, Rule: d.Ban.Rule, Hits: off.Hits,
			First: off.FirstSeen, Last: o.Time, Banned: o.Time, Until: d.Ban.Until,
		}
		r.order = append(r.order, d.Ban.Addr)
		r.n.BansByRule[d.Ban.Rule]++
	}
	return d
}

func hit(file string, l *logfile.Line, o matcher.Offense, d policy.Decision) Hit {
	h := Hit{
		File: file, Line: l.No, Time: o.Time, Rule: o.Rule, Kind: o.Kind,
		Host: o.Host, QueueID: o.QueueID, Count: d.HitsInWindow, Threshold: d.Threshold,
		Window: d.Window, Verdict: d.Verdict, Prefix: d.Prefix, Text: string(l.Text),
	}
	switch d.Verdict {
	case policy.VerdictBan, policy.VerdictExtend, policy.VerdictDryRun:
		h.Until = d.Ban.Until
	case policy.VerdictTrustedClient:
		h.Reason = d.Trust.String()
	}
	return h
}

// Bans returns the would-be bans in the order they started.
func (r *Replay) Bans() []Ban {
	bans := make([]Ban, 0, len(r.order))
	for _, a := range r.order {
		bans = append(bans, *r.bans[a])
	}
	slices.SortStableFunc(bans, func(a, b Ban) int { return a.Banned.Compare(b.Banned) })
	return bans
}

// Explained returns the address Config.Explain asked about, normalised,
// and its hits in log order.
func (r *Replay) Explained() (netip.Addr, []Hit) {
	return r.explain, slices.Clone(r.hits)
}

// Counts returns what was read and decided so far.
func (r *Replay) Counts() Counts {
	c := r.n
	c.OffensesByRule = maps.Clone(r.n.OffensesByRule)
	c.BansByRule = maps.Clone(r.n.BansByRule)
	c.TrustedByRule = maps.Clone(r.n.TrustedByRule)
	c.PerFile = slices.Clone(r.n.PerFile)
	return c
}
