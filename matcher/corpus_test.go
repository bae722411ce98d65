package matcher

import (
	"bufio"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// corpusCase is one block of testdata/corpus.txt.
type corpusCase struct {
	name         string
	line         int // where the block starts, for messages
	rules        string
	want         []string // "ADDR RULE"
	unattributed uint64
	lines        []string
}

func readCorpus(t *testing.T) []corpusCase {
	t.Helper()
	f, err := os.Open("testdata/corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []corpusCase
	var cur *corpusCase
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if l == "" {
			cur = nil
			continue
		}
		if cur == nil {
			cases = append(cases, corpusCase{line: n, rules: "kinds"})
			cur = &cases[len(cases)-1]
		}
		key, val, ok := strings.Cut(strings.TrimPrefix(l, "# "), ": ")
		switch {
		case !strings.HasPrefix(l, "#"):
			cur.lines = append(cur.lines, l)
		case ok && key == "name":
			cur.name = val
		case ok && key == "rules":
			cur.rules = val
		case ok && key == "expect" && val == "none":
			cur.want = []string{}
		case ok && key == "expect":
			cur.want = append(cur.want, val)
		case ok && key == "unattributed":
			u, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				t.Fatalf("corpus.txt:%d: %v", n, err)
			}
			cur.unattributed = u
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	// Drop the header comment blocks.
	var out []corpusCase
	for _, c := range cases {
		if len(c.lines) == 0 {
			continue
		}
		if c.name == "" || c.want == nil {
			t.Fatalf("corpus.txt:%d: block without # name or # expect", c.line)
		}
		out = append(out, c)
	}
	if len(out) < 30 {
		t.Fatalf("corpus has %d cases, want the whole file", len(out))
	}
	return out
}

// kindRules has one catch-all rule per kind, named after it.
func kindRules() Config {
	cfg := Config{ReinjectionSources: DefaultReinjectionSources()}
	for _, k := range kinds {
		cfg.Rules = append(cfg.Rules, Rule{Name: string(k), Kinds: []Kind{k}, Pattern: MustRegexp(``)})
	}
	return cfg
}

// TestCorpus replays every block of testdata/corpus.txt and compares the
// offenses with the block's "# expect" lines. Independently of them, no
// offense may ever name an address in 192.0.2.0/24, where every decoy of
// the corpus lives. Every kind must be attributed somewhere in the corpus
// or in classes.txt.
func TestCorpus(t *testing.T) {
	decoys := netip.MustParsePrefix("192.0.2.0/24")
	kindsSeen := map[Kind]bool{}
	for _, c := range readCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			cfg := kindRules()
			if c.rules == "default" {
				cfg = DefaultConfig()
			}
			m := newMatcher(t, cfg)
			var offs []Offense
			for _, l := range c.lines {
				offs = m.Match(offs, parseFileLine(t, l))
			}
			got := []string{}
			for _, o := range offs {
				got = append(got, o.Addr.String()+" "+o.Rule)
				kindsSeen[o.Kind] = true
				if decoys.Contains(o.Addr) {
					t.Errorf("decoy address %v attributed", o.Addr)
				}
			}
			if diff := cmp.Diff(c.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("corpus.txt:%d: offenses (-want +got):\n%s", c.line, diff)
			}
			var un uint64
			for _, n := range m.Stats().Unattributed {
				un += n
			}
			if un != c.unattributed {
				t.Errorf("corpus.txt:%d: %d unattributed events, want %d", c.line, un, c.unattributed)
			}
		})
	}
	// TestClasses shows the rows of classes.txt attributed as they say.
	for _, r := range readClasses(t) {
		if r.client != "none" {
			kindsSeen[r.kind] = true
		}
	}
	for _, k := range kinds {
		if !kindsSeen[k] {
			t.Errorf("neither corpus.txt nor classes.txt has an attributed event of kind %s", k)
		}
	}
}
