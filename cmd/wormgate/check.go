package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// maxLine is the longest log line check reads; longer ones are counted
// and skipped, as the receiver does.
const maxLine = 1 << 20

// peekSize is how much of each file is looked at to find its first
// timestamp, which orders the files.
const peekSize = 64 << 10

const checkSynopsis = `check [--config FILE] [--json] [--explain ADDR] FILE...

Replays log files (plain or gzip; - is standard input) through the matcher
and the ban policy, with no network and no firewall, and prints one line per
address that would be banned: address, rule, hits, first and last offense.
Files are replayed in the order of their first timestamps, so rotated logs
(mail.log.2.gz mail.log.1 mail.log) may be given in any order. Thresholds
and windows run on the log's own timestamps. A summary goes to standard
error.

With --explain ADDR, standard output instead shows every line that counted
against ADDR (file:line and text), the rule, and when a threshold was
reached.`

func cmdCheck(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("check", checkSynopsis, s.stderr)
	path := fs.String("config", "", "configuration `file` (YAML); only what differs from the default")
	asJSON := fs.Bool("json", false, "print one JSON object per ban (or per explained line) instead of text")
	explain := fs.String("explain", "", "show why `ADDR` would be banned, line by line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: no log file given (use - for standard input)", errUsage)
	}
	var explainAddr netip.Addr
	if *explain != "" {
		a, err := netip.ParseAddr(*explain)
		if err != nil {
			return fmt.Errorf("%w: --explain: %w", errUsage, err)
		}
		explainAddr = a.Unmap().WithZone("")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	c, err := newChecker(cfg)
	if err != nil {
		return err
	}
	c.explain = explainAddr

	srcs, err := openSources(fs.Args(), s.stdin)
	defer func() {
		for _, src := range srcs {
			src.close()
		}
	}()
	if err != nil {
		return err
	}
	start := time.Now()
	for _, src := range srcs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.scan(src); err != nil {
			return fmt.Errorf("check %s: %w", src.name, err)
		}
	}
	elapsed := time.Since(start)
	if c.explain.IsValid() {
		c.reportExplain(s.stdout, *asJSON)
	} else {
		c.report(s.stdout, *asJSON)
	}
	c.summary(s.stderr, len(srcs), elapsed)
	return nil
}

// source is one opened log file.
type source struct {
	name    string
	br      *bufio.Reader
	closers []io.Closer
	// ref anchors the year of the first RFC 3164 timestamp: the file's
	// modification time, or now for standard input.
	ref time.Time
	// first is the file's first timestamp; zero if none was found near
	// the start.
	first time.Time
}

func (s *source) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		_ = s.closers[i].Close()
	}
}

// openSources opens every file (gzip detected by its magic number) and
// orders them by their first timestamps. Files without one keep their
// place relative to each other and come last.
func openSources(names []string, stdin io.Reader) ([]*source, error) {
	var srcs []*source
	for _, name := range names {
		src, err := openSource(name, stdin)
		if err != nil {
			return srcs, err
		}
		srcs = append(srcs, src)
	}
	slices.SortStableFunc(srcs, func(a, b *source) int {
		switch {
		case a.first.IsZero() && b.first.IsZero():
			return 0
		case a.first.IsZero():
			return 1
		case b.first.IsZero():
			return -1
		}
		return a.first.Compare(b.first)
	})
	return srcs, nil
}

func openSource(name string, stdin io.Reader) (*source, error) {
	src := &source{name: name, ref: time.Now()}
	var r io.Reader
	if name == "-" {
		src.name = "(stdin)"
		r = stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
		src.closers = append(src.closers, f)
		if fi, err := f.Stat(); err == nil {
			// RFC 3164 stamps have no year: the file's mtime anchors it.
			src.ref = fi.ModTime()
		}
		r = f
	}
	br := bufio.NewReaderSize(r, maxLine)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			src.close()
			return nil, fmt.Errorf("check %s: %w", name, err)
		}
		src.closers = append(src.closers, zr)
		br = bufio.NewReaderSize(zr, maxLine)
	}
	src.br = br
	head, err := br.Peek(peekSize)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		src.close()
		return nil, fmt.Errorf("check %s: %w", name, err)
	}
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i], head[i+1:]
		} else {
			head = nil
		}
		if msg, err := syslog.Parse(line, src.ref, time.Local); err == nil {
			src.first = msg.Time
			break
		}
	}
	return src, nil
}

// checkBan is one address that would be banned.
type checkBan struct {
	Addr netip.Addr `json:"addr"`
	Rule string     `json:"rule"`
	// Hits counts the address's offenses under every rule.
	Hits  int       `json:"hits"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Banned is when the threshold was reached.
	Banned time.Time `json:"banned"`
	Until  time.Time `json:"until"`
}

// explainHit is one line that counted against the explained address.
type explainHit struct {
	File    string       `json:"file"`
	Line    int          `json:"line"`
	Time    time.Time    `json:"time"`
	Rule    string       `json:"rule"`
	Kind    matcher.Kind `json:"kind"`
	Host    string       `json:"host"`
	QueueID string       `json:"queue_id,omitempty"`
	// Count is the rule's hits inside its window, this one included.
	Count     int           `json:"count"`
	Threshold int           `json:"threshold"`
	Window    time.Duration `json:"window"`
	Verdict   string        `json:"verdict"`
	Until     time.Time     `json:"until,omitzero"`
	Text      string        `json:"text"`
}

type checker struct {
	m      *matcher.Matcher
	policy *policy.Policy
	rules  map[string]policy.RulePolicy
	bans   map[netip.Addr]*checkBan
	order  []netip.Addr
	offs   []matcher.Offense

	lines, bad, long, matched, dryRun, never int
	bansByRule                               map[string]int
	offsByRule                               map[string]int

	// Position of the line being read, for --explain.
	file   string
	lineNo int

	explain     netip.Addr
	explainHits []explainHit
	explainWin  map[string][]time.Time
}

func newChecker(cfg Config) (*checker, error) {
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	rules := rulePolicies(cfg.Matcher)
	p, err := policy.NewPolicy(cfg.Enforcer.Config, rules)
	if err != nil {
		return nil, err
	}
	return &checker{
		m: m, policy: p, rules: rules,
		bans:       make(map[netip.Addr]*checkBan),
		bansByRule: make(map[string]int),
		offsByRule: make(map[string]int),
		explainWin: make(map[string][]time.Time),
	}, nil
}

// scan replays one source. ref follows the log's own time from line to
// line, so that a file running from Dec 31 into Jan 1 moves to the next
// year instead of jumping back to the start of the old one.
func (c *checker) scan(src *source) error {
	c.file, c.lineNo = src.name, 0
	ref := src.ref
	br := src.br
	skipping := false
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skipping {
				c.long++
				c.lines++
				c.lineNo++
			}
			skipping = true
			continue
		}
		if len(line) > 0 && !skipping {
			c.lineNo++
			c.line(line, &ref)
		}
		skipping = false
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (c *checker) line(line []byte, ref *time.Time) {
	c.lines++
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	if len(line) == 0 {
		return
	}
	msg, err := syslog.Parse(line, *ref, time.Local)
	if err != nil {
		c.bad++
		return
	}
	msg.Transport = "file"
	*ref = msg.Time
	c.offs = c.m.Match(c.offs[:0], msg)
	for _, o := range c.offs {
		c.matched++
		c.offsByRule[o.Rule]++
		d := c.observe(o)
		if c.explain.IsValid() && o.Addr.Unmap() == c.explain {
			c.noteExplain(o, d, line)
		}
	}
}

func (c *checker) observe(o matcher.Offense) policy.Decision {
	d := c.policy.Observe(o)
	switch d.Verdict {
	case policy.VerdictDryRun:
		c.dryRun++
	case policy.VerdictNeverBlock:
		c.never++
	}
	if b, ok := c.bans[o.Addr.Unmap()]; ok {
		b.Hits++
		b.Last = o.Time
		if d.Verdict == policy.VerdictBan || d.Verdict == policy.VerdictExtend {
			b.Until = d.Ban.Until
		}
		return d
	}
	if d.Verdict == policy.VerdictBan || d.Verdict == policy.VerdictExtend {
		off, _ := c.policy.Offender(d.Ban.Addr)
		c.bans[d.Ban.Addr] = &checkBan{
			Addr: d.Ban.Addr, Rule: d.Ban.Rule, Hits: off.Hits,
			First: off.FirstSeen, Last: o.Time, Banned: o.Time, Until: d.Ban.Until,
		}
		c.order = append(c.order, d.Ban.Addr)
		c.bansByRule[d.Ban.Rule]++
	}
	return d
}

// noteExplain records one offense of the explained address, with the
// rule's own count of hits inside its window (the policy's rule, as
// Observe applies it).
func (c *checker) noteExplain(o matcher.Offense, d policy.Decision, line []byte) {
	rp := c.rules[o.Rule]
	hits := slices.DeleteFunc(c.explainWin[o.Rule], func(t time.Time) bool { return !t.After(o.Time.Add(-rp.Window)) })
	hits = append(hits, o.Time)
	c.explainWin[o.Rule] = hits
	h := explainHit{
		File: c.file, Line: c.lineNo, Time: o.Time, Rule: o.Rule, Kind: o.Kind,
		Host: o.Host, QueueID: o.QueueID, Count: len(hits), Threshold: rp.Threshold,
		Window: rp.Window, Verdict: verdictName(d.Verdict), Text: string(line),
	}
	switch d.Verdict {
	case policy.VerdictBan, policy.VerdictExtend, policy.VerdictDryRun:
		h.Until = d.Ban.Until
	}
	c.explainHits = append(c.explainHits, h)
}

func verdictName(v policy.Verdict) string {
	switch v {
	case policy.VerdictCounted:
		return "counted"
	case policy.VerdictBan:
		return "ban"
	case policy.VerdictExtend:
		return "extend"
	case policy.VerdictNeverBlock:
		return "never-block"
	case policy.VerdictDryRun:
		return "dry-run"
	default:
		return "unknown-rule"
	}
}

func (c *checker) report(out io.Writer, asJSON bool) {
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	bans := make([]*checkBan, 0, len(c.order))
	for _, a := range c.order {
		bans = append(bans, c.bans[a])
	}
	slices.SortStableFunc(bans, func(a, b *checkBan) int { return a.Banned.Compare(b.Banned) })
	for _, b := range bans {
		if asJSON {
			_ = enc.Encode(b)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", b.Addr, b.Rule, b.Hits,
			b.First.Format(time.RFC3339), b.Last.Format(time.RFC3339))
	}
	_ = w.Flush()
}

func (c *checker) reportExplain(out io.Writer, asJSON bool) {
	w := bufio.NewWriter(out)
	defer w.Flush()
	if asJSON {
		enc := json.NewEncoder(w)
		for _, h := range c.explainHits {
			_ = enc.Encode(h)
		}
		return
	}
	b, banned := c.bans[c.explain]
	switch {
	case len(c.explainHits) == 0:
		fmt.Fprintf(w, "%s: no offenses\n", c.explain)
		return
	case banned:
		fmt.Fprintf(w, "%s: banned by %s at %s until %s; %d offenses\n", c.explain, b.Rule,
			b.Banned.Format(time.RFC3339), b.Until.Format(time.RFC3339), len(c.explainHits))
	default:
		fmt.Fprintf(w, "%s: not banned; %d offenses\n", c.explain, len(c.explainHits))
	}
	for _, h := range c.explainHits {
		var what string
		switch h.Verdict {
		case "ban", "extend", "dry-run":
			what = fmt.Sprintf("%s: threshold %d within %s reached, until %s", h.Verdict, h.Threshold, h.Window, h.Until.Format(time.RFC3339))
		case "counted":
			what = fmt.Sprintf("hit %d of %d within %s", h.Count, h.Threshold, h.Window)
		default:
			what = h.Verdict
		}
		qid := ""
		if h.QueueID != "" {
			qid = " " + h.QueueID
		}
		fmt.Fprintf(w, "%s:%d: %s %s (%s%s): %s\n\t%s\n", h.File, h.Line, h.Time.Format(time.RFC3339), h.Rule, h.Kind, qid, what, h.Text)
	}
}

// summary writes what was read and decided to standard error.
func (c *checker) summary(out io.Writer, files int, elapsed time.Duration) {
	st := c.m.Stats()
	rate := float64(c.lines) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(out, "check: %d lines in %d files (%d unparsable, %d too long) in %s, %.0f lines/s\n",
		c.lines, files, c.bad, c.long, elapsed.Round(time.Millisecond), rate)
	var events, unattributed []string
	var nUn uint64
	for _, k := range matcher.Kinds() {
		if n := st.Events[k]; n > 0 {
			events = append(events, fmt.Sprintf("%s=%d", k, n))
		}
		if n := st.Unattributed[k]; n > 0 {
			unattributed = append(unattributed, fmt.Sprintf("%s=%d", k, n))
			nUn += n
		}
	}
	fmt.Fprintf(out, "check: events by kind: %s\n", orNone(events))
	fmt.Fprintf(out, "check: %d unattributed events (no client= record for the queue ID): %s\n", nUn, orNone(unattributed))
	fmt.Fprintf(out, "check: %d offenses by rule: %s\n", c.matched, countsByRule(c.offsByRule))
	fmt.Fprintf(out, "check: %d bans by rule: %s; %d never-block, %d dry-run\n", len(c.order), countsByRule(c.bansByRule), c.never, c.dryRun)
}

func countsByRule(m map[string]int) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, m[n])
	}
	return orNone(parts)
}

func orNone(parts []string) string {
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
