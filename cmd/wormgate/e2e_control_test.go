package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// cli runs a wormgate command against the daemon's control socket.
func (d *daemon) cli(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	full := append([]string{args[0], "--socket", d.socket}, args[1:]...)
	code := run(t.Context(), full, strings.NewReader(""), &out, &out)
	return code, out.String()
}

// mustCLI is cli that fails the test unless the command succeeds.
func (d *daemon) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out := d.cli(t, args...)
	if code != exitOK {
		t.Fatalf("wormgate %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// stop ends the daemon with SIGTERM and waits for it.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop within 10s of SIGTERM")
	}
}

// probe reports whether a TCP connection from src to dst opens; a
// dropped SYN times out.
func probe(t *testing.T, ns *nftest.NS, src, dst string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	c, err := ns.DialFrom(ctx, "tcp", src, dst)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// waitGone polls until none of addrs is in the kernel sets.
func waitGone(t *testing.T, ns *nftest.NS, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := kernelAddrs(t, ns)
		if !slices.ContainsFunc(addrs, func(a string) bool { return slices.Contains(got, a) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still in the kernel after 5s: %v (have %v)", addrs, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeOperatorControl is issue 11's operator story against the real
// kernel: manual bans and unbans that stick through a flushed ruleset, a
// reconcile and a restart; allows; network bans; and a reload that
// applies never_block and ports, refuses a broken file and names what
// needs a restart.
func TestServeOperatorControl(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	gw := nftest.NewNS(t)
	outside := nftest.NewNS(t)
	nftest.Link(t,
		gw, []netip.Prefix{netip.MustParsePrefix("203.0.113.1/24"), netip.MustParsePrefix("198.51.100.1/24")},
		outside, []netip.Prefix{netip.MustParsePrefix("203.0.113.70/24"), netip.MustParsePrefix("203.0.113.200/24"), netip.MustParsePrefix("198.51.100.9/24")})
	for _, port := range []string{"25", "465", "2525", "8080"} {
		ln, err := gw.Listen("tcp", ":"+port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	cfgPath := filepath.Join(t.TempDir(), "wormgate.yaml")
	writeCfg := func(body string) {
		t.Helper()
		base := "enforcer:\n  state_dir: " + stateDir + "\n"
		if err := os.WriteFile(cfgPath, []byte(base+body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("")
	d := startDaemon(t, gw, "--config", cfgPath)
	top := t
	// restart outlives the subtest that calls it.
	restart := func(t *testing.T) {
		d.stop(t)
		d = startDaemon(top, gw, "--config", cfgPath)
	}
	const syslog = "127.0.0.1:514"
	reject := func(qid, client string) { sendTCP(t, gw, syslog, lfFrames(pairLines(traditional, qid, client))) }

	t.Run("ban and unban stick", func(t *testing.T) {
		if !probe(t, outside, "203.0.113.70", "203.0.113.1:25") {
			t.Fatal("203.0.113.70 cannot reach port 25 before any ban")
		}
		d.mustCLI(t, "ban", "203.0.113.70", "--for", "1h", "--reason", "lab test")
		waitKernel(t, gw, "203.0.113.70")
		if probe(t, outside, "203.0.113.70", "203.0.113.1:25") {
			t.Error("a connection from the banned 203.0.113.70 to port 25 opened")
		}
		if !probe(t, outside, "203.0.113.70", "203.0.113.1:8080") {
			t.Error("the banned 203.0.113.70 cannot reach port 8080, which is not a mail port")
		}
		d.mustCLI(t, "unban", "203.0.113.70")
		if got := kernelAddrs(t, gw); slices.Contains(got, "203.0.113.70") {
			t.Fatalf("unban returned with 203.0.113.70 still in the kernel: %v", got)
		}
		if !probe(t, outside, "203.0.113.70", "203.0.113.1:25") {
			t.Error("after unban 203.0.113.70 still cannot reach port 25")
		}
		// A flushed ruleset: the restore brings back the active bans only.
		reject("AC00000001", "203.0.113.99")
		waitKernel(t, gw, "203.0.113.99")
		gw.Run(t, "nft", "flush", "ruleset")
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := tryKernelTimed(t, gw)
			if _, ok := got["203.0.113.99"]; err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the flushed ruleset was not restored within 5s: %v %v", got, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(1500 * time.Millisecond) // one more reconcile cycle
		if got := kernelAddrs(t, gw); slices.Contains(got, "203.0.113.70") {
			t.Fatalf("the restore after a flush brought back the unbanned 203.0.113.70: %v", got)
		}
		restart(t)
		if got := kernelAddrs(t, gw); slices.Contains(got, "203.0.113.70") || !slices.Contains(got, "203.0.113.99") {
			t.Fatalf("after a restart the kernel holds %v; want 203.0.113.99 and not the unbanned 203.0.113.70", got)
		}
		// The next real offence bans it again as usual.
		reject("AC00000002", "203.0.113.70")
		waitKernel(t, gw, "203.0.113.70")
		if probe(t, outside, "203.0.113.70", "203.0.113.1:25") {
			t.Error("203.0.113.70 banned again by a reject, yet its connection to port 25 opened")
		}
	})

	t.Run("allow lifts and protects across a restart", func(t *testing.T) {
		out := d.mustCLI(t, "allow", "203.0.113.0/24", "--reason", "partner")
		if !strings.Contains(out, "ban lifted 203.0.113.70/32") {
			t.Errorf("allow printed %q, want the lifted ban", out)
		}
		waitGone(t, gw, "203.0.113.70", "203.0.113.99")
		reject("AC00000003", "203.0.113.71")
		reject("AC00000004", "192.0.2.200") // a marker, processed after the one before
		waitKernel(t, gw, "192.0.2.200")
		restart(t)
		reject("AC00000005", "203.0.113.72")
		reject("AC00000006", "192.0.2.201")
		waitKernel(t, gw, "192.0.2.201")
		if got := kernelAddrs(t, gw); slices.ContainsFunc(got, func(a string) bool { return strings.HasPrefix(a, "203.0.113.") }) {
			t.Fatalf("an address inside the allow was banned: %v", got)
		}
		d.mustCLI(t, "disallow", "203.0.113.0/24")
		reject("AC00000007", "203.0.113.73")
		waitKernel(t, gw, "203.0.113.73")
	})

	t.Run("network ban", func(t *testing.T) {
		d.mustCLI(t, "ban", "203.0.113.128/25", "--for", "2h")
		set := gw.Run(t, "nft", "list", "set", "inet", "wormgate", "blocked4_net")
		if !strings.Contains(set, "203.0.113.128/25") {
			t.Fatalf("the network is not in blocked4_net:\n%s", set)
		}
		if probe(t, outside, "203.0.113.200", "203.0.113.1:25") {
			t.Error("203.0.113.200, inside the banned network, reached port 25")
		}
		if !probe(t, outside, "198.51.100.9", "203.0.113.1:25") {
			t.Error("198.51.100.9, outside the banned network, cannot reach port 25")
		}
		d.mustCLI(t, "unban", "203.0.113.128/25")
		if !probe(t, outside, "203.0.113.200", "203.0.113.1:25") {
			t.Error("after unban 203.0.113.200 still cannot reach port 25")
		}
	})

	t.Run("reload", func(t *testing.T) {
		reject("AC00000008", "198.51.100.9")
		waitKernel(t, gw, "198.51.100.9")
		metric := func(name string) float64 { return d.counters(t)[name] }

		// never_block lifts a covered ban; ports change in the kernel.
		writeCfg("  never_block: [198.51.100.0/24]\n  nftables:\n    ports: [25, 2525]\n")
		out := d.mustCLI(t, "reload")
		for _, want := range []string{"applied        enforcer.never_block", "applied        enforcer.nftables.ports", "ban lifted     198.51.100.9/32"} {
			if !strings.Contains(out, want) {
				t.Errorf("reload printed %q, want %q", out, want)
			}
		}
		waitGone(t, gw, "198.51.100.9")
		if got := metric("wormgate_config_last_reload_successful"); got != 1 {
			t.Errorf("wormgate_config_last_reload_successful = %v, want 1", got)
		}
		d.mustCLI(t, "ban", "203.0.113.70", "--for", "1h")
		waitKernel(t, gw, "203.0.113.70")
		if probe(t, outside, "203.0.113.70", "203.0.113.1:2525") {
			t.Error("port 2525, added by the reload, is not dropped for a banned address")
		}
		if !probe(t, outside, "203.0.113.70", "203.0.113.1:465") {
			t.Error("port 465, removed by the reload, is still dropped")
		}

		// A broken file: exit 2 naming the field, the old config stays.
		good, _ := os.ReadFile(cfgPath)
		writeCfg("  ban_for: soon\n")
		code, out := d.cli(t, "reload")
		if code != exitUsage || !strings.Contains(out, "enforcer.ban_for") {
			t.Errorf("reload of a broken file: exit %d, %q; want %d naming enforcer.ban_for", code, out, exitUsage)
		}
		if got := metric("wormgate_config_last_reload_successful"); got != 0 {
			t.Errorf("wormgate_config_last_reload_successful = %v after a failed reload, want 0", got)
		}
		reject("AC00000009", "203.0.113.74")
		waitKernel(t, gw, "203.0.113.74") // the old rules still ban
		st := d.mustCLI(t, "status")
		if !strings.Contains(st, "FAILED") || !strings.Contains(st, "enforcer.ban_for") {
			t.Errorf("status does not show the failed reload:\n%s", st)
		}

		// A listener change needs a restart and is not shown as applied.
		if err := os.WriteFile(cfgPath, append(good, []byte("receiver:\n  udp_listen: [\"127.0.0.1:5514\"]\n")...), 0o600); err != nil {
			t.Fatal(err)
		}
		out = d.mustCLI(t, "reload")
		if !strings.Contains(out, "needs restart  receiver.udp_listen") {
			t.Errorf("reload printed %q, want receiver.udp_listen needing a restart", out)
		}
		var status struct {
			LastReload reloadResult `json:"last_reload"`
		}
		if err := newClient(d.socket).do(t.Context(), "GET", "/api/v1/status", nil, &status); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(status.LastReload.NeedsRestart, []string{"receiver.udp_listen"}) {
			t.Errorf("/api/v1/status last_reload = %+v, want receiver.udp_listen needing a restart", status.LastReload)
		}
		if got := metric("wormgate_config_last_reload_successful"); got != 1 {
			t.Errorf("wormgate_config_last_reload_successful = %v, want 1", got)
		}
	})
}

// TestControlSocketPermissions: the socket's mode and group decide who
// may steer the daemon; a user outside the group gets "permission
// denied", a member gets through.
func TestControlSocketPermissions(t *testing.T) {
	nftest.Require(t)
	bin := wormgateBinary(t)
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	d := startControlDaemonGroup(t, "nogroup")
	if err := os.Chmod(filepath.Dir(d.socket), 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Fatalf("socket mode %v gid %d, want 0660 and nogroup (65534)", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	as := func(uid, gid uint32) (string, error) {
		cmd := exec.Command(bin, "status", "--socket", d.socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// nobody in group daemon (1): not the socket's group.
	out, err := as(65534, 1)
	if err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("a user outside the group: %v, %q; want permission denied", err, out)
	}
	out, err = as(65534, 65534)
	if err != nil || !strings.Contains(out, "firewall") {
		t.Errorf("a member of the group: %v, %q; want the status", err, out)
	}
}

// startControlDaemonGroup is startControlDaemon with the socket's group.
func startControlDaemonGroup(t *testing.T, group string) *controlDaemon {
	t.Helper()
	return startControlDaemonWith(t, "", "control:\n  group: "+group+"\n")
}
