package lab

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

const (
	mx4 = "192.0.2.25"
	mx6 = "2001:db8:25::25"
	// A SYN that gets no answer within this long was dropped: in the lab
	// an open port answers in well under a millisecond.
	synTimeout = 150 * time.Millisecond
)

// lab is one running lab.sh instance.
type lab struct {
	dir string
	bin string            // the wormgate binary
	ns  map[string]string // worm, clean, gw, mx -> namespace name
}

// socket is the gateway's control socket (lab.sh sets WORMGATE_SOCKET).
func (l *lab) socket() string { return filepath.Join(l.dir, "gw", "control.sock") }

type whyEvent struct {
	Host    string `json:"host"`
	QueueID string `json:"queue_id"`
	Kind    string `json:"kind"`
	Rule    string `json:"rule"`
	Text    string `json:"text"`
	Verdict string `json:"verdict"`
}

// why runs `wormgate why ADDR --json` against the gateway.
func (l *lab) why(t *testing.T, addr string) struct{ Events []whyEvent } {
	t.Helper()
	out, err := exec.Command(l.bin, "why", addr, "--json", "--socket", l.socket()).Output()
	if err != nil {
		t.Fatalf("wormgate why %s: %v\n%s", addr, err, out)
	}
	var w struct{ Events []whyEvent }
	if err := json.Unmarshal(out, &w); err != nil {
		t.Fatalf("wormgate why %s: %v\n%s", addr, err, out)
	}
	return w
}

// logLine returns the first line of file holding every sub.
func (l *lab) logLine(t *testing.T, file string, subs ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, file))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if containsAll(line, subs) {
			return strings.TrimSpace(line)
		}
	}
	t.Fatalf("no line with %q in %s", subs, file)
	return ""
}

func buildWormgate(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "wormgate")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/wormgate").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startLab(t *testing.T) *lab {
	t.Helper()
	nftest.Require(t, "ip", "nft", "postfix", "rsyslogd", "swaks", "unshare", "go")
	// Not t.TempDir: Postfix's unprivileged processes must traverse the
	// path to their queue, and lab.sh refuses a non-empty directory.
	base, err := os.MkdirTemp("", "wormgate-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := buildWormgate(t, base)
	l := &lab{dir: filepath.Join(base, "lab"), bin: bin, ns: map[string]string{}}
	cmd := exec.Command("./lab.sh", "up", l.dir)
	cmd.Env = append(os.Environ(), "WORMGATE="+bin)
	out, err := cmd.CombinedOutput()
	// Registered before the error check: a half-built lab is torn down too.
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"gw/wormgate.log", "mx/all.log"} {
				b, _ := os.ReadFile(filepath.Join(l.dir, f))
				t.Logf("%s:\n%s", f, b)
			}
		}
		if out, err := exec.Command("./lab.sh", "down", l.dir).CombinedOutput(); err != nil {
			t.Errorf("lab.sh down: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("lab.sh up: %v\n%s", err, out)
	}
	env, err := os.ReadFile(filepath.Join(l.dir, "lab.env"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(env)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		if name, ok := strings.CutPrefix(k, "NS_"); ok {
			l.ns[strings.ToLower(name)] = v
		}
	}
	for _, n := range []string{"worm", "clean", "gw", "mx"} {
		if l.ns[n] == "" {
			t.Fatalf("lab.env names no %s namespace:\n%s", n, env)
		}
	}
	return l
}

func (l *lab) script(t *testing.T, cmd string) {
	t.Helper()
	if out, err := exec.Command("./lab.sh", cmd, l.dir).CombinedOutput(); err != nil {
		t.Fatalf("lab.sh %s: %v\n%s", cmd, err, out)
	}
}

// swaks sends one mail from the worm or clean namespace and returns the
// transcript; the exit code is not an error (a rejected mail is the point).
func (l *lab) swaks(t *testing.T, ns string, args ...string) string {
	t.Helper()
	args = append([]string{"netns", "exec", l.ns[ns], "swaks", "--timeout", "5", "--to", "postmaster@mx.example.test"}, args...)
	out, _ := exec.Command("ip", args...).CombinedOutput()
	return string(out)
}

// wormMail sends one worm mail from src and requires Postfix's reject.
func (l *lab) wormMail(t *testing.T, src, server, want string, args ...string) {
	t.Helper()
	out := l.swaks(t, "worm", append([]string{"--server", server, "--local-interface", src}, args...)...)
	if !strings.Contains(out, "<** 550 5.7.1 "+want) {
		t.Fatalf("worm mail from %s not rejected with %q:\n%s", src, want, out)
	}
}

// inNS runs fn on a thread in the named namespace.
func inNS(name string, fn func() error) error {
	fd, err := unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer unix.Close(fd)
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer unix.Close(orig)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter %s: %w", name, err)
	}
	fnErr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// Stays locked: the runtime discards the thread.
		return errors.Join(fnErr, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

type synResult int

const (
	synOpen synResult = iota
	synDropped
	synOther
)

// syn connects from src in the worm namespace to port 25 of dst: open,
// dropped (no answer), or something else (refused, no route).
func (l *lab) syn(src, dst string) (synResult, error) {
	var res synResult
	err := inNS(l.ns["worm"], func() error {
		d := net.Dialer{Timeout: synTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", net.JoinHostPort(dst, "25"))
		if err == nil {
			c.Close()
			res = synOpen
			return nil
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			res = synDropped
			return nil
		}
		res = synOther
		return err
	})
	return res, err
}

// smtpAuthParam speaks SMTP from src to server:25 by hand (swaks has no
// way to add a MAIL FROM parameter): a worm mail whose MAIL FROM carries
// AUTH=auth. It returns Postfix's reply to the end of DATA.
func (l *lab) smtpAuthParam(t *testing.T, src, server, auth string) string {
	t.Helper()
	var final string
	err := inNS(l.ns["worm"], func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", net.JoinHostPort(server, "25"))
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		// reply reads one (possibly multi-line) reply and checks its code.
		reply := func(code string) (string, error) {
			var last string
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return "", fmt.Errorf("waiting for %s: %w", code, err)
				}
				last = strings.TrimRight(line, "\r\n")
				if len(last) < 4 || last[3] != '-' {
					break
				}
			}
			if !strings.HasPrefix(last, code) {
				return last, fmt.Errorf("want %s, got %q", code, last)
			}
			return last, nil
		}
		steps := []struct{ send, want string }{
			{"", "220"},
			{"EHLO vm", "250"},
			{"MAIL FROM:<a@worm.example> AUTH=" + auth, "250"},
			{"RCPT TO:<postmaster@mx.example.test>", "250"},
			{"DATA", "354"},
		}
		for _, st := range steps {
			if st.send != "" {
				if _, err := fmt.Fprintf(c, "%s\r\n", st.send); err != nil {
					return err
				}
			}
			if _, err := reply(st.want); err != nil {
				return fmt.Errorf("after %q: %w", st.send, err)
			}
		}
		if _, err := fmt.Fprint(c, "From: a@worm.example\r\nSubject: Re: Details\r\n\r\nhello\r\n.\r\n"); err != nil {
			return err
		}
		// The ban may drop this very connection after the reject: no QUIT.
		final, err = reply("550")
		if err != nil && final == "" {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("SMTP from %s: %v", src, err)
	}
	return final
}

// gwHTTP fetches path from wormgate's status server inside the gateway
// namespace (the dial happens on the locked thread, so in the namespace).
func (l *lab) gwHTTP(t *testing.T, path string) string {
	t.Helper()
	var body []byte
	err := inNS(l.ns["gw"], func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9514", 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\n\r\n", path); err != nil {
			return err
		}
		body, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatalf("GET %s in the gateway namespace: %v", path, err)
	}
	return string(body)
}

// kernelHas reports whether addr is in the gateway's blocked sets, read
// with nft, independently of wormgate.
func (l *lab) kernelHas(t *testing.T, addr string) bool {
	t.Helper()
	return slices.Contains(l.kernel(t), addr)
}

func (l *lab) kernel(t *testing.T) []string {
	t.Helper()
	m, err := nftest.Blocked(l.ns["gw"], "wormgate")
	if err != nil {
		t.Fatal(err)
	}
	return slices.Collect(maps.Keys(m))
}

func (l *lab) waitKernel(t *testing.T, addr string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for !l.kernelHas(t, addr) {
		if time.Now().After(deadline) {
			t.Fatalf("%s not banned in the kernel after %v (have %v)", addr, within, l.kernel(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Now()
}

// logTime finds the first line of a lab log file containing every one of
// subs and returns the time at its start (RFC 3339 as rsyslog writes, or
// slog's time=...).
func (l *lab) logTime(t *testing.T, file string, after time.Time, subs ...string) (time.Time, bool) {
	t.Helper()
	f, err := os.Open(filepath.Join(l.dir, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !containsAll(line, subs) {
			continue
		}
		field, _, _ := strings.Cut(line, " ")
		field = strings.TrimPrefix(field, "time=")
		ts, err := time.Parse(time.RFC3339Nano, field)
		if err != nil {
			t.Fatalf("%s: no time at the start of %q", file, line)
		}
		if !ts.Before(after) {
			return ts, true
		}
	}
	return time.Time{}, false
}

func (l *lab) waitLog(t *testing.T, file string, after time.Time, within time.Duration, subs ...string) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if ts, ok := l.logTime(t, file, after, subs...); ok {
			return ts
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q in %s after %v", subs, file, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// outbreak is scenario 1 for one address family: one worm mail, then the
// worm's connections until one is dropped. It returns seconds-to-block.
func (l *lab) outbreak(t *testing.T, src, server string) time.Duration {
	t.Helper()
	if r, err := l.syn(src, server); r != synOpen {
		t.Fatalf("before the worm mail, %s cannot reach %s:25: %v %v", src, server, r, err)
	}
	// Probe from the worm side while the worm mail is under way: the ban
	// can land while swaks still waits for the reply to its QUIT (its own
	// connection is dropped too), so probing only after swaks returns
	// would measure swaks' timeout, not wormgate.
	type probe struct {
		start time.Time
		res   synResult
		err   error
	}
	probes := make(chan []probe, 1)
	go func() {
		var ps []probe
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			start := time.Now()
			r, err := l.syn(src, server)
			ps = append(ps, probe{start, r, err})
			if r != synOpen {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		probes <- ps
	}()
	sent := time.Now()
	l.wormMail(t, src, server, "Rejected, probably sent by a W32.HLLW.Mankx virus", "--from", "a@worm.example", "--helo", "vm", "--header", "Subject: Re: Details")
	ps := <-probes
	last := ps[len(ps)-1]
	switch last.res {
	case synOther:
		t.Fatalf("connection from %s: %v", src, last.err)
	case synOpen:
		t.Fatalf("%s still connects 10s after its worm mail was rejected", src)
	}
	dropped := last.start
	reject := l.waitLog(t, "mx/all.log", sent.Add(-time.Second), 2*time.Second, "postfix/cleanup", "reject:", "from unknown["+src+"]")
	ban := l.waitLog(t, "gw/wormgate.log", sent.Add(-time.Second), 2*time.Second, "msg=ban", "addr="+src)
	if !l.kernelHas(t, src) {
		t.Errorf("%s dropped but not in the kernel set", src)
	}
	opened := 0
	for _, p := range ps {
		if p.res == synOpen && p.start.After(reject) {
			opened++
		}
	}
	t.Logf("%d connections of %s still got through after the reject", opened, src)
	toBlock := dropped.Sub(reject)
	t.Logf("timeline %s: first reject (Postfix, MX log) %s; ban (wormgate log, ms precision) %s; first dropped SYN %s = reject +%v",
		src, reject.Format("15:04:05.000000"), ban.Format("15:04:05.000"), dropped.Format("15:04:05.000000"), toBlock.Round(time.Microsecond))
	if toBlock > time.Second {
		t.Errorf("first dropped connection %v after the reject, want within 1s", toBlock)
	}
	return toBlock
}

func TestOutbreak(t *testing.T) {
	l := startLab(t)

	t.Run("worm blocked within 1s ipv4", func(t *testing.T) {
		d := l.outbreak(t, "203.0.113.66", mx4)
		t.Logf("seconds-to-block ipv4: %.3f", d.Seconds())
	})
	t.Run("worm blocked within 1s ipv6", func(t *testing.T) {
		d := l.outbreak(t, "2001:db8:66::66", mx6)
		t.Logf("seconds-to-block ipv6: %.3f", d.Seconds())
	})
	t.Run("why names the MX, queue ID, rule and reject text", func(t *testing.T) {
		// The reject Postfix logged for the worm, as the MX host forwarded it.
		line := l.logLine(t, "mx/all.log", "postfix/cleanup", "reject:", "from unknown[203.0.113.66]")
		fields := strings.Fields(line)
		qid := strings.TrimSuffix(fields[slices.IndexFunc(fields, func(f string) bool { return strings.HasPrefix(f, "postfix/cleanup[") })+1], ":")
		w := l.why(t, "203.0.113.66")
		i := slices.IndexFunc(w.Events, func(e whyEvent) bool { return e.QueueID == qid })
		if i < 0 {
			t.Fatalf("why 203.0.113.66 lists no event with queue ID %s (from %q): %+v", qid, line, w.Events)
		}
		ev := w.Events[i]
		if ev.Host != fields[1] || ev.Rule == "" || ev.Verdict != "ban" || !strings.Contains(line, ev.Text) || !strings.Contains(ev.Text, "5.7.1") {
			t.Errorf("why event %+v, want host %s, a rule, verdict ban and the reject text of %q", ev, fields[1], line)
		}
		out, err := exec.Command(l.bin, "why", "203.0.113.66", "--socket", l.socket()).CombinedOutput()
		if err != nil || !strings.Contains(string(out), qid) || !strings.Contains(string(out), "203.0.113.66 is banned until") {
			t.Errorf("wormgate why: %v\n%s", err, out)
		}
	})
	t.Run("kernel drops are counted in /metrics", func(t *testing.T) {
		// The worms' SYNs above were dropped by wormgate's chain; the rule
		// counters reach Prometheus.
		body := l.gwHTTP(t, "/metrics")
		var packets float64
		for line := range strings.Lines(body) {
			if v, ok := strings.CutPrefix(line, "wormgate_kernel_dropped_packets_total "); ok {
				if _, err := fmt.Sscan(v, &packets); err != nil {
					t.Fatal(err)
				}
			}
		}
		if packets < 2 {
			t.Errorf("wormgate_kernel_dropped_packets_total = %v, want at least the 2 dropped SYNs", packets)
		}
	})
	t.Run("clean client delivers through the gateway", func(t *testing.T) {
		for _, server := range []string{mx4, "[" + mx6 + "]"} {
			out := l.swaks(t, "clean", "--server", server, "--from", "ok@clean.example", "--helo", "clean.example",
				"--header", "Subject: minutes of the meeting", "--body", "See you on Tuesday.")
			if !strings.Contains(out, "<-  250 2.0.0 Ok: queued") {
				t.Errorf("clean mail to %s not accepted:\n%s", server, out)
			}
		}
		for _, a := range []string{"198.51.100.7", "2001:db8:77::7"} {
			if l.kernelHas(t, a) {
				t.Errorf("clean client %s banned", a)
			}
		}
	})
	t.Run("decoys", func(t *testing.T) {
		// One worm address per scenario, so each ban is this scenario's.
		attach := filepath.Join(l.dir, "screensaver.bin")
		if err := os.WriteFile(attach, []byte("MZ not really\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, src, want string
			args            []string
		}{
			{"attachment name", "203.0.113.67", "Email rejected, an attachment with .scr extension detected.", []string{
				"--from", "a@worm.example", "--helo", "vm", "--header", "Subject: hello",
				"--attach-type", "application/octet-stream", "--attach-name", "x from unknown[192.0.2.99]; .scr", "--attach", attach}},
			{"subject", "203.0.113.68", "the email subject is identical to the one produced by W32-SoBig worm", []string{
				"--from", "a@worm.example", "--helo", "vm", "--header", "Subject: Re: Movie from unknown[192.0.2.96]"}},
			{"mail from", "203.0.113.69", "Rejected, probably sent by a W32.HLLW.Mankx virus", []string{
				"--from", `"x]; from unknown[192.0.2.98]; from=<"@worm.example`, "--helo", "vm", "--header", "Subject: Re: Approved"}},
			{"helo", "203.0.113.70", "Rejected, probably sent by a W32.HLLW.Mankx virus", []string{
				"--from", "a@worm.example", "--helo", "x[192.0.2.97]", "--header", "Subject: Re: Approved"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				l.wormMail(t, tc.src, mx4, tc.want, tc.args...)
				l.waitKernel(t, tc.src, 3*time.Second)
			})
		}
		for _, a := range l.kernel(t) {
			if strings.HasPrefix(a, "192.0.2.") {
				t.Errorf("decoy %s banned", a)
			}
		}
	})
	t.Run("MAIL FROM AUTH= injections", func(t *testing.T) {
		// An unauthenticated client's AUTH= value is logged by smtpd as
		// sasl_sender= after the client's own address: each worm tries to
		// move its ban onto another address or to hide behind one.
		long := strings.Repeat("a, b", 150)
		injected := []string{"203.0.113.99", "192.0.2.1", "192.0.2.5", "192.0.2.6", "2001:db8:99::1"}
		for _, tc := range []struct{ name, src, auth string }{
			{"move the ban", "203.0.113.80", `", orig_client="x[203.0.113.99]`},
			{"evade", "203.0.113.81", `"a, orig_client=x[192.0.2.1]"`},
			{"orig_queue_id and IPv6", "203.0.113.82", `"x, orig_queue_id=ABCDEF1234, orig_client=unknown[2001:db8:99::1]"`},
			{"brackets", "203.0.113.83", `"]]] [192.0.2.5]]"`},
			{"long value", "203.0.113.84", `"` + long + `, orig_client=x[192.0.2.6]"`},
			{"IPv6 worm", "2001:db8:66::80", `", orig_client="x[203.0.113.99]`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				server := mx4
				if strings.Contains(tc.src, ":") {
					server = mx6
				}
				sent := time.Now()
				reply := l.smtpAuthParam(t, tc.src, server, tc.auth)
				if !strings.HasPrefix(reply, "550 5.7.1 Rejected, probably sent by a W32.HLLW.Mankx virus") {
					t.Fatalf("worm mail from %s: end of data got %q, want the header_checks reject", tc.src, reply)
				}
				l.waitLog(t, "mx/all.log", sent.Add(-time.Second), 2*time.Second, "client=unknown["+tc.src+"], sasl_sender=")
				l.waitKernel(t, tc.src, 3*time.Second)
			})
		}
		for _, a := range injected {
			if l.kernelHas(t, a) {
				t.Errorf("injected address %s banned", a)
			}
		}
	})
	t.Run("restart without a gap, rsyslog queue replayed", func(t *testing.T) {
		const banned, late = "203.0.113.66", "203.0.113.71"
		if !l.kernelHas(t, banned) {
			t.Fatalf("%s is not banned: the ipv4 scenario must run first", banned)
		}
		var probes, opened, other atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, _ := l.syn(banned, mx4)
				probes.Add(1)
				switch r {
				case synOpen:
					opened.Add(1)
				case synOther:
					other.Add(1)
					time.Sleep(synTimeout)
				}
			}
		})
		stopProbes := sync.OnceFunc(func() { close(stop); wg.Wait() })
		defer stopProbes()

		down := time.Now()
		l.script(t, "wormgate-stop")
		stopped := time.Now()
		// Postfix goes on rejecting; rsyslog cannot deliver and queues.
		l.wormMail(t, late, mx4, "body rejected, probably W32.HLLW.Mankx",
			"--from", "a@worm.example", "--helo", "vm", "--header", "Subject: screensaver", "--body", "Wicked screensaver attached")
		reject := l.waitLog(t, "mx/all.log", stopped, 2*time.Second, "postfix/cleanup", "reject:", "from unknown["+late+"]")
		// rsyslog noticed the gateway is gone and holds the lines.
		suspended := l.waitLog(t, "mx/all.log", stopped, 5*time.Second, "action 'wormgate' suspended")
		// Let at least one retry fail, so delivery after the restart is
		// the queue's doing and not a lucky first attempt.
		time.Sleep(1500 * time.Millisecond)
		if l.kernelHas(t, late) {
			t.Fatalf("%s banned while wormgate was down", late)
		}
		restart := time.Now()
		l.script(t, "wormgate-start")
		up := time.Now()
		banned2 := l.waitKernel(t, late, 10*time.Second)
		resumed := l.waitLog(t, "mx/all.log", restart, 2*time.Second, "action 'wormgate' resumed")
		// Keep probing a little after the restart.
		time.Sleep(300 * time.Millisecond)
		stopProbes()
		t.Logf("restart: wormgate down %v (stopped in %v), reject while down at +%v, rsyslog suspended at +%v, back at +%v, rsyslog resumed at +%v, queued reject banned at +%v",
			up.Sub(down).Round(time.Millisecond), stopped.Sub(down).Round(time.Millisecond),
			reject.Sub(down).Round(time.Millisecond), suspended.Sub(down).Round(time.Millisecond),
			up.Sub(down).Round(time.Millisecond), resumed.Sub(down).Round(time.Millisecond), banned2.Sub(down).Round(time.Millisecond))
		t.Logf("probes from banned %s during the restart: %d, got through: %d, other errors: %d", banned, probes.Load(), opened.Load(), other.Load())
		if opened.Load() != 0 || other.Load() != 0 {
			t.Errorf("%d of %d connections from banned %s got through (%d other errors) during the restart", opened.Load(), probes.Load(), banned, other.Load())
		}
		if min := int64(up.Sub(down) / (2 * synTimeout)); probes.Load() < min {
			t.Errorf("only %d probes during the restart, want at least %d", probes.Load(), min)
		}
	})
}
