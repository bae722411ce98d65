package receiver

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"

	"github.com/wormgate/wormgate/receiver/configerr"
)

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // every problem, in order
		kind error    // the sentinel of the first
	}{
		{"bad port", func(c *Config) { c.TCPListen = []string{":syslog"} },
			[]string{`tcp_listen[0]: ":syslog" is not a listen address (host:port): port "syslog" is not a number from 0 to 65535`}, configerr.ErrInvalid},
		{"port out of range", func(c *Config) { c.UDPListen = []string{"", "127.0.0.1:70000"} },
			[]string{
				`udp_listen[0]: "" is not a listen address (host:port): missing port in address`,
				`udp_listen[1]: "127.0.0.1:70000" is not a listen address (host:port): port "70000" is not a number from 0 to 65535`,
			}, configerr.ErrInvalid},
		{"no port", func(c *Config) { c.UDPListen = []string{"127.0.0.1"} },
			[]string{`udp_listen[0]: "127.0.0.1" is not a listen address (host:port): missing port in address`}, configerr.ErrInvalid},
		{"bad host", func(c *Config) { c.TCPListen = []string{":514", "bad host!:514"} },
			[]string{`tcp_listen[1]: "bad host!:514" is not a listen address (host:port): host "bad host!" is not an IP address or a name`}, configerr.ErrInvalid},
		{"stream address twice", func(c *Config) { c.TLSListen = []string{":514"}; c.TLSCertFile, c.TLSKeyFile = "c", "k" },
			[]string{`tls_listen[0]: ":514" is also tcp_listen[0]`}, configerr.ErrDuplicate},
		{"tls without cert and key", func(c *Config) { c.TLSListen = []string{":6514"} },
			[]string{"tls_cert_file: required when tls_listen is set", "tls_key_file: required when tls_listen is set"}, configerr.ErrRequired},
		{"tls without key", func(c *Config) { c.TLSListen = []string{":6514"}; c.TLSCertFile = "c" },
			[]string{"tls_key_file: required when tls_listen is set"}, configerr.ErrRequired},
		{"no allowed senders", func(c *Config) { c.AllowedSenders = nil },
			[]string{"allowed_senders: empty, so every message would be dropped"}, configerr.ErrRequired},
		{"invalid prefix", func(c *Config) { c.AllowedSenders = append(c.AllowedSenders, netip.Prefix{}) },
			[]string{"allowed_senders[8]: empty prefix"}, configerr.ErrRequired},
		{"mapped prefix", func(c *Config) {
			c.AllowedSenders = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}
		}, []string{"allowed_senders[0]: ::ffff:10.0.0.0/104 never matches: write IPv4-mapped prefixes in IPv4 form"}, configerr.ErrInvalid},
		{"message size too small", func(c *Config) { c.MaxMessageSize = 10 },
			[]string{"max_message_size: 10 is out of range (256-67108864)"}, configerr.ErrOutOfRange},
		{"message size too large", func(c *Config) { c.MaxMessageSize = 1 << 30 },
			[]string{"max_message_size: 1073741824 is out of range (256-67108864)"}, configerr.ErrOutOfRange},
		{"no connections", func(c *Config) { c.MaxConnections = 0 },
			[]string{"max_connections: 0 is out of range (at least 1)"}, configerr.ErrOutOfRange},
		{"idle timeout zero", func(c *Config) { c.IdleTimeout = 0 },
			[]string{"idle_timeout: 0s is out of range (at least 1s)"}, configerr.ErrOutOfRange},
		{"message timeout under a second", func(c *Config) { c.MessageTimeout = 500 * time.Millisecond },
			[]string{"message_timeout: 500ms is out of range (at least 1s)"}, configerr.ErrOutOfRange},
		{"negative read buffer", func(c *Config) { c.UDPReadBuffer = -1 },
			[]string{"udp_read_buffer: -1 is out of range (0-1073741824)"}, configerr.ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			var got []string
			for _, fe := range configerr.Flatten(err) {
				got = append(got, fe.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() (-want +got):\n%s", diff)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("Validate() = %v, want it to wrap %v", err, tt.kind)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	c := DefaultConfig()
	c.UDPListen = []string{":514", "[::1]:514", "localhost:514"}
	c.TCPListen = []string{":514", "0.0.0.0:1514"}
	c.AllowedSenders = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	c.UDPReadBuffer = 0
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
}

// TestConfigYAML decodes a file section over the defaults, as the daemon
// does, to pin the yaml names and the types' text forms.
func TestConfigYAML(t *testing.T) {
	src := `
udp_listen: ["127.0.0.1:514"]
tls_listen: [":6514"]
tls_cert_file: /etc/wormgate/cert.pem
tls_key_file: /etc/wormgate/key.pem
allowed_senders: [192.0.2.0/24, "2001:db8::/32"]
max_message_size: 8192
idle_timeout: 90s
message_timeout: 20s
`
	got := DefaultConfig()
	if err := yaml.Unmarshal([]byte(src), &got); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	want := DefaultConfig()
	want.UDPListen = []string{"127.0.0.1:514"}
	want.TLSListen = []string{":6514"}
	want.TLSCertFile, want.TLSKeyFile = "/etc/wormgate/cert.pem", "/etc/wormgate/key.pem"
	want.AllowedSenders = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	want.MaxMessageSize = 8192
	want.IdleTimeout = 90 * time.Second
	want.MessageTimeout = 20 * time.Second
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("config mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}
