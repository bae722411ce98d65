package enforcer

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/receiver/configerr"
)

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
	// Events bounds the offence history (`wormgate why`) in the record.
	Events EventsConfig `yaml:"events"`
	// Manual bounds what an operator may do by hand (ban, allow).
	Manual ManualConfig `yaml:"manual"`
}

// EventsConfig bounds the recorded offences.
type EventsConfig struct {
	// PerAddress keeps this many newest offences of one address.
	PerAddress int `yaml:"per_address"`
	// Total keeps this many newest offences in all.
	Total int `yaml:"total"`
	// MaxAge forgets older offences.
	MaxAge time.Duration `yaml:"max_age"`
}

// ManualConfig bounds manual bans and allows.
type ManualConfig struct {
	// WidestIPv4 and WidestIPv6 are the shortest prefix lengths a manual
	// ban may have: a typo must not drop a continent.
	WidestIPv4 int `yaml:"widest_ipv4_prefix"`
	WidestIPv6 int `yaml:"widest_ipv6_prefix"`
	// MaxDuration caps --for of ban and allow.
	MaxDuration time.Duration `yaml:"max_duration"`
}

// NFTablesConfig selects what the nftables firewall manages.
type NFTablesConfig struct {
	// Table is the name of wormgate's own table in family inet.
	Table string `yaml:"table"`
	// Ports are the TCP destination ports dropped for blocked addresses;
	// empty drops all traffic from a blocked address.
	Ports []uint16 `yaml:"ports" desc:"a port (1-65535)"`
	// SyslogGuard drops, in the kernel, packets to wormgate's own syslog
	// ports that come from outside receiver.allowed_senders or fail a
	// strict reverse-path check (a forged source). Turn it off only where
	// asymmetric routing makes the check wrong; then forged datagrams can
	// reach the user-space allow-list, which cannot tell them apart.
	SyslogGuard bool `yaml:"syslog_guard"`
}

// DefaultConfig returns the enforcer's defaults.
func DefaultConfig() Config {
	return Config{
		Config:              policy.DefaultConfig(),
		MaxActiveBans:       1_000_000,
		MaxNewBansPerSecond: 1000,
		StateDir:            "/var/lib/wormgate",
		NFTables: NFTablesConfig{
			Table:       "wormgate",
			Ports:       []uint16{25, 465, 587},
			SyslogGuard: true,
		},
		Events: EventsConfig{PerAddress: 32, Total: 50_000, MaxAge: 30 * 24 * time.Hour},
		Manual: ManualConfig{WidestIPv4: 24, WidestIPv6: 48, MaxDuration: 365 * 24 * time.Hour},
	}
}

// Validate reports every problem, each a *configerr.FieldError whose path
// is relative to the enforcer section ("nftables.ports[0]").
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	bad := func(path string, kind error, format string, args ...any) {
		errs = append(errs, configerr.New(path, kind, format, args...))
	}
	if c.MaxActiveBans < 1 {
		bad("max_active_bans", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.MaxActiveBans)
	}
	if c.MaxNewBansPerSecond < 1 {
		bad("max_new_bans_per_second", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.MaxNewBansPerSecond)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		bad("state_dir", configerr.ErrInvalid, "%q is not an absolute path", c.StateDir)
	}
	switch {
	case c.NFTables.Table == "":
		bad("nftables.table", configerr.ErrRequired, "required")
	case len(c.NFTables.Table) > 255:
		bad("nftables.table", configerr.ErrOutOfRange, "longer than 255 bytes")
	}
	seen := make(map[uint16]int, len(c.NFTables.Ports))
	for i, p := range c.NFTables.Ports {
		path := fmt.Sprintf("nftables.ports[%d]", i)
		if p == 0 {
			bad(path, configerr.ErrOutOfRange, "0 is not a port (1-65535)")
			continue
		}
		if j, dup := seen[p]; dup {
			bad(path, configerr.ErrDuplicate, "%d is also ports[%d]", p, j)
			continue
		}
		seen[p] = i
	}
	if c.Events.PerAddress < 1 {
		bad("events.per_address", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.Events.PerAddress)
	}
	if c.Events.Total < c.Events.PerAddress {
		bad("events.total", configerr.ErrOutOfRange, "%d is out of range (at least events.per_address, %d)", c.Events.Total, c.Events.PerAddress)
	}
	if c.Events.MaxAge < time.Minute {
		bad("events.max_age", configerr.ErrOutOfRange, "%v is out of range (at least 1m)", c.Events.MaxAge)
	}
	if c.Manual.WidestIPv4 < 1 || c.Manual.WidestIPv4 > 32 {
		bad("manual.widest_ipv4_prefix", configerr.ErrOutOfRange, "%d is out of range (1-32)", c.Manual.WidestIPv4)
	}
	if c.Manual.WidestIPv6 < 1 || c.Manual.WidestIPv6 > 128 {
		bad("manual.widest_ipv6_prefix", configerr.ErrOutOfRange, "%d is out of range (1-128)", c.Manual.WidestIPv6)
	}
	if c.Manual.MaxDuration < time.Minute {
		bad("manual.max_duration", configerr.ErrOutOfRange, "%v is out of range (at least 1m)", c.Manual.MaxDuration)
	}
	return errors.Join(errs...)
}
