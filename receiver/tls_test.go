package receiver

import (
	"crypto/tls"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/receiver/tlstest"
)

func TestPeerNameMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"mx1.example.net", "mx1.example.net", true},
		{"MX1.Example.NET", "mx1.example.net", true},
		{"mx1.example.net.", "mx1.example.net", true},
		{"mx1.example.net", "mx2.example.net", false},
		{"*.example.net", "mx1.example.net", true},
		{"*.example.net", "a.mx1.example.net", false},
		{"*.example.net", "example.net", false},
		{"mx*.example.net", "mx17.example.net", true},
		{"mx*.example.net", "smtp.example.net", false},
		{"*-out.example.net", "mx-out.example.net", true},
		{"*-out.example.net", "mx-in.example.net", false},
		{"*", "localhost", true},
		{"*", "a.b", false},
		{"example.net", "example.net.evil.test", false},
		{"*.example.net", ".example.net", false},
	}
	for _, tt := range tests {
		if got := peerNameMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("peerNameMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

// TestMutualTLS serves syslog over TLS with client authentication on a
// real loopback socket: only a certificate from the configured CA that
// names a permitted peer gets a message through; every other client is
// refused in the handshake and counted.
func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "wormgate test CA")
	other := tlstest.NewCA(t, "someone else's CA")
	certFile, keyFile := ca.Issue(t, "wormgate.example.test")
	out := newInbox(4)
	h := start(t, out, func(c *Config) {
		c.TLSListen = []string{"127.0.0.1:0"}
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.TLSClientCAFile = ca.File
		c.TLSPermittedPeers = []string{"mx1.example.test", "*.mx.example.test"}
	})
	addr := h.r.TLSAddrs()[0].String()
	dialTLS := func(certs ...tls.Certificate) (*tls.Conn, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{
			RootCAs: ca.Pool(), ServerName: "wormgate.example.test", Certificates: certs, MinVersion: tls.VersionTLS12,
		})
		if err != nil {
			return nil, err
		}
		// A TLS 1.3 client learns of a refused certificate only when it
		// reads: make every refusal visible here.
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			c.Close()
			return nil, err
		}
		_ = c.SetReadDeadline(time.Time{})
		return c, nil
	}

	for _, name := range []string{"mx1.example.test", "a.mx.example.test"} {
		c, err := dialTLS(ca.KeyPair(t, name))
		if err != nil {
			t.Fatalf("client %s: %v", name, err)
		}
		send(t, c, wire3164+"\n")
		check(t, want3164(TransportTLS, loopback4), recv(t, out))
		c.Close()
	}

	refused := []struct {
		name  string
		certs []tls.Certificate
	}{
		{"certificate from another CA", []tls.Certificate{other.KeyPair(t, "mx1.example.test")}},
		{"name not permitted", []tls.Certificate{ca.KeyPair(t, "mx9.example.test")}},
		{"wildcard does not span labels", []tls.Certificate{ca.KeyPair(t, "b.a.mx.example.test")}},
		{"no certificate", nil},
	}
	for i, tc := range refused {
		c, err := dialTLS(tc.certs...)
		if err == nil {
			send(t, c, wire3164+"\n")
			c.Close()
			t.Errorf("%s: handshake accepted", tc.name)
		}
		want := float64(i + 1)
		waitFor(t, tc.name+" counted", func() bool { return metric(t, h.reg, MetricTLSHandshakeErr) == want })
	}

	// Plain TCP on the TLS port.
	p := dial(t, "tcp", h.r.TLSAddrs()[0])
	send(t, p, wire3164+"\n")
	waitFor(t, "plain TCP counted", func() bool {
		return metric(t, h.reg, MetricTLSHandshakeErr) == float64(len(refused)+1)
	})
	noMessage(t, out)
}

func isTimeout(err error) bool {
	ne, ok := err.(interface{ Timeout() bool })
	return ok && ne.Timeout()
}

// TestTLSReload: ReloadTLS takes a renewed certificate for new
// handshakes, and keeps the old one when the new files are broken.
func TestTLSReload(t *testing.T) {
	ca := tlstest.NewCA(t, "wormgate test CA")
	certFile, keyFile := ca.Issue(t, "old.example.test")
	out := newInbox(4)
	h := start(t, out, func(c *Config) {
		c.TLSListen = []string{"127.0.0.1:0"}
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.TLSClientCAFile = ca.File
	})
	addr := h.r.TLSAddrs()[0].String()
	client := ca.KeyPair(t, "mx1.example.test")
	served := func() []string {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client},
			VerifyConnection: func(tls.ConnectionState) error { return nil }, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].DNSNames
	}
	if diff := cmp.Diff([]string{"old.example.test"}, served()); diff != "" {
		t.Fatalf("before reload (-want +got):\n%s", diff)
	}

	newCert, newKey := ca.Issue(t, "new.example.test")
	copyFile(t, newCert, certFile)
	copyFile(t, newKey, keyFile)
	if err := h.r.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS: %v", err)
	}
	if diff := cmp.Diff([]string{"new.example.test"}, served()); diff != "" {
		t.Errorf("after reload (-want +got):\n%s", diff)
	}

	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.r.ReloadTLS(); err == nil {
		t.Error("ReloadTLS accepted a broken key file")
	}
	if diff := cmp.Diff([]string{"new.example.test"}, served()); diff != "" {
		t.Errorf("after a failed reload (-want +got):\n%s", diff)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMutualTLSConfig: permitted peers need a CA to check against.
func TestMutualTLSConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TLSListen = []string{"127.0.0.1:0"}
	cfg.TLSCertFile, cfg.TLSKeyFile = "c.pem", "k.pem"
	cfg.TLSPermittedPeers = []string{"mx1.example.test"}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted tls_permitted_peers without tls_client_ca_file")
	}
	cfg.TLSClientCAFile = "ca.pem"
	cfg.TLSPermittedPeers = []string{"mx 1"}
	if err := cfg.Validate(); err == nil {
		t.Error(`Validate accepted the pattern "mx 1"`)
	}
}
