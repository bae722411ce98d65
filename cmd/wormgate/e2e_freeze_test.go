package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// freezeFor is how long the acceptance test keeps the state disk frozen.
const freezeFor = 20 * time.Second

// TestServeFrozenDisk: the state directory's filesystem is frozen
// (fsfreeze) for 20 s, as a hung disk would be. Meanwhile new offenders
// reach the kernel within 1 s each, a deleted table is back with every
// ban within 2 s, /healthz and the status say the record is failing, and
// SIGTERM ends the daemon within 5 s (its record helper is left asleep on
// the disk, killed). After the thaw the helper is gone and a restart
// enforces every ban, and its record catches up.
func TestServeFrozenDisk(t *testing.T) {
	nftest.Require(t, "ip", "nft", "mount", "umount", "mkfs.ext4", "fsfreeze")
	gw := nftest.NewNS(t)
	cfg, stateDir := durableConfigDir(t)
	mountOwnFS(t, stateDir)
	d := startDaemon(t, gw, "--config", cfg)

	payload, addrs := burstLines(200)
	sendTCP(t, gw, "127.0.0.1:514", payload)
	waitKernel(t, gw, addrs...)
	waitRecorded(t, d)

	thaw := freeze(t, stateDir)
	frozen := time.Now()
	for i := range 10 {
		a := fmt.Sprintf("203.0.113.%d", 10+i)
		sent := time.Now()
		sendTCP(t, gw, "127.0.0.1:514", lfFrames(pairLines(traditional, fmt.Sprintf("F%09X", i), a)))
		for {
			if _, ok := kernelTimed(t, gw)[a]; ok {
				break
			}
			if time.Since(sent) > time.Second {
				t.Fatalf("offender %s not in the kernel 1s after its reject, with the state disk frozen", a)
			}
			time.Sleep(10 * time.Millisecond)
		}
		addrs = append(addrs, a)
	}
	t.Logf("10 new offenders in the kernel, each within 1s, with the state disk frozen")

	gw.Run(t, "nft", "delete", "table", "inet", "wormgate")
	deleted := time.Now()
	for {
		got, _ := tryKernelTimed(t, gw)
		if len(got) == len(addrs) && chainIntact(gw) {
			break
		}
		if time.Since(deleted) > 2*time.Second {
			t.Fatalf("deleted table: %d of %d bans back 2s later, with the state disk frozen", len(got), len(addrs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("deleted table back with %d bans %v later", len(addrs), time.Since(deleted).Round(time.Millisecond))

	body := waitUnhealthy(t, d, "record", 10*time.Second)
	t.Logf("/healthz %v after the freeze: %s", time.Since(frozen).Round(time.Millisecond), body)
	if st := d.status(t); !st.Enforcer.Degraded || !strings.Contains(strings.Join(st.Enforcer.Failing, ","), "record") {
		t.Errorf("status: degraded=%v failing=%v, want degraded with the record failing", st.Enforcer.Degraded, st.Enforcer.Failing)
	}

	helpers := recordHelpers(t, stateDir)
	if len(helpers) != 1 {
		t.Errorf("record helpers of %s: %v, want one", stateDir, helpers)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	term := time.Now()
	select {
	case <-d.done:
		t.Logf("SIGTERM: exited after %v, %v after the freeze", time.Since(term).Round(time.Millisecond), time.Since(frozen).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatalf("SIGTERM with the state disk frozen: still running 5s later")
	}
	if since := time.Since(frozen); since > freezeFor {
		t.Errorf("the checks took %v, longer than the %v freeze", since, freezeFor)
	}
	time.Sleep(time.Until(frozen.Add(freezeFor)))
	thaw()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range helpers {
		for !processGone(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("record helper %d still runs 10s after the thaw", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	d2 := startDaemon(t, gw, "--config", cfg)
	after := kernelTimed(t, gw)
	var missing []string
	for _, a := range addrs {
		if _, ok := after[a]; !ok {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d bans lost over the freeze and restart, e.g. %v", len(missing), len(addrs), missing[:min(5, len(missing))])
	}
	if got := d2.status(t).BansActive; got != len(addrs) {
		t.Errorf("active bans after the restart = %d, want %d", got, len(addrs))
	}
	waitRecorded(t, d2)
	if err := d2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-d2.done
	recorded := recordedBans(t, stateDir)
	missing = missing[:0]
	for _, a := range addrs {
		if !recorded[a] {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d bans missing from the record after the restart, e.g. %v", len(missing), len(addrs), missing[:min(5, len(missing))])
	}
}

// waitRecorded waits up to 5s for the record to hold every ban.
func waitRecorded(t *testing.T, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lag := d.status(t).Enforcer.RecordLag
		if lag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record lag %d after 5s", lag)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitUnhealthy polls /healthz until it answers 503 with a body naming
// part, and returns the body.
func waitUnhealthy(t *testing.T, d *daemon, part string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := d.client.Get("http://127.0.0.1:9514/healthz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := strings.TrimSpace(string(b))
		if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, part) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz = %d %q after %v, want 503 naming the %s", resp.StatusCode, body, within, part)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountOwnFS mounts a small ext4 image of its own at dir (tmpfs cannot
// be frozen); t.Cleanup unmounts it.
func mountOwnFS(t *testing.T, dir string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "state.img")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"truncate", "-s", "32M", img},
		{"mkfs.ext4", "-q", "-F", img},
		{"mount", "-o", "loop,noatime", img, dir},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		// The loop device goes with the last user of the filesystem.
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// freeze freezes the filesystem at dir and returns the thaw, which
// t.Cleanup also runs (before the daemons' cleanups, so that none waits
// on the disk). A guard process thaws it after 30 s whatever happens to
// this test process (a timeout panic runs no cleanup): a machine is
// never left with a frozen filesystem.
func freeze(t *testing.T, dir string) (thaw func()) {
	t.Helper()
	guard := exec.Command("sh", "-c", `sleep 30; fsfreeze --unfreeze "$1" 2>/dev/null`, "guard", dir)
	guard.Dir = "/"
	guard.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := guard.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fsfreeze", "--freeze", dir).CombinedOutput(); err != nil {
		stopGuard(guard)
		t.Fatalf("fsfreeze --freeze %s: %v: %s", dir, err, out)
	}
	thawed := false
	thaw = func() {
		if thawed {
			return
		}
		thawed = true
		if out, err := exec.Command("fsfreeze", "--unfreeze", dir).CombinedOutput(); err != nil {
			t.Errorf("fsfreeze --unfreeze %s: %v: %s", dir, err, out)
		}
		stopGuard(guard)
	}
	t.Cleanup(thaw)
	return thaw
}

// stopGuard ends the guard and its sleep: its own process group.
func stopGuard(guard *exec.Cmd) {
	_ = syscall.Kill(-guard.Process.Pid, syscall.SIGKILL)
	_ = guard.Wait()
}

// recordHelpers are the pids of the record helpers serving dir.
func recordHelpers(t *testing.T, dir string) []int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) >= 4 && args[1] == "record-helper" && args[len(args)-1] == dir {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, pid)
		}
	}
	return out
}

// processGone reports whether pid has exited (a zombie holds no files).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] == "Z"
}
