package enforcer

import (
	"errors"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/receiver/configerr"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // every problem, in order
		kind error    // the sentinel of the first
	}{
		{"default", func(*Config) {}, nil, nil},
		{"ban_for", func(c *Config) { c.BanFor = 0 }, []string{"ban_for: 0s is out of range (at least 1s)"}, configerr.ErrOutOfRange},
		{"max_ban_for", func(c *Config) { c.MaxBanFor = time.Hour }, []string{"max_ban_for: 1h0m0s is less than ban_for (24h0m0s)"}, configerr.ErrOutOfRange},
		{"escalation NaN", func(c *Config) { c.EscalationFactor = math.NaN() }, []string{"escalation_factor: NaN is out of range (1-100)"}, configerr.ErrOutOfRange},
		{"cache", func(c *Config) { c.OffenderCacheSize = 0 }, []string{"offender_cache_size: 0 is out of range (at least 1)"}, configerr.ErrOutOfRange},
		{"cap", func(c *Config) { c.MaxActiveBans = -1 }, []string{"max_active_bans: -1 is out of range (at least 1)"}, configerr.ErrOutOfRange},
		{"rate", func(c *Config) { c.MaxNewBansPerSecond = 0 }, []string{"max_new_bans_per_second: 0 is out of range (at least 1)"}, configerr.ErrOutOfRange},
		{"state_dir", func(c *Config) { c.StateDir = "state" }, []string{`state_dir: "state" is not an absolute path`}, configerr.ErrInvalid},
		{"table", func(c *Config) { c.NFTables.Table = "" }, []string{"nftables.table: required"}, configerr.ErrRequired},
		{"ports", func(c *Config) { c.NFTables.Ports = []uint16{25, 0, 25} }, []string{
			"nftables.ports[1]: 0 is not a port (1-65535)",
			"nftables.ports[2]: 25 is also ports[0]",
		}, configerr.ErrOutOfRange},
		{"never_block", func(c *Config) { c.NeverBlock = []netip.Prefix{{}} }, []string{"never_block[0]: empty prefix"}, configerr.ErrRequired},
		{"several", func(c *Config) { c.BanFor = 0; c.MaxActiveBans = 0 }, []string{
			"ban_for: 0s is out of range (at least 1s)",
			"max_active_bans: 0 is out of range (at least 1)",
		}, configerr.ErrOutOfRange},
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
			if tt.kind != nil && !errors.Is(err, tt.kind) {
				t.Errorf("Validate() = %v, want it to wrap %v", err, tt.kind)
			}
		})
	}
}
