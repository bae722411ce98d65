package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requireTools stops the test unless every program is installed; under
// CI=true their absence is a failure. pkgs names the Debian packages.
func requireTools(t *testing.T, pkgs string, bins ...string) {
	t.Helper()
	var missing []string
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs %s (apt-get install %s) (CI=true, so this is a failure, not a skip)", strings.Join(missing, ", "), pkgs)
	}
	t.Skipf("needs %s (apt-get install %s)", strings.Join(missing, ", "), pkgs)
}

// verifyUnit runs `systemd-analyze verify` on the unit at path (inside
// root, "" for /) and fails on any line about wormgate: systemd reports
// unknown keys, bad values and missing programs as warnings and still
// exits 0. Lines about other units (the host's) are only logged. In a
// root of the test's own the man page the unit names is not installed:
// only on / is Documentation=man:wormgate(8) checked.
func verifyUnit(t *testing.T, root, path string) {
	t.Helper()
	args := []string{"verify"}
	if root != "" {
		args = append(args, "--man=no", "--root="+root)
	}
	out, err := exec.Command("systemd-analyze", append(args, path)...).CombinedOutput()
	var ours, others []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "wormgate") {
			ours = append(ours, line)
		} else if strings.TrimSpace(line) != "" {
			others = append(others, line)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " ")+" "+path, err, out)
	}
	if len(others) > 0 {
		t.Logf("systemd-analyze on other units:\n%s", strings.Join(others, ""))
	}
}

// TestSystemdUnitVerify checks deploy/wormgate.service with
// `systemd-analyze verify` in a root of its own: the host's units, the
// unit, and an executable where the unit runs /usr/bin/wormgate (the
// verifier checks that the programs exist, not what they do).
func TestSystemdUnitVerify(t *testing.T) {
	requireTools(t, "systemd", "systemd-analyze")
	const unitDir = "/lib/systemd/system"
	root := t.TempDir()
	if err := os.CopyFS(filepath.Join(root, unitDir), os.DirFS(unitDir)); err != nil {
		t.Fatalf("copy the host's units: %v", err)
	}
	unit, err := os.ReadFile("../wormgate.service")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, unitDir, "wormgate.service"), unit, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/wormgate"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	verifyUnit(t, root, unitDir+"/wormgate.service")

	// What the other parts rely on.
	for _, want := range []string{
		"Type=notify\n",
		"ExecReload=/usr/bin/wormgate reload\n",
		"RuntimeDirectory=wormgate\n",
		"RuntimeDirectoryMode=0750\n",
		"User=wormgate\n",
		"NoNewPrivileges=yes\n",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE\n",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX\n",
	} {
		if !strings.Contains(string(unit), "\n"+want) {
			t.Errorf("deploy/wormgate.service lacks %q", want)
		}
	}
}
