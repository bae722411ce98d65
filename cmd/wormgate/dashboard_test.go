package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/dryrun"
)

func TestDashboardConfigSilentAfter(t *testing.T) {
	tests := []struct {
		yaml    string
		want    time.Duration
		wantErr string
	}{
		{yaml: "", want: 5 * time.Minute},
		{yaml: "http:\n  dashboard:\n    silent_after: 90s\n", want: 90 * time.Second},
		{yaml: "http:\n  dashboard:\n    silent_after: 0s\n", wantErr: "http.dashboard.silent_after: 0s is out of range (1s-168h)"},
		{yaml: "http:\n  dashboard:\n    silent_after: 200h\n", wantErr: "http.dashboard.silent_after: 200h0m0s is out of range"},
		{yaml: "http:\n  dashboard:\n    silent_after: soon\n", wantErr: "silent_after"},
		{yaml: "http:\n  dashboard:\n    silent: 5m\n", wantErr: "silent"},
	}
	for _, tc := range tests {
		t.Run(tc.yaml, func(t *testing.T) {
			cfg, err := loadConfig(writeConfig(t, "enforcer:\n  dry_run: true\n"+tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("loadConfig: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.HTTP.Dashboard.SilentAfter; got != tc.want {
				t.Errorf("silent_after = %v, want %v", got, tc.want)
			}
		})
	}
}

// dashDaemon is serve in this process on the dry-run firewall (the fast
// tier), with its TCP syslog listener's address (and in http the status
// server's URL).
type dashDaemon struct {
	*controlDaemon
	syslog string
}

func startDashDaemon(t *testing.T, httpExtra, sections string) *dashDaemon {
	t.Helper()
	d := startControlDaemonWith(t, httpExtra, sections)
	var st struct {
		HTTP      string              `json:"http"`
		Listeners map[string][]string `json:"listeners"`
	}
	if err := newClient(d.socket).do(t.Context(), http.MethodGet, "/api/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	d.http = "http://" + st.HTTP
	return &dashDaemon{controlDaemon: d, syslog: st.Listeners["tcp"][0]}
}

// writeToken writes a token file as http.write_token_file wants it.
func writeToken(t testing.TB, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDashboardReadOnlyWithoutToken is acceptance 4: the page and every
// endpoint it uses answer reads to anyone, and every write the page can
// send is refused without the token (401), with a wrong one (403), and
// when no token is configured (403); nothing changes.
func TestDashboardReadOnlyWithoutToken(t *testing.T) {
	const tok = "dashboard-test-token-0123456789"
	d := startDashDaemon(t, "  write_token_file: "+writeToken(t, tok)+"\n", "")
	if _, _, errOut := d.cli(t, "ban", "203.0.113.50"); errOut != "" {
		t.Fatalf("ban over the socket: %s", errOut)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	do := func(method, path, auth, body string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, d.http+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header, string(b)
	}

	reads := []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `<script src="/ui/app.js"`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "/api/v1/timeline?range="},
		{"/ui/app.css", "text/css; charset=utf-8", ".silent"},
		{"/api/v1/dashboard", "application/json", `"writes":true`},
		{"/api/v1/timeline?range=7d", "application/json", `"step_seconds":3600`},
		{"/api/v1/bans?limit=50", "application/json", `"addr":"203.0.113.50"`},
		{"/api/v1/why/203.0.113.50", "application/json", `"manual ban"`},
	}
	for _, r := range reads {
		code, h, body := do(http.MethodGet, r.path, "", "")
		if code != http.StatusOK || h.Get("Content-Type") != r.ctype || !strings.Contains(body, r.contains) {
			t.Errorf("GET %s: %d %q, want 200 %q with %q:\n%.300s", r.path, code, h.Get("Content-Type"), r.ctype, r.contains, body)
		}
		if strings.HasPrefix(r.path, "/ui/") || r.path == "/" {
			if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
				t.Errorf("GET %s: Content-Security-Policy %q", r.path, csp)
			}
		}
	}
	for _, q := range []string{"range=2h", "range=1h&range=24h", "from=0"} {
		if code, _, _ := do(http.MethodGet, "/api/v1/timeline?"+q, "", ""); code != http.StatusBadRequest {
			t.Errorf("GET /api/v1/timeline?%s: %d, want 400", q, code)
		}
	}

	writes := []struct{ method, path, body string }{
		{http.MethodPost, "/api/v1/bans", `{"targets":["203.0.113.51"]}`},
		{http.MethodPost, "/api/v1/unban", `{"targets":["203.0.113.50"]}`},
		{http.MethodDelete, "/api/v1/bans/203.0.113.50", ""},
		{http.MethodPost, "/api/v1/allows", `{"targets":["203.0.113.50"]}`},
		{http.MethodPost, "/api/v1/reload", `{}`},
		{http.MethodGet, "/api/v1/auth", ""},
	}
	for _, w := range writes {
		if code, h, body := do(w.method, w.path, "", w.body); code != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s without a token: %d %s, want 401 with WWW-Authenticate", w.method, w.path, code, body)
		}
		if code, _, body := do(w.method, w.path, "not-the-token-at-all", w.body); code != http.StatusForbidden {
			t.Errorf("%s %s with a wrong token: %d %s, want 403", w.method, w.path, code, body)
		}
	}
	// The page's own routes take no writes at all.
	for _, p := range []string{"/", "/ui/app.js", "/api/v1/dashboard", "/api/v1/timeline"} {
		if code, _, _ := do(http.MethodPost, p, tok, "{}"); code != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 405", p, code)
		}
	}
	var page bansReply
	getJSON(t, hc, d.http+"/api/v1/bans?limit=0", &page)
	if page.Total != 1 {
		t.Errorf("%d bans after the refused writes, want the 1 made over the socket", page.Total)
	}
	if code, _, body := do(http.MethodGet, "/api/v1/auth", tok, ""); code != http.StatusOK || !strings.Contains(body, `"write":true`) {
		t.Errorf("GET /api/v1/auth with the token: %d %s", code, body)
	}

	// Without a configured token the page learns that writes are off,
	// and every write is refused.
	ro := startDashDaemon(t, "", "")
	var dash struct {
		Writes bool `json:"writes"`
	}
	resp, err := hc.Get(ro.http + "/api/v1/dashboard")
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(resp.Body); !strings.Contains(string(b), `"writes":false`) {
		t.Errorf("dashboard without a token file: %s, want writes false (%v)", b, dash.Writes)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, ro.http+"/api/v1/bans/203.0.113.50", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("DELETE without a configured token: %v %v, want 403", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
}

// TestDefaultListenIsLoopback: the dashboard is served by the status
// server only, whose default listener is loopback.
func TestDefaultListenIsLoopback(t *testing.T) {
	host, _, err := net.SplitHostPort(defaultConfig().HTTP.Listen)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("default http.listen %q is not loopback", defaultConfig().HTTP.Listen)
	}
}

// syslogLine formats a line as rsyslog's traditional forwarding format
// from host.
func syslogLine(host, prog string, pid int, text string) string {
	return fmt.Sprintf("<22>%s %s %s[%d]: %s", time.Now().Format(time.Stamp), host, prog, pid, text)
}

// rejectLines are the smtpd and cleanup lines of one rejected worm mail
// on host.
func rejectLines(host, qid, client string) []string {
	p := rejectPair(qid, client)
	return []string{syslogLine(host, "postfix/smtpd", 5320, p[0]), syslogLine(host, "postfix/cleanup", 5325, p[1])}
}

// dnsblLine is smtpd's reject of client for a DNS blocklist listing.
func dnsblLine(host, client string) string {
	return syslogLine(host, "postfix/smtpd", 5320, fmt.Sprintf("NOQUEUE: reject: RCPT from unknown[%s]: 554 5.7.1 Service unavailable; Client host [%s] blocked using zen.example.test; from=<a@b.example> to=<c@mx.example.test> proto=ESMTP helo=<x>", client, client))
}

// sendFrom sends lines over TCP from the local address src.
func sendFrom(t *testing.T, src, addr string, lines []string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(lfFrames(lines)); err != nil {
		t.Fatal(err)
	}
}

type timelineSnapshot struct {
	Range string `json:"range"`
	enforcer.Timeline
}

// TestDashboardOutbreak feeds an outbreak from two MX hosts (two
// loopback addresses) into serve over TCP and reads it back from the
// dashboard's endpoints: the ban counts, the per-rule timeline, each
// sender with its host name, and a sender turning silent.
func TestDashboardOutbreak(t *testing.T) {
	d := startDashDaemon(t, "  dashboard:\n    silent_after: 1s\n", "")
	var mx1, mx2 []string
	for i := range 6 {
		mx1 = append(mx1, rejectLines("mx1.example.test", fmt.Sprintf("A1%08X", i), fmt.Sprintf("203.0.113.%d", 10+i))...)
	}
	for i := range 3 {
		mx2 = append(mx2, rejectLines("mx2.example.test", fmt.Sprintf("B2%08X", i), fmt.Sprintf("2001:db8:7::%d", 1+i))...)
	}
	mx2 = append(mx2, dnsblLine("mx2.example.test", "198.51.100.5"), dnsblLine("mx2.example.test", "198.51.100.5"))
	sendFrom(t, "127.0.0.2", d.syslog, mx1)
	sendFrom(t, "127.0.0.3", d.syslog, mx2)

	hc := &http.Client{Timeout: 5 * time.Second}
	var dash dashReply
	deadline := time.Now().Add(10 * time.Second)
	for {
		getJSON(t, hc, d.http+"/api/v1/dashboard", &dash)
		// The family counts may be familiesTTL behind the total.
		if dash.Bans.Active == 10 && dash.Bans.V4+dash.Bans.V6 == 10 && len(dash.Senders) == 2 && dash.Senders[1].Messages == uint64(len(mx2)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard after 10s: %+v", dash)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if dash.Bans.V4 != 7 || dash.Bans.V6 != 3 || dash.Bans.LastHour != 10 {
		t.Errorf("bans %+v, want 7 IPv4, 3 IPv6, 10 new in the last hour", dash.Bans)
	}
	if dash.Rates.OffencesPerMin <= 0 {
		t.Errorf("offences/min %v, want the outbreak's", dash.Rates.OffencesPerMin)
	}
	if dash.Kernel.Available {
		t.Error("kernel counters available on the dry run")
	}
	got := map[string]string{}
	for _, s := range dash.Senders {
		got[s.Addr] = fmt.Sprintf("%s %d", s.Host, s.Messages)
	}
	want := map[string]string{"127.0.0.2": fmt.Sprintf("mx1.example.test %d", len(mx1)), "127.0.0.3": fmt.Sprintf("mx2.example.test %d", len(mx2))}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("senders (-want +got):\n%s", diff)
	}

	var tl timelineSnapshot
	getJSON(t, hc, d.http+"/api/v1/timeline?range=24h", &tl)
	totals := map[string][2]uint64{}
	for _, rs := range tl.Rules {
		totals[rs.Rule] = [2]uint64{rs.TotalOffences, rs.TotalBans}
		if len(rs.Offences) != 288 || len(rs.Bans) != 288 {
			t.Errorf("%s: %d and %d buckets, want 288", rs.Rule, len(rs.Offences), len(rs.Bans))
		}
	}
	if diff := cmp.Diff(map[string][2]uint64{"worm-signature": {9, 9}, "dnsbl-listed": {2, 1}}, totals); diff != "" {
		t.Errorf("timeline offences/bans per rule (-want +got):\n%s", diff)
	}
	if tl.Range != "24h" || tl.StepSeconds != 300 {
		t.Errorf("timeline range %q step %v", tl.Range, tl.StepSeconds)
	}

	// mx1 goes on sending, mx2 stays silent past silent_after.
	time.Sleep(1200 * time.Millisecond)
	sendFrom(t, "127.0.0.2", d.syslog, []string{syslogLine("mx1.example.test", "postfix/qmgr", 77, "A100000000: removed")})
	deadline = time.Now().Add(5 * time.Second)
	for {
		getJSON(t, hc, d.http+"/api/v1/dashboard", &dash)
		silent := map[string]bool{}
		for _, s := range dash.Senders {
			silent[s.Host] = s.Silent
		}
		if diff := cmp.Diff(map[string]bool{"mx1.example.test": false, "mx2.example.test": true}, silent); diff == "" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("silent senders (-want +got):\n%s", diff)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDashboardKernelRates: the kernel panel's points are rates between
// samples; a counter that went down (rules recreated) counts from zero,
// and the senders' messages per minute come from the sample a minute
// old.
func TestDashboardKernelRates(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 18, 0, 0, 0, time.UTC)
	d := newTestDashboard(t, map[string]senderStat{"192.0.2.25": {Host: "mx1", First: t0, Last: t0.Add(60 * time.Second), Messages: 700}})
	cfg := d.st.cfg.Load()
	for i, s := range []struct {
		packets float64
		msgs    uint64
	}{{100, 100}, {200, 200}, {700, 400}, {50, 600}} {
		d.samples = append(d.samples, dashSample{T: t0.Add(time.Duration(i) * 20 * time.Second), Kernel: true, Packets: s.packets,
			Bytes: 60 * s.packets, Messages: float64(s.msgs), Senders: map[string]uint64{"192.0.2.25": s.msgs}})
	}
	d.next = len(d.samples)
	rep := d.reply(t0.Add(70 * time.Second))
	var pts []string
	for _, p := range rep.Kernel.Points {
		pts = append(pts, fmt.Sprintf("%s %g/s %g B/s", p.T.Format("15:04:05"), p.Packets, p.Bytes))
	}
	want := []string{"18:00:20 5/s 300 B/s", "18:00:40 25/s 1500 B/s", "18:01:00 2.5/s 150 B/s"}
	if diff := cmp.Diff(want, pts); diff != "" {
		t.Errorf("kernel points (-want +got):\n%s", diff)
	}
	if !rep.Kernel.Available || rep.Rates.KernelPacketsPerSec != 2.5 {
		t.Errorf("kernel available %v, rate %v; want true, 2.5", rep.Kernel.Available, rep.Rates.KernelPacketsPerSec)
	}
	// The senders sent 700 by now (18:01:10) and 100 by the newest
	// sample a minute old (18:00:00).
	if math.Abs(rep.Rates.MessagesPerSec-600.0/70) > 1e-9 {
		t.Errorf("messages/s %v, want %v", rep.Rates.MessagesPerSec, 600.0/70)
	}
	// The sender: 700 now against 100 at 18:00:00, 70 s ago.
	if s := rep.Senders[0]; math.Abs(s.PerMin-600.0/70*60) > 1e-9 || s.Silent || s.SilentSeconds != 10 {
		t.Errorf("sender %+v, want 514.3/min, silent for 10s, not red", s)
	}
	rep = d.reply(t0.Add(60*time.Second + cfg.HTTP.Dashboard.SilentAfter + time.Second))
	if !rep.Senders[0].Silent {
		t.Errorf("sender silent for silent_after and a second is not red: %+v", rep.Senders[0])
	}
}

func TestSumCounters(t *testing.T) {
	c := map[string]float64{
		"wormgate_syslog_dropped_total{reason=parse_error,transport=udp}":   3,
		"wormgate_syslog_dropped_total{reason=parse_error,transport=tcp}":   4,
		"wormgate_syslog_dropped_total{reason=sender_denied,transport=udp}": 100,
		"wormgate_syslog_dropped_totally":                                   1000,
		"wormgate_syslog_messages_total{transport=udp}":                     10,
	}
	got := []float64{
		sumCounters(c, "wormgate_syslog_dropped_total", "reason=parse_error"),
		sumCounters(c, "wormgate_syslog_dropped_total", ""),
		sumCounters(c, "wormgate_syslog_messages_total", ""),
		sumCounters(c, "wormgate_nothing", ""),
	}
	if diff := cmp.Diff([]float64{7, 107, 10, 0}, got); diff != "" {
		t.Errorf("sums (-want +got):\n%s", diff)
	}
}

// TestDashboardSampleRing: the ring keeps the newest sampleKeep samples,
// oldest first.
func TestDashboardSampleRing(t *testing.T) {
	d := newTestDashboard(t, nil)
	t0 := time.Now()
	n := 0
	d.now = func() time.Time { n++; return t0.Add(time.Duration(n) * time.Second) }
	for range sampleKeep + 5 {
		d.sample()
	}
	got := d.ordered()
	if len(got) != sampleKeep || !got[0].T.Equal(t0.Add(6*time.Second)) || !got[len(got)-1].T.Equal(t0.Add((sampleKeep+5)*time.Second)) {
		t.Errorf("%d samples from %v to %v", len(got), got[0].T.Sub(t0), got[len(got)-1].T.Sub(t0))
	}
	if !slices.IsSortedFunc(got, func(a, b dashSample) int { return a.T.Compare(b.T) }) {
		t.Error("samples out of order")
	}
}

// newTestDashboard is a dashboard over the default config, a dry-run
// enforcer and a fixed set of senders, for the unit tier.
func newTestDashboard(t *testing.T, senders map[string]senderStat) *dashboard {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cfg := defaultConfig()
	reg := prometheus.NewRegistry()
	enf, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), dryrun.New(log), log, reg)
	if err != nil {
		t.Fatal(err)
	}
	var cp atomic.Pointer[Config]
	cp.Store(&cfg)
	st := &status{cfg: &cp, enf: enf, reg: reg, firewall: "nftables", lastReload: new(atomic.Pointer[reloadResult]),
		senders: func() map[string]senderStat { return senders }}
	return newDashboard(st, func() bool { return false }, log)
}
