package matcher

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestQueueTableBounded feeds a million client= records whose messages
// never end: the table must stop at its bound.
func TestQueueTableBounded(t *testing.T) {
	const n = 1_000_000
	if testing.Short() {
		t.Skip("a million lines; skipped with -short")
	}
	m := newMatcher(t, DefaultConfig())
	msg := msgAt("postfix/smtpd", "")
	buf := make([]byte, 0, 64)
	for i := range n {
		buf = fmt.Appendf(buf[:0], "%X: client=unknown[203.0.113.66]", 0x10000000+i)
		msg.Text = string(buf)
		m.Match(nil, msg)
	}
	st := m.Stats()
	got := [3]uint64{uint64(st.QueueEntries), st.QueueEvictions, st.Clients}
	want := [3]uint64{DefaultQueueTableSize, n - DefaultQueueTableSize, n}
	if got != want {
		t.Errorf("Stats (entries, evictions, clients) = %v, want %v", got, want)
	}
}

// TestQueueTableEviction shows what eviction means: the oldest message
// loses its client and its reject is unattributed, the newest keep theirs.
func TestQueueTableEviction(t *testing.T) {
	m := newMatcher(t, Config{Rules: DefaultConfig().Rules, QueueTableSize: 3})
	reject := func(qid string) []Offense {
		return m.Match(nil, msgAt("postfix/cleanup", qid+": reject: body x from unknown[203.0.113.66]"+tail+": 5.7.1 W32 worm"))
	}
	for i := range 4 {
		m.Match(nil, msgAt("postfix/smtpd", fmt.Sprintf("AAAAAA%d: client=unknown[203.0.113.%d]", i, 60+i)))
	}
	st := m.Stats()
	if st.QueueEntries != 3 || st.QueueEvictions != 1 {
		t.Fatalf("after 4 records in 3 slots: entries=%d evictions=%d, want 3 and 1", st.QueueEntries, st.QueueEvictions)
	}
	if got := reject("AAAAAA0"); len(got) != 0 {
		t.Errorf("evicted message attributed: %+v", got)
	}
	got := reject("AAAAAA3")
	if len(got) != 1 || got[0].Addr != netip.MustParseAddr("203.0.113.63") {
		t.Errorf("newest message: %+v, want one offense for 203.0.113.63", got)
	}
	st = m.Stats()
	if st.Unattributed[KindCleanupReject] != 1 || st.QueueEntries != 2 {
		t.Errorf("unattributed=%d entries=%d, want 1 and 2", st.Unattributed[KindCleanupReject], st.QueueEntries)
	}
}

func TestSetRules(t *testing.T) {
	m := newMatcher(t, Config{Rules: contentRules()})
	relay := msgAt("postfix/smtpd", "NOQUEUE: reject: RCPT from unknown[203.0.113.66]: 454 4.7.1 <v@x>: Relay access denied; proto=ESMTP helo=<vm>")
	if got := m.Match(nil, relay); len(got) != 0 {
		t.Fatalf("default rules banned a relay denial: %+v", got)
	}
	// The client record made before the reload must survive it.
	m.Match(nil, msgAt("postfix/smtpd", "C31CFB81BD: client=unknown[203.0.113.66]"))

	bad := []Rule{{Name: "x", Pattern: Regexp{}}}
	if err := m.SetRules(bad); err == nil {
		t.Fatal("SetRules accepted a rule without pattern")
	}
	if got := m.Match(nil, relay); len(got) != 0 {
		t.Fatalf("a failed reload changed the rules: %+v", got)
	}

	rules := completeRules(append(contentRules(), Rule{Name: "relay", Kinds: []Kind{KindSMTPDReject}, Pattern: MustRegexp(`Relay access denied`)}))
	if err := m.SetRules(rules); err != nil {
		t.Fatal(err)
	}
	if got := m.Match(nil, relay); len(got) != 1 || got[0].Rule != "relay" {
		t.Errorf("after reload: %+v, want one offense by rule relay", got)
	}
	got := m.Match(nil, msgAt("postfix/cleanup", "C31CFB81BD: reject: body x from unknown[203.0.113.66]"+tail+": 5.7.1 W32 worm"))
	if len(got) != 1 || got[0].Addr != netip.MustParseAddr("203.0.113.66") {
		t.Errorf("client record lost in reload: %+v", got)
	}
}

// TestConcurrentReload runs Match against SetRules and Stats; it proves
// something only under -race.
func TestConcurrentReload(t *testing.T) {
	m := newMatcher(t, DefaultConfig())
	lines := readSample(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := m.SetRules(DefaultConfig().Rules); err != nil {
				t.Error(err)
				return
			}
			_ = m.Stats()
		}
	})
	total := 0
	for range 200 {
		for _, l := range lines {
			total += len(m.Match(nil, parseFileLine(t, l)))
		}
	}
	close(stop)
	wg.Wait()
	// Six content offenses and one relay-probing hit per round.
	if total != 200*7 {
		t.Errorf("offenses = %d, want %d", total, 200*7)
	}
}

// TestTextCache: the remembered pattern results of administrator texts
// follow a reload, and a flood of distinct texts (past the cache's bound)
// is still judged text by text.
func TestTextCache(t *testing.T) {
	m := newMatcher(t, testConfig())
	reject := func(i int, text string) []Offense {
		qid := fmt.Sprintf("%010X", 0xA000000000+i)
		offs := m.Match(nil, msgAt(smtpd, qid+": client=unknown[203.0.113.66]"))
		return m.Match(offs, msgAt(cleanup, qid+": reject: body x from unknown[203.0.113.66]"+tail+": "+text))
	}
	rules := func(offs []Offense) []string {
		var out []string
		for _, o := range offs {
			out = append(out, o.Rule)
		}
		return out
	}
	if diff := cmp.Diff([]string{"worm-signature"}, rules(reject(0, "5.7.1 W32 worm"))); diff != "" {
		t.Errorf("before reload (-want +got):\n%s", diff)
	}
	if err := m.SetRules(completeRules([]Rule{{Name: "mankx", Kinds: []Kind{KindCleanupReject}, Pattern: MustRegexp(`W32 worm`)}})); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"mankx"}, rules(reject(1, "5.7.1 W32 worm"))); diff != "" {
		t.Errorf("after reload (-want +got):\n%s", diff)
	}
	for i := range 3 * maxTexts {
		text := fmt.Sprintf("5.7.1 text %d", i)
		if i%7 == 0 {
			text += " W32 worm"
		}
		if got, want := len(reject(i+2, text)), map[bool]int{true: 1, false: 0}[i%7 == 0]; got != want {
			t.Fatalf("text %q: %d offenses, want %d", text, got, want)
		}
	}
}

// TestLearn: Learn keeps the queue table as Match does, but counts and
// matches no event, so that a replay's time range starts with the client
// records of the log before it.
func TestLearn(t *testing.T) {
	m := newMatcher(t, testConfig())
	m.Learn(msgAt(smtpd, "C31CFB81BD: client=unknown[203.0.113.66]"))
	m.Learn(msgAt(smtpd, "D4101B81BD: client=unknown[203.0.113.67]"))
	m.Learn(msgAt(cleanup, "D4101B81BD: reject: body x from unknown[203.0.113.67]"+tail+": 5.7.1 W32 worm"))
	m.Learn(msgAt(smtpd, "warning: unknown[203.0.113.68]: SASL LOGIN authentication failed: x"))
	if st := m.Stats(); st.Events[KindCleanupReject] != 0 || st.Events[KindSASLFailed] != 0 || st.Clients != 2 || st.QueueEntries != 1 {
		t.Errorf("after Learn: events %v, clients %d, queue %d; want no events, 2 clients, 1 entry (the reject ended the other)",
			st.Events, st.Clients, st.QueueEntries)
	}
	got := m.Match(nil, msgAt(cleanup, "C31CFB81BD: reject: body x from unknown[203.0.113.66]"+tail+": 5.7.1 W32 worm"))
	if len(got) != 1 || got[0].Addr != netip.MustParseAddr("203.0.113.66") {
		t.Errorf("reject after Learn: %+v, want one offense for 203.0.113.66", got)
	}
	if got := m.Match(nil, msgAt(cleanup, "D4101B81BD: reject: body x from unknown[203.0.113.67]"+tail+": 5.7.1 W32 worm")); len(got) != 0 {
		t.Errorf("a reject whose message ended while learning was attributed: %+v", got)
	}
}
