package lab

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"

	"github.com/google/go-cmp/cmp"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

const (
	debVersion = "0.0.0~labtest"
	debFull    = debVersion + "-1"
	// Where deb-systemd-helper records an enabled unit, and the link
	// `systemctl enable` would make: a chroot or image install has both.
	dshState = "/var/lib/systemd/deb-systemd-helper-enabled/wormgate.service.dsh-also"
	wantsLnk = "/etc/systemd/system/multi-user.target.wants/wormgate.service"
)

// TestDeb builds the package with build-deb.sh, runs lintian on it,
// installs it with dpkg (no systemd runs here: as in a chroot or an image
// build), checks what the install left, runs the installed binary and
// `systemd-analyze verify` on the installed unit, and purges the package.
func TestDeb(t *testing.T) {
	nftest.Require(t, "dpkg", "dpkg-deb", "go", "adduser", "deb-systemd-helper")
	requireTools(t, "lintian systemd man-db", "lintian", "systemd-analyze", "man")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "wormgate").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skipf("a wormgate package is already installed (%s); not replacing it", out)
	}
	if _, err := os.Stat("/usr/bin/wormgate"); err == nil {
		t.Skip("/usr/bin/wormgate exists outside the package; not replacing it")
	}
	out := t.TempDir()
	cmd := exec.Command("../build-deb.sh", out)
	cmd.Env = append(os.Environ(), "VERSION="+debVersion)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "wormgate_"+debFull+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("build-deb.sh made %v, want one wormgate_%s_*.deb", debs, debFull)
	}
	deb := debs[0]
	list, err := exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./usr/bin/wormgate", "./lib/systemd/system/wormgate.service", "./etc/wormgate/wormgate.yaml",
		"./usr/share/doc/wormgate/examples/rsyslog-forward.conf", "./usr/share/doc/wormgate/examples/header_checks",
		"./usr/share/man/man8/wormgate.8.gz", "./usr/share/doc/wormgate/copyright", "./usr/share/doc/wormgate/changelog.Debian.gz",
		"./usr/share/doc/wormgate/LICENSE", "./usr/share/lintian/overrides/wormgate"} {
		if !strings.Contains(string(list), " "+want+"\n") {
			t.Errorf("package lacks %s:\n%s", want, list)
		}
	}

	t.Run("Lintian", func(t *testing.T) { lintian(t, deb) })

	// Slim images exclude documentation from installs (dpkg path-exclude):
	// the files this test reads are let in.
	if b, err := exec.Command("dpkg", "--path-include=/usr/share/doc/wormgate/*", "--path-include=/usr/share/man/man8/wormgate.8.gz",
		"-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("dpkg", "--purge", "wormgate").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, b)
		}
		for _, p := range []string{"/usr/bin/wormgate", "/etc/wormgate", "/var/lib/wormgate", "/lib/systemd/system/wormgate.service",
			"/usr/share/man/man8/wormgate.8.gz", "/usr/share/doc/wormgate", dshState, wantsLnk} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s left after purge", p)
			}
		}
		if err := exec.Command("getent", "passwd", "wormgate").Run(); err == nil {
			t.Error("user wormgate left after purge")
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
	if b, err := exec.Command("stat", "-c", "%U %G %a", "/var/lib/wormgate").Output(); err != nil || strings.TrimSpace(string(b)) != "wormgate wormgate 750" {
		t.Errorf("/var/lib/wormgate: %q %v, want owner and group wormgate, mode 750", b, err)
	}
	// A system user that cannot log in, with a group of its own.
	if b, err := exec.Command("getent", "passwd", "wormgate").Output(); err != nil || !strings.HasSuffix(strings.TrimSpace(string(b)), ":/var/lib/wormgate:/usr/sbin/nologin") {
		t.Errorf("getent passwd wormgate: %q %v", b, err)
	}
	if b, err := exec.Command("id", "-gn", "wormgate").Output(); err != nil || strings.TrimSpace(string(b)) != "wormgate" {
		t.Errorf("primary group of wormgate: %q %v, want wormgate", b, err)
	}
	if b, err := exec.Command("/usr/bin/wormgate", "version").Output(); err != nil || !strings.Contains(string(b), debVersion) {
		t.Errorf("wormgate version: %q %v", b, err)
	}

	t.Run("Systemd", func(t *testing.T) {
		verifyUnit(t, "", "/lib/systemd/system/wormgate.service")
		// Enabled and recorded although no systemd runs.
		if dest, err := os.Readlink(wantsLnk); err != nil || dest != "/lib/systemd/system/wormgate.service" {
			t.Errorf("%s -> %q %v, want the enabled unit", wantsLnk, dest, err)
		}
		if _, err := os.Stat(dshState); err != nil {
			t.Errorf("deb-systemd-helper did not record the unit: %v", err)
		}
		// A query; the helper answers only what it takes for dpkg.
		c := exec.Command("deb-systemd-helper", "was-enabled", "wormgate.service")
		c.Env = append(os.Environ(), "DPKG_MAINTSCRIPT_PACKAGE=wormgate")
		if b, err := c.CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "enabled" {
			t.Errorf("deb-systemd-helper was-enabled wormgate.service: %q %v", b, err)
		}
	})

	t.Run("Man", func(t *testing.T) {
		page := gunzip(t, "/usr/share/man/man8/wormgate.8.gz")
		for _, want := range []string{`.TH WORMGATE 8 `, `"wormgate ` + strings.ReplaceAll(debVersion, "-", `\-`) + `"`, ".SS \"serve\"\n", ".SS \"reload\"\n", ".SH FILES\n"} {
			if !strings.Contains(page, want) {
				t.Errorf("installed man page lacks %q", want)
			}
		}
		// As lintian reads it, and as an operator does.
		c := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", "/usr/share/man/man8/wormgate.8.gz")
		c.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
		var stderr bytes.Buffer
		c.Stderr = &stderr
		if err := c.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings: %v\n%s", err, stderr.String())
		}
		if b, err := exec.Command("man", "-w", "wormgate").Output(); err != nil || strings.TrimSpace(string(b)) != "/usr/share/man/man8/wormgate.8.gz" {
			t.Errorf("man -w wormgate: %q %v", b, err)
		}
	})

	t.Run("Copyright", func(t *testing.T) {
		cp, err := os.ReadFile("/usr/share/doc/wormgate/copyright")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n",
			"\nFiles: *\nCopyright: ",
			"\nLicense: Apache-2.0\n",
			`"/usr/share/common-licenses/Apache-2.0"`,
			"\nFiles: go/src/*\n",
		} {
			if !strings.Contains(string(cp), want) {
				t.Errorf("copyright lacks %q", want)
			}
		}
		// Every Go module linked into the installed binary, with its licence.
		mods, err := exec.Command("go", "version", "-m", "/usr/bin/wormgate").Output()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for line := range strings.Lines(string(mods)) {
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "dep" {
				continue
			}
			n++
			para := "\nFiles: vendor/" + f[1] + "/*\nCopyright: "
			i := strings.Index(string(cp), para)
			if i < 0 {
				t.Errorf("copyright has no paragraph for module %s", f[1])
				continue
			}
			if !strings.Contains(strings.SplitN(string(cp)[i+1:], "\n\n", 2)[0], "\nLicense: ") {
				t.Errorf("copyright paragraph of %s names no licence", f[1])
			}
		}
		if n == 0 {
			t.Errorf("go version -m lists no modules:\n%s", mods)
		}
		lic, err := os.ReadFile("/usr/share/doc/wormgate/LICENSE")
		if err != nil {
			t.Fatal(err)
		}
		repo, err := os.ReadFile("../LICENSE")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(lic, repo) || !bytes.HasPrefix(bytes.TrimSpace(lic), []byte("Apache License\n                           Version 2.0, January 2004")) {
			t.Errorf("installed LICENSE (%d bytes) is not deploy/LICENSE, the Apache License 2.0", len(lic))
		}
		if common, err := os.ReadFile("/usr/share/common-licenses/Apache-2.0"); err == nil && !bytes.Equal(lic, common) {
			t.Error("LICENSE differs from /usr/share/common-licenses/Apache-2.0")
		}
		if got, want := strings.SplitN(gunzip(t, "/usr/share/doc/wormgate/changelog.Debian.gz"), "\n", 2)[0], "wormgate ("+debFull+") unstable; urgency=medium"; got != want {
			t.Errorf("changelog.Debian.gz starts %q, want %q", got, want)
		}
	})

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

// lintian runs lintian on the package with every tag shown, and fails on
// each error or warning the package's overrides do not explain.
func lintian(t *testing.T, deb string) {
	t.Helper()
	c := exec.Command("lintian", "--display-info", "--pedantic", "--show-overrides", deb)
	b, err := c.CombinedOutput()
	t.Logf("lintian --display-info --pedantic --show-overrides %s:\n%s", filepath.Base(deb), b)
	// Exit 1 only with errors (or when it cannot run); warnings exit 0.
	if err != nil {
		t.Errorf("lintian: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", strings.TrimSpace(line))
		}
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}
