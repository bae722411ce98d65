package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/enforcer/store"
)

var (
	t0      = time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	cmpOpts = cmp.Options{
		cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}),
		// Only the instant matters; the wire drops monotonic readings.
		cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
	}
)

// errKilled is what a reader of a killed in-process helper's pipe gets.
var errKilled = errors.New("helper killed")

// pipeSpawner runs serve in a goroutine as the helper, over io.Pipe.
// Killing it closes its pipes; like a helper asleep on a hung disk, a
// serve that is stuck in the store ends only when the store returns.
func pipeSpawner(serve func(r io.Reader, w io.Writer) error) spawner {
	return func() (*link, error) {
		reqR, reqW := io.Pipe()
		repR, repW := io.Pipe()
		exited := make(chan struct{})
		var serr error
		go func() {
			serr = serve(reqR, repW)
			_ = repW.Close()
			_ = reqR.Close()
			close(exited)
		}()
		return &link{
			codec: newCodec(repR, reqW),
			w:     reqW,
			r:     repR,
			kill: func() {
				_ = reqR.CloseWithError(errKilled)
				_ = repW.CloseWithError(errKilled)
			},
			exited:  exited,
			waitErr: func() error { <-exited; return serr },
		}, nil
	}
}

// storeSpawner serves st.
func storeSpawner(st Store) spawner {
	return pipeSpawner(func(r io.Reader, w io.Writer) error { return Serve(r, w, st) })
}

// dirSpawner serves the real record in dir, as the helper process does.
func dirSpawner(dir string) spawner {
	return pipeSpawner(func(r io.Reader, w io.Writer) error { return ServeDir(r, w, dir) })
}

// logBuffer collects a client's log.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// connected is a client whose helper said hello, and its log.
func connected(t *testing.T, spawn spawner) (*Client, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	c, err := newClient(spawn, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(t.Context()) })
	return c, logs
}

// captureStore records what reached it and answers with a set snapshot.
type captureStore struct {
	mu        sync.Mutex
	changes   []store.Change
	loads     []loadArgs
	snap      store.Snapshot
	err       error
	recovered string
	// block, when set, holds every Commit until it is closed; entered
	// then receives one value as each Commit starts.
	block   chan struct{}
	entered chan struct{}
}

// blockingStore holds every Commit until the test ends.
func blockingStore(t *testing.T) *captureStore {
	s := &captureStore{block: make(chan struct{}), entered: make(chan struct{}, 16)}
	t.Cleanup(func() { close(s.block) })
	return s
}

func (s *captureStore) FleetQueue() (map[uint64][]byte, error) { return nil, s.err }
func (s *captureStore) CommitFleetQueue(map[uint64][]byte, []uint64) error {
	return s.err
}

type loadArgs struct {
	Now time.Time
	Lim store.Limits
}

func (s *captureStore) Load(now time.Time, lim store.Limits) (store.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads = append(s.loads, loadArgs{now, lim})
	return s.snap, s.err
}

func (s *captureStore) Commit(c store.Change) error {
	if s.block != nil {
		s.entered <- struct{}{}
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changes = append(s.changes, c)
	return s.err
}

func (s *captureStore) Recovered() string { return s.recovered }

// fullChange sets every field of a Change, with every field of its
// elements set: a field the wire drops shows as a diff.
func fullChange() store.Change {
	a := netip.MustParseAddr("2001:db8::7")
	return store.Change{
		Bans: []policy.Ban{
			{Addr: a, Rule: "worm", Start: t0, Duration: time.Hour, Until: t0.Add(time.Hour), Hits: 3,
				Hosts: []string{"mx1", "mx2.example.net"}, Net: netip.MustParsePrefix("2001:db8::/64"), Manual: true, Reason: "ticket 42", Origin: "gw2"},
			{Addr: netip.MustParseAddr("192.0.2.9"), Rule: "sasl", Start: t0.UTC(), Until: t0.Add(time.Minute).UTC(), Hits: 1},
		},
		History: []policy.History{{Addr: a, Hits: 4, Bans: 2, FirstSeen: t0.Add(-time.Hour), LastSeen: t0, BannedUntil: t0.Add(time.Hour)}},
		Deletes: []netip.Prefix{netip.MustParsePrefix("203.0.113.5/32"), netip.MustParsePrefix("198.51.100.0/24")},
		Events: []policy.Event{{Seq: 7, Time: t0, Addr: a, Host: "mx1", QueueID: "4Xq1", Kind: "header_reject", Rule: "worm",
			Text: "Subject: Thank you! [192.0.2.99]", Verdict: "ban", Detail: "threshold 1 reached"}},
		DropEvents:     []policy.EventKey{{Addr: a, Time: t0.Add(-time.Hour), Seq: 3}},
		Allows:         []store.Allow{{Net: netip.MustParsePrefix("192.0.2.0/28"), Added: t0, Until: t0.Add(time.Hour), Reason: "partner", By: "ops", Origin: "gw3"}},
		Disallows:      []netip.Prefix{netip.MustParsePrefix("192.0.2.64/28")},
		Tombstones:     []store.Tombstone{{Net: netip.MustParsePrefix("203.0.113.70/32"), Until: t0.Add(time.Hour)}},
		DropTombstones: []netip.Prefix{netip.MustParsePrefix("203.0.113.71/32")},
	}
}

// fullSnapshot is a Snapshot with every field set, from fullChange.
func fullSnapshot() store.Snapshot {
	c := fullChange()
	return store.Snapshot{Bans: c.Bans, History: c.History, Events: c.Events, Allows: c.Allows, Tombstones: c.Tombstones}
}

// unset lists the fields of v (recursively, the first element of each
// slice) that hold their zero value.
func unset(v reflect.Value, path string) []string {
	switch {
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			return []string{path}
		}
		return unset(v.Index(0), path+"[0]")
	case v.Kind() == reflect.Struct && v.Type().PkgPath() != "time" && v.Type().PkgPath() != "net/netip":
		var out []string
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				out = append(out, unset(v.Field(i), path+"."+f.Name)...)
			}
		}
		return out
	case v.IsZero():
		return []string{path}
	}
	return nil
}

// TestSamplesSetEveryField keeps the wire tests complete: a field added
// to Change or Snapshot must be added to the samples.
func TestSamplesSetEveryField(t *testing.T) {
	for name, v := range map[string]any{"Change": fullChange(), "Snapshot": fullSnapshot()} {
		if got := unset(reflect.ValueOf(v), name); len(got) > 0 {
			t.Errorf("fields not set in the sample, so not checked over the wire: %v", got)
		}
	}
}

// TestWireCarriesEveryField: what the enforcer commits and loads crosses
// the pipe whole, both ways.
func TestWireCarriesEveryField(t *testing.T) {
	fake := &captureStore{snap: fullSnapshot(), recovered: "/var/lib/wormgate/state.db.corrupt-20250301T120000Z"}
	c, _ := connected(t, storeSpawner(fake))
	want := fullChange()
	if err := c.Commit(want); err != nil {
		t.Fatal(err)
	}
	lim := store.Limits{History: 10, Events: 20, EventAge: 30 * 24 * time.Hour}
	snap, err := c.Load(t0, lim)
	if err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if diff := cmp.Diff([]store.Change{want}, fake.changes, cmpOpts); diff != "" {
		t.Errorf("change received by the store (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]loadArgs{{t0, lim}}, fake.loads, cmpOpts); diff != "" {
		t.Errorf("load received by the store (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(fullSnapshot(), snap, cmpOpts); diff != "" {
		t.Errorf("snapshot received by the client (-want +got):\n%s", diff)
	}
	if got := c.Recovered(); got != fake.recovered {
		t.Errorf("Recovered = %q, want %q", got, fake.recovered)
	}
}

// TestRemoteMatchesLocalStore: the same changes through the helper and
// into a store in this process leave the same record.
func TestRemoteMatchesLocalStore(t *testing.T) {
	local, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	c, _ := connected(t, dirSpawner(t.TempDir()))
	second := store.Change{
		Deletes:        []netip.Prefix{netip.MustParsePrefix("192.0.2.9/32")},
		DropEvents:     []policy.EventKey{fullChange().Events[0].Key()},
		Disallows:      []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")},
		DropTombstones: []netip.Prefix{netip.MustParsePrefix("203.0.113.70/32")},
		Bans:           []policy.Ban{{Addr: netip.MustParseAddr("198.51.100.3"), Rule: "worm", Start: t0, Until: t0.Add(2 * time.Hour), Hits: 2}},
	}
	lim := store.Limits{History: 10, Events: 10}
	for i, ch := range []store.Change{fullChange(), second, {}} {
		if err := local.Commit(ch); err != nil {
			t.Fatal(err)
		}
		if err := c.Commit(ch); err != nil {
			t.Fatalf("commit %d through the helper: %v", i, err)
		}
		want, err := local.Load(t0, lim)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Load(t0, lim)
		if err != nil {
			t.Fatalf("load %d through the helper: %v", i, err)
		}
		if diff := cmp.Diff(want, got, cmpOpts, cmpopts.SortSlices(func(a, b policy.Ban) bool { return a.Addr.Less(b.Addr) })); diff != "" {
			t.Errorf("after commit %d (-local +helper):\n%s", i, diff)
		}
		if len(got.Bans) == 0 {
			t.Errorf("after commit %d: no bans: the comparison proves nothing", i)
		}
	}
}

// TestFleetQueueThroughTheHelper: the fleet's queue of decisions waiting
// for NATS goes through the helper like the rest of the record.
func TestFleetQueueThroughTheHelper(t *testing.T) {
	c, _ := connected(t, dirSpawner(t.TempDir()))
	if err := c.CommitFleetQueue(map[uint64][]byte{1: []byte("a"), 2: []byte("b"), 3: []byte("c")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitFleetQueue(map[uint64][]byte{4: []byte("d")}, []uint64{1, 3}); err != nil {
		t.Fatal(err)
	}
	got, err := c.FleetQueue()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]byte{2: []byte("b"), 4: []byte("d")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fleet queue (-want +got):\n%s", diff)
	}
}

// TestErrorsKeepTheirMeaning: an error of the store reaches the caller
// with its text and, for the sentinels callers test, its identity.
func TestErrorsKeepTheirMeaning(t *testing.T) {
	sentinels := []error{store.ErrStoreLocked, store.ErrCorrupt, store.ErrCorruptRecord}
	for _, tc := range []struct {
		err  error
		want error // nil: no sentinel
	}{
		{fmt.Errorf("open store /x/state.db: %w", store.ErrStoreLocked), store.ErrStoreLocked},
		{fmt.Errorf("load store: %w: unexpected fault address", store.ErrCorrupt), store.ErrCorrupt},
		{fmt.Errorf("decode: %w", store.ErrCorruptRecord), store.ErrCorruptRecord},
		{errors.New("commit store: write /x/state.db: no space left on device"), nil},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			c, _ := connected(t, storeSpawner(&captureStore{err: tc.err}))
			_, lerr := c.Load(t0, store.Limits{})
			cerr := c.Commit(fullChange())
			for op, err := range map[string]error{"Load": lerr, "Commit": cerr} {
				if err == nil || err.Error() != tc.err.Error() {
					t.Errorf("%s error = %v, want %q", op, err, tc.err)
					continue
				}
				for _, s := range sentinels {
					if got := errors.Is(err, s); got != (s == tc.want) {
						t.Errorf("%s: errors.Is(%v, %v) = %v", op, err, s, got)
					}
				}
			}
		})
	}
}

// TestLockedRecordRefusesToStart: a record another process holds fails
// the start with the store's own error.
func TestLockedRecordRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	holder, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	c, err := newClient(dirSpawner(dir), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.connect(t.Context())
	if !errors.Is(err, store.ErrStoreLocked) || !strings.Contains(err.Error(), "state file locked by another process") {
		t.Errorf("start on a locked record = %v, want store.ErrStoreLocked", err)
	}
}

// TestConcurrentCallers: callers from many goroutines share one pipe,
// and every commit lands.
func TestConcurrentCallers(t *testing.T) {
	c, _ := connected(t, dirSpawner(t.TempDir()))
	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				a := netip.AddrFrom4([4]byte{203, 0, 113, byte(w*each + i)})
				if w*each+i > 255 {
					a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(w), 15: byte(i)})
				}
				if err := c.Commit(store.Change{Bans: []policy.Ban{{Addr: a, Rule: "worm", Start: t0, Until: t0.Add(time.Hour)}}}); err != nil {
					errs <- err
				}
				if i%10 == 0 {
					if _, err := c.Load(t0, store.Limits{}); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	snap, err := c.Load(t0, store.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Bans) != workers*each {
		t.Errorf("%d bans recorded, want %d", len(snap.Bans), workers*each)
	}
}

// TestHelperLostThenRestarted: when the helper dies, the call in flight
// and the calls waiting behind it fail with ErrHelperGone; after the
// backoff the next call starts a new helper and commits.
func TestHelperLostThenRestarted(t *testing.T) {
	stuck, fresh := blockingStore(t), &captureStore{}
	helpers := []*captureStore{stuck, fresh}
	var spawns int
	spawn := func() (*link, error) {
		spawns++ // under c.mu
		return storeSpawner(helpers[min(spawns, len(helpers))-1])()
	}
	c, logs := connected(t, spawn)
	c.mu.Lock()
	first := c.cur
	c.mu.Unlock()

	results := make(chan error, 3)
	go func() { results <- c.Commit(fullChange()) }()
	<-stuck.entered
	for range 2 {
		go func() { results <- c.Commit(fullChange()) }()
	}
	// A long backoff, so that the calls queued behind the first cannot
	// start a new helper however late they run.
	c.mu.Lock()
	c.backoff = time.Hour
	c.mu.Unlock()
	first.kill()
	for range 3 {
		wantGone(t, results, "a call during the loss")
	}
	if got := testutil.ToFloat64(c.lost); got != 1 {
		t.Errorf("wormgate_record_helper_lost_total = %v, want 1", got)
	}

	const backoff = 100 * time.Millisecond
	c.mu.Lock()
	c.retryAt = time.Now().Add(backoff)
	c.mu.Unlock()
	lost := time.Now()
	for {
		err := c.Commit(fullChange())
		if err == nil {
			break
		}
		if !errors.Is(err, ErrHelperGone) || time.Since(lost) > 5*time.Second {
			t.Fatalf("commit after the loss = %v, want success within 5s", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(lost); took < backoff {
		t.Errorf("new helper after %v, before the backoff of %v", took, backoff)
	}
	fresh.mu.Lock()
	got := len(fresh.changes)
	fresh.mu.Unlock()
	if got != 1 || spawns != 2 {
		t.Errorf("new helper got %d commits after %d starts, want 1 after 2", got, spawns)
	}
	if !strings.Contains(logs.String(), "record helper restarted") {
		t.Errorf("no restart in the log:\n%s", logs)
	}
}

// TestCloseAbandonsAStuckHelper: a helper stuck in a commit (a hung
// disk) holds up Close only until its context ends; the commit in flight
// then fails instead of waiting for the disk.
func TestCloseAbandonsAStuckHelper(t *testing.T) {
	stuck := blockingStore(t)
	c, _ := connected(t, storeSpawner(stuck))
	inflight := make(chan error, 1)
	go func() { inflight <- c.Commit(fullChange()) }()
	<-stuck.entered

	const budget = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	start := time.Now()
	err := c.Close(ctx)
	took := time.Since(start)
	if !errors.Is(err, ErrAbandoned) {
		t.Errorf("Close = %v, want ErrAbandoned", err)
	}
	if took > budget+time.Second {
		t.Errorf("Close took %v with a budget of %v", took, budget)
	}
	wantGone(t, inflight, "the commit in flight at Close")
	if err := c.Commit(fullChange()); !errors.Is(err, ErrClosed) {
		t.Errorf("commit after Close = %v, want ErrClosed", err)
	}
}

// wantGone waits up to 5s for a call's result and wants ErrHelperGone.
func wantGone(t *testing.T, result <-chan error, what string) {
	t.Helper()
	select {
	case err := <-result:
		if !errors.Is(err, ErrHelperGone) {
			t.Errorf("%s = %v, want ErrHelperGone", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still waits 5s after its helper was gone", what)
	}
}

// TestStartGivesUpWithItsContext: a helper that never says hello (its
// disk hangs in the open) fails the start when the context ends.
func TestStartGivesUpWithItsContext(t *testing.T) {
	mute := pipeSpawner(func(r io.Reader, _ io.Writer) error {
		_, err := io.Copy(io.Discard, r) // until killed
		return err
	})
	c, err := newClient(mute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const budget = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	start := time.Now()
	_, err = c.connect(ctx)
	if took := time.Since(start); took > budget+time.Second {
		t.Errorf("start took %v with a budget of %v", took, budget)
	}
	if !errors.Is(err, ErrHelperGone) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("start without a hello = %v, want ErrHelperGone and the deadline", err)
	}
}
