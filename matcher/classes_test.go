package matcher

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// classRow is one row of testdata/classes.txt.
type classRow struct {
	line   int
	kind   Kind
	client string // "none": no event
	text   string
}

func readClasses(t *testing.T) []classRow {
	t.Helper()
	f, err := os.Open("testdata/classes.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []classRow
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		kind, rest, ok1 := strings.Cut(l, " ")
		client, text, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || !Kind(kind).Valid() {
			t.Fatalf("classes.txt:%d: want KIND CLIENT LINE with a known kind: %q", n, l)
		}
		rows = append(rows, classRow{line: n, kind: Kind(kind), client: client, text: text})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// clientText are the kinds whose lines carry text the client wrote after
// the anchored address; every such row of classes.txt must hold a decoy.
var clientText = map[Kind]bool{
	KindSMTPDPipelining:       true,
	KindSMTPDNonSMTP:          true,
	KindPostscreenNonSMTP:     true,
	KindPostscreenBareNewline: true,
	KindPostscreenPipelining:  true,
	KindSASLFailed:            true,
	KindSASLServerError:       true,
	KindSASLBadMechanism:      true,
}

// TestClasses replays each row of testdata/classes.txt on a fresh matcher
// with one catch-all rule per kind: the row's line must yield exactly its
// kind for its client (or nothing), and no address of 192.0.2.0/24, where
// every decoy lives, may ever be attributed.
func TestClasses(t *testing.T) {
	decoys := netip.MustParsePrefix("192.0.2.0/24")
	for _, r := range readClasses(t) {
		var want []string
		if r.client != "none" {
			want = []string{r.client + " " + string(r.kind)}
			if clientText[r.kind] && !strings.Contains(r.text, "[192.0.2.") {
				t.Errorf("classes.txt:%d: a %s line carries client text but no decoy", r.line, r.kind)
			}
		}
		m := newMatcher(t, kindRules())
		var got []string
		for _, o := range m.Match(nil, parseFileLine(t, r.text)) {
			got = append(got, o.Addr.String()+" "+o.Rule)
			if decoys.Contains(o.Addr) {
				t.Errorf("classes.txt:%d: decoy %v attributed", r.line, o.Addr)
			}
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("classes.txt:%d: offenses (-want +got):\n%s", r.line, diff)
		}
	}
}
