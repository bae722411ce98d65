package receiver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/wormgate/wormgate/receiver/configerr"
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
	// MaxConnectionsPerSender bounds the connections of one sender
	// address, so that one (broken or hostile) sender cannot hold every
	// slot; rsyslog keeps one connection per forwarding action.
	MaxConnectionsPerSender int `yaml:"max_connections_per_sender"`
	// MaxTLSHandshakes bounds TLS handshakes under way at once; a sender
	// that opens connections and never finishes a handshake holds one of
	// these for at most the handshake timeout, never a connection slot of
	// the others.
	MaxTLSHandshakes int `yaml:"max_tls_handshakes"`
	// IdleTimeout closes a stream connection that brought no complete
	// message for this long, whatever bytes it sent (a lone LF, half a
	// message). rsyslog keeps its connection open however quiet the MX
	// is, and opens a new one when it has something to send.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MessageTimeout closes a stream connection on which a message has
	// begun and is not complete this long after its first byte: a
	// slowloris trickling bytes holds a slot for at most this long.
	MessageTimeout time.Duration `yaml:"message_timeout"`
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
		MaxMessageSize:          64 << 10,
		MaxConnections:          1024,
		MaxConnectionsPerSender: 32,
		MaxTLSHandshakes:        64,
		IdleTimeout:             10 * time.Minute,
		MessageTimeout:          30 * time.Second,
		UDPReadBuffer:           4 << 20,
	}
}

// Validate reports every problem, each a *configerr.FieldError whose path
// is relative to the receiver section ("udp_listen[0]").
func (c Config) Validate() error {
	var errs []error
	bad := func(path string, kind error, format string, args ...any) {
		errs = append(errs, configerr.New(path, kind, format, args...))
	}
	lists := []struct {
		name  string
		addrs []string
	}{{"udp_listen", c.UDPListen}, {"tcp_listen", c.TCPListen}, {"tls_listen", c.TLSListen}}
	seen := map[string]string{}
	for _, l := range lists {
		for i, a := range l.addrs {
			path := fmt.Sprintf("%s[%d]", l.name, i)
			if err := CheckListen(a); err != nil {
				errs = append(errs, &configerr.FieldError{Path: path, Err: err})
				continue
			}
			// UDP and stream sockets may share a port; two stream
			// listeners on one address cannot (port 0 picks a free one).
			key := a
			if l.name == "udp_listen" {
				key = "udp " + a
			}
			if prev, dup := seen[key]; dup && !strings.HasSuffix(a, ":0") {
				bad(path, configerr.ErrDuplicate, "%q is also %s", a, prev)
				continue
			}
			seen[key] = path
		}
	}
	if len(c.TLSListen) > 0 {
		if c.TLSCertFile == "" {
			bad("tls_cert_file", configerr.ErrRequired, "required when tls_listen is set")
		}
		if c.TLSKeyFile == "" {
			bad("tls_key_file", configerr.ErrRequired, "required when tls_listen is set")
		}
	}
	if len(c.TLSPermittedPeers) > 0 && c.TLSClientCAFile == "" {
		bad("tls_permitted_peers", configerr.ErrRequired, "needs tls_client_ca_file: names are checked only on verified client certificates")
	}
	for i, p := range c.TLSPermittedPeers {
		if p == "" || strings.ContainsAny(p, " \t/") {
			bad(fmt.Sprintf("tls_permitted_peers[%d]", i), configerr.ErrInvalid, "%q is not a host name pattern", p)
		}
	}
	listening := len(c.UDPListen)+len(c.TCPListen)+len(c.TLSListen) > 0
	if listening && len(c.AllowedSenders) == 0 {
		bad("allowed_senders", configerr.ErrRequired, "empty, so every message would be dropped")
	}
	for i, p := range c.AllowedSenders {
		path := fmt.Sprintf("allowed_senders[%d]", i)
		switch {
		case !p.IsValid():
			bad(path, configerr.ErrRequired, "empty prefix")
		case p.Addr().Is4In6():
			// Peers are unmapped before the check, so this would never match.
			bad(path, configerr.ErrInvalid, "%s never matches: write IPv4-mapped prefixes in IPv4 form", p)
		case p.Addr().Zone() != "":
			bad(path, configerr.ErrInvalid, "%s: zones are not supported", p)
		}
	}
	if c.MaxMessageSize < minMessageSize || c.MaxMessageSize > maxMessageSize {
		bad("max_message_size", configerr.ErrOutOfRange, "%d is out of range (%d-%d)", c.MaxMessageSize, minMessageSize, maxMessageSize)
	}
	if c.MaxConnectionsPerSender < 1 {
		bad("max_connections_per_sender", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.MaxConnectionsPerSender)
	}
	if c.MaxTLSHandshakes < 1 {
		bad("max_tls_handshakes", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.MaxTLSHandshakes)
	}
	if c.MaxConnections < 1 {
		bad("max_connections", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.MaxConnections)
	}
	if c.IdleTimeout < time.Second {
		bad("idle_timeout", configerr.ErrOutOfRange, "%v is out of range (at least 1s)", c.IdleTimeout)
	}
	if c.MessageTimeout < time.Second {
		bad("message_timeout", configerr.ErrOutOfRange, "%v is out of range (at least 1s)", c.MessageTimeout)
	}
	if c.UDPReadBuffer < 0 || c.UDPReadBuffer > maxReadBuffer {
		bad("udp_read_buffer", configerr.ErrOutOfRange, "%d is out of range (0-%d)", c.UDPReadBuffer, maxReadBuffer)
	}
	return errors.Join(errs...)
}

// CheckListen checks a listen address, host:port with an IP address, a
// name or nothing as host; its error, for a configuration, names the
// address and what is wrong with it.
func CheckListen(a string) error {
	notAddr := func(format string, args ...any) error {
		return configerr.Errorf(configerr.ErrInvalid, "%q is not a listen address (host:port): %s", a, fmt.Sprintf(format, args...))
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return notAddr("%s", ae.Err)
		}
		return notAddr("%v", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return notAddr("port %q is not a number from 0 to 65535", port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && !isHostname(host) {
			return notAddr("host %q is not an IP address or a name", host)
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
