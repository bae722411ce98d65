package main

import (
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const module = "github.com/wormgate/wormgate"

// forbiddenInPureCode are what the grammar, the matcher and the policy
// must never depend on, directly or not: sockets, TLS, HTTP, metrics,
// the firewall and the disk record belong to the receiver, cmd and the
// enforcer. (go-syslog's format parsers are fine; its servers are not.)
var forbiddenInPureCode = []string{
	"net",
	"net/http",
	"crypto/tls",
	"os/exec",
	"github.com/prometheus/",
	"github.com/google/nftables",
	"github.com/mdlayher/netlink",
	"go.etcd.io/bbolt",
	"gopkg.in/mcuadros/go-syslog.v2",
	module + "/receiver",
	module + "/enforcer",
}

// allowedInPureCode are exceptions to a forbidden prefix above.
var allowedInPureCode = []string{
	"net/netip",
	"gopkg.in/mcuadros/go-syslog.v2/format",
	"gopkg.in/mcuadros/go-syslog.v2/internal/",
	module + "/receiver/syslog",
	module + "/receiver/configerr",
	module + "/enforcer/policy",
}

// TestPureDeps is the import-graph test (after Tailscale's
// tstest/deptest): the packages that hold the domain logic stay pure, on
// every platform wormgate check is built for.
func TestPureDeps(t *testing.T) {
	for _, pkg := range []string{"receiver/syslog", "receiver/configerr", "matcher", "enforcer/policy"} {
		for _, goos := range []string{"linux", "darwin", "freebsd", "windows"} {
			t.Run(pkg+"/"+goos, func(t *testing.T) {
				var bad []string
				for _, dep := range goList(t, goos, "-deps", module+"/"+pkg) {
					if forbidden(dep) {
						bad = append(bad, dep)
					}
				}
				if len(bad) > 0 {
					t.Errorf("%s depends on %v; it must stay free of sockets, TLS, metrics, nftables and the record", pkg, bad)
				}
			})
		}
	}
}

func forbidden(dep string) bool {
	for _, a := range allowedInPureCode {
		if dep == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(dep, a)) {
			return false
		}
	}
	for _, f := range forbiddenInPureCode {
		if dep == f || strings.HasPrefix(dep, strings.TrimSuffix(f, "/")+"/") {
			return true
		}
	}
	return false
}

// TestForbiddenMatchesItsOwnExamples keeps the rule above honest: it
// must catch each kind of dependency it is meant to catch.
func TestForbiddenMatchesItsOwnExamples(t *testing.T) {
	got := map[string]bool{}
	for _, dep := range []string{
		"net", "net/http", "crypto/tls", "github.com/prometheus/client_golang/prometheus",
		"github.com/google/nftables", "go.etcd.io/bbolt", "gopkg.in/mcuadros/go-syslog.v2",
		module + "/receiver", module + "/enforcer", module + "/enforcer/nft",
		"net/netip", "gopkg.in/mcuadros/go-syslog.v2/format", module + "/receiver/syslog",
		module + "/enforcer/policy", "regexp", "network/thing",
	} {
		got[dep] = forbidden(dep)
	}
	want := map[string]bool{
		"net": true, "net/http": true, "crypto/tls": true, "github.com/prometheus/client_golang/prometheus": true,
		"github.com/google/nftables": true, "go.etcd.io/bbolt": true, "gopkg.in/mcuadros/go-syslog.v2": true,
		module + "/receiver": true, module + "/enforcer": true, module + "/enforcer/nft": true,
		"net/netip": false, "gopkg.in/mcuadros/go-syslog.v2/format": false, module + "/receiver/syslog": false,
		module + "/enforcer/policy": false, "regexp": false, "network/thing": false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("forbidden (-want +got):\n%s", diff)
	}
}

// testOnly are packages of helpers for tests; no production package may
// import them.
var testOnly = []string{
	module + "/receiver/syslog/syslogtest",
	module + "/enforcer/nft/nftest",
	module + "/receiver/tlstest",
}

func TestTestHelpersOnlyInTests(t *testing.T) {
	lines := goList(t, runtime.GOOS, "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...")
	var bad []string
	for _, l := range lines {
		fields := strings.Fields(l)
		if len(fields) == 0 || slices.Contains(testOnly, fields[0]) {
			continue
		}
		for _, imp := range fields[1:] {
			if slices.Contains(testOnly, imp) {
				bad = append(bad, fields[0]+" imports "+imp)
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("production code imports test helpers: %v", bad)
	}
}

func goList(t *testing.T, goos string, args ...string) []string {
	t.Helper()
	// go test puts its own GOROOT/bin first on PATH (Go 1.19 and later).
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not on PATH: %v", err)
	}
	cmd := exec.Command(gobin, append([]string{"list"}, args...)...)
	cmd.Env = append(cmd.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", args, err, stderr)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}
