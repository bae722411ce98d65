package receiver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is the receiver section of wormgate's configuration.
type Config struct {
	// UDPListen, TCPListen and TLSListen are host:port addresses; an empty
	// host means every address.
	UDPListen   []string `yaml:"udp_listen"`
	TCPListen   []string `yaml:"tcp_listen"`
	TLSListen   []string `yaml:"tls_listen"`
	TLSCertFile string   `yaml:"tls_cert_file"`
	TLSKeyFile  string   `yaml:"tls_key_file"`
	// TLSClientCAFile, when set, makes TLS mutual (RFC 5425): a sender
	// must present a certificate issued by one of these CAs (PEM).
	TLSClientCAFile string `yaml:"tls_client_ca_file"`
	// TLSPermittedPeers, when set, are the only names a client
	// certificate may carry (DNS SANs, else the CN), with rsyslog's
	// x509/name wildcards: "*.example.net", "mx*.example.net".
	TLSPermittedPeers []string `yaml:"tls_permitted_peers"`
	// AllowedSenders lists the prefixes syslog is accepted from. Anything
	// else is dropped unparsed: a gateway must never let the Internet ban
	// addresses by sending it a datagram.
	AllowedSenders []netip.Prefix `yaml:"allowed_senders"`
	// MaxMessageSize bounds one message (frame) in bytes.
	MaxMessageSize int `yaml:"max_message_size"`
	// MaxConnections bounds open TCP plus TLS connections.
	MaxConnections int `yaml:"max_connections"`
	// IdleTimeout closes a stream sender that sent nothing for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// UDPReadBuffer is the socket receive buffer wanted for UDP; the
	// kernel default is kept when it is larger.
	UDPReadBuffer int `yaml:"udp_read_buffer"`
}

// Limits for Validate. Messages above 64 MiB or buffers above 1 GiB are
// typos, not configurations.
const (
	minMessageSize = 256
	maxMessageSize = 64 << 20
	maxReadBuffer  = 1 << 30
)

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("invalid receiver config")

// DefaultConfig returns the configuration wormgate uses when the file names
// no receiver settings.
func DefaultConfig() Config {
	return Config{
		UDPListen: []string{":514"},
		TCPListen: []string{":514"},
		AllowedSenders: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"),
			netip.MustParsePrefix("fc00::/7"),
			netip.MustParsePrefix("169.254.0.0/16"),
			netip.MustParsePrefix("fe80::/10"),
		},
		MaxMessageSize: 64 << 10,
		MaxConnections: 1024,
		IdleTimeout:    10 * time.Minute,
		UDPReadBuffer:  4 << 20,
	}
}

// Validate reports the first problem, naming the yaml field.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("receiver.%s: %w: %s", field, ErrConfig, fmt.Sprintf(format, args...))
	}
	lists := []struct {
		name  string
		addrs []string
	}{{"udp_listen", c.UDPListen}, {"tcp_listen", c.TCPListen}, {"tls_listen", c.TLSListen}}
	seen := map[string]string{}
	for _, l := range lists {
		for i, a := range l.addrs {
			field := fmt.Sprintf("%s[%d]", l.name, i)
			if err := checkListen(a); err != nil {
				return fmt.Errorf("receiver.%s: %w: %q: %w", field, ErrConfig, a, err)
			}
			// UDP and stream sockets may share a port; two stream
			// listeners on one address cannot (port 0 picks a free one).
			key := a
			if l.name == "udp_listen" {
				key = "udp " + a
			}
			if prev, dup := seen[key]; dup && !strings.HasSuffix(a, ":0") {
				return bad(field, "%q is also %s", a, prev)
			}
			seen[key] = field
		}
	}
	if len(c.TLSListen) > 0 {
		if c.TLSCertFile == "" {
			return bad("tls_cert_file", "required when tls_listen is set")
		}
		if c.TLSKeyFile == "" {
			return bad("tls_key_file", "required when tls_listen is set")
		}
	}
	if len(c.TLSPermittedPeers) > 0 && c.TLSClientCAFile == "" {
		return bad("tls_permitted_peers", "needs tls_client_ca_file: names are checked only on verified client certificates")
	}
	for i, p := range c.TLSPermittedPeers {
		if p == "" || strings.ContainsAny(p, " \t/") {
			return bad(fmt.Sprintf("tls_permitted_peers[%d]", i), "%q is not a host name pattern", p)
		}
	}
	listening := len(c.UDPListen)+len(c.TCPListen)+len(c.TLSListen) > 0
	if listening && len(c.AllowedSenders) == 0 {
		return bad("allowed_senders", "empty: every message would be dropped")
	}
	for i, p := range c.AllowedSenders {
		field := fmt.Sprintf("allowed_senders[%d]", i)
		if !p.IsValid() {
			return bad(field, "invalid prefix")
		}
		if p.Addr().Is4In6() {
			// Peers are unmapped before the check, so this would never match.
			return bad(field, "%s: write IPv4-mapped prefixes in IPv4 form", p)
		}
		if p.Addr().Zone() != "" {
			return bad(field, "%s: zones are not supported", p)
		}
	}
	if c.MaxMessageSize < minMessageSize || c.MaxMessageSize > maxMessageSize {
		return bad("max_message_size", "%d outside [%d, %d]", c.MaxMessageSize, minMessageSize, maxMessageSize)
	}
	if c.MaxConnections < 1 {
		return bad("max_connections", "%d, want at least 1", c.MaxConnections)
	}
	if c.IdleTimeout < time.Second {
		return bad("idle_timeout", "%s, want at least 1s", c.IdleTimeout)
	}
	if c.UDPReadBuffer < 0 || c.UDPReadBuffer > maxReadBuffer {
		return bad("udp_read_buffer", "%d outside [0, %d]", c.UDPReadBuffer, maxReadBuffer)
	}
	return nil
}

func checkListen(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q: want a number 0-65535", port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && !isHostname(host) {
			return fmt.Errorf("host %q: want an IP address or a name", host)
		}
	}
	return nil
}

func isHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
