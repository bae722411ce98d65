package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"

	"github.com/google/go-cmp/cmp"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// TestDeb builds the package with build-deb.sh, installs it with dpkg (no
// systemctl: CI machines and containers run no systemd), runs the installed
// binary, and purges the package again.
func TestDeb(t *testing.T) {
	nftest.Require(t, "dpkg", "dpkg-deb", "go", "useradd")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "wormgate").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skipf("a wormgate package is already installed (%s); not replacing it", out)
	}
	if _, err := os.Stat("/usr/bin/wormgate"); err == nil {
		t.Skip("/usr/bin/wormgate exists outside the package; not replacing it")
	}
	out := t.TempDir()
	cmd := exec.Command("../build-deb.sh", out)
	cmd.Env = append(os.Environ(), "VERSION=0.0.0~labtest")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "wormgate_0.0.0~labtest_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("build-deb.sh made %v, want one wormgate_0.0.0~labtest_*.deb", debs)
	}
	list, err := exec.Command("dpkg-deb", "-c", debs[0]).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./usr/bin/wormgate", "./lib/systemd/system/wormgate.service", "./etc/wormgate/wormgate.yaml", "./var/lib/wormgate/",
		"./usr/share/doc/wormgate/examples/rsyslog-forward.conf", "./usr/share/doc/wormgate/examples/header_checks"} {
		if !strings.Contains(string(list), " "+want+"\n") {
			t.Errorf("package lacks %s:\n%s", want, list)
		}
	}

	if b, err := exec.Command("dpkg", "-i", debs[0]).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("dpkg", "--purge", "wormgate").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, b)
		}
		for _, p := range []string{"/usr/bin/wormgate", "/etc/wormgate", "/var/lib/wormgate", "/lib/systemd/system/wormgate.service"} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s left after purge", p)
			}
		}
	})

	// The conffile is the installed binary's own default.
	def, err := exec.Command("/usr/bin/wormgate", "config").Output()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile("/etc/wormgate/wormgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(def), string(conf)); diff != "" {
		t.Errorf("/etc/wormgate/wormgate.yaml is not `wormgate config` (-want +got):\n%s", diff)
	}
	if b, err := exec.Command("stat", "-c", "%U %a", "/var/lib/wormgate").Output(); err != nil || strings.TrimSpace(string(b)) != "wormgate 750" {
		t.Errorf("/var/lib/wormgate: %q %v, want owner wormgate mode 750", b, err)
	}
	if b, err := exec.Command("/usr/bin/wormgate", "version").Output(); err != nil || !strings.Contains(string(b), "0.0.0~labtest") {
		t.Errorf("wormgate version: %q %v", b, err)
	}

	for _, cfg := range []string{"/etc/wormgate/wormgate.yaml", "/usr/share/doc/wormgate/examples/example.yaml"} {
		c := exec.Command("/usr/bin/wormgate", "check", "--config", cfg, syslogtest.SamplePath())
		var stderr strings.Builder
		c.Stderr = &stderr
		b, err := c.Output()
		if err != nil {
			t.Fatalf("installed wormgate check --config %s: %v\n%s", cfg, err, stderr.String())
		}
		// The worm's two addresses, never the decoys 192.0.2.96-99.
		var got []string
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) > 0 {
				got = append(got, f[0])
			}
		}
		if diff := cmp.Diff([]string{"2001:db8:66::66", "203.0.113.66"}, got); diff != "" {
			t.Errorf("check --config %s bans (-want +got):\n%s\n%s", cfg, diff, b)
		}
		t.Logf("installed wormgate check --config %s:\n%s%s", cfg, b, stderr.String())
	}
}
