package matcher

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestSampleLog replays real Postfix 3.7 output with four decoy addresses
// planted by the sender: only the client's own addresses may come out.
func TestSampleLog(t *testing.T) {
	m := newMatcher(t, DefaultConfig())
	var got []Offense
	for _, line := range readSample(t) {
		got = m.Match(got, parseFileLine(t, line))
	}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	v6 := netip.MustParseAddr("2001:db8:66::66")
	v4 := netip.MustParseAddr("203.0.113.66")
	want := []Offense{
		{Addr: v6, Rule: "worm-signature", Kind: KindCleanupReject, Host: "vm", QueueID: "C31CFB81BD", Time: at("2026-11-26T18:19:13.799660+00:00")},
		{Addr: v4, Rule: "executable-attachment", Kind: KindCleanupReject, Host: "vm", QueueID: "D4101B81BD", Time: at("2026-11-26T18:19:13.869071+00:00")},
		{Addr: v4, Rule: "worm-signature", Kind: KindCleanupReject, Host: "vm", QueueID: "E5221B81BD", Time: at("2026-11-26T18:19:13.938899+00:00")},
		{Addr: v4, Rule: "worm-signature", Kind: KindCleanupReject, Host: "vm", QueueID: "02051B81E1", Time: at("2026-11-26T18:19:14.008649+00:00")},
		// One hit towards relay-probing's threshold of 3: no ban by itself.
		{Addr: v4, Rule: "relay-probing", Kind: KindSMTPDReject, Host: "vm", Time: at("2026-11-26T18:19:14.059921+00:00")},
		{Addr: v4, Rule: "worm-signature", Kind: KindCleanupReject, Host: "vm", QueueID: "1BE77B81E1", Time: at("2026-11-26T18:19:14.114687+00:00")},
		{Addr: v4, Rule: "worm-signature", Kind: KindCleanupReject, Host: "vm", QueueID: "28396B81E1", Time: at("2026-11-26T18:19:14.165211+00:00")},
	}
	if diff := cmp.Diff(want, got, addrCmp, cmpopts.IgnoreFields(Offense{}, "Text")); diff != "" {
		t.Errorf("offenses (-want +got):\n%s", diff)
	}
	for _, o := range got {
		// The reject text, for `wormgate why`: what the MX logged after
		// "reject: ... from client;" or the smtpd reply.
		if !strings.Contains(o.Text, ".7.1 ") || len(o.Text) > MaxOffenseText {
			t.Errorf("offense %v/%s: text %q, want the reject reply, at most %d bytes", o.Addr, o.QueueID, o.Text, MaxOffenseText)
		}
		if netip.MustParsePrefix("192.0.2.0/24").Contains(o.Addr) {
			t.Errorf("decoy address %v attributed", o.Addr)
		}
	}

	st := m.Stats()
	wantEvents := map[Kind]uint64{KindCleanupReject: 6, KindSMTPDReject: 1}
	for _, k := range kinds {
		if st.Events[k] != wantEvents[k] {
			t.Errorf("Stats.Events[%s] = %d, want %d", k, st.Events[k], wantEvents[k])
		}
		if st.Unattributed[k] != 0 {
			t.Errorf("Stats.Unattributed[%s] = %d, want 0", k, st.Unattributed[k])
		}
	}
	if st.Matched[KindCleanupReject] != 6 || st.Clients != 6 {
		t.Errorf("Stats matched=%d clients=%d, want 6 and 6", st.Matched[KindCleanupReject], st.Clients)
	}
	// Every message ended in a reject, so its record is gone.
	if st.QueueEntries != 0 {
		t.Errorf("Stats.QueueEntries = %d, want 0", st.QueueEntries)
	}
}
