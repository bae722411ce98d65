package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/wormgate/wormgate/receiver/configerr"
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

// Validate reports every problem, each a *configerr.FieldError whose path
// is relative to the section the policy is inlined in ("never_block[2]").
func (c Config) Validate() error {
	var errs []error
	bad := func(path string, kind error, format string, args ...any) {
		errs = append(errs, configerr.New(path, kind, format, args...))
	}
	if c.BanFor < time.Second {
		bad("ban_for", configerr.ErrOutOfRange, "%v is out of range (at least 1s)", c.BanFor)
	}
	for i, p := range c.NeverBlock {
		if !p.IsValid() {
			bad(fmt.Sprintf("never_block[%d]", i), configerr.ErrRequired, "empty prefix")
		}
	}
	if c.OffenderCacheSize < 1 {
		bad("offender_cache_size", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.OffenderCacheSize)
	}
	if !(c.EscalationFactor >= 1 && c.EscalationFactor <= 100) {
		bad("escalation_factor", configerr.ErrOutOfRange, "%v is out of range (1-100)", c.EscalationFactor)
	}
	if c.MaxBanFor < c.BanFor && c.BanFor >= time.Second {
		bad("max_ban_for", configerr.ErrOutOfRange, "%v is less than ban_for (%v)", c.MaxBanFor, c.BanFor)
	}
	return errors.Join(errs...)
}
