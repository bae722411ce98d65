package lab

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requirePostmap stops the test unless Postfix's postmap is installed;
// under CI=true its absence is a failure.
func requirePostmap(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("postmap")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs postmap (apt-get install postfix) (CI=true, so this is a failure, not a skip)")
		}
		t.Skip("needs postmap (apt-get install postfix)")
	}
	return p
}

// postmap runs `postmap -q input regexp:table` with a private, empty
// main.cf, so the host's Postfix configuration is never read. It returns
// the action, or "" when no line matched.
func postmap(t *testing.T, bin, confDir, table, input string) string {
	t.Helper()
	out, err := exec.Command(bin, "-c", confDir, "-q", input, "regexp:"+table).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 && len(out) == 0 {
		return ""
	}
	if err != nil {
		t.Fatalf("postmap -q %q regexp:%s: %v %s", input, table, err, exitStderr(err))
	}
	return strings.TrimSpace(string(out))
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

type checkCase struct {
	line   int
	table  string // "header" or "body"
	reject bool
	input  string
}

func readCheckCases(t *testing.T) []checkCase {
	t.Helper()
	f, err := os.Open("../testdata/checks.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []checkCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		parts := strings.SplitN(l, "\t", 3)
		if len(parts) != 3 || (parts[0] != "header" && parts[0] != "body") || (parts[1] != "reject" && parts[1] != "pass") {
			t.Fatalf("checks.txt:%d: want TABLE<TAB>reject|pass<TAB>INPUT, got %q", n, l)
		}
		cases = append(cases, checkCase{n, parts[0], parts[1] == "reject", parts[2]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// ruleLines returns the rule lines of a regexp table (no comments).
func ruleLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.Lines(string(b)) {
		l = strings.TrimRight(l, "\n")
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestChecksTable runs deploy/testdata/checks.txt through the shipped
// header_checks and body_checks with Postfix's own regexp engine: every
// worm subject and executable name is rejected, every ordinary name and
// header passes, and every rule line is exercised by a reject case.
func TestChecksTable(t *testing.T) {
	bin := requirePostmap(t)
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tables := map[string]string{"header": "../header_checks", "body": "../body_checks"}
	for i, tb := range tables {
		abs, err := filepath.Abs(tb)
		if err != nil {
			t.Fatal(err)
		}
		tables[i] = abs
	}
	cases := readCheckCases(t)
	for _, c := range cases {
		got := postmap(t, bin, conf, tables[c.table], c.input)
		switch {
		case c.reject && !strings.HasPrefix(got, "REJECT "):
			t.Errorf("checks.txt:%d: %s_checks %q: got %q, want a REJECT", c.line, c.table, c.input, got)
		case !c.reject && got != "":
			t.Errorf("checks.txt:%d: %s_checks %q: got %q, want no action", c.line, c.table, c.input, got)
		}
	}

	// Each rule line alone must reject at least one case: a line no case
	// reaches is untested.
	for table, path := range tables {
		for i, rule := range ruleLines(t, path) {
			one := filepath.Join(t.TempDir(), "one")
			if err := os.WriteFile(one, []byte(rule+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			hit := false
			for _, c := range cases {
				if c.table == table && c.reject && postmap(t, bin, conf, one, c.input) != "" {
					hit = true
					break
				}
			}
			if !hit {
				t.Errorf("%s_checks rule %d has no reject case in checks.txt: %s", table, i+1, rule)
			}
		}
	}
}

// TestChecksTableRejectTexts: the reject texts name the worm or the
// extension, which is what wormgate's default rules ban on.
func TestChecksTableRejectTexts(t *testing.T) {
	bin := requirePostmap(t)
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	header, err := filepath.Abs("../header_checks")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ input, want string }{
		{`Content-Disposition: attachment; filename="INVOICE.EXE"`, "REJECT Email rejected, an attachment with .EXE extension detected."},
		{`Content-Disposition: attachment; filename=thank_you.pif`, "REJECT Email rejected, an attachment with .pif extension detected."},
		{`Subject: Your details`, "REJECT Rejected, probably sent by a W32.HLLW.Mankx virus"},
	} {
		if got := postmap(t, bin, conf, header, tc.input); got != tc.want {
			t.Errorf("header_checks %q = %q, want %q", tc.input, got, tc.want)
		}
	}
}
