package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// Exit codes, decided here and nowhere else.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// version is set at link time (-ldflags "-X main.version=...").
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// errUsage marks errors that are the caller's fault: exit code 2.
var errUsage = errors.New("usage")

type streams struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	s := streams{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		writeUsage(stderr)
		return exitUsage
	}
	var err error
	switch c, ok := lookupCommand(args[0]); {
	case ok:
		err = c.run(ctx, args[1:], s)
	case args[0] == "-h", args[0] == "-help", args[0] == "--help", args[0] == "help":
		writeUsage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "wormgate: unknown command %q\n\n", args[0])
		writeUsage(stderr)
		return exitUsage
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage), errors.Is(err, errConfig):
		fmt.Fprintf(stderr, "wormgate %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "wormgate %s: %v\n", args[0], err)
		return exitFailure
	}
}

// newFlagSet returns a flag set that reports its errors as usage errors
// and prints its help on the given stream.
func newFlagSet(name, synopsis string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: wormgate %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return nil
}

func cmdVersion(args []string, s streams) error {
	fs := newFlagSet("version", "version", s.stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	fmt.Fprintln(s.stdout, "wormgate", buildVersion())
	return nil
}

func cmdConfig(args []string, s streams) error {
	fs := newFlagSet("config", "config\n\nPrints the embedded default configuration, commented. Save it,\nkeep only what you change, and pass it to serve and check with --config.", s.stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	_, err := s.stdout.Write(defaultYAML)
	return err
}

// parseInterspersed parses the flags wherever they stand among the
// arguments, as GNU tools do ("check mail.log --explain ADDR"), and
// returns the other arguments in order. "--" ends the flags; "-" is an
// argument (standard input).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if used := args[:len(args)-len(left)]; len(used) > 0 && used[len(used)-1] == "--" &&
			(len(used) == 1 || !takesValue(fs, used[len(used)-2])) {
			return append(rest, left...), nil
		}
		if len(left) == 0 {
			return rest, nil
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}

// takesValue reports whether arg is a flag that took the next argument
// as its value ("--config" as opposed to "--json" or "--config=x").
func takesValue(fs *flag.FlagSet, arg string) bool {
	name, ok := strings.CutPrefix(arg, "-")
	if !ok || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(strings.TrimPrefix(name, "-"))
	if f == nil {
		return false
	}
	b, isBool := f.Value.(interface{ IsBoolFlag() bool })
	return !isBool || !b.IsBoolFlag()
}
