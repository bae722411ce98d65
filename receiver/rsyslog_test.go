package receiver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"
	"github.com/wormgate/wormgate/receiver/tlstest"
)

// TestRsyslogReconnectsAfterIdleClose: the real rsyslogd with the shipped
// forwarding snippets (deploy/rsyslog-forward.conf, and -tls.conf) keeps
// its connection open while the MX is quiet. When idle_timeout closes it,
// the next line, sent alone, and the lines after it arrive over a new
// connection: none is lost.
func TestRsyslogReconnectsAfterIdleClose(t *testing.T) {
	syslogtest.RequireRsyslogd(t, false)
	for _, transport := range []string{TransportTCP, TransportTLS} {
		t.Run(transport, func(t *testing.T) {
			dir := t.TempDir()
			out := newInbox(64)
			snippet, target := "../deploy/rsyslog-forward.conf", `target="wormgate.example.net" port="514"`
			edits := map[string]string{}
			mod := func(c *Config) { c.IdleTimeout = time.Second }
			if transport == TransportTLS {
				syslogtest.RequireRsyslogd(t, true)
				ca := tlstest.NewCA(t, "site syslog CA")
				srvCert, srvKey := ca.Issue(t, "wormgate.test")
				mxCert, mxKey := ca.Issue(t, "mx1.example.test")
				snippet, target = "../deploy/rsyslog-forward-tls.conf", `target="wormgate.example.net" port="6514"`
				edits = map[string]string{
					`StreamDriverPermittedPeers="wormgate.example.net"`: `StreamDriverPermittedPeers="wormgate.test"`,
					"/etc/rsyslog.d/wormgate/ca.pem":                    ca.File,
					"/etc/rsyslog.d/wormgate/mx.pem":                    mxCert,
					"/etc/rsyslog.d/wormgate/mx-key.pem":                mxKey,
				}
				mod = func(c *Config) {
					c.IdleTimeout = time.Second
					c.TLSListen = []string{"127.0.0.1:0"}
					c.TLSCertFile, c.TLSKeyFile, c.TLSClientCAFile = srvCert, srvKey, ca.File
				}
			}
			h := start(t, out, mod)
			addr := h.r.TCPAddrs()[0]
			if transport == TransportTLS {
				addr = h.r.TLSAddrs()[0]
			}
			_, port, _ := net.SplitHostPort(addr.String())
			edits[target] = `target="127.0.0.1" port="` + port + `"`
			fwd := readFile(t, snippet)
			for from, to := range edits {
				if !strings.Contains(fwd, from) {
					t.Fatalf("%s: %q not found", snippet, from)
				}
				fwd = strings.ReplaceAll(fwd, from, to)
			}
			put := startRsyslog(t, dir, fwd)

			line := func(i int) string {
				return fmt.Sprintf("<22>Nov 26 18:19:13 mx1 postfix/smtpd[5320]: line %d", i)
			}
			// rsyslogd binds its input a moment after it starts: send
			// until the first line comes through.
			deadline := time.Now().Add(10 * time.Second)
			for got := false; !got; {
				put(line(0))
				m, ok := out.next(200 * time.Millisecond)
				got = ok && m.Text == "line 0"

				if time.Now().After(deadline) {
					t.Fatal("rsyslogd forwarded nothing within 10 s")
				}
			}
			waitFor(t, "the quiet connection closed as idle", func() bool {
				return metric(t, h.reg, MetricConnectionsClosed, "transport", transport, "reason", ReasonIdle) >= 1
			})
			drain(out) // line 0 may have been sent more than once
			// The first line after the close goes alone: it is the one
			// that a sender writing into a dead connection would lose.
			put(line(1))
			if m := recv(t, out); m.Text != "line 1" {
				t.Fatalf("first message after the idle close %q, want line 1", m.Text)
			}
			const n = 20
			for i := 2; i <= n; i++ {
				put(line(i))
			}
			seen := map[string]bool{}
			for range n - 1 {
				seen[recv(t, out).Text] = true
			}
			for i := 2; i <= n; i++ {
				if !seen[fmt.Sprintf("line %d", i)] {
					t.Errorf("line %d lost after the idle close", i)
				}
			}
		})
	}
}

// startRsyslog runs rsyslogd with the forwarding config fwd and its own
// UDP input (standing in for Postfix's /dev/log), in dir; put sends it a
// line.
func startRsyslog(t *testing.T, dir, fwd string) (put func(string)) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := pc.LocalAddr()
	_ = pc.Close()
	_, inPort, _ := net.SplitHostPort(in.String())
	conf := filepath.Join(dir, "rsyslog.conf")
	writeTestFile(t, filepath.Join(dir, "forward.conf"), fwd)
	writeTestFile(t, conf, fmt.Sprintf(`global(workDirectory=%q)
module(load="imudp")
input(type="imudp" address="127.0.0.1" port=%q)
include(file=%q)
`, dir, inPort, filepath.Join(dir, "forward.conf")))
	syslogtest.RunRsyslogd(t, exec.CommandContext(t.Context(), "rsyslogd", "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslogd.pid")))
	// Unconnected, so that the refusals before rsyslogd binds are not
	// reported to later writes.
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })
	return func(s string) {
		t.Helper()
		if _, err := u.WriteTo([]byte(s), in); err != nil {
			t.Fatal(err)
		}
	}
}

// drain empties out of what is queued.
func drain(out *inbox) {
	out.pending = nil
	for {
		select {
		case <-out.ch:
		default:
			return
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
