package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"

	"github.com/wormgate/wormgate/enforcer/fleet/natstest"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// wormgateBinary builds the real binary once per test run: the end-to-end
// tests run it as an operator would, in its own namespace.
func wormgateBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wormgate-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "wormgate")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	natstest.Cleanup()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// daemon is a `wormgate serve` process running in a namespace.
type daemon struct {
	// socket is the daemon's control socket, one per daemon.
	socket string
	ns     *nftest.NS
	cmd    *exec.Cmd
	log    *bytes.Buffer
	logMu  *sync.Mutex
	done   chan struct{}
	client *http.Client
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func startDaemon(t testing.TB, ns *nftest.NS, args ...string) *daemon {
	t.Helper()
	bin := wormgateBinary(t)
	d := &daemon{ns: ns, log: &bytes.Buffer{}, logMu: &sync.Mutex{}, done: make(chan struct{})}
	d.socket = shortSocket(t)
	d.cmd = ns.Command(context.Background(), bin, append([]string{"serve"}, args...)...)
	d.cmd.Env = append(os.Environ(), socketEnv+"="+d.socket)
	d.cmd.Stdout = lockedWriter{d.logMu, d.log}
	d.cmd.Stderr = lockedWriter{d.logMu, d.log}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("wormgate log:\n%s", d.logText())
		}
	})
	d.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: ns.Dial}}
	// Generous: under the race detector and the other packages' tests on
	// two cores, a start with a big record can take seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := d.client.Get("http://127.0.0.1:9514/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case <-d.done:
			t.Fatalf("wormgate exited during start-up: %v\n%s", d.cmd.ProcessState, d.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("wormgate not healthy after 30s: %v\n%s", err, d.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shortSocket is a socket path for a test: unix socket paths are limited
// to 107 bytes, which t.TempDir's long names can exceed.
func shortSocket(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "control.sock")
}

// stateDirConfig is a config file that changes only enforcer.state_dir,
// to a temporary directory (tests never write the host's /var/lib), and
// the further enforcer settings in extra ("key: value").
func stateDirConfig(t testing.TB, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "wormgate.yaml")
	body := fmt.Sprintf("enforcer:\n  state_dir: %s\n", filepath.Join(dir, "state"))
	for _, e := range extra {
		body += "  " + e + "\n"
	}
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (d *daemon) logText() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.log.String()
}

func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// counters reads the flattened wormgate_ metrics from /api/v1/status.
func (d *daemon) counters(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := d.client.Get("http://127.0.0.1:9514/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Counters map[string]float64 `json:"counters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Counters
}

// kernelAddrs lists the blocked addresses, read with the nft tool.
func kernelAddrs(t *testing.T, ns *nftest.NS) []string {
	t.Helper()
	m, err := nftest.Blocked(ns.Name, "wormgate")
	if err != nil {
		t.Fatal(err)
	}
	addrs := slices.Collect(maps.Keys(m))
	slices.Sort(addrs)
	return addrs
}

// waitKernel polls until every address in want is in the kernel sets.
func waitKernel(t *testing.T, ns *nftest.NS, want ...string) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := kernelAddrs(t, ns)
		missing := slices.DeleteFunc(slices.Clone(want), func(a string) bool { return slices.Contains(got, a) })
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("not in the kernel after 5s: %v (have %v)", missing, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rejectPair is what smtpd and cleanup log for one rejected worm mail.
func rejectPair(qid, client string) [2]string {
	return [2]string{
		fmt.Sprintf("%s: client=unknown[%s]", qid, client),
		fmt.Sprintf("%s: reject: header Subject: Re: Details from unknown[%s]; from=<a@worm.example> to=<postmaster@mx.example.test> proto=ESMTP helo=<vm>: 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus", qid, client),
	}
}

// traditional formats a line as rsyslog's RSYSLOG_TraditionalForwardFormat.
func traditional(prog string, pid int, text string) string {
	return fmt.Sprintf("<22>%s mx1 %s[%d]: %s", time.Now().Format(time.Stamp), prog, pid, text)
}

// rfc5424 formats a line as RSYSLOG_SyslogProtocol23Format with
// permitSlashInProgramName.
func rfc5424(prog string, pid int, text string) string {
	// rsyslog writes microseconds; RFC 5424 allows no more than six digits.
	return fmt.Sprintf("<22>1 %s mx1 %s %d - - %s", time.Now().Format("2006-01-02T15:04:05.000000Z07:00"), prog, pid, text)
}

func pairLines(format func(string, int, string) string, qid, client string) []string {
	p := rejectPair(qid, client)
	return []string{format("postfix/smtpd", 5320, p[0]), format("postfix/cleanup", 5325, p[1])}
}

func sendTCP(t *testing.T, ns *nftest.NS, addr string, payload []byte) {
	t.Helper()
	c, err := ns.Dial(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
}

func lfFrames(lines []string) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func octetFrames(lines []string) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		fmt.Fprintf(&b, "%d %s", len(l), l)
	}
	return b.Bytes()
}

func sendUDP(t *testing.T, ns *nftest.NS, addr string, datagrams ...string) {
	t.Helper()
	c, err := ns.Dial(t.Context(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
		// The matcher needs client= before the cleanup line; UDP has no
		// order guarantee across sockets, but one socket on loopback keeps it.
	}
}

// sampleLines turns the sample file (as rsyslog writes it to disk) into
// the default forwarding template's wire form.
func sampleLines(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range syslogtest.SampleLines() {
		ts, rest, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		tm, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, "<22>"+tm.Format(time.Stamp)+" "+rest)
	}
	if len(out) == 0 {
		t.Fatal("empty sample")
	}
	return out
}

func TestServeEndToEnd(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	gw := nftest.NewNS(t)
	outside := nftest.NewNS(t)
	nftest.Link(t,
		gw, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64")},
		outside, []netip.Prefix{netip.MustParsePrefix("192.0.2.66/24"), netip.MustParsePrefix("2001:db8::66/64")})

	// The gateway's own firewall, which wormgate must never touch.
	gw.Run(t, "nft", foreignRuleset)
	foreignBefore := foreignTables(t, gw)

	// The embedded default (syslog on :514, HTTP on 127.0.0.1:9514) with
	// the record in a temporary directory instead of the host's /var/lib.
	cfg := stateDirConfig(t)
	d := startDaemon(t, gw, "--config", cfg)
	const syslogAddr = "127.0.0.1:514"

	t.Run("tcp traditional", func(t *testing.T) {
		sendTCP(t, gw, syslogAddr, lfFrames(pairLines(traditional, "AB10000001", "203.0.113.10")))
		waitKernel(t, gw, "203.0.113.10")
	})
	t.Run("udp traditional", func(t *testing.T) {
		sendUDP(t, gw, syslogAddr, pairLines(traditional, "AB10000002", "203.0.113.11")...)
		waitKernel(t, gw, "203.0.113.11")
	})
	t.Run("tcp rfc5424 octet-counted", func(t *testing.T) {
		sendTCP(t, gw, syslogAddr, octetFrames(pairLines(rfc5424, "AB10000003", "203.0.113.12")))
		waitKernel(t, gw, "203.0.113.12")
	})
	t.Run("tcp rfc5424 from /dev/log with two spaces", func(t *testing.T) {
		lines := pairLines(rfc5424, "AB1000000B", "203.0.113.14")
		for i, l := range lines {
			lines[i] = strings.Replace(l, " - - ", " - -  ", 1)
		}
		sendTCP(t, gw, syslogAddr, octetFrames(lines))
		waitKernel(t, gw, "203.0.113.14")
	})
	t.Run("udp rfc5424 ipv6 sender and client", func(t *testing.T) {
		sendUDP(t, gw, "[::1]:514", pairLines(rfc5424, "AB10000004", "2001:db8:1::13")...)
		waitKernel(t, gw, "2001:db8:1::13")
	})
	t.Run("sample decoys", func(t *testing.T) {
		sendTCP(t, gw, syslogAddr, lfFrames(sampleLines(t)))
		got := waitKernel(t, gw, "203.0.113.66", "2001:db8:66::66")
		for _, a := range got {
			if strings.HasPrefix(a, "192.0.2.") {
				t.Errorf("decoy %s blocked", a)
			}
		}
	})
	t.Run("sender outside allowed_senders is dropped in the kernel", func(t *testing.T) {
		before := d.counters(t)
		sendUDP(t, outside, "192.0.2.1:514", pairLines(traditional, "AB10000005", "203.0.113.77")...)
		// The SYN itself is dropped: no connection, nothing to read.
		dctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		c, err := outside.Dial(dctx, "tcp", "192.0.2.1:514")
		cancel()
		if err == nil {
			c.Close()
			t.Error("a sender outside allowed_senders connected to the syslog port")
		}
		// An allowed pair sent afterwards on each transport shows that
		// the refused ones had their chance to be processed.
		sendUDP(t, gw, syslogAddr, pairLines(traditional, "AB10000007", "203.0.113.78")...)
		sendTCP(t, gw, syslogAddr, lfFrames(pairLines(traditional, "AB10000008", "203.0.113.79")))
		got := waitKernel(t, gw, "203.0.113.78", "203.0.113.79")
		if slices.Contains(got, "203.0.113.77") {
			t.Error("a sender outside allowed_senders banned 203.0.113.77")
		}
		after := d.counters(t)
		k := `wormgate_syslog_guard_dropped_packets_total{reason=sender}`
		if after[k]-before[k] < 3 {
			t.Errorf("%s rose by %v, want the 2 datagrams and at least 1 SYN", k, after[k]-before[k])
		}
	})
	t.Run("bad input", func(t *testing.T) {
		before := d.counters(t)
		bad := [][]byte{
			[]byte("<13>\n"),
			[]byte("<13>Jan  2 15:04:05 host\n"),
			[]byte("-1 x"),
			append(bytes.Repeat([]byte("A"), 100<<10), '\n'),
			{0x00, 0xff, 0xfe, '<', '9', '9', '9', '>', 0x01, '\n', 0x80, 0x81},
			[]byte("120 <22>Nov 26 18:19:13 mx1 postfix/smtpd[1]: half"),
			[]byte("99999999999999999999 x"),
		}
		udpBad := 0
		for _, b := range bad {
			sendTCP(t, gw, syslogAddr, b)
			if len(b) < 65000 { // larger ones cannot be a datagram at all
				sendUDP(t, gw, syslogAddr, string(b))
				udpBad++
			}
		}
		sendTCP(t, gw, syslogAddr, lfFrames(pairLines(traditional, "AB10000009", "203.0.113.90")))
		sendUDP(t, gw, syslogAddr, pairLines(traditional, "AB1000000A", "203.0.113.91")...)
		waitKernel(t, gw, "203.0.113.90", "203.0.113.91")
		if !d.alive() {
			t.Fatal("wormgate died on bad input")
		}
		after := d.counters(t)
		var dropped float64
		for k, v := range after {
			if strings.HasPrefix(k, "wormgate_syslog_dropped_total{") && !strings.Contains(k, "sender_denied") {
				dropped += v - before[k]
			}
		}
		// Every bad input on both transports is counted at least once.
		if want := float64(len(bad) + udpBad); dropped < want {
			t.Errorf("bad inputs counted = %v, want at least %v: %v", dropped, want, after)
		}
	})
	t.Run("sigterm with idle senders", func(t *testing.T) {
		for range 3 {
			c, err := gw.Dial(t.Context(), "tcp", syslogAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		before := kernelAddrs(t, gw)
		start := time.Now()
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			t.Fatal("wormgate still running 5s after SIGTERM")
		}
		t.Logf("stopped in %v", time.Since(start))
		if code := d.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("exit code %d after SIGTERM, want 0", code)
		}
		if diff := cmpStrings(before, kernelAddrs(t, gw)); diff != "" {
			t.Errorf("kernel bans changed by the shutdown (-before +after):\n%s", diff)
		}
		// A restart adopts the table: the bans are there before and after.
		d2 := startDaemon(t, gw, "--config", cfg)
		if diff := cmpStrings(before, kernelAddrs(t, gw)); diff != "" {
			t.Errorf("kernel bans changed by the restart (-before +after):\n%s", diff)
		}
		_ = d2
	})
	t.Run("other tables unchanged", func(t *testing.T) {
		if diff := cmp.Diff(foreignBefore, foreignTables(t, gw)); diff != "" {
			t.Errorf("tables other than inet wormgate changed (-before +after):\n%s", diff)
		}
	})
}

// foreignRuleset is an operator's own firewall: filter and NAT tables in
// several families, with sets, maps and counters.
const foreignRuleset = `
table inet filter {
	set trusted { type ipv4_addr; elements = { 198.51.100.1, 198.51.100.2 } }
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @trusted accept
		tcp dport 22 accept
	}
	chain forward { type filter hook forward priority filter; policy accept; }
}
table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
}
table ip6 raw6 {
	chain prerouting { type filter hook prerouting priority raw; policy accept; }
}
`

// foreignTables lists every table but wormgate's, as nft prints them.
func foreignTables(t *testing.T, ns *nftest.NS) map[string]string {
	t.Helper()
	out := map[string]string{}
	for line := range strings.Lines(ns.Run(t, "nft", "list", "tables")) {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "table" || (f[1] == "inet" && f[2] == "wormgate") {
			continue
		}
		out[f[1]+" "+f[2]] = ns.Run(t, "nft", "list", "table", f[1], f[2])
	}
	if len(out) != 3 {
		t.Fatalf("foreign tables = %v, want the 3 of foreignRuleset", out)
	}
	return out
}

func cmpStrings(a, b []string) string {
	var sb strings.Builder
	for _, x := range a {
		if !slices.Contains(b, x) {
			fmt.Fprintf(&sb, "-%s\n", x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			fmt.Fprintf(&sb, "+%s\n", x)
		}
	}
	return sb.String()
}
