package remote

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/enforcer/store"
)

// The test binary is also the helper (and, for the parent-death test,
// the daemon that starts it), chosen by this variable.
const (
	modeEnv    = "WORMGATE_REMOTE_TEST_MODE"
	pidFileEnv = "WORMGATE_REMOTE_TEST_PIDFILE"
	dirEnv     = "WORMGATE_REMOTE_TEST_DIR"
)

func TestMain(m *testing.M) {
	switch os.Getenv(modeEnv) {
	case "helper":
		os.Exit(helperMain())
	case "parent":
		os.Exit(parentMain())
	case "crash":
		os.Stderr.WriteString("panic: the helper fell over\n\ngoroutine 1 [running]:")
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// helperMain is `wormgate record-helper --dir DIR`.
func helperMain() int {
	if p := os.Getenv(pidFileEnv); p != "" {
		if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return 1
		}
	}
	i := slices.Index(os.Args, "--dir")
	if i < 0 || i+1 >= len(os.Args) {
		return 2
	}
	if err := ServeDir(os.Stdin, os.Stdout, os.Args[i+1]); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// parentMain is a daemon that starts a helper and then waits to be killed.
func parentMain() int {
	os.Setenv(modeEnv, "helper")
	exe, _ := Executable()
	c, err := Start(context.Background(), exe, nil, os.Getenv(dirEnv), slog.New(slog.DiscardHandler))
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	if err := c.Commit(store.Change{Bans: []policy.Ban{testBan(1)}}); err != nil {
		return 1
	}
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Hour)
	return 0
}

func testBan(i int) policy.Ban {
	return policy.Ban{Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}),
		Rule: "worm", Start: time.Now(), Until: time.Now().Add(time.Hour), Duration: time.Hour, Hits: 1}
}

// startHelper runs the test binary as the helper of dir; pidFile, when
// set, receives its pid.
func startHelper(t testing.TB, dir, pidFile string) *Client {
	t.Helper()
	t.Setenv(modeEnv, "helper")
	t.Setenv(pidFileEnv, pidFile)
	exe, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(t.Context(), exe, nil, dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func readPid(t *testing.T, pidFile string) int {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// gone reports whether pid has exited (a zombie counts: it holds no files).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist) || syscall.Kill(pid, 0) == syscall.ESRCH
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

// waitGone waits up to 5s for the helper pid to exit; one that does not
// is killed and fails the test.
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("helper %d still runs 5s later (%s)", pid, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProcessKilledThenRestarted: kill -9 of the helper process fails
// the next call with ErrHelperGone; a later call starts a new helper on
// the same record, which kept every commit.
func TestProcessKilledThenRestarted(t *testing.T) {
	dir, pidFile := t.TempDir(), t.TempDir()+"/pid"
	c := startHelper(t, dir, pidFile)
	if err := c.Commit(store.Change{Bans: []policy.Ban{testBan(1)}}); err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidFile)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(store.Change{Bans: []policy.Ban{testBan(2)}}); !errors.Is(err, ErrHelperGone) {
		t.Fatalf("commit after kill -9 of the helper = %v, want ErrHelperGone", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Commit(store.Change{Bans: []policy.Ban{testBan(2)}})
		if err == nil {
			break
		}
		if !errors.Is(err, ErrHelperGone) || time.Now().After(deadline) {
			t.Fatalf("commit after the loss = %v, want success within 10s", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if again := readPid(t, pidFile); again == pid {
		t.Errorf("still helper %d after its kill", pid)
	}
	snap, err := c.Load(time.Now(), store.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{testBan(1).Addr, testBan(2).Addr}
	if diff := cmp.Diff(want, bansIn(snap.Bans), cmpOpts); diff != "" {
		t.Errorf("bans after the restart (-want +got):\n%s", diff)
	}
}

// TestHelperDiesWithItsParent: kill -9 of the daemon takes its helper
// with it (no orphan keeps the record's lock), and the record opens.
func TestHelperDiesWithItsParent(t *testing.T) {
	dir, pidFile := t.TempDir(), t.TempDir()+"/pid"
	exe, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(exe)
	parent.Env = append(os.Environ(), modeEnv+"=parent", pidFileEnv+"="+pidFile, dirEnv+"="+dir)
	parent.Stderr = os.Stderr
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Process.Kill(); _ = parent.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("parent: %q, %v", line, err)
	}
	helper := readPid(t, pidFile)
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	waitGone(t, helper, "after its parent's kill -9")
	st, err := store.Open(dir)
	if err != nil {
		t.Fatalf("record after the daemon's kill -9: %v", err)
	}
	defer st.Close()
	snap, err := st.Load(time.Now(), store.Limits{})
	if err != nil || len(snap.Bans) != 1 {
		t.Errorf("record after the daemon's kill -9: %d bans, %v; want 1", len(snap.Bans), err)
	}
}

// TestHelperCrashIsLogged: what a helper that dies writes to its stderr
// and how it ended reach the daemon's log.
func TestHelperCrashIsLogged(t *testing.T) {
	t.Setenv(modeEnv, "crash")
	exe, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	_, err = Start(t.Context(), exe, nil, t.TempDir(), slog.New(slog.NewTextHandler(logs, nil)))
	if !errors.Is(err, ErrHelperGone) {
		t.Errorf("start of a crashing helper = %v, want ErrHelperGone", err)
	}
	want := []string{`stderr="panic: the helper fell over"`, `stderr="goroutine 1 [running]:"`, `err="exit status 2"`}
	waitFor(t, "crash in the log", func() bool {
		return !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(logs.String(), w) })
	})
}

// TestProcessCloseOrderly: Close lets the helper close the record and
// exit; the record is then free for the next process and holds every
// commit.
func TestProcessCloseOrderly(t *testing.T) {
	dir, pidFile := t.TempDir(), t.TempDir()+"/pid"
	c := startHelper(t, dir, pidFile)
	if err := c.Commit(store.Change{Bans: []policy.Ban{testBan(1), testBan(2)}}); err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidFile)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if !gone(pid) {
		t.Errorf("helper %d still runs after Close", pid)
	}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snap, err := st.Load(time.Now(), store.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(snap.Bans); got != 2 {
		t.Errorf("%d bans in the record after Close, want 2", got)
	}
}

// TestProcessCloseAbandons: a helper that does not answer (stopped
// here; asleep on a frozen disk in life) is killed when Close's context
// ends, and Close returns then.
func TestProcessCloseAbandons(t *testing.T) {
	pidFile := t.TempDir() + "/pid"
	c := startHelper(t, t.TempDir(), pidFile)
	pid := readPid(t, pidFile)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const budget = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	start := time.Now()
	err := c.Close(ctx)
	if took := time.Since(start); took > budget+time.Second {
		t.Errorf("Close took %v with a budget of %v", took, budget)
	}
	if !errors.Is(err, ErrAbandoned) {
		t.Errorf("Close = %v, want ErrAbandoned", err)
	}
	waitGone(t, pid, "abandoned")
}

// benchRecords are the two records compared: in this process, and in
// a helper process.
func benchRecords(b *testing.B) map[string]Store {
	local, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = local.Close() })
	return map[string]Store{"local": local, "helper": startHelper(b, b.TempDir(), "")}
}

// BenchmarkCommit10k commits batches of 10,000 new bans (the enforcer's
// largest).
func BenchmarkCommit10k(b *testing.B) {
	for name, st := range benchRecords(b) {
		b.Run(name, func(b *testing.B) {
			bans := make([]policy.Ban, 10_000)
			n := 0
			for b.Loop() {
				for i := range bans {
					n++
					bans[i] = testBan(n)
				}
				if err := st.Commit(store.Change{Bans: bans}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoad100k loads a record of 100,000 bans, as a start-up does.
func BenchmarkLoad100k(b *testing.B) {
	bans := make([]policy.Ban, 100_000)
	for i := range bans {
		bans[i] = testBan(i)
	}
	for name, st := range benchRecords(b) {
		b.Run(name, func(b *testing.B) {
			if err := st.Commit(store.Change{Bans: bans}); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				snap, err := st.Load(time.Now(), store.Limits{})
				if err != nil || len(snap.Bans) != len(bans) {
					b.Fatalf("load: %d bans, %v", len(snap.Bans), err)
				}
			}
		})
	}
}

// bansIn lists the addresses of bans.
func bansIn(bans []policy.Ban) []netip.Addr {
	out := make([]netip.Addr, 0, len(bans))
	for _, b := range bans {
		out = append(out, b.Addr)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
