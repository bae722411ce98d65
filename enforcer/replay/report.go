package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// WriteBans writes one line per would-be ban, in the order they started:
// address, rule, hits, first and last offense, tab-separated; or, with
// asJSON, one Ban object per line.
func (r *Replay) WriteBans(out io.Writer, asJSON bool) error {
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	for _, b := range r.Bans() {
		if asJSON {
			if err := enc.Encode(b); err != nil {
				return fmt.Errorf("write bans: %w", err)
			}
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", b.Addr, b.Rule, b.Hits,
			b.First.Format(time.RFC3339), b.Last.Format(time.RFC3339))
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write bans: %w", err)
	}
	return nil
}

// WriteExplain writes whether the explained address would be banned and
// then every line that counted against it, with the policy's reading of
// it; or, with asJSON, one Hit object per line.
func (r *Replay) WriteExplain(out io.Writer, asJSON bool) error {
	w := bufio.NewWriter(out)
	if asJSON {
		enc := json.NewEncoder(w)
		for _, h := range r.hits {
			if err := enc.Encode(h); err != nil {
				return fmt.Errorf("write explanation: %w", err)
			}
		}
	} else {
		r.writeExplainText(w)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write explanation: %w", err)
	}
	return nil
}

func (r *Replay) writeExplainText(w io.Writer) {
	b, banned := r.bans[r.explain]
	trusted := ""
	if n := countVerdict(r.hits, policy.VerdictTrustedClient); n > 0 {
		trusted = fmt.Sprintf(", %d of them weak evidence against a trusted client", n)
	}
	switch {
	case len(r.hits) == 0:
		fmt.Fprintf(w, "%s: no offenses\n", r.explain)
		return
	case banned:
		fmt.Fprintf(w, "%s: banned by %s at %s until %s; %d offenses%s\n", r.explain, b.Rule,
			b.Banned.Format(time.RFC3339), b.Until.Format(time.RFC3339), len(r.hits), trusted)
	default:
		fmt.Fprintf(w, "%s: not banned; %d offenses%s\n", r.explain, len(r.hits), trusted)
	}
	for _, h := range r.hits {
		var what string
		switch h.Verdict {
		case policy.VerdictBan, policy.VerdictExtend, policy.VerdictDryRun:
			what = fmt.Sprintf("%s: threshold %d within %s reached, until %s", h.Verdict, h.Threshold, h.Window, h.Until.Format(time.RFC3339))
		case policy.VerdictCounted:
			what = fmt.Sprintf("hit %d of %d within %s", h.Count, h.Threshold, h.Window)
		case policy.VerdictNeverBlock:
			what = fmt.Sprintf("%s (%s)", h.Verdict, h.Prefix)
		case policy.VerdictTrustedClient:
			what = fmt.Sprintf("%s (%s): weak evidence does not ban it", h.Verdict, h.Reason)
		default:
			what = h.Verdict.String()
		}
		qid := ""
		if h.QueueID != "" {
			qid = " " + h.QueueID
		}
		fmt.Fprintf(w, "%s:%d: %s %s (%s%s): %s\n\t%s\n", h.File, h.Line, h.Time.Format(time.RFC3339), h.Rule, h.Kind, qid, what, h.Text)
	}
}

// WriteSummary writes what was read and decided, in lines that start with
// "check: " (it goes to standard error, next to the command's errors).
// elapsed is the time the scans took.
func (r *Replay) WriteSummary(out io.Writer, elapsed time.Duration) error {
	w := bufio.NewWriter(out)
	st := r.m.Stats()
	n := r.n
	rate := float64(n.Lines) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "check: %d lines in %d files (%d unparsable, %d too long) in %s, %.0f lines/s\n",
		n.Lines, n.Files, n.Unparsable, n.TooLong, elapsed.Round(time.Millisecond), rate)
	for _, f := range n.PerFile {
		r.writeFileSummary(w, f)
	}
	if !r.since.IsZero() || !r.until.IsZero() {
		fmt.Fprintf(w, "check: %d lines outside %s (those before it only taught client records and accepted messages)\n", n.OutOfRange, r.rangeText())
	}
	var events, unattributed []string
	var nUn uint64
	for _, k := range matcher.Kinds() {
		if c := st.Events[k]; c > 0 {
			events = append(events, fmt.Sprintf("%s=%d", k, c))
		}
		if c := st.Unattributed[k]; c > 0 {
			unattributed = append(unattributed, fmt.Sprintf("%s=%d", k, c))
			nUn += c
		}
	}
	fmt.Fprintf(w, "check: events by kind: %s\n", orNone(events))
	fmt.Fprintf(w, "check: %d unattributed events (no client= record for the queue ID): %s\n", nUn, orNone(unattributed))
	fmt.Fprintf(w, "check: %d offenses by rule: %s\n", n.Offenses, countsByRule(n.OffensesByRule))
	fmt.Fprintf(w, "check: %d bans by rule: %s; %d never-block, %d dry-run, %d trusted-client\n", len(r.order), countsByRule(n.BansByRule), n.NeverBlock, n.DryRun, n.Trusted)
	fmt.Fprintf(w, "check: %d trusted-client offenses (weak evidence, not banned; %d authenticated, %d established) by rule: %s\n",
		n.Trusted, n.TrustedAuthenticated, n.TrustedEstablished, countsByRule(n.TrustedByRule))
	fmt.Fprintf(w, "check: %d accepted messages counted for %d senders remembered (%d forgotten)\n", st.Accepted, st.Senders, st.SenderEvictions)
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

func countVerdict(hits []Hit, v policy.Verdict) int {
	n := 0
	for _, h := range hits {
		if h.Verdict == v {
			n++
		}
	}
	return n
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

// formatHint names the formats check reads, for a file it could not.
const formatHint = "check reads RFC 3164 (\"Mmm dd hh:mm:ss host prog[pid]: text\"), " +
	"RFC 3339 (\"2006-01-02T15:04:05+01:00 host prog[pid]: text\", rsyslog's file format), " +
	"RFC 5424 (\"<PRI>1 ...\") and journalctl -o short, short-precise, short-iso and short-iso-precise; " +
	"see --format"

func (r *Replay) writeFileSummary(w io.Writer, f FileCounts) {
	fmt.Fprintf(w, "check: %s: %d lines (%d unparsable", f.Name, f.Lines, f.Unparsable)
	if f.WrongFormat > 0 {
		fmt.Fprintf(w, ", %d of them not %s", f.WrongFormat, r.format)
	}
	fmt.Fprintf(w, ", %d too long, %d blank or comments", f.TooLong, f.Blank)
	if !r.since.IsZero() || !r.until.IsZero() {
		fmt.Fprintf(w, ", %d outside the time range", f.OutOfRange)
	}
	w.Write([]byte(")"))
	if f.Err != nil {
		fmt.Fprintf(w, "; damaged: %v; the lines before were replayed", f.Err)
	}
	w.Write([]byte("\n"))
	if f.Unreadable() {
		fmt.Fprintf(w, "check: %s: not one line in a format check reads: %s\n", f.Name, formatHint)
	}
}

func (r *Replay) rangeText() string {
	switch {
	case r.until.IsZero():
		return "--since " + r.since.Format(time.RFC3339)
	case r.since.IsZero():
		return "--until " + r.until.Format(time.RFC3339)
	}
	return "--since " + r.since.Format(time.RFC3339) + " --until " + r.until.Format(time.RFC3339)
}
