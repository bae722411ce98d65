package main

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// command is one subcommand of wormgate. The table below is the one
// source of the usage text, the dispatch in run and the man page.
type command struct {
	name string
	// synopsis is the argument summary shown after the name.
	synopsis string
	// summary is the one-line description of the command list.
	summary string
	// hidden commands are not listed (internal helpers).
	hidden bool
	run    func(ctx context.Context, args []string, s streams) error
}

// commands lists every subcommand in the order of the usage text.
var commands = []command{
	{name: "serve", synopsis: "[--config FILE]", summary: "run the appliance", run: cmdServe},
	{name: "check", synopsis: "[--config FILE] [--json] [--explain ADDR] [--since TIME] [--until TIME] [--format FORMAT] FILE...", summary: "replay log files (- = stdin), print would-be bans", run: cmdCheck},
	{name: "status", synopsis: "[--socket PATH] [--json]", summary: "show the running daemon's state", run: cmdStatus},
	{name: "bans", synopsis: "[--socket PATH] [--rule R] [--host MX] [--json]", summary: "list the active bans", run: cmdBans},
	{name: "ban", synopsis: "[--socket PATH] [--for DURATION] [--reason TEXT] ADDR|PREFIX...", summary: "ban addresses by hand", run: cmdBan},
	{name: "unban", synopsis: "[--socket PATH] ADDR|PREFIX...", summary: "lift bans", run: cmdUnban},
	{name: "allow", synopsis: "[--socket PATH] [--for DURATION] [--reason TEXT] ADDR|PREFIX...", summary: "never block these (lifts their bans)", run: cmdAllow},
	{name: "disallow", synopsis: "[--socket PATH] ADDR|PREFIX...", summary: "remove runtime never-block entries", run: cmdDisallow},
	{name: "why", synopsis: "[--socket PATH] [--json] ADDR", summary: "show every recorded offence of an address", run: cmdWhy},
	{name: "reload", synopsis: "[--socket PATH] [--json]", summary: "reload the daemon's config file", run: cmdReload},
	{name: "config", synopsis: "", summary: "print the embedded default config", run: func(_ context.Context, args []string, s streams) error { return cmdConfig(args, s) }},
	{name: "version", synopsis: "", summary: "print the version", run: func(_ context.Context, args []string, s streams) error { return cmdVersion(args, s) }},
	{name: "man", synopsis: "", summary: "print the manual page wormgate(8) in roff", hidden: true, run: cmdMan},
	{name: "record-helper", synopsis: "--dir DIR", summary: "hold the record for serve (started by serve)", hidden: true, run: cmdRecordHelper},
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// writeUsage prints the command list.
func writeUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("wormgate blocks worm and abuse senders seen in Postfix logs, in nftables.\n\nUsage:\n")
	width := 0
	for _, c := range commands {
		if !c.hidden {
			width = max(width, len(c.name))
		}
	}
	for _, c := range commands {
		if c.hidden {
			continue
		}
		fmt.Fprintf(&b, "  wormgate %-*s  %s\n", width, c.name, c.summary)
	}
	b.WriteString("\nRun \"wormgate COMMAND --help\" for the arguments and flags of a command.\n")
	io.WriteString(w, b.String())
}
