package receiver

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(*Config)
		field string // expected "receiver.<field>:" prefix
	}{
		{"bad port", func(c *Config) { c.TCPListen = []string{":syslog"} }, "tcp_listen[0]"},
		{"port out of range", func(c *Config) { c.UDPListen = []string{"", "127.0.0.1:70000"} }, "udp_listen[0]"},
		{"no port", func(c *Config) { c.UDPListen = []string{"127.0.0.1"} }, "udp_listen[0]"},
		{"bad host", func(c *Config) { c.TCPListen = []string{":514", "bad host!:514"} }, "tcp_listen[1]"},
		{"stream address twice", func(c *Config) { c.TLSListen = []string{":514"}; c.TLSCertFile, c.TLSKeyFile = "c", "k" }, "tls_listen[0]"},
		{"tls without cert", func(c *Config) { c.TLSListen = []string{":6514"} }, "tls_cert_file"},
		{"tls without key", func(c *Config) { c.TLSListen = []string{":6514"}; c.TLSCertFile = "c" }, "tls_key_file"},
		{"no allowed senders", func(c *Config) { c.AllowedSenders = nil }, "allowed_senders"},
		{"invalid prefix", func(c *Config) { c.AllowedSenders = append(c.AllowedSenders, netip.Prefix{}) }, "allowed_senders[8]"},
		{"mapped prefix", func(c *Config) {
			c.AllowedSenders = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}
		}, "allowed_senders[0]"},
		{"message size too small", func(c *Config) { c.MaxMessageSize = 10 }, "max_message_size"},
		{"message size too large", func(c *Config) { c.MaxMessageSize = 1 << 30 }, "max_message_size"},
		{"no connections", func(c *Config) { c.MaxConnections = 0 }, "max_connections"},
		{"idle timeout zero", func(c *Config) { c.IdleTimeout = 0 }, "idle_timeout"},
		{"negative read buffer", func(c *Config) { c.UDPReadBuffer = -1 }, "udp_read_buffer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate() = %v, want ErrConfig", err)
			}
			if !strings.HasPrefix(err.Error(), "receiver."+tt.field+": ") {
				t.Errorf("Validate() = %q, want it to start with receiver.%s:", err, tt.field)
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
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("config mismatch (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}
