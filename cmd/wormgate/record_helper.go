package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wormgate/wormgate/enforcer/store/remote"
)

// cmdRecordHelper is the process that holds the durable record for
// `wormgate serve`, which starts it and speaks to it over stdin and
// stdout: a write on a hung state disk then blocks this process, never
// the daemon's exit (see enforcer/store/remote).
func cmdRecordHelper(_ context.Context, args []string, s streams) error {
	fs := newFlagSet("record-helper", "record-helper --dir DIR\n\nInternal: holds the record in DIR for the serve process that started it,\nspeaking its protocol on standard input and output.", s.stderr)
	dir := fs.String("dir", "", "state `directory` (enforcer.state_dir)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *dir == "" {
		return fmt.Errorf("%w: want --dir DIR and nothing else", errUsage)
	}
	// The daemon decides when the record closes: a Ctrl-C or a stop of
	// the whole unit signals this process too, but it ends when the
	// daemon closes its stdin (or dies: it is then killed).
	signal.Ignore(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	return remote.ServeDir(s.stdin, s.stdout, *dir)
}
