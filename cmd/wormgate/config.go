package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver"
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
// them (strictly: unknown fields are errors), validated. An empty path
// means the embedded default.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, cfg.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", errConfig, err)
	}
	if err := decodeStrict(b, &cfg); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", errConfig, path, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %w", errConfig, path, err)
	}
	return cfg, nil
}

func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Validate checks every part; errors name the field as in the file.
func (c Config) Validate() error {
	if err := c.Receiver.Validate(); err != nil {
		return err
	}
	if err := c.Matcher.Validate(); err != nil {
		return err
	}
	if err := c.Enforcer.Validate(); err != nil {
		return err
	}
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: must be text or json, got %q", c.Log.Format)
	}
	return nil
}

// rulePolicies is the enforcer's view of the matcher's rules, with the
// matcher's defaults for what a rule leaves out.
func rulePolicies(c matcher.Config) map[string]policy.RulePolicy {
	rules := c.WithDefaults().Rules
	m := make(map[string]policy.RulePolicy, len(rules))
	for _, r := range rules {
		m[r.Name] = policy.RulePolicy{Threshold: r.Threshold, Window: r.Window, BanFor: r.BanFor, DryRun: r.DryRun}
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
