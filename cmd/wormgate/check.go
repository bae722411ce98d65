package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/wormgate/wormgate/enforcer/replay"
	"github.com/wormgate/wormgate/receiver/logfile"
)

const checkSynopsis = `check [--config FILE] [--json] [--explain ADDR] [--since TIME] [--until TIME] [--format FORMAT] FILE...

Replays log files (plain or gzip; - is standard input) through the matcher
and the ban policy, with no network and no firewall, and prints one line per
address that would be banned: address, rule, hits, first and last offense.
Files are replayed in the order of their first timestamps, so rotated logs
(mail.log.2.gz mail.log.1 mail.log) may be given in any order. Thresholds
and windows run on the log's own timestamps. A summary goes to standard
error. Flags may come before, between or after the files; -- ends them.

With --explain ADDR, standard output instead shows every line that counted
against ADDR (file:line and text), the rule, and what the ban policy
decided: the hits within the rule's window, and when its threshold was
reached.

--since and --until replay a time range: only offenses logged within it
count. TIME is RFC 3339 (2026-08-03T15:30:00+02:00), or "2026-08-03
15:30:00" or 2026-08-03 in local time. The lines before the range still
teach the client= records that attribute the events in it.

Lines are read in every format below, each line by its own shape;
--format reads only one of them and counts every other line as
unparsable: auto, rfc3164 (Mmm dd hh:mm:ss host prog[pid]: text), rfc3339
(rsyslog's file format), rfc5424, journald-short, journald-short-precise,
journald-short-iso, journald-short-iso-precise (journalctl -o ...).

Exit status 1 when a file could not be opened or read to its end (what
was read is still replayed and reported) or when not one line of a file
was in a format check reads.`

// Errors of check that exit with status 1 after the report.
var (
	errDamaged    = errors.New("damaged or truncated")
	errUnreadable = errors.New("not one line in a format check reads")
)

func cmdCheck(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("check", checkSynopsis, s.stderr)
	path := fs.String("config", "", "configuration `file` (YAML); only what differs from the default")
	asJSON := fs.Bool("json", false, "print one JSON object per ban (or per explained line) instead of text")
	explain := fs.String("explain", "", "show why `ADDR` would be banned, line by line")
	since := fs.String("since", "", "count only offenses at or after `TIME`")
	until := fs.String("until", "", "count only offenses at or before `TIME`")
	format := fs.String("format", string(replay.FormatAuto), "read only lines in `FORMAT`")
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("%w: no log file given (use - for standard input)", errUsage)
	}
	var own replay.Config
	if *explain != "" {
		if own.Explain, err = netip.ParseAddr(*explain); err != nil {
			return fmt.Errorf("%w: --explain: %w", errUsage, err)
		}
	}
	if own.Since, err = parseCheckTime("since", *since); err != nil {
		return err
	}
	if own.Until, err = parseCheckTime("until", *until); err != nil {
		return err
	}
	if !own.Since.IsZero() && !own.Until.IsZero() && own.Until.Before(own.Since) {
		return fmt.Errorf("%w: --until %s is before --since %s", errUsage, *until, *since)
	}
	if own.Format, err = replay.ParseFormat(*format); err != nil {
		return fmt.Errorf("%w: --format: %w", errUsage, err)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	r, err := newReplayWith(cfg, own)
	if err != nil {
		return err
	}
	files, failed := openLogs(names, logfile.Options{Stdin: s.stdin, Now: time.Now()})
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
			failed = append(failed, fmt.Errorf("%w: %w", errDamaged, err))
		}
	}
	elapsed := time.Since(start)
	if own.Explain.IsValid() {
		err = r.WriteExplain(s.stdout, *asJSON)
	} else {
		err = r.WriteBans(s.stdout, *asJSON)
	}
	if err != nil {
		return err
	}
	if err := r.WriteSummary(s.stderr, elapsed); err != nil {
		return err
	}
	for _, f := range r.Counts().PerFile {
		if f.Unreadable() {
			failed = append(failed, fmt.Errorf("%s: %w (see the formats above)", f.Name, errUnreadable))
		}
	}
	return errors.Join(failed...)
}

// openLogs opens every file that can be opened, in time order, and
// returns the others' errors: one missing or damaged file must not keep
// check from replaying the rest. Standard input is not tried first,
// since it can be read only once.
func openLogs(names []string, opt logfile.Options) ([]*logfile.File, []error) {
	var good []string
	var failed []error
	for _, n := range names {
		if n != logfile.StdinName {
			f, err := logfile.Open(n, opt)
			if err != nil {
				failed = append(failed, err)
				continue
			}
			_ = f.Close()
		}
		good = append(good, n)
	}
	if len(good) == 0 {
		return nil, failed
	}
	files, err := logfile.OpenAll(good, opt)
	if err != nil {
		return nil, append(failed, err)
	}
	return files, failed
}

// checkTimeLayouts are the forms --since and --until take besides RFC
// 3339, in local time.
var checkTimeLayouts = []string{time.DateTime, "2006-01-02T15:04:05", time.DateOnly}

// parseCheckTime reads the value of --since or --until; "" is no bound.
func parseCheckTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range checkTimeLayouts {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: --%s %q: want RFC 3339 (2026-08-03T15:30:00+02:00), or \"2026-08-03 15:30:00\" or 2026-08-03 in local time", errUsage, name, s)
}

// newReplay wires the daemon's matcher and policy configuration into a
// replay, so that check decides exactly as serve would.
func newReplay(cfg Config, explain netip.Addr) (*replay.Replay, error) {
	return newReplayWith(cfg, replay.Config{Explain: explain})
}

// newReplayWith is newReplay with check's own settings in own (Explain,
// Since, Until, Format).
func newReplayWith(cfg Config, own replay.Config) (*replay.Replay, error) {
	own.Matcher, own.Policy, own.Rules = cfg.Matcher, cfg.Enforcer.Config, rulePolicies(cfg.Matcher)
	r, err := replay.New(own)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	return r, nil
}
