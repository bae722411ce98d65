package policy

import (
	"fmt"
	"net/netip"
	"time"
)

// Config is the ban policy's part of the enforcer configuration.
type Config struct {
	// BanFor is the ban duration for rules that do not set their own.
	BanFor time.Duration `yaml:"ban_for"`
	// NeverBlock adds prefixes to the built-in never-block list
	// (loopback, link-local, unspecified, multicast).
	NeverBlock []netip.Prefix `yaml:"never_block"`
	// OffenderCacheSize bounds how many offenders are remembered.
	OffenderCacheSize int `yaml:"offender_cache_size"`
	// EscalationFactor multiplies the ban duration once for every earlier
	// ban of the same address that the offender memory still holds;
	// 1 disables escalation.
	EscalationFactor float64 `yaml:"escalation_factor"`
	// MaxBanFor caps escalated ban durations; it never shortens a rule's
	// own ban_for.
	MaxBanFor time.Duration `yaml:"max_ban_for"`
}

// DefaultConfig returns the policy's defaults.
func DefaultConfig() Config {
	return Config{
		BanFor:            24 * time.Hour,
		OffenderCacheSize: 100_000,
		EscalationFactor:  2,
		MaxBanFor:         7 * 24 * time.Hour,
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
		return fmt.Errorf("enforcer.ban_for: must be at least 1s, got %v", c.BanFor)
	}
	for i, p := range c.NeverBlock {
		if !p.IsValid() {
			return fmt.Errorf("enforcer.never_block[%d]: not a valid prefix", i)
		}
	}
	if c.OffenderCacheSize < 1 {
		return fmt.Errorf("enforcer.offender_cache_size: must be at least 1, got %d", c.OffenderCacheSize)
	}
	if !(c.EscalationFactor >= 1 && c.EscalationFactor <= 100) {
		return fmt.Errorf("enforcer.escalation_factor: must be between 1 and 100, got %v", c.EscalationFactor)
	}
	if c.MaxBanFor < c.BanFor {
		return fmt.Errorf("enforcer.max_ban_for: must be at least ban_for (%v), got %v", c.BanFor, c.MaxBanFor)
	}
	return nil
}
