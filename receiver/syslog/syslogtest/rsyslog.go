package syslogtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireRsyslogd stops the test unless rsyslogd is installed and, with
// gtls, its TLS network stream driver (Debian's rsyslog-gnutls). Under
// CI=true that is a failure, otherwise a skip.
func RequireRsyslogd(t testing.TB, gtls bool) {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		stop(t, "rsyslogd (apt-get install rsyslog)")
	}
	if !gtls {
		return
	}
	mods, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so")
	more, _ := filepath.Glob("/usr/lib/rsyslog/lmnsd_gtls.so")
	if len(mods)+len(more) == 0 {
		stop(t, "rsyslog's gtls driver (apt-get install rsyslog-gnutls)")
	}
}

func stop(t testing.TB, missing string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs %s (CI=true, so this is a failure, not a skip)", missing)
	}
	t.Skipf("needs %s", missing)
}

// RunRsyslogd starts cmd, an `rsyslogd -n` of the test's own, and kills it
// when the test ends, logging its output if the test failed.
func RunRsyslogd(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", out.String())
		}
	})
}
