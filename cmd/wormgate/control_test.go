package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// controlDaemon is serve running in this process on the dry-run
// firewall, with its listeners on loopback port 0 and its control socket
// in a temporary directory: the fast tier of the control API's tests.
type controlDaemon struct {
	socket string
	http   string
	stop   func()
}

// httpExtra are more lines of the http section.
func startControlDaemon(t *testing.T, httpExtra string) *controlDaemon {
	t.Helper()
	return startControlDaemonWith(t, httpExtra, "")
}

// startControlDaemonWith takes more lines of the http section and more
// sections.
func startControlDaemonWith(t *testing.T, httpExtra, sections string) *controlDaemon {
	t.Helper()
	sock := shortSocket(t)
	body := "receiver:\n  udp_listen: [\"127.0.0.1:0\"]\n  tcp_listen: [\"127.0.0.1:0\"]\nenforcer:\n  dry_run: true\nhttp:\n  listen: 127.0.0.1:0\n" + httpExtra + sections
	path := writeConfig(t, body)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Control.Socket = sock
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logBuf bytes.Buffer
	logMu := &sync.Mutex{}
	log := slog.New(slog.NewTextHandler(lockedWriter{mu: logMu, w: &logBuf}, nil))
	t.Cleanup(func() {
		if t.Failed() {
			logMu.Lock()
			t.Logf("daemon log:\n%s", logBuf.String())
			logMu.Unlock()
		}
	})
	go func() { done <- serve(ctx, cfg, path, log) }()
	d := &controlDaemon{socket: sock}
	d.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(func() {
		select {
		case <-ctx.Done():
		default:
			d.stop()
		}
	})
	c := newClient(sock)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st struct {
			Ready     bool                `json:"firewall_ready"`
			Listeners map[string][]string `json:"listeners"`
		}
		err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &st)
		if err == nil && st.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

// cli runs a wormgate command against d and returns its exit code and
// output.
func (d *controlDaemon) cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append([]string{args[0], "--socket", d.socket}, args[1:]...)
	code := run(t.Context(), full, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestControlBadInput: every bad argument of the control commands is a
// one-line error naming it, exit 2, and changes nothing.
func TestControlBadInput(t *testing.T) {
	d := startControlDaemon(t, "")
	if code, _, errOut := d.cli(t, "allow", "192.0.2.0/24"); code != exitOK {
		t.Fatalf("allow: exit %d: %s", code, errOut)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ban"}, "no address or prefix to ban given"},
		{[]string{"ban", "not-an-ip"}, `"not-an-ip" is not an IP address or prefix`},
		{[]string{"ban", "203.0.113.7/24"}, "has host bits set (did you mean 203.0.113.0/24?)"},
		{[]string{"ban", "fe80::1%eth0"}, "zone"},
		{[]string{"ban", "0.0.0.0/0"}, "prefix too wide (the widest allowed is /24)"},
		{[]string{"ban", "203.0.0.0/16"}, "prefix too wide"},
		{[]string{"ban", "2001:db8::/32"}, "prefix too wide (the widest allowed is /48)"},
		{[]string{"ban", "127.0.0.1"}, "on the never-block list (127.0.0.0/8)"},
		{[]string{"ban", "192.0.2.77"}, "on the never-block list (192.0.2.0/24)"},
		{[]string{"ban", "203.0.113.7", "--for", "banana"}, `--for "banana" is not a positive duration`},
		{[]string{"ban", "203.0.113.7", "--for", "-1h"}, "not a positive duration"},
		{[]string{"ban", "203.0.113.7", "--for", "400d"}, "duration out of range"},
		{[]string{"ban", "203.0.113.7", "--reason", strings.Repeat("x", 201)}, "--reason: longer than 200 bytes"},
		{[]string{"ban", "--frobnicate", "203.0.113.7"}, "flag provided but not defined: -frobnicate"},
		{[]string{"unban", "203.0.113.99"}, "203.0.113.99/32: not banned"},
		{[]string{"unban"}, "no address or prefix to unban given"},
		{[]string{"allow", "0.0.0.0/0"}, "prefix too wide"},
		{[]string{"allow", "198.51.100.1", "--for", "0s"}, "not a positive duration"},
		{[]string{"disallow", "203.0.113.0/24"}, "203.0.113.0/24: not an allow entry"},
		{[]string{"why", "203.0.113.0/24"}, `"203.0.113.0/24" is not an IP address`},
		{[]string{"why", "192.0.2.1", "192.0.2.2"}, "why takes one address"},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"reload", "extra"}, `unexpected argument "extra"`},
		{[]string{"bans", "extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := d.cli(t, tc.args...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitUsage, tc.want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n"); lines > 0 && !strings.Contains(errOut, "Usage:") {
				t.Errorf("error of %d lines, want one: %q", lines+1, errOut)
			}
		})
	}
	code, out, _ := d.cli(t, "bans", "--json")
	if code != exitOK || strings.TrimSpace(out) != "[]" {
		t.Errorf("after the refused commands, bans = %d %q; want none", code, out)
	}
	// No daemon: exit 1 and a hint.
	var errOut bytes.Buffer
	if code := run(t.Context(), []string{"status", "--socket", filepath.Join(t.TempDir(), "none.sock")}, nil, io.Discard, &errOut); code != exitFailure || !strings.Contains(errOut.String(), "not running?") {
		t.Errorf("status without a daemon: exit %d, %q", code, errOut.String())
	}
}

// TestControlCommands walks the commands through a ban's life on the
// dry-run firewall; the kernel and restarts are the end-to-end test's.
func TestControlCommands(t *testing.T) {
	d := startControlDaemon(t, "")
	run := func(args ...string) string {
		t.Helper()
		code, out, errOut := d.cli(t, args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	if out := run("ban", "203.0.113.70", "--for", "1h", "--reason", "test ban"); !strings.Contains(out, "banned 203.0.113.70/32") {
		t.Errorf("ban printed %q", out)
	}
	run("ban", "198.51.100.0/24", "--for", "2d")
	out := run("bans")
	for _, want := range []string{"203.0.113.70", "manual", "test ban", "198.51.100.0/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("bans output lacks %q:\n%s", want, out)
		}
	}
	out = run("why", "203.0.113.70")
	for _, want := range []string{"203.0.113.70 is banned until", "manual: test ban", "manual ban", "by uid"} {
		if !strings.Contains(out, want) {
			t.Errorf("why output lacks %q:\n%s", want, out)
		}
	}
	if out := run("unban", "203.0.113.70", "198.51.100.0/24"); !strings.Contains(out, "unbanned 203.0.113.70/32") || !strings.Contains(out, "unbanned 198.51.100.0/24") {
		t.Errorf("unban printed %q", out)
	}
	if out := run("bans", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("bans after unban: %s", out)
	}
	if out := run("allow", "203.0.113.0/24", "--reason", "partner"); !strings.Contains(out, "allowed 203.0.113.0/24") {
		t.Errorf("allow printed %q", out)
	}
	if out := run("why", "203.0.113.9"); !strings.Contains(out, "never blocked (203.0.113.0/24, allowed by uid") || !strings.Contains(out, "partner") {
		t.Errorf("why inside an allow: %q", out)
	}
	run("disallow", "203.0.113.0/24")
	out = run("status")
	for _, want := range []string{"firewall", "dry-run", "ready", "bans"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// TestControlAPI: the HTTP side of bad input: body limits, unknown
// fields, and the status server's token.
func TestControlAPI(t *testing.T) {
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("s3cret-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startControlDaemon(t, "  write_token_file: "+tokFile+"\n")
	sockClient := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
	}}}
	post := func(c *http.Client, url, body, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"too big", `{"targets":["` + strings.Repeat("1", 10000) + `"]}`, http.StatusRequestEntityTooLarge, "larger than"},
		{"unknown field", `{"targets":["203.0.113.1"],"forever":true}`, http.StatusBadRequest, "unknown field"},
		{"not JSON", `ban 203.0.113.1`, http.StatusBadRequest, "body"},
		{"no targets", `{}`, http.StatusBadRequest, "no address or prefix"},
		{"bad target", `{"targets":["203.0.113.300"]}`, http.StatusBadRequest, "not an IP address or prefix"},
		{"bad duration", `{"targets":["203.0.113.1"],"for":"soon"}`, http.StatusBadRequest, "not a positive duration"},
		{"never-block", `{"targets":["::1"]}`, http.StatusBadRequest, "never-block"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(sockClient, "http://wormgate/api/v1/bans", tc.body, "")
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("POST /api/v1/bans %s = %d %s, want %d with %q", tc.name, code, body, tc.code, tc.want)
			}
		})
	}

	// The status server: read-only without the token.
	addr := d.httpAddr(t)
	ban := `{"targets":["203.0.113.5"],"for":"1h"}`
	if code, body := post(http.DefaultClient, "http://"+addr+"/api/v1/bans", ban, ""); code != http.StatusUnauthorized {
		t.Errorf("write without a token = %d %s, want 401", code, body)
	}
	if code, body := post(http.DefaultClient, "http://"+addr+"/api/v1/bans", ban, "wrong-token-0123456789"); code != http.StatusForbidden {
		t.Errorf("write with a wrong token = %d %s, want 403", code, body)
	}
	if code, body := post(http.DefaultClient, "http://"+addr+"/api/v1/bans", ban, "s3cret-token-0123456789"); code != http.StatusOK || !strings.Contains(body, "203.0.113.5/32") {
		t.Errorf("write with the token = %d %s, want 200", code, body)
	}
	resp, err := http.Get("http://" + addr + "/api/v1/why/203.0.113.5")
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Events []struct{ Detail string } `json:"events"`
	}
	if err := json.Unmarshal(readAll(resp.Body), &w); err != nil || len(w.Events) != 1 || !strings.Contains(w.Events[0].Detail, "by token") {
		t.Errorf("why after a token write = %+v, %v; want the event by token", w, err)
	}
}

// httpAddr is the status server's bound address, from the daemon's
// status over the socket.
func (d *controlDaemon) httpAddr(t *testing.T) string {
	t.Helper()
	var raw map[string]any
	if err := newClient(d.socket).do(t.Context(), http.MethodGet, "/api/v1/status", nil, &raw); err != nil {
		t.Fatal(err)
	}
	a, _ := raw["http"].(string)
	if a == "" {
		t.Fatalf("status has no http address: %v", raw)
	}
	return a
}
