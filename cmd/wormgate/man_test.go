package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// requireTool stops the test unless bin is installed; under CI=true its
// absence is a failure.
func requireTool(t *testing.T, bin, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs %s (apt-get install %s) (CI=true, so this is a failure, not a skip)", bin, pkg)
	}
	t.Skipf("needs %s (apt-get install %s)", bin, pkg)
	return ""
}

// manPage runs `wormgate man` as build-deb.sh does.
func manPage(t *testing.T) string {
	t.Helper()
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"man"}, strings.NewReader(""), &stdout, &stderr); code != exitOK || stderr.Len() > 0 {
		t.Fatalf("wormgate man: exit %d, stderr %q", code, stderr.String())
	}
	return stdout.String()
}

// TestManPageCommands: every visible command has its section with its
// summary and its --help text; hidden ones are left out.
func TestManPageCommands(t *testing.T) {
	page := manPage(t)
	if !strings.HasPrefix(page, `.TH WORMGATE 8 "2023-11-14" "wormgate `) {
		t.Errorf("page starts %q, want the .TH of wormgate(8) dated by SOURCE_DATE_EPOCH", strings.SplitN(page, "\n", 2)[0])
	}
	for _, c := range commands {
		sec := ".SS " + roffQuote(c.name) + "\n" + roffLine(c.summary) + "\n"
		if c.hidden {
			if strings.Contains(page, ".SS "+roffQuote(c.name)) {
				t.Errorf("hidden command %q is in the page", c.name)
			}
			continue
		}
		i := strings.Index(page, sec)
		if i < 0 {
			t.Errorf("no section %q in the page", sec)
			continue
		}
		body := page[i+len(sec):]
		body = body[:strings.Index(body, ".EE\n")]
		help, ok := commandHelp(t.Context(), c)
		if !ok {
			help = strings.TrimSpace("Usage: wormgate " + c.name + " " + c.synopsis)
		}
		for line := range strings.Lines(help) {
			want := roffLine(expandTabs(strings.TrimRight(line, "\n")))
			if !strings.Contains(body, want+"\n") {
				t.Errorf("section of %q lacks its help line %q:\n%s", c.name, want, body)
			}
		}
		if !strings.Contains(page, ".B "+roffQuote("wormgate "+c.name)+"\n") {
			t.Errorf("synopsis lacks %q", c.name)
		}
	}
}

// TestManPageLint formats the page as lintian does (man --warnings) and
// with groff's warnings on: not one warning.
func TestManPageLint(t *testing.T) {
	man := requireTool(t, "man", "man-db")
	groff := requireTool(t, "groff", "groff-base")
	path := filepath.Join(t.TempDir(), "wormgate.8")
	if err := os.WriteFile(path, []byte(manPage(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path},
		{groff, "-man", "-ww", "-z", path},
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
	}
	// What a reader sees: the flags as typed, the NAME line whatis uses.
	cmd := exec.Command(man, "-l", path)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=100")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"wormgate - blocks worm", "wormgate check [--config FILE] [--json]", "    -config file\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("formatted page lacks %q:\n%s", want, out)
		}
	}
}

// TestManPagePlaceholders: a command without help text (a placeholder)
// gets its synopsis, a hidden one nothing, and a command that ignores
// --help runs with a cancelled context.
func TestManPagePlaceholders(t *testing.T) {
	var busyCtxErr error
	cmds := []command{
		{name: "good", synopsis: "[--x N]", summary: "does good", run: func(_ context.Context, args []string, s streams) error {
			fs := newFlagSet("good", "good [--x N]\n\nDoes good.", s.stderr)
			fs.Int("x", 0, "the `N`")
			return parseFlags(fs, args)
		}},
		{name: "todo", synopsis: "ADDR", summary: "not there yet", run: func(context.Context, []string, streams) error { return errors.New("not implemented yet") }},
		{name: "busy", summary: "ignores --help", run: func(ctx context.Context, _ []string, s streams) error {
			busyCtxErr = ctx.Err()
			fmt.Fprintln(s.stdout, "did the work")
			return ctx.Err()
		}},
		{name: "secret", summary: "internal", hidden: true, run: func(context.Context, []string, streams) error { return flag.ErrHelp }},
	}
	page := renderMan(t.Context(), cmds, "wormgate does things.\n\nUsage: ...\n", "1.2.3", time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC))
	if busyCtxErr == nil {
		t.Error("a command that ignores --help ran with a live context")
	}
	sections := func(name string) string {
		i := strings.Index(page, ".SS "+roffQuote(name)+"\n")
		if i < 0 {
			return ""
		}
		s := page[i:]
		return s[:strings.Index(s, ".EE\n")+4]
	}
	for _, tc := range []struct{ name, want string }{
		{"good", ".SS \"good\"\ndoes good\n.PP\n.EX\nUsage: wormgate good [\\-\\-x N]\n\nDoes good.\n\nFlags:\n  \\-x N\n        the N\n.EE\n"},
		{"todo", ".SS \"todo\"\nnot there yet\n.PP\n.EX\nUsage: wormgate todo ADDR\n.EE\n"},
		{"busy", ".SS \"busy\"\nignores \\-\\-help\n.PP\n.EX\nUsage: wormgate busy\n.EE\n"},
		{"secret", ""},
	} {
		if diff := cmp.Diff(tc.want, sections(tc.name)); diff != "" {
			t.Errorf("section %q (-want +got):\n%s", tc.name, diff)
		}
	}
	for _, want := range []string{
		".TH WORMGATE 8 \"2024-05-06\" \"wormgate 1.2.3\" \"System Administration\"\n",
		".SH NAME\nwormgate \\- does things\n",
		".B \"wormgate good\"\n[\\-\\-x N]\n.br\n.B \"wormgate todo\"\nADDR\n.br\n.B \"wormgate busy\"\n.ad\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	for _, bad := range []string{"not implemented", "did the work", "secret"} {
		if strings.Contains(page, bad) {
			t.Errorf("page holds %q:\n%s", bad, page)
		}
	}
}

func TestManRoffEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"--config FILE", `\-\-config FILE`},
		{`C:\dir`, `C:\edir`},
		{".TH not a request", `\&.TH not a request`},
		{"'also not", `\&'also not`},
		{"in.the.middle", "in.the.middle"},
		{"offence — naïve", `offence \[u2014] na\[u00EF]ve`},
		{"bell\a", "bell"},
	} {
		if got := roffLine(tc.in); got != tc.want {
			t.Errorf("roffLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got, want := roffQuote(`say "hi"`), `"say ""hi"""`; got != want {
		t.Errorf("roffQuote = %q, want %q", got, want)
	}
	for _, tc := range []struct{ in, want string }{
		{"\tx", "        x"},
		{"  -config file", "  -config file"},
		{"ab\tc\td", "ab      c       d"},
	} {
		if got := expandTabs(tc.in); got != tc.want {
			t.Errorf("expandTabs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestManUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		epoch string
		args  []string
		want  string
	}{
		{"argument", "", []string{"man", "extra"}, `unexpected argument "extra"`},
		{"bad epoch", "yesterday", []string{"man"}, "SOURCE_DATE_EPOCH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", tc.epoch)
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, strings.NewReader(""), &stdout, &stderr)
			if code == exitOK || !strings.Contains(stderr.String(), tc.want) || stdout.Len() > 0 {
				t.Errorf("exit %d, stdout %d bytes, stderr %q; want a failure naming %q", code, stdout.Len(), stderr.String(), tc.want)
			}
		})
	}
}
