package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft/nftest"
	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"
	"github.com/wormgate/wormgate/receiver/tlstest"
)

// TestServeMutualTLSWithRsyslog forwards a reject pair from the real
// rsyslog, over its gtls driver with StreamDriverAuthMode="x509/name"
// (RFC 5425), to `wormgate serve` with mutual TLS, in a namespace of its
// own: the pair bans. Then clients that must not get in try: another
// CA's certificate, a name that is not permitted, no certificate, plain
// TCP. Each is refused and counted, and bans nobody.
func TestServeMutualTLSWithRsyslog(t *testing.T) {
	nftest.Require(t, "ip", "nft", "rsyslogd")
	syslogtest.RequireRsyslogd(t, true)
	ns := nftest.NewNS(t)
	ca := tlstest.NewCA(t, "site syslog CA")
	srvCert, srvKey := ca.Issue(t, "wormgate.example.test")
	mxCert, mxKey := ca.Issue(t, "mx1.example.test")

	dir := t.TempDir()
	cfg := filepath.Join(dir, "wormgate.yaml")
	writeFile(t, cfg, fmt.Sprintf(`receiver:
  udp_listen: []
  tcp_listen: []
  tls_listen: ["127.0.0.1:6514"]
  tls_cert_file: %s
  tls_key_file: %s
  tls_client_ca_file: %s
  tls_permitted_peers: ["mx1.example.test", "*.mx.example.test"]
enforcer:
  state_dir: %s
`, srvCert, srvKey, ca.File, filepath.Join(dir, "state")))
	d := startDaemon(t, ns, "--config", cfg)

	// rsyslog takes the MX's lines on UDP (as imuxsock would from
	// Postfix) and forwards them over TLS with the MX's certificate.
	rs := filepath.Join(dir, "rsyslog")
	if err := os.MkdirAll(rs, 0o755); err != nil {
		t.Fatal(err)
	}
	// The shipped snippet, with this test's files and addresses.
	snippet, err := os.ReadFile("../../deploy/rsyslog-forward-tls.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer(
		`target="wormgate.example.net"`, `target="127.0.0.1"`,
		`StreamDriverPermittedPeers="wormgate.example.net"`, `StreamDriverPermittedPeers="wormgate.example.test"`,
		"/etc/rsyslog.d/wormgate/ca.pem", ca.File,
		"/etc/rsyslog.d/wormgate/mx.pem", mxCert,
		"/etc/rsyslog.d/wormgate/mx-key.pem", mxKey,
	).Replace(string(snippet))
	for _, want := range []string{`target="127.0.0.1"`, ca.File, mxCert, mxKey, "wormgate.example.test"} {
		if !strings.Contains(conf, want) {
			t.Fatalf("deploy/rsyslog-forward-tls.conf: could not set %q", want)
		}
	}
	writeFile(t, filepath.Join(rs, "60-wormgate.conf"), conf)
	writeFile(t, filepath.Join(rs, "rsyslog.conf"), fmt.Sprintf(`global(workDirectory=%q localHostname="mx1")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="10514")
include(file=%q)
`, rs, filepath.Join(rs, "60-wormgate.conf")))
	cmd := ns.Command(t.Context(), "rsyslogd", "-n", "-f", filepath.Join(rs, "rsyslog.conf"), "-i", filepath.Join(rs, "rsyslogd.pid"))
	syslogtest.RunRsyslogd(t, cmd)
	time.Sleep(300 * time.Millisecond) // rsyslogd binds imudp
	// mail.info from an MX, as the snippet filters.
	sendUDP(t, ns, "127.0.0.1:10514", pairLines(traditional, "C31CFB81BD", "203.0.113.90")...)
	waitKernel(t, ns, "203.0.113.90")
	if c := d.counters(t); c["wormgate_syslog_messages_total{transport=tls}"] < 2 {
		t.Errorf("messages over TLS = %v, want the 2 lines of the pair", c["wormgate_syslog_messages_total{transport=tls}"])
	}

	other := tlstest.NewCA(t, "another CA")
	key := `wormgate_syslog_tls_handshake_failures_total`
	refused := []struct {
		name  string
		certs []tls.Certificate
	}{
		{"another CA", []tls.Certificate{other.KeyPair(t, "mx1.example.test")}},
		{"name not permitted", []tls.Certificate{ca.KeyPair(t, "mx2.example.test")}},
		{"no certificate", nil},
	}
	for i, tc := range refused {
		before := d.counters(t)[key]
		c, err := ns.Dial(t.Context(), "tcp", "127.0.0.1:6514")
		if err != nil {
			t.Fatal(err)
		}
		tc2 := tls.Client(c, &tls.Config{RootCAs: ca.Pool(), ServerName: "wormgate.example.test", Certificates: tc.certs})
		_ = tc2.SetDeadline(time.Now().Add(2 * time.Second))
		err = tc2.Handshake()
		if err == nil {
			// TLS 1.3: the refusal arrives with the first read.
			lines := pairLines(traditional, fmt.Sprintf("D4101B81B%d", i), fmt.Sprintf("203.0.113.%d", 91+i))
			_, _ = tc2.Write(lfFrames(lines))
			_, err = tc2.Read(make([]byte, 1))
		}
		tc2.Close()
		if err == nil {
			t.Errorf("%s: connection accepted", tc.name)
		}
		waitCounter(t, d, key, before+1)
	}
	before := d.counters(t)[key]
	sendTCP(t, ns, "127.0.0.1:6514", lfFrames(pairLines(traditional, "E5221B81BD", "203.0.113.95")))
	waitCounter(t, d, key, before+1)
	time.Sleep(200 * time.Millisecond)
	for _, a := range kernelAddrs(t, ns) {
		if a != "203.0.113.90" {
			t.Errorf("%s banned by a refused client", a)
		}
	}
}

func waitCounter(t *testing.T, d *daemon, key string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := d.counters(t)[key]
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 5s, want %v", key, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
