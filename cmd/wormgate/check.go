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
	"time"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver"
)

// maxLine is the longest log line check reads; longer ones are counted
// and skipped, as the receiver does.
const maxLine = 1 << 20

func cmdCheck(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("check", "check [--config FILE] [--json] FILE...\n\nReplays log files (plain or gzip; - is standard input) through the matcher\nand the ban policy, with no network and no firewall, and prints one line per\naddress that would be banned: address, rule, hits, first and last offense.\nA summary goes to standard error.", s.stderr)
	path := fs.String("config", "", "configuration `file` (YAML); only what differs from the default")
	asJSON := fs.Bool("json", false, "print one JSON object per ban instead of text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: no log file given (use - for standard input)", errUsage)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	c, err := newChecker(cfg)
	if err != nil {
		return err
	}
	for _, name := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.file(name, s.stdin); err != nil {
			return err
		}
	}
	c.report(s, *asJSON)
	return nil
}

// checkBan is one address that would be banned.
type checkBan struct {
	Addr  netip.Addr `json:"addr"`
	Rule  string     `json:"rule"`
	Hits  int        `json:"hits"`
	First time.Time  `json:"first"`
	Last  time.Time  `json:"last"`
	// Banned is when the threshold was reached.
	Banned time.Time `json:"banned"`
	Until  time.Time `json:"until"`
}

type checker struct {
	m       *matcher.Matcher
	policy  *enforcer.Policy
	bans    map[netip.Addr]*checkBan
	order   []netip.Addr
	offs    []matcher.Offense
	lines   int
	bad     int
	long    int
	matched int
	dryRun  int
	never   int
}

func newChecker(cfg Config) (*checker, error) {
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	p, err := enforcer.NewPolicy(cfg.Enforcer, rulePolicies(cfg.Matcher))
	if err != nil {
		return nil, err
	}
	return &checker{m: m, policy: p, bans: make(map[netip.Addr]*checkBan)}, nil
}

// file replays one file; name "-" is stdin.
func (c *checker) file(name string, stdin io.Reader) error {
	var r io.Reader
	ref := time.Now()
	if name == "-" {
		r = stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			// RFC 3164 stamps have no year: the file's mtime anchors it.
			ref = fi.ModTime()
		}
		r = f
	}
	br := bufio.NewReaderSize(r, 1<<20)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("check %s: %w", name, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 1<<20)
	}
	if err := c.scan(br, ref); err != nil {
		return fmt.Errorf("check %s: %w", name, err)
	}
	return nil
}

func (c *checker) scan(br *bufio.Reader, ref time.Time) error {
	skipping := false
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skipping {
				c.long++
			}
			skipping = true
			continue
		}
		if len(line) > 0 && !skipping {
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
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return
	}
	msg, err := receiver.Parse(line, *ref, time.Local)
	if err != nil {
		c.bad++
		return
	}
	msg.Transport = "file"
	*ref = msg.Time
	c.offs = c.m.Match(c.offs[:0], msg)
	for _, o := range c.offs {
		c.matched++
		c.observe(o)
	}
}

func (c *checker) observe(o matcher.Offense) {
	d := c.policy.Observe(o)
	if b, ok := c.bans[o.Addr.Unmap()]; ok {
		b.Hits++
		b.Last = o.Time
		if d.Verdict == enforcer.VerdictBan || d.Verdict == enforcer.VerdictExtend {
			b.Until = d.Ban.Until
		}
		return
	}
	switch d.Verdict {
	case enforcer.VerdictBan, enforcer.VerdictExtend:
		off, _ := c.policy.Offender(d.Ban.Addr)
		c.bans[d.Ban.Addr] = &checkBan{
			Addr: d.Ban.Addr, Rule: d.Ban.Rule, Hits: off.Hits,
			First: off.FirstSeen, Last: o.Time, Banned: o.Time, Until: d.Ban.Until,
		}
		c.order = append(c.order, d.Ban.Addr)
	case enforcer.VerdictDryRun:
		c.dryRun++
	case enforcer.VerdictNeverBlock:
		c.never++
	}
}

func (c *checker) report(s streams, asJSON bool) {
	w := bufio.NewWriter(s.stdout)
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
	var unattributed uint64
	for _, n := range c.m.Stats().Unattributed {
		unattributed += n
	}
	fmt.Fprintf(s.stderr, "check: %d lines, %d unparsable, %d too long, %d offenses, %d unattributed events, %d never-block, %d dry-run, %d bans\n",
		c.lines, c.bad, c.long, c.matched, unattributed, c.never, c.dryRun, len(bans))
}
