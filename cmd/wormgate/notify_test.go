package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// notifySocket is systemd's end of sd_notify: a unixgram socket named by
// NOTIFY_SOCKET for the test's duration.
type notifySocket struct {
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &notifySocket{conn: conn}
}

// next returns the next message, or "" when none came within d.
func (s *notifySocket) next(t *testing.T, d time.Duration) string {
	t.Helper()
	if err := s.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := s.conn.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// want fails unless the next message, within d, is want.
func (s *notifySocket) want(t *testing.T, d time.Duration, want string) {
	t.Helper()
	if got := s.next(t, d); got != want {
		t.Fatalf("sd_notify message %q, want %q", got, want)
	}
}

// wantReloading fails unless the next message is RELOADING=1 with a
// MONOTONIC_USEC that is a number.
func (s *notifySocket) wantReloading(t *testing.T, d time.Duration) {
	t.Helper()
	got := s.next(t, d)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("sd_notify message %q, want RELOADING=1 and MONOTONIC_USEC=", got)
	}
	if _, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64); err != nil {
		t.Fatalf("sd_notify message %q: %v", got, err)
	}
}

// none fails if a message arrives within d.
func (s *notifySocket) none(t *testing.T, d time.Duration) {
	t.Helper()
	if got := s.next(t, d); got != "" {
		t.Fatalf("unexpected sd_notify message %q", got)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestNotifyMessages(t *testing.T) {
	s := listenNotify(t)
	log := discardLog()
	notifyReady(log)
	s.want(t, time.Second, "READY=1")
	notifyReloading(log)
	s.wantReloading(t, time.Second)
	notifyStopping(log)
	s.want(t, time.Second, "STOPPING=1")
}

// TestNotifyLifecycle: no READY=1 while the firewall is not set up, READY=1
// once it is, STOPPING=1 at shutdown.
func TestNotifyLifecycle(t *testing.T) {
	s := listenNotify(t)
	var ready atomic.Bool
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		notifyLifecycle(ctx, discardLog(), ready.Load)
	}()
	s.none(t, 10*readyPoll)
	ready.Store(true)
	s.want(t, 2*time.Second, "READY=1")
	s.none(t, 5*readyPoll)
	cancel()
	s.want(t, 2*time.Second, "STOPPING=1")
	<-done
}

// TestNotifyLifecycleStopsBeforeReady: a start that fails (firewall never
// set up) reports STOPPING=1 and never READY=1.
func TestNotifyLifecycleStopsBeforeReady(t *testing.T) {
	s := listenNotify(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		notifyLifecycle(ctx, discardLog(), func() bool { return false })
	}()
	s.none(t, 5*readyPoll)
	cancel()
	s.want(t, 2*time.Second, "STOPPING=1")
	<-done
	s.none(t, 5*readyPoll)
}

func TestNotifyReload(t *testing.T) {
	s := listenNotify(t)
	log := discardLog()
	notifyReload(log, func() bool { return false })()
	s.none(t, 5*readyPoll)

	done := notifyReload(log, func() bool { return true })
	s.wantReloading(t, time.Second)
	s.none(t, 5*readyPoll)
	done()
	s.want(t, time.Second, "READY=1")
}

// TestNotifyWithoutSystemd: without NOTIFY_SOCKET nothing is sent and
// notifyLifecycle returns at once instead of waiting for the shutdown.
func TestNotifyWithoutSystemd(t *testing.T) {
	s := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", "")
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		notifyLifecycle(t.Context(), log, func() bool { return true })
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("notifyLifecycle without NOTIFY_SOCKET did not return")
	}
	notifyReady(log)
	notifyReload(log, func() bool { return true })()
	notifyStopping(log)
	s.none(t, 5*readyPoll)
	if logBuf.Len() != 0 {
		t.Errorf("logged without NOTIFY_SOCKET:\n%s", logBuf.String())
	}
}

// TestNotifyUnreachable: a NOTIFY_SOCKET nobody listens on is logged, not
// fatal.
func TestNotifyUnreachable(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	var logBuf bytes.Buffer
	notifyReady(slog.New(slog.NewTextHandler(&logBuf, nil)))
	if !strings.Contains(logBuf.String(), "sd_notify failed") || !strings.Contains(logBuf.String(), "READY=1") {
		t.Errorf("log %q, want the failed READY=1", logBuf.String())
	}
}

// TestServeSystemdNotify runs the real binary in a namespace as systemd
// would run the Type=notify unit: READY=1 comes when the table is in the
// kernel and the syslog listener takes connections; SIGHUP brings
// RELOADING=1 then READY=1; SIGTERM STOPPING=1.
func TestServeSystemdNotify(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	ns := nftest.NewNS(t)
	s := listenNotify(t)
	d := startDaemon(t, ns, "--config", stateDirConfig(t))
	s.want(t, 30*time.Second, "READY=1")
	out, err := ns.Command(t.Context(), "nft", "list", "table", "inet", "wormgate").CombinedOutput()
	if err != nil {
		t.Fatalf("READY=1 sent, but no table: nft list table inet wormgate: %v\n%s", err, out)
	}
	c, err := ns.Dial(t.Context(), "tcp", "127.0.0.1:514")
	if err != nil {
		t.Fatalf("READY=1 sent, but the syslog listener: %v", err)
	}
	c.Close()
	s.none(t, 5*readyPoll)

	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.wantReloading(t, 10*time.Second)
	s.want(t, 10*time.Second, "READY=1")

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.want(t, 10*time.Second, "STOPPING=1")
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		t.Fatal("wormgate did not exit after SIGTERM")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("wormgate exited with %d after SIGTERM, want 0", code)
	}
}
