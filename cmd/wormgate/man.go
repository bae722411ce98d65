package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// The manual page wormgate(8) is made from the command table and from what
// each command prints for --help, so it cannot drift from the binary it
// documents. deploy/build-deb.sh runs `wormgate man` and ships the result.

// manTable and manUsage are the command table and its usage text, set in
// init: the table holds cmdMan, so reading them from cmdMan directly would
// be an initialization cycle.
var (
	manTable []command
	manUsage func(io.Writer)
)

func init() { manTable, manUsage = commands, writeUsage }

// Paths of the Debian package and its unit (deploy/nfpm.yaml,
// deploy/wormgate.service), for the FILES section.
const (
	manConfigPath  = "/etc/wormgate/wormgate.yaml"
	manControlPath = defaultSocket
	manUnitPath    = "/lib/systemd/system/wormgate.service"
	manExamples    = "/usr/share/doc/wormgate/examples"
)

func cmdMan(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("man", "man\n\nPrints the manual page wormgate(8), in roff, made from the command table and\neach command's --help. SOURCE_DATE_EPOCH, when set, dates it.", s.stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	date, err := manDate(os.Getenv("SOURCE_DATE_EPOCH"), time.Now())
	if err != nil {
		return err
	}
	var usage strings.Builder
	manUsage(&usage)
	_, err = io.WriteString(s.stdout, renderMan(ctx, manTable, usage.String(), buildVersion(), date))
	return err
}

// manDate is the page's date: SOURCE_DATE_EPOCH (reproducible builds),
// else now.
func manDate(epoch string, now time.Time) (time.Time, error) {
	if epoch == "" {
		return now.UTC(), nil
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// commandHelp returns what c prints for --help, or false when it prints
// none (it does not return flag.ErrHelp). The context is cancelled
// beforehand: a command that ignored --help must not get to do its work.
func commandHelp(ctx context.Context, c command) (string, bool) {
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var buf bytes.Buffer
	err := c.run(cctx, []string{"--help"}, streams{stdin: strings.NewReader(""), stdout: &buf, stderr: &buf})
	if !errors.Is(err, flag.ErrHelp) {
		return "", false
	}
	return buf.String(), true
}

// renderMan renders the page for the visible commands of cmds; the first
// paragraph of their usage text is the one-sentence description.
func renderMan(ctx context.Context, cmds []command, usage, version string, date time.Time) string {
	intro, _, _ := strings.Cut(usage, "\n\n")
	intro = strings.Join(strings.Fields(intro), " ")
	whatis := strings.TrimSuffix(strings.TrimPrefix(intro, "wormgate "), ".")

	var b strings.Builder
	fmt.Fprintf(&b, ".TH WORMGATE 8 %s %s \"System Administration\"\n", `"`+date.Format(time.DateOnly)+`"`, roffQuote("wormgate "+version))
	b.WriteString(".SH NAME\nwormgate \\- " + roffEscape(whatis) + "\n")

	// Unjustified and unhyphenated: a synopsis is copied, not read.
	b.WriteString(".SH SYNOPSIS\n.ad l\n.nh\n")
	for i, c := range visible(cmds) {
		if i > 0 {
			b.WriteString(".br\n")
		}
		b.WriteString(".B " + roffQuote("wormgate "+c.name) + "\n")
		if c.synopsis != "" {
			b.WriteString(roffLine(c.synopsis) + "\n")
		}
	}

	b.WriteString(".ad\n.hy\n.SH DESCRIPTION\n" + roffLine(intro) + "\n.PP\n")
	b.WriteString("The MX hosts forward their Postfix log over syslog; \\fBwormgate serve\\fR recognises the\n" +
		"rejects of worms and abusers in it, attributes each to the client smtpd recorded and drops\n" +
		"that client in the gateway's kernel with nftables. \\fBwormgate check\\fR replays log files\n" +
		"with the same rules; the other commands ask and steer the running daemon over its control socket.\n")

	b.WriteString(".SH COMMANDS\nEach command follows with the text it prints for \\fB\\-\\-help\\fR.\n")
	for _, c := range visible(cmds) {
		b.WriteString(".SS " + roffQuote(c.name) + "\n" + roffLine(c.summary) + "\n.PP\n.EX\n")
		help, ok := commandHelp(ctx, c)
		if !ok {
			help = strings.TrimSpace("Usage: wormgate " + c.name + " " + c.synopsis)
		}
		for line := range strings.Lines(strings.TrimRight(help, "\n")) {
			b.WriteString(roffLine(expandTabs(strings.TrimRight(line, "\n"))) + "\n")
		}
		b.WriteString(".EE\n")
	}

	fmt.Fprintf(&b, ".SH \"EXIT STATUS\"\n.TP\n%d\nsuccess\n.TP\n%d\nfailure\n.TP\n%d\nusage error or invalid configuration\n", exitOK, exitFailure, exitUsage)

	b.WriteString(".SH FILES\n")
	for _, f := range []struct{ path, what string }{
		{manConfigPath, "The configuration read by the unit (only what differs from the default of wormgate config; a conffile of the package)."},
		{defaultConfig().Enforcer.StateDir, "The durable record of bans (enforcer.state_dir)."},
		{manControlPath, "The control socket (mode 0660, group wormgate) of the CLI commands."},
		{manUnitPath, "The systemd unit (Type=notify; systemctl reload runs wormgate reload)."},
		{manExamples, "Example configuration, Postfix header_checks/body_checks and rsyslog forwarding."},
	} {
		if f.path == "" {
			continue
		}
		b.WriteString(".TP\n.I " + roffQuote(f.path) + "\n" + roffLine(f.what) + "\n")
	}

	b.WriteString(".SH \"SEE ALSO\"\n.BR nft (8),\n.BR header_checks (5),\n.BR rsyslog.conf (5),\n.BR systemctl (1)\n")
	return b.String()
}

func visible(cmds []command) []command {
	var out []command
	for _, c := range cmds {
		if !c.hidden {
			out = append(out, c)
		}
	}
	return out
}

// roffEscape makes text print as itself: backslashes and hyphens (which
// groff may render as typographic dashes, breaking copy and paste of
// flags) are escaped, other characters outside printable ASCII become
// Unicode escapes and control characters are dropped.
func roffEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r < 0x20 || r == 0x7f:
		case r > 0x7f:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// roffLine escapes one line of text; a leading . or ' would make it a
// request.
func roffLine(s string) string {
	e := roffEscape(s)
	if strings.HasPrefix(e, ".") || strings.HasPrefix(e, "'") {
		return `\&` + e
	}
	return e
}

// roffQuote is a macro argument: escaped and in double quotes (a double
// quote inside is written as two).
func roffQuote(s string) string {
	return `"` + strings.ReplaceAll(roffEscape(s), `"`, `""`) + `"`
}

// expandTabs replaces tabs by spaces to the next multiple of 8: flag's
// help output indents with tabs, which roff would set at its own stops.
func expandTabs(s string) string {
	if !strings.Contains(s, "\t") {
		return s
	}
	var b strings.Builder
	col := 0
	for _, r := range s {
		if r == '\t' {
			n := 8 - col%8
			b.WriteString(strings.Repeat(" ", n))
			col += n
			continue
		}
		b.WriteRune(r)
		col++
	}
	return b.String()
}
