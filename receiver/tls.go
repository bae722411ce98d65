package receiver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// ErrPeerNotPermitted is a client certificate that verified against the
// CA but names none of tls_permitted_peers.
var ErrPeerNotPermitted = errors.New("client certificate names no permitted peer")

// tlsCreds is one generation of the TLS files, swapped whole on reload so
// that a handshake never sees a key pair from one load and a CA from
// another.
type tlsCreds struct {
	cert      tls.Certificate
	clientCAs *x509.CertPool // nil: no client authentication
}

// tlsServer holds the listener's TLS settings (RFC 5425, mutual TLS as
// rsyslog's gtls driver does it with StreamDriverAuthMode="x509/name").
type tlsServer struct {
	certFile, keyFile, caFile string
	permitted                 []string
	creds                     atomic.Pointer[tlsCreds]
}

func newTLSServer(cfg Config) (*tlsServer, error) {
	s := &tlsServer{certFile: cfg.TLSCertFile, keyFile: cfg.TLSKeyFile, caFile: cfg.TLSClientCAFile, permitted: cfg.TLSPermittedPeers}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// reload reads the key pair and the client CA again (after a certificate
// renewal); on any error the files in use stay.
func (s *tlsServer) reload() error {
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("receiver.tls_cert_file: load key pair: %w", err)
	}
	c := &tlsCreds{cert: cert}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return fmt.Errorf("receiver.tls_client_ca_file: %w", err)
		}
		c.clientCAs = x509.NewCertPool()
		if !c.clientCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("receiver.tls_client_ca_file: %s: no PEM certificate", s.caFile)
		}
	}
	s.creds.Store(c)
	return nil
}

// config is the listener's tls.Config: every handshake takes the current
// generation of the files.
func (s *tlsServer) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := s.creds.Load()
			conf := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{c.cert},
				// A TLS 1.3 server sends session tickets after the
				// handshake. rsyslog never reads its forwarding
				// connection, so they would sit in its socket buffer,
				// and when idle_timeout closes the connection its
				// check for a closed peer (a peek) would find data
				// instead of the end of stream: it would write the next
				// line into the dead connection and lose it. rsyslog
				// does not resume sessions anyway.
				SessionTicketsDisabled: true,
			}
			if c.clientCAs != nil {
				conf.ClientAuth = tls.RequireAndVerifyClientCert
				conf.ClientCAs = c.clientCAs
				conf.VerifyConnection = s.verifyPeer
			}
			return conf, nil
		},
	}
}

// verifyPeer runs after the chain verified against the client CA: with
// tls_permitted_peers set, the leaf must name one of them.
func (s *tlsServer) verifyPeer(cs tls.ConnectionState) error {
	if len(s.permitted) == 0 {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return ErrPeerNotPermitted
	}
	leaf := cs.PeerCertificates[0]
	names := leaf.DNSNames
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		// rsyslog's x509/name falls back to the CN when there is no SAN.
		names = []string{leaf.Subject.CommonName}
	}
	for _, n := range names {
		for _, p := range s.permitted {
			if peerNameMatch(p, n) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %v", ErrPeerNotPermitted, names)
}

// peerNameMatch compares a certificate name with a permitted-peer pattern
// as rsyslog's x509/name does: case-insensitively, label by label, where a
// '*' at the start or the end of a pattern label matches any run of
// characters within one label ("*.example.net", "mx*.example.net"). A
// pattern never matches across labels.
func peerNameMatch(pattern, name string) bool {
	pl := strings.Split(strings.ToLower(strings.TrimSuffix(pattern, ".")), ".")
	nl := strings.Split(strings.ToLower(strings.TrimSuffix(name, ".")), ".")
	if len(pl) != len(nl) {
		return false
	}
	for i, p := range pl {
		n := nl[i]
		if n == "" {
			return false
		}
		switch {
		case p == "*":
		case strings.HasPrefix(p, "*") && !strings.HasSuffix(p, "*"):
			if !strings.HasSuffix(n, p[1:]) {
				return false
			}
		case strings.HasSuffix(p, "*") && !strings.HasPrefix(p, "*"):
			if !strings.HasPrefix(n, p[:len(p)-1]) {
				return false
			}
		case p != n:
			return false
		}
	}
	return true
}

// ReloadTLS reads the TLS key pair and client CA files again; on error the
// old ones stay in use. Without a TLS listener it does nothing.
func (r *Receiver) ReloadTLS() error {
	if r.tlsSrv == nil {
		return nil
	}
	return r.tlsSrv.reload()
}
