package main

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/wormgate/wormgate/cmd/wormgate/internal/yamlconf"
	"github.com/wormgate/wormgate/enforcer"
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
	HTTP     HTTPConfig      `yaml:"http"`
	Log      LogConfig       `yaml:"log"`
}

// HTTPConfig configures the status server.
type HTTPConfig struct {
	// Listen is host:port; empty disables the status server.
	Listen string `yaml:"listen"`
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
		HTTP:     HTTPConfig{Listen: "127.0.0.1:9514"},
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
	}
	if c.HTTP.Listen != "" {
		if err := receiver.CheckListen(c.HTTP.Listen); err != nil {
			errs = append(errs, &configerr.FieldError{Path: "http.listen", Err: err})
		}
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
