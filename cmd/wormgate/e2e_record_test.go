package main

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// TestServeDamagedRecord: with 1,000 bans in the kernel, the record is
// deleted, truncated or overwritten while wormgate is stopped. The restart
// never panics and never shrinks enforcement: the kernel still holds all
// 1,000 (adopted into a new record), and a corrupt file is kept aside.
func TestServeDamagedRecord(t *testing.T) {
	overwrite := func(t *testing.T, p string, off, n int64) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rand.IntN(256))
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string) error
		aside  bool
	}{
		{"deleted", func(t *testing.T, p string) error { return os.Remove(p) }, false},
		{"truncated to 0", func(t *testing.T, p string) error { return os.Truncate(p, 0) }, false},
		{"truncated to 8 KiB", func(t *testing.T, p string) error { return os.Truncate(p, 8<<10) }, true},
		{"garbage in a meta page", func(t *testing.T, p string) error { overwrite(t, p, 0, 4096); return nil }, false},
		{"garbage in data pages", func(t *testing.T, p string) error { overwrite(t, p, 16<<10, 48<<10); return nil }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nftest.Require(t, "ip", "nft")
			gw := nftest.NewNS(t)
			cfg, stateDir := durableConfigDir(t)
			d := startDaemon(t, gw, "--config", cfg)
			payload, addrs := burstLines(1000)
			sendTCP(t, gw, "127.0.0.1:514", payload)
			deadline := time.Now().Add(10 * time.Second)
			for len(kernelTimed(t, gw)) < len(addrs) {
				if time.Now().After(deadline) {
					t.Fatalf("only %d of %d bans in the kernel", len(kernelTimed(t, gw)), len(addrs))
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			<-d.done
			if err := tc.damage(t, filepath.Join(stateDir, "state.db")); err != nil {
				t.Fatal(err)
			}
			d2 := startDaemon(t, gw, "--config", cfg)
			after := kernelTimed(t, gw)
			missing := 0
			for _, a := range addrs {
				if _, ok := after[a]; !ok {
					missing++
				}
			}
			if missing > 0 {
				t.Errorf("%d of %d bans lifted by the restart", missing, len(addrs))
			}
			if got := d2.status(t).BansActive; got != len(addrs) {
				t.Errorf("active bans after the restart = %d, want %d", got, len(addrs))
			}
			aside, _ := filepath.Glob(filepath.Join(stateDir, "state.db.corrupt-*"))
			if (len(aside) == 1) != tc.aside {
				t.Errorf("files kept aside: %v; want one: %v", aside, tc.aside)
			}
		})
	}
}

// TestServeFullDisk: the state directory on a tiny tmpfs fills up. New
// offenders still reach the kernel at once; /healthz says the record is
// failing; once there is room again the record catches up within 5 s and
// holds every ban.
func TestServeFullDisk(t *testing.T) {
	nftest.Require(t, "ip", "nft", "mount", "umount")
	gw := nftest.NewNS(t)
	cfg, stateDir := durableConfigDir(t)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "wgtest", stateDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", stateDir).Run() })
	d := startDaemon(t, gw, "--config", cfg)

	payload, addrs := burstLines(1000)
	start := time.Now()
	sendTCP(t, gw, "127.0.0.1:514", payload)
	for len(kernelTimed(t, gw)) < len(addrs) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("only %d of %d bans in the kernel with the disk full", len(kernelTimed(t, gw)), len(addrs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("1000 bans in the kernel %v after the burst, with the disk full", time.Since(start).Round(time.Millisecond))
	body := waitUnhealthy(t, d, "record", 10*time.Second)
	t.Logf("/healthz: %s", body)

	if out, err := exec.Command("mount", "-o", "remount,size=16m", stateDir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	freed := time.Now()
	for {
		lag := d.status(t).Enforcer.RecordLag
		if lag == 0 {
			break
		}
		if time.Since(freed) > 5*time.Second {
			t.Fatalf("record lag %d 5s after space was freed", lag)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("record caught up %v after space was freed", time.Since(freed).Round(time.Millisecond))
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-d.done
	recorded := recordedBans(t, stateDir)
	missing := 0
	for _, a := range addrs {
		if !recorded[a] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d bans missing from the record", missing, len(addrs))
	}
}
