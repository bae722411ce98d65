package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/wormgate/wormgate/cmd/wormgate/internal/yamlconf"
	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/fleet"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver"
	"github.com/wormgate/wormgate/receiver/configerr"
)

// defaultYAML is what `wormgate config` prints: the defaults, commented.
// A test keeps it equal to defaultConfig.
//
//go:embed default.yaml
var defaultYAML []byte

// errConfig marks an invalid configuration: exit code 2.
var errConfig = errors.New("invalid config")

// Config is the whole configuration. A loaded Config is never mutated:
// a reload builds and validates a new one and swaps it in.
type Config struct {
	Receiver receiver.Config `yaml:"receiver"`
	Matcher  matcher.Config  `yaml:"matcher"`
	Enforcer enforcer.Config `yaml:"enforcer"`
	Fleet    fleet.Config    `yaml:"fleet"`
	HTTP     HTTPConfig      `yaml:"http"`
	Control  ControlConfig   `yaml:"control"`
	Process  ProcessConfig   `yaml:"process"`
	Log      LogConfig       `yaml:"log"`
}

// ProcessConfig bounds the daemon's own resources.
type ProcessConfig struct {
	// MemoryLimitMiB is the Go runtime's soft memory limit: near it the
	// garbage collector works harder and returns memory to the kernel
	// sooner, so a burst does not leave the process at its peak size.
	// 0 keeps Go's default (none, or $GOMEMLIMIT).
	MemoryLimitMiB int `yaml:"memory_limit_mib"`
}

// HTTPConfig configures the status server.
type HTTPConfig struct {
	// Listen is host:port; empty disables the status server.
	Listen string `yaml:"listen"`
	// WriteTokenFile names a file holding a bearer token; when set, the
	// control API's write endpoints are served here too, token required.
	// Empty keeps the status server read-only.
	WriteTokenFile string `yaml:"write_token_file"`
	// Dashboard configures the page at /.
	Dashboard DashboardConfig `yaml:"dashboard"`
}

// DashboardConfig configures the dashboard at the status server's /.
type DashboardConfig struct {
	// SilentAfter is how long a syslog sender may say nothing before
	// the dashboard shows it red (the MXSilent alert has its own).
	SilentAfter time.Duration `yaml:"silent_after"`
}

// ControlConfig configures the local control socket that `wormgate ban`,
// `unban`, `allow`, `why`, `reload` and the others talk to.
type ControlConfig struct {
	// Socket is the unix socket's path; empty disables it.
	Socket string `yaml:"socket"`
	// Group is the group that may use the socket (mode 0660); empty or a
	// group that does not exist keeps the daemon's own group.
	Group string `yaml:"group"`
}

// LogConfig configures the daemon's log on standard error.
type LogConfig struct {
	Level  slog.Level `yaml:"level"`
	Format string     `yaml:"format"`
}

func defaultConfig() Config {
	return Config{
		Receiver: receiver.DefaultConfig(),
		Matcher:  matcher.DefaultConfig(),
		Enforcer: enforcer.DefaultConfig(),
		Fleet:    fleet.DefaultConfig(),
		HTTP:     HTTPConfig{Listen: "127.0.0.1:9514", Dashboard: DashboardConfig{SilentAfter: 5 * time.Minute}},
		Control:  ControlConfig{Socket: defaultSocket, Group: "wormgate"},
		Log:      LogConfig{Level: slog.LevelInfo, Format: "text"},
	}
}

// loadConfig returns the defaults with the file at path decoded over
// them, validated; an empty path means the embedded default. It is the
// only loader: serve, check and reload all use it. Its error wraps
// errConfig and lists every problem of the file, one a line, each with
// the file's line and the field's path.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		if err := cfg.Validate(); err != nil {
			return Config{}, fmt.Errorf("%w: embedded default: %w", errConfig, err)
		}
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", errConfig, err)
	}
	// The file's matcher.profile stands for the rules unless the file
	// lists matcher.rules itself.
	cfg.Matcher.Rules = nil
	if err := yamlconf.Load(path, b, &cfg, func() error { return errors.Join(cfg.Validate(), profileOverridden(cfg.Matcher)) }); err != nil {
		return Config{}, fmt.Errorf("%w:\n%w", errConfig, err)
	}
	cfg.Matcher = cfg.Matcher.Resolved()
	return cfg, nil
}

// profileOverridden reports a file that names a profile other than the
// default and lists matcher.rules too: the list replaces the profile's
// rules, so the profile would silently do nothing (as when the printed
// default, which lists the default rules, is copied whole).
func profileOverridden(c matcher.Config) error {
	if c.Rules == nil || c.Profile == "" || c.Profile == matcher.ProfileDefault {
		return nil
	}
	return configerr.New("matcher.profile", configerr.ErrInvalid,
		"profile %s has no effect, because matcher.rules lists the rules itself: remove matcher.rules, and put rules of your own in matcher.rules_add", c.Profile)
}

// Validate checks every part and reports every problem, each a
// *configerr.FieldError with its full YAML path.
func (c Config) Validate() error {
	errs := []error{
		configerr.Within("receiver", c.Receiver.Validate()),
		configerr.Within("matcher", c.Matcher.Validate()),
		configerr.Within("enforcer", c.Enforcer.Validate()),
		configerr.Within("fleet", c.Fleet.Validate()),
	}
	if c.HTTP.Listen != "" {
		if err := receiver.CheckListen(c.HTTP.Listen); err != nil {
			errs = append(errs, &configerr.FieldError{Path: "http.listen", Err: err})
		}
	}
	if c.HTTP.WriteTokenFile != "" && !filepath.IsAbs(c.HTTP.WriteTokenFile) {
		errs = append(errs, configerr.New("http.write_token_file", configerr.ErrInvalid, "%q is not an absolute path", c.HTTP.WriteTokenFile))
	}
	if d := c.HTTP.Dashboard.SilentAfter; d < time.Second || d > 7*24*time.Hour {
		errs = append(errs, configerr.New("http.dashboard.silent_after", configerr.ErrOutOfRange, "%v is out of range (1s-168h)", d))
	}
	if c.Control.Socket != "" && !filepath.IsAbs(c.Control.Socket) {
		errs = append(errs, configerr.New("control.socket", configerr.ErrInvalid, "%q is not an absolute path", c.Control.Socket))
	}
	if c.Process.MemoryLimitMiB < 0 || c.Process.MemoryLimitMiB > 1<<20 {
		errs = append(errs, configerr.New("process.memory_limit_mib", configerr.ErrOutOfRange, "%d is out of range (0-%d)", c.Process.MemoryLimitMiB, 1<<20))
	} else if c.Process.MemoryLimitMiB > 0 && c.Process.MemoryLimitMiB < 32 {
		errs = append(errs, configerr.New("process.memory_limit_mib", configerr.ErrOutOfRange, "%d is out of range (0, or at least 32)", c.Process.MemoryLimitMiB))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, configerr.New("log.format", configerr.ErrInvalid, "%q is not a log format (text or json)", c.Log.Format))
	}
	return errors.Join(errs...)
}

// rulePolicies is the enforcer's view of the matcher's rules. The rules
// are complete (the loader gave every rule its defaults), so this only
// copies.
func rulePolicies(c matcher.Config) map[string]policy.RulePolicy {
	rules := c.EffectiveRules()
	m := make(map[string]policy.RulePolicy, len(rules))
	for _, r := range rules {
		m[r.Name] = policy.RulePolicy{Threshold: r.Threshold, Window: r.Window, BanFor: r.BanFor, DryRun: r.DryRun, Evidence: r.Evidence}
	}
	return m
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
