package enforcer

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"ban_for", func(c *Config) { c.BanFor = 0 }, "enforcer.ban_for"},
		{"cache", func(c *Config) { c.OffenderCacheSize = 0 }, "enforcer.offender_cache_size"},
		{"cap", func(c *Config) { c.MaxActiveBans = -1 }, "enforcer.max_active_bans"},
		{"table", func(c *Config) { c.NFTables.Table = "" }, "enforcer.nftables.table"},
		{"port 0", func(c *Config) { c.NFTables.Ports = []uint16{25, 0} }, "enforcer.nftables.ports[1]"},
		{"dup port", func(c *Config) { c.NFTables.Ports = []uint16{25, 25} }, "enforcer.nftables.ports[1]"},
		{"never_block", func(c *Config) { c.NeverBlock = []netip.Prefix{{}} }, "enforcer.never_block[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidConfig) || !containsField(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func containsField(msg, field string) bool {
	return strings.Contains(msg, field+":")
}
