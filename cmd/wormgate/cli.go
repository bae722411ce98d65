package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/fleet"
)

// errDaemon marks a failure of the daemon or of reaching it: exit 1.
var errDaemon = errors.New("wormgate daemon")

// client talks to the daemon's control socket.
type client struct {
	socket string
	hc     *http.Client
}

func newClient(socket string) *client {
	return &client{socket: socket, hc: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}}
}

// do sends one request and decodes the JSON reply into out. A 400 is the
// caller's mistake (usage error, exit 2), the rest are the daemon's.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://wormgate"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return fmt.Errorf("%w: %s: permission denied (run as root or as a member of the socket's group, wormgate)", errDaemon, c.socket)
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Errorf("%w: not running? nothing answers on %s", errDaemon, c.socket)
		}
		return fmt.Errorf("%w: %w", errDaemon, err)
	}
	b := readAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if resp.StatusCode == http.StatusBadRequest {
			return fmt.Errorf("%w: %s", errUsage, e.Error)
		}
		if resp.StatusCode == http.StatusUnprocessableEntity && out != nil {
			_ = json.Unmarshal(b, out)
		}
		return fmt.Errorf("%w: %s (%s)", errDaemon, e.Error, resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: unreadable reply: %w", errDaemon, err)
	}
	return nil
}

// clientFlags are the flags every control command has.
type clientFlags struct {
	socket *string
	json   *bool
}

func addClientFlags(fs *flag.FlagSet, withJSON bool) clientFlags {
	f := clientFlags{socket: fs.String("socket", socketDefault(), "the daemon's control `socket` (or $"+socketEnv+")")}
	if withJSON {
		f.json = fs.Bool("json", false, "print JSON instead of a table")
	}
	return f
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// checkTargets validates the positional addresses before the daemon is
// asked, so that usage errors need no daemon.
func checkTargets(pos []string, what string) error {
	if len(pos) == 0 {
		return fmt.Errorf("%w: no %s given", errUsage, what)
	}
	_, err := parseTargets(pos)
	if err != nil {
		return fmt.Errorf("%w: %s", errUsage, strings.TrimPrefix(err.Error(), errBadRequest.Error()+": "))
	}
	return nil
}

// changeCmd is one of the commands that change bans or allows.
type changeCmd struct {
	name, help string
	// what names the positional arguments in the error without them.
	what string
	// path is the API endpoint; verb what the output says per target.
	path, verb string
	// forHelp and reasonHelp document --for and --reason; empty: the
	// command has neither.
	forHelp, reasonHelp string
}

func runChange(ctx context.Context, args []string, s streams, c changeCmd) error {
	fs := newFlagSet(c.name, c.help, s.stderr)
	cf := addClientFlags(fs, true)
	var forArg, reason *string
	if c.forHelp != "" {
		forArg = fs.String("for", "", c.forHelp)
		reason = fs.String("reason", "", c.reasonHelp)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := checkTargets(pos, c.what); err != nil {
		return err
	}
	req := changeRequest{Targets: pos}
	if forArg != nil {
		if *forArg != "" {
			if _, err := parseFor(*forArg); err != nil {
				return fmt.Errorf("%w: %s", errUsage, strings.TrimPrefix(err.Error(), errBadRequest.Error()+": "))
			}
		}
		if len(*reason) > maxReason {
			return fmt.Errorf("%w: --reason: longer than %d bytes", errUsage, maxReason)
		}
		req.For, req.Reason = *forArg, *reason
	}
	var res enforcer.Result
	if err := newClient(*cf.socket).do(ctx, http.MethodPost, c.path, req, &res); err != nil {
		return err
	}
	return printResult(s, cf, res, c.verb)
}

func cmdBan(ctx context.Context, args []string, s streams) error {
	return runChange(ctx, args, s, changeCmd{
		name: "ban", what: "address or prefix to ban", path: "/api/v1/bans", verb: "banned",
		help:       "ban [--for DURATION] [--reason TEXT] ADDR|PREFIX...\n\nBans addresses or networks by hand: in the kernel at once, recorded, kept\nover restarts and reconciles until they expire or are unbanned. Networks\nmay be as wide as enforcer.manual.widest_ipv4_prefix (/24) and\nwidest_ipv6_prefix (/48); never-block addresses cannot be banned.",
		forHelp:    "ban `duration`, e.g. 90m, 12h, 7d (default: enforcer.ban_for)",
		reasonHelp: "why, shown by bans and why (at most 200 bytes)",
	})
}

func cmdUnban(ctx context.Context, args []string, s streams) error {
	return runChange(ctx, args, s, changeCmd{
		name: "unban", what: "address or prefix to unban", path: "/api/v1/unban", verb: "unbanned",
		help: "unban ADDR|PREFIX...\n\nLifts bans: out of the kernel and the record at once; neither a reconcile\nnor a restart brings them back. The next offence bans again as usual.",
	})
}

func cmdAllow(ctx context.Context, args []string, s streams) error {
	return runChange(ctx, args, s, changeCmd{
		name: "allow", what: "address or prefix to allow", path: "/api/v1/allows", verb: "allowed",
		help:       "allow [--for DURATION] [--reason TEXT] ADDR|PREFIX...\n\nAdds run-time never-block entries (kept over restarts): active bans they\ncover are lifted and later offences from them ban nobody.",
		forHelp:    "how long, e.g. 12h or 30d (default: until disallowed)",
		reasonHelp: "why, shown by why (at most 200 bytes)",
	})
}

func cmdDisallow(ctx context.Context, args []string, s streams) error {
	return runChange(ctx, args, s, changeCmd{
		name: "disallow", what: "allow entry to remove", path: "/api/v1/disallow", verb: "disallowed",
		help: "disallow ADDR|PREFIX...\n\nRemoves run-time never-block entries made by allow; normal policy applies\nagain to later offences.",
	})
}

func printResult(s streams, cf clientFlags, res enforcer.Result, verb string) error {
	if cf.json != nil && *cf.json {
		return printJSON(s.stdout, res)
	}
	for _, n := range res.Changed {
		fmt.Fprintf(s.stdout, "%s %v\n", verb, n)
	}
	for _, n := range res.Lifted {
		fmt.Fprintf(s.stdout, "ban lifted %v\n", n)
	}
	if !res.Durable {
		fmt.Fprintln(s.stdout, "note: in force, but the record has not confirmed it yet (see wormgate status)")
	}
	return nil
}

func cmdWhy(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("why", "why ADDR\n\nShows what wormgate knows about an address: its ban, the never-block entry\nthat covers it, and every recorded offence with the MX host, queue ID,\nrule, reject text and decision.", s.stderr)
	cf := addClientFlags(fs, true)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: why takes one address", errUsage)
	}
	p, err := parseTarget(pos[0])
	if err != nil || !p.IsSingleIP() {
		return fmt.Errorf("%w: %q is not an IP address", errUsage, pos[0])
	}
	var w enforcer.Why
	if err := newClient(*cf.socket).do(ctx, http.MethodGet, "/api/v1/why/"+url.PathEscape(p.Addr().String()), nil, &w); err != nil {
		return err
	}
	if *cf.json {
		return printJSON(s.stdout, w)
	}
	out := s.stdout
	switch {
	case w.Ban != nil:
		kind := "automatic, rule " + w.Ban.Rule
		if w.Ban.Manual {
			kind = "manual"
			if w.Ban.Reason != "" {
				kind += ": " + w.Ban.Reason
			}
		}
		if w.Ban.Origin != "" {
			kind += ", decided by gateway " + w.Ban.Origin
		}
		target := w.Addr.String()
		if w.Ban.Net.IsValid() {
			target = w.Ban.Net.String()
		}
		fmt.Fprintf(out, "%s is banned until %s (%s left; %s)\n", target, w.Ban.Until.Local().Format(time.DateTime), time.Until(w.Ban.Until).Round(time.Second), kind)
	case w.Protected.IsValid():
		fmt.Fprintf(out, "%s is never blocked (%v", w.Addr, w.Protected)
		if w.Allow != nil {
			fmt.Fprintf(out, ", allowed by %s", w.Allow.By)
			if w.Allow.Reason != "" {
				fmt.Fprintf(out, ": %s", w.Allow.Reason)
			}
		}
		fmt.Fprintln(out, ")")
	default:
		fmt.Fprintf(out, "%s is not banned\n", w.Addr)
	}
	if o := w.Offender; o != nil {
		fmt.Fprintf(out, "offender: %d hits, %d bans, first seen %s, last seen %s, reported by %s\n", o.Hits, o.Bans,
			o.FirstSeen.Local().Format(time.DateTime), o.LastSeen.Local().Format(time.DateTime), strings.Join(o.Hosts, ", "))
	}
	if len(w.Events) == 0 {
		fmt.Fprintln(out, "no recorded offences")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tMX\tQUEUE ID\tKIND\tRULE\tDECISION\tTEXT")
	for _, ev := range w.Events {
		decision := ev.Verdict
		if ev.Detail != "" {
			decision += " (" + ev.Detail + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.Local().Format(time.DateTime), dash(ev.Host), dash(ev.QueueID),
			ev.Kind, ev.Rule, decision, quoteText(ev.Text))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// quoteText shows client-written text safely on a terminal.
func quoteText(s string) string {
	if s == "" {
		return "-"
	}
	q := fmt.Sprintf("%q", s)
	return q[1 : len(q)-1]
}

func cmdReload(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("reload", "reload\n\nMakes the daemon load its --config file again. Prints what changed and\napplies now, and what needs a restart (listeners, state dir); an invalid\nfile changes nothing and the command fails with the error.", s.stderr)
	cf := addClientFlags(fs, true)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	var res reloadResult
	err = newClient(*cf.socket).do(ctx, http.MethodPost, "/api/v1/reload", struct{}{}, &res)
	if res.Time.IsZero() && err != nil {
		return err
	}
	if *cf.json {
		if err := printJSON(s.stdout, res); err != nil {
			return err
		}
	} else if res.OK {
		fmt.Fprint(s.stdout, res.String())
	}
	if !res.OK {
		return fmt.Errorf("%w: %s", errConfig, res.Error)
	}
	return nil
}

// statusReply is the part of /api/v1/status the CLI shows.
type statusReply struct {
	Version       string                `json:"version"`
	Uptime        float64               `json:"uptime_seconds"`
	Firewall      string                `json:"firewall"`
	FirewallReady bool                  `json:"firewall_ready"`
	Enforcer      enforcer.Status       `json:"enforcer"`
	Table         string                `json:"table"`
	Ports         []uint16              `json:"ports"`
	Listeners     map[string][]string   `json:"listeners"`
	BansActive    int                   `json:"bans_active"`
	Senders       map[string]senderStat `json:"senders"`
	LastReload    *reloadResult         `json:"last_reload"`
	Fleet         fleet.Status          `json:"fleet"`
}

func cmdStatus(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("status", "status\n\nShows the running daemon: version, uptime, firewall state, listeners,\nsyslog senders and their last message, ban counts, last reload.", s.stderr)
	cf := addClientFlags(fs, true)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	c := newClient(*cf.socket)
	if *cf.json {
		var raw json.RawMessage
		if err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &raw); err != nil {
			return err
		}
		_, err := s.stdout.Write(append(raw, '\n'))
		return err
	}
	var st statusReply
	if err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "version\t%s\n", st.Version)
	fmt.Fprintf(tw, "uptime\t%v\n", (time.Duration(st.Uptime) * time.Second).Round(time.Second))
	state := "ready"
	switch {
	case !st.FirewallReady:
		state = "not ready"
	case st.Enforcer.Degraded:
		state = fmt.Sprintf("DEGRADED: %s failing: %s", strings.Join(st.Enforcer.Failing, ", "), st.Enforcer.LastError)
	}
	fmt.Fprintf(tw, "firewall\t%s (table inet %s, ports %v): %s\n", st.Firewall, st.Table, st.Ports, state)
	fmt.Fprintf(tw, "bans\t%d active, %d pending, record lag %d\n", st.BansActive, st.Enforcer.Pending, st.Enforcer.RecordLag)
	for _, k := range []string{"udp", "tcp", "tls"} {
		if l := st.Listeners[k]; len(l) > 0 {
			fmt.Fprintf(tw, "%s\t%s\n", k, strings.Join(l, " "))
		}
	}
	senders := make([]string, 0, len(st.Senders))
	for a := range st.Senders {
		senders = append(senders, a)
	}
	slices.Sort(senders)
	if len(senders) == 0 {
		fmt.Fprintf(tw, "senders\tnone yet\n")
	}
	for _, a := range senders {
		ss := st.Senders[a]
		fmt.Fprintf(tw, "sender %s\t%d messages, last %s ago\n", a, ss.Messages, time.Since(ss.Last).Round(time.Second))
	}
	if fl := st.Fleet; fl.Enabled {
		state := "NOT CONNECTED (enforcing alone, decisions queued)"
		switch {
		case fl.Live:
			state = "connected to " + fl.Server
		case fl.Connected:
			state = "connected to " + fl.Server + ", catching up"
		}
		fmt.Fprintf(tw, "fleet\t%s, bucket %s: %s; peers %s; %d queued; lag %.3fs\n", fl.Name, fl.Bucket, state,
			dash(strings.Join(fl.Peers, ",")), fl.Queued, fl.LagSeconds)
		if fl.LastError != "" {
			fmt.Fprintf(tw, "fleet error\t%s at %s\n", fl.LastError, fl.LastErrorAt.Local().Format(time.DateTime))
		}
	}
	if r := st.LastReload; r != nil {
		res := "ok"
		if !r.OK {
			res = "FAILED: " + r.Error
		}
		fmt.Fprintf(tw, "last reload\t%s by %s: %s\n", r.Time.Local().Format(time.DateTime), r.By, res)
		if len(r.NeedsRestart) > 0 {
			fmt.Fprintf(tw, "needs restart\t%s\n", strings.Join(r.NeedsRestart, ", "))
		}
	}
	return tw.Flush()
}

// bansPage is one page of /api/v1/bans.
type bansPage struct {
	Bans       []banReply `json:"bans"`
	NextCursor string     `json:"next_cursor"`
}

type banReply struct {
	Addr             string    `json:"addr"`
	Net              string    `json:"net,omitempty"`
	Rule             string    `json:"rule"`
	Hits             int       `json:"hits"`
	Hosts            []string  `json:"hosts,omitempty"`
	Start            time.Time `json:"start"`
	Until            time.Time `json:"until"`
	RemainingSeconds float64   `json:"remaining_seconds"`
	Manual           bool      `json:"manual,omitempty"`
	Reason           string    `json:"reason,omitempty"`
	Origin           string    `json:"origin,omitempty"`
}

func cmdBans(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("bans", "bans [--rule R] [--host MX]\n\nLists the active bans in address order.", s.stderr)
	cf := addClientFlags(fs, true)
	rule := fs.String("rule", "", "only bans by this `rule` (manual for manual bans)")
	host := fs.String("host", "", "only bans reported by this MX `host` (its syslog hostname)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	c := newClient(*cf.socket)
	var all []banReply
	cursor := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if *rule != "" {
			q.Set("rule", *rule)
		}
		if *host != "" {
			q.Set("host", *host)
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page bansPage
		if err := c.do(ctx, http.MethodGet, "/api/v1/bans?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		all = append(all, page.Bans...)
		if page.NextCursor == "" || len(page.Bans) == 0 {
			break
		}
		cursor = page.NextCursor
	}
	if *cf.json {
		if all == nil {
			all = []banReply{}
		}
		return printJSON(s.stdout, all)
	}
	tw := tabwriter.NewWriter(s.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tRULE\tHITS\tMX\tUNTIL\tLEFT\tREASON")
	for _, b := range all {
		target := b.Addr
		if b.Net != "" {
			target = b.Net
		}
		rule := b.Rule
		if b.Manual && rule != policyManual {
			rule += " (manual)"
		}
		if b.Origin != "" {
			rule += " from " + b.Origin
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%v\t%s\n", target, rule, b.Hits, dash(strings.Join(b.Hosts, ",")),
			b.Until.Local().Format(time.DateTime), (time.Duration(b.RemainingSeconds) * time.Second).Round(time.Second), quoteText(b.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(s.stderr, "%d bans\n", len(all))
	return nil
}

// policyManual is the rule name of manual bans.
const policyManual = "manual"
