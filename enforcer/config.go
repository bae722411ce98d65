package enforcer

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/wormgate/wormgate/enforcer/policy"
)

// ErrInvalidConfig marks every configuration error of this package.
var ErrInvalidConfig = errors.New("invalid config")

// Config is the enforcer's part of the YAML configuration.
type Config struct {
	// Config is the ban policy's part: durations, escalation, never-block
	// and offender memory, at the same level of the YAML file.
	policy.Config `yaml:",inline"`
	// MaxActiveBans caps the active bans; offenders past it are counted
	// and not banned, so a flood cannot exhaust the kernel's memory.
	MaxActiveBans int `yaml:"max_active_bans"`
	// MaxNewBansPerSecond caps how fast new bans start (a token bucket
	// that holds one second's worth); offenders past it are counted and
	// banned on their next offense, so a flood of forged offenders cannot
	// fill the kernel in a moment. Extensions and manual bans are not
	// limited.
	MaxNewBansPerSecond int `yaml:"max_new_bans_per_second"`
	// StateDir holds the durable record of active bans and offender
	// history (check never uses it). Empty keeps no record: bans then
	// survive a restart only as long as the kernel table does.
	StateDir string `yaml:"state_dir"`
	// DryRun logs what would be blocked and never touches the kernel.
	DryRun bool `yaml:"dry_run"`
	// NFTables configures the kernel side.
	NFTables NFTablesConfig `yaml:"nftables"`
}

// NFTablesConfig selects what the nftables firewall manages.
type NFTablesConfig struct {
	// Table is the name of wormgate's own table in family inet.
	Table string `yaml:"table"`
	// Ports are the TCP destination ports dropped for blocked addresses;
	// empty drops all traffic from a blocked address.
	Ports []uint16 `yaml:"ports"`
}

// DefaultConfig returns the enforcer's defaults.
func DefaultConfig() Config {
	return Config{
		Config:              policy.DefaultConfig(),
		MaxActiveBans:       1_000_000,
		MaxNewBansPerSecond: 1000,
		StateDir:            "/var/lib/wormgate",
		NFTables: NFTablesConfig{
			Table: "wormgate",
			Ports: []uint16{25, 465, 587},
		},
	}
}

// Validate reports the first invalid field, named as in the YAML file.
func (c Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.MaxActiveBans < 1 {
		return fmt.Errorf("%w: enforcer.max_active_bans: must be at least 1, got %d", ErrInvalidConfig, c.MaxActiveBans)
	}
	if c.MaxNewBansPerSecond < 1 {
		return fmt.Errorf("%w: enforcer.max_new_bans_per_second: must be at least 1, got %d", ErrInvalidConfig, c.MaxNewBansPerSecond)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("%w: enforcer.state_dir: must be an absolute path, got %q", ErrInvalidConfig, c.StateDir)
	}
	if c.NFTables.Table == "" || len(c.NFTables.Table) > 255 {
		return fmt.Errorf("%w: enforcer.nftables.table: must be 1 to 255 characters", ErrInvalidConfig)
	}
	seen := make(map[uint16]bool, len(c.NFTables.Ports))
	for i, p := range c.NFTables.Ports {
		if p == 0 {
			return fmt.Errorf("%w: enforcer.nftables.ports[%d]: port 0 is not a port", ErrInvalidConfig, i)
		}
		if seen[p] {
			return fmt.Errorf("%w: enforcer.nftables.ports[%d]: duplicate port %d", ErrInvalidConfig, i, p)
		}
		seen[p] = true
	}
	return nil
}
