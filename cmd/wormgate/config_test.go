package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wormgate/wormgate/matcher"
)

// regexpEq compares compiled patterns by their source text.
var regexpEq = cmp.Comparer(func(a, b matcher.Regexp) bool {
	if a.Regexp == nil || b.Regexp == nil {
		return a.Regexp == b.Regexp
	}
	return a.String() == b.String()
})

func TestDefaultYAMLIsTheDefault(t *testing.T) {
	var got Config
	if err := decodeStrict(defaultYAML, &got); err != nil {
		t.Fatalf("embedded default.yaml: %v", err)
	}
	if diff := cmp.Diff(defaultConfig(), got, regexpEq, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("default.yaml differs from defaultConfig() (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("default config invalid: %v", err)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "wormgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigOverDefaults(t *testing.T) {
	p := writeConfig(t, "enforcer:\n  ban_for: 2h\n  nftables:\n    ports: []\nreceiver:\n  allowed_senders: [198.51.100.25/32]\n")
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.Enforcer.BanFor = 2 * time.Hour
	want.Enforcer.NFTables.Ports = []uint16{}
	want.Receiver.AllowedSenders = cfg.Receiver.AllowedSenders
	if diff := cmp.Diff(want, cfg, regexpEq, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("loaded config (-want +got):\n%s", diff)
	}
	if got := cfg.Receiver.AllowedSenders; len(got) != 1 || got[0].String() != "198.51.100.25/32" {
		t.Errorf("allowed_senders = %v", got)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"unknown field", "enforcer:\n  bantime: 1h\n", "bantime"},
		{"bad duration", "enforcer:\n  ban_for: soon\n", "soon"},
		{"bad prefix", "receiver:\n  allowed_senders: [10.0.0.300/8]\n", "10.0.0.300"},
		{"invalid value", "enforcer:\n  ban_for: 0s\n", "enforcer.ban_for"},
		{"bad regex", "matcher:\n  rules:\n    - name: x\n      pattern: '('\n      threshold: 1\n      window: 1h\n", "("},
		{"bad log format", "log:\n  format: xml\n", "log.format"},
		{"bad http listen", "http:\n  listen: nowhere\n", "http.listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body)
			_, err := loadConfig(p)
			if err == nil {
				t.Fatal("loadConfig() = nil error")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("loadConfig() = %v, want it to name %q and the file", err, tt.want)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	bad := writeConfig(t, "enforcer:\n  nonsense: 1\n")
	tests := []struct {
		name string
		args []string
		want int
		out  string
	}{
		{"no args", nil, exitUsage, ""},
		{"unknown command", []string{"frobnicate"}, exitUsage, ""},
		{"help", []string{"--help"}, exitOK, "Usage:"},
		{"serve help", []string{"serve", "--help"}, exitOK, ""},
		{"check help", []string{"check", "--help"}, exitOK, ""},
		{"bad flag", []string{"serve", "--nope"}, exitUsage, ""},
		{"bad config", []string{"serve", "--config", bad}, exitUsage, ""},
		{"missing config", []string{"check", "--config", "/nonexistent/wormgate.yaml", "-"}, exitUsage, ""},
		{"check without files", []string{"check"}, exitUsage, ""},
		{"check missing file", []string{"check", "/nonexistent/maillog"}, exitFailure, ""},
		{"version", []string{"version"}, exitOK, "wormgate "},
		{"config", []string{"config"}, exitOK, "allowed_senders:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(t.Context(), tt.args, strings.NewReader(""), &stdout, &stderr)
			if got != tt.want {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.args, got, tt.want, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.out) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.out)
			}
		})
	}
}
