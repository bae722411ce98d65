package matcher

import (
	"runtime"
	"strconv"
	"testing"
)

// TestQueueFloodMemoryFlat sends 10 million client= records with distinct
// queue IDs whose messages never reach cleanup (a client that opens
// transactions and drops them, or lost cleanup datagrams). The queue
// table must hold the matcher's heap flat. The table is full after 100k
// records, but the Go map under it keeps deleted slots and grows in steps
// for a few million insert/delete rounds before it settles (measured with
// the default 100k entries: 30 MiB at 1M and 2M records, 47 MiB from 5M
// to 25M). So the live heap must stay under an absolute bound at every
// point, and within a small margin between 5M and 10M records.
func TestQueueFloodMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("10 million lines; skipped with -short")
	}
	m := newMatcher(t, DefaultConfig())
	msg := msgAt("postfix/smtpd", "")
	buf := make([]byte, 0, 64)
	feed := func(from, to int) {
		for i := from; i < to; i++ {
			buf = strconv.AppendUint(buf[:0], uint64(0x1000000000+i), 16) // 10 characters: a valid long ID when it has lower case
			buf = append(buf, ": client=unknown[203.0.113.66]:41234"...)
			msg.Text = string(buf)
			m.Match(nil, msg)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heap()
	feed(0, 1_000_000)
	at1M := heap()
	feed(1_000_000, 5_000_000)
	at5M := heap()
	feed(5_000_000, 10_000_000)
	at10M := heap()
	runtime.KeepAlive(m)

	st := m.Stats()
	if st.QueueEntries != DefaultQueueTableSize || st.Clients != 10_000_000 {
		t.Errorf("entries=%d clients=%d, want %d and 10000000", st.QueueEntries, st.Clients, DefaultQueueTableSize)
	}
	grew := int64(at10M) - int64(at5M)
	t.Logf("heap: start %d KiB, after 1M records %d KiB, 5M %d KiB, 10M %d KiB (%d entries)",
		base>>10, at1M>>10, at5M>>10, at10M>>10, st.QueueEntries)
	// 5% of the table's own size or 1 MiB, whichever is larger.
	if limit := max(int64(at5M-base)/20, 1<<20); grew > limit {
		t.Errorf("heap grew by %d bytes between 5M and 10M records, want at most %d", grew, limit)
	}
	const bound = 64 << 20 // about 600 bytes per entry of the default table
	for _, h := range []uint64{at1M, at5M, at10M} {
		if h > bound {
			t.Errorf("heap %d bytes, want under %d for a %d-entry table", h, bound, DefaultQueueTableSize)
		}
	}
}
