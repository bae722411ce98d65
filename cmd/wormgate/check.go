package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/wormgate/wormgate/enforcer/replay"
	"github.com/wormgate/wormgate/receiver/logfile"
)

const checkSynopsis = `check [--config FILE] [--json] [--explain ADDR] FILE...

Replays log files (plain or gzip; - is standard input) through the matcher
and the ban policy, with no network and no firewall, and prints one line per
address that would be banned: address, rule, hits, first and last offense.
Files are replayed in the order of their first timestamps, so rotated logs
(mail.log.2.gz mail.log.1 mail.log) may be given in any order. Thresholds
and windows run on the log's own timestamps. A summary goes to standard
error.

With --explain ADDR, standard output instead shows every line that counted
against ADDR (file:line and text), the rule, and what the ban policy
decided: the hits within the rule's window, and when its threshold was
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
		explainAddr = a
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	r, err := newReplay(cfg, explainAddr)
	if err != nil {
		return err
	}
	files, err := logfile.OpenAll(fs.Args(), logfile.Options{Stdin: s.stdin, Now: time.Now()})
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()

	start := time.Now()
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.Scan(f); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	if explainAddr.IsValid() {
		err = r.WriteExplain(s.stdout, *asJSON)
	} else {
		err = r.WriteBans(s.stdout, *asJSON)
	}
	if err != nil {
		return err
	}
	return r.WriteSummary(s.stderr, elapsed)
}

// newReplay wires the daemon's matcher and policy configuration into a
// replay, so that check decides exactly as serve would.
func newReplay(cfg Config, explain netip.Addr) (*replay.Replay, error) {
	r, err := replay.New(replay.Config{
		Matcher: cfg.Matcher,
		Policy:  cfg.Enforcer.Config,
		Rules:   rulePolicies(cfg.Matcher),
		Explain: explain,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	return r, nil
}
