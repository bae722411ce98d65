package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/store"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// durableConfig runs the daemon with its record in a temporary directory
// and no rate limit, so a burst reaches the kernel as fast as it can.
func durableConfig(t *testing.T) string {
	cfg, _ := durableConfigDir(t)
	return cfg
}

// durableConfigDir is durableConfig that also returns the state directory.
func durableConfigDir(t *testing.T) (cfg, stateDir string) {
	t.Helper()
	stateDir = filepath.Join(t.TempDir(), "state")
	return writeConfig(t, fmt.Sprintf("enforcer:\n  state_dir: %s\n  max_new_bans_per_second: 1000000\n", stateDir)), stateDir
}

// recordedBans reads the record a dead daemon left behind.
func recordedBans(t *testing.T, stateDir string) map[string]bool {
	t.Helper()
	st, err := store.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snap, err := st.Load(time.Now(), store.Limits{})
	bans := snap.Bans
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool, len(bans))
	for _, b := range bans {
		out[b.Addr.String()] = true
	}
	return out
}

// kernelTimed reads both sets with each element's remaining time, with
// the nft tool, as of the moment it returns.
func kernelTimed(t *testing.T, ns *nftest.NS) map[string]time.Duration {
	t.Helper()
	out, err := tryKernelTimed(t, ns)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryKernelTimed is kernelTimed for a table that may be missing.
func tryKernelTimed(t *testing.T, ns *nftest.NS) (map[string]time.Duration, error) {
	t.Helper()
	out, err := nftest.Blocked(ns.Name, "wormgate")
	if err != nil {
		return nil, err
	}
	for a, d := range out {
		if d == 0 {
			t.Fatalf("nft element without timeout: %s", a)
		}
	}
	return out, nil
}

// burstLines are n reject pairs for distinct IPv6 documentation addresses.
func burstLines(n int) ([]byte, []string) {
	var lines []string
	addrs := make([]string, 0, n)
	for i := range n {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x00, 0x04, 14: byte(i >> 8), 15: byte(i)}).String()
		addrs = append(addrs, a)
		lines = append(lines, pairLines(traditional, fmt.Sprintf("B%09X", i), a)...)
	}
	return lfFrames(lines), addrs
}

// TestServeDurableKill9 kills the daemon with -9 during a burst of 10,000
// new bans. The record is written behind the kernel (a ban never waits for
// the disk), so at the kill the kernel may hold bans the record does not:
//   - when the kernel keeps its table (the process died, the box did not),
//     the restart adopts them: every ban that was in the kernel is back,
//     with its remaining time;
//   - when the table is gone too (a reboot), every ban the record held is
//     back; what the record lacked at that instant is the price of never
//     making the kernel wait for the disk, and is logged.
func TestServeDurableKill9(t *testing.T) {
	for _, reboot := range []bool{false, true} {
		t.Run(map[bool]string{false: "kernel kept", true: "reboot"}[reboot], func(t *testing.T) {
			testKill9(t, reboot)
		})
	}
}

func testKill9(t *testing.T, reboot bool) {
	nftest.Require(t, "ip", "nft")
	gw := nftest.NewNS(t)
	cfg, stateDir := durableConfigDir(t)
	d := startDaemon(t, gw, "--config", cfg)
	// The ban log lines are not what this test is about.
	d.logMu.Lock()
	d.log.Reset()
	d.logMu.Unlock()

	payload, _ := burstLines(10_000)
	sent := make(chan error, 1)
	go func() {
		c, err := gw.Dial(t.Context(), "tcp", "127.0.0.1:514")
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		_, err = c.Write(payload)
		sent <- err
	}()
	// Kill while the bans are being written: as soon as some are in.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := gw.Command(context.Background(), "nft", "list", "set", "inet", "wormgate", "blocked6").Output()
		if n := strings.Count(string(out), "expires"); n >= 500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no bans in the kernel after 10s\n%s", d.logText())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.done
	before := kernelTimed(t, gw)
	readAt := time.Now()
	if err := <-sent; err != nil {
		t.Logf("sender: %v (the daemon was killed)", err)
	}
	t.Logf("killed with %d of 10000 bans in the kernel", len(before))
	if len(before) == 0 {
		t.Fatal("nothing in the kernel before the restart")
	}

	want := before
	if reboot {
		// The kernel is empty after a reboot: everything has to come from
		// the record.
		recorded := recordedBans(t, stateDir)
		want = make(map[string]time.Duration)
		for a, rem := range before {
			if recorded[a] {
				want[a] = rem
			}
		}
		t.Logf("reboot: the record held %d of the %d bans in the kernel at the kill", len(want), len(before))
		gw.Run(t, "nft", "delete", "table", "inet", "wormgate")
	}
	startDaemon(t, gw, "--config", cfg)
	after := kernelTimed(t, gw)
	elapsed := time.Since(readAt)
	var missing, off []string
	for a, rem := range want {
		got, ok := after[a]
		if !ok {
			missing = append(missing, a)
			continue
		}
		want := rem - elapsed
		if got < want-2*time.Second || got > want+2*time.Second {
			off = append(off, fmt.Sprintf("%s: %v, want %v", a, got, want))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Errorf("%d bans lost by kill -9 and restart, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	if len(off) > 0 {
		t.Errorf("%d bans with a wrong remaining time (±2s), e.g. %v", len(off), off[:min(5, len(off))])
	}
}

func TestServeRestoresFlushedRuleset(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	gw := nftest.NewNS(t)
	d := startDaemon(t, gw, "--config", durableConfig(t))
	payload, addrs := burstLines(2000)
	sendTCP(t, gw, "127.0.0.1:514", payload)
	waitKernel(t, gw, addrs[len(addrs)-1])
	deadline := time.Now().Add(10 * time.Second)
	for len(kernelTimed(t, gw)) < len(addrs) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d bans in the kernel", len(kernelTimed(t, gw)), len(addrs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, cmd := range [][]string{
		{"nft", "flush", "ruleset"},
		{"nft", "delete", "table", "inet", "wormgate"},
		{"nft", "delete", "rule", "inet", "wormgate", "prerouting", "handle", "HANDLE"},
	} {
		t.Run(strings.Join(cmd[:3], " "), func(t *testing.T) {
			if cmd[len(cmd)-1] == "HANDLE" {
				cmd[len(cmd)-1] = ruleHandle(t, gw)
			}
			gw.Run(t, cmd...)
			start := time.Now()
			for {
				got, _ := tryKernelTimed(t, gw)
				if len(got) == len(addrs) && chainIntact(gw) {
					t.Logf("restored %d bans %v after %s", len(got), time.Since(start).Round(time.Millisecond), cmd)
					break
				}
				if time.Since(start) > 5*time.Second {
					t.Fatalf("after %s: %d of %d bans back after 5s", cmd, len(got), len(addrs))
				}
				time.Sleep(50 * time.Millisecond)
			}
			if got := d.counters(t)["wormgate_firewall_restores_total"]; got != float64(i+1) {
				t.Errorf("wormgate_firewall_restores_total = %v, want %d", got, i+1)
			}
		})
	}
	if !d.alive() {
		t.Fatal("daemon died")
	}
}

// ruleHandle returns the handle of the chain's first rule.
func ruleHandle(t *testing.T, ns *nftest.NS) string {
	t.Helper()
	out := ns.Run(t, "nft", "-a", "list", "chain", "inet", "wormgate", "prerouting")
	for l := range strings.Lines(out) {
		if i := strings.Index(l, "# handle "); i >= 0 && strings.Contains(l, "drop") {
			return strings.TrimSpace(l[i+len("# handle "):])
		}
	}
	t.Fatalf("no rule handle in:\n%s", out)
	return ""
}

func chainIntact(ns *nftest.NS) bool {
	out, err := ns.Command(context.Background(), "nft", "list", "chain", "inet", "wormgate", "prerouting").Output()
	// One drop rule per set: addresses and networks, IPv4 and IPv6.
	return err == nil && strings.Count(string(out), "drop") == 4
}

func TestServeStateDirLocked(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	gw := nftest.NewNS(t)
	cfg := durableConfig(t)
	startDaemon(t, gw, "--config", cfg)
	// A second daemon on the same record must refuse, not share it.
	other := nftest.NewNS(t)
	out, err := other.Command(context.Background(), wormgateBinary(t), "serve", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "locked") {
		t.Errorf("second daemon on the same state_dir: %v, want a lock error\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Dir(cfg)); err != nil {
		t.Fatal(err)
	}
}
