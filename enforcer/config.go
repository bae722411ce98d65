package enforcer

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"
)

// ErrInvalidConfig marks every configuration error of this package.
var ErrInvalidConfig = errors.New("invalid config")

// Config is the enforcer's part of the YAML configuration.
type Config struct {
	// BanFor is the ban duration for rules that do not set their own.
	BanFor time.Duration `yaml:"ban_for"`
	// NeverBlock adds prefixes to the built-in never-block list
	// (loopback, link-local, unspecified, multicast).
	NeverBlock []netip.Prefix `yaml:"never_block"`
	// OffenderCacheSize bounds how many offenders are remembered.
	OffenderCacheSize int `yaml:"offender_cache_size"`
	// MaxActiveBans caps the active bans; offenders past it are counted
	// and not banned, so a flood cannot exhaust the kernel's memory.
	MaxActiveBans int `yaml:"max_active_bans"`
	// MaxNewBansPerSecond caps how fast new bans start (a token bucket
	// that holds one second's worth); offenders past it are counted and
	// banned on their next offense, so a flood of forged offenders cannot
	// fill the kernel in a moment. Extensions and manual bans are not
	// limited.
	MaxNewBansPerSecond int `yaml:"max_new_bans_per_second"`
	// EscalationFactor multiplies the ban duration once for every earlier
	// ban of the same address that the offender memory still holds;
	// 1 disables escalation.
	EscalationFactor float64 `yaml:"escalation_factor"`
	// MaxBanFor caps escalated ban durations; it never shortens a rule's
	// own ban_for.
	MaxBanFor time.Duration `yaml:"max_ban_for"`
	// StateDir holds the durable record of active bans and offender
	// history (check never uses it). Empty keeps no record: bans then
	// survive a restart only as long as the kernel table does.
	StateDir string `yaml:"state_dir"`
	// DryRun logs what would be blocked and never touches the kernel.
	DryRun bool `yaml:"dry_run"`
	// NFTables configures the kernel side.
	NFTables NFTablesYAML `yaml:"nftables"`
}

// NFTablesYAML is the YAML form of NFTablesConfig; the namespace is not
// configurable because the daemon always works in its own.
type NFTablesYAML struct {
	Table string   `yaml:"table"`
	Ports []uint16 `yaml:"ports"`
}

// DefaultConfig returns the enforcer's defaults.
func DefaultConfig() Config {
	return Config{
		BanFor:              24 * time.Hour,
		OffenderCacheSize:   100_000,
		MaxActiveBans:       1_000_000,
		MaxNewBansPerSecond: 1000,
		EscalationFactor:    2,
		MaxBanFor:           7 * 24 * time.Hour,
		StateDir:            "/var/lib/wormgate",
		NFTables: NFTablesYAML{
			Table: "wormgate",
			Ports: []uint16{25, 465, 587},
		},
	}
}

// BuiltinNeverBlock are prefixes no rule and no operator can ban: banning
// them would cut the gateway off from itself or do nothing useful.
var BuiltinNeverBlock = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// Validate reports the first invalid field, named as in the YAML file.
func (c Config) Validate() error {
	if c.BanFor < time.Second {
		return fmt.Errorf("%w: enforcer.ban_for: must be at least 1s, got %v", ErrInvalidConfig, c.BanFor)
	}
	for i, p := range c.NeverBlock {
		if !p.IsValid() {
			return fmt.Errorf("%w: enforcer.never_block[%d]: not a valid prefix", ErrInvalidConfig, i)
		}
	}
	if c.OffenderCacheSize < 1 {
		return fmt.Errorf("%w: enforcer.offender_cache_size: must be at least 1, got %d", ErrInvalidConfig, c.OffenderCacheSize)
	}
	if c.MaxActiveBans < 1 {
		return fmt.Errorf("%w: enforcer.max_active_bans: must be at least 1, got %d", ErrInvalidConfig, c.MaxActiveBans)
	}
	if c.MaxNewBansPerSecond < 1 {
		return fmt.Errorf("%w: enforcer.max_new_bans_per_second: must be at least 1, got %d", ErrInvalidConfig, c.MaxNewBansPerSecond)
	}
	if !(c.EscalationFactor >= 1 && c.EscalationFactor <= 100) {
		return fmt.Errorf("%w: enforcer.escalation_factor: must be between 1 and 100, got %v", ErrInvalidConfig, c.EscalationFactor)
	}
	if c.MaxBanFor < c.BanFor {
		return fmt.Errorf("%w: enforcer.max_ban_for: must be at least ban_for (%v), got %v", ErrInvalidConfig, c.BanFor, c.MaxBanFor)
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
