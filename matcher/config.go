package matcher

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied to zero fields by Config.WithDefaults.
const (
	DefaultThreshold      = 1
	DefaultWindow         = time.Hour
	DefaultQueueTableSize = 100000
)

// Sentinel errors wrapped by Validate; each error also names its field,
// e.g. "matcher.rules[2].pattern: required".
var (
	ErrRequired    = errors.New("required")
	ErrBadName     = errors.New("invalid rule name")
	ErrDuplicate   = errors.New("duplicate rule name")
	ErrUnknownKind = errors.New("unknown kind")
	ErrOutOfRange  = errors.New("out of range")
)

// Rule selects events and names the policy the enforcer applies to the
// offenses it produces. A rule never chooses the offending address: that
// comes from Postfix's own record of the client.
type Rule struct {
	// Name identifies the rule in offenses, bans, logs and metrics:
	// letters, digits, '.', '_' and '-', unique within the configuration.
	Name string `yaml:"name"`
	// Kinds restricts the rule to these event kinds; empty means any kind.
	Kinds []Kind `yaml:"kinds"`
	// Program, when set, must match the syslog tag without PID, e.g.
	// "postfix/cleanup" or "postfix-out/smtpd"; it selects one Postfix
	// instance or service.
	Program *Regexp `yaml:"program"`
	// Pattern must match the whole log text (everything after "prog[pid]: ").
	// Most of that text is written by the sender (Subject, file names, MAIL
	// FROM, HELO), so a pattern should aim at the administrator's reject
	// text at the end of the line, e.g. by ending in [^:]*$.
	Pattern Regexp `yaml:"pattern"`
	// Threshold is how many offenses by one address within Window lead to a
	// ban; 0 means 1.
	Threshold int `yaml:"threshold"`
	// Window is the period over which Threshold is counted; 0 means 1h.
	Window time.Duration `yaml:"window"`
	// BanFor is how long a ban lasts; 0 means the enforcer's default.
	BanFor time.Duration `yaml:"ban_for"`
	// DryRun logs and counts the bans this rule would cause without
	// blocking anyone; for trying a new rule on live traffic.
	DryRun bool `yaml:"dry_run"`
}

// Config is the matcher's part of the configuration file.
type Config struct {
	// Rules are evaluated for every event; one event can match several
	// rules and then yields one offense per rule.
	Rules []Rule `yaml:"rules"`
	// QueueTableSize bounds how many (host, queue ID) -> client records are
	// remembered until their message is rejected or removed; the least
	// recently used record goes first. 0 means 100000, which covers the
	// messages in flight on a busy site several times over.
	QueueTableSize int `yaml:"queue_table_size"`
}

// DefaultConfig returns the built-in rules. They ban only on header and
// body checks that name worms, viruses or executable attachments in the
// administrator's reject text (see the header_checks shipped in deploy/);
// relay denials, unknown users and other smtpd rejects never ban by
// default, because ordinary mail servers cause them too.
func DefaultConfig() Config {
	return Config{
		Rules: []Rule{
			{
				// worm-signature bans a client whose message a header or
				// body check rejected or discarded with a text that names
				// a worm or virus ("probably sent by a W32.HLLW.Mankx
				// virus", "produced by W32-SoBig worm"). The pattern only
				// looks at the last colon-free part of the line, the
				// administrator's text, so that a Subject such as "Your
				// mail server sent us a virus" cannot steer it.
				Name:      "worm-signature",
				Kinds:     []Kind{KindCleanupReject, KindCleanupDiscard},
				Pattern:   MustRegexp(`(?i)\b(w32|worm|virus)\b[^:]*$`),
				Threshold: 1,
				Window:    time.Hour,
				BanFor:    24 * time.Hour,
			},
			{
				// executable-attachment bans a client whose message was
				// rejected or discarded for carrying an executable
				// attachment ("an attachment with .scr extension
				// detected"), which is how mass-mailing worms spread.
				Name:      "executable-attachment",
				Kinds:     []Kind{KindCleanupReject, KindCleanupDiscard},
				Pattern:   MustRegexp(`(?i)\battachment with \.\w+ extension[^:]*$`),
				Threshold: 1,
				Window:    time.Hour,
				BanFor:    24 * time.Hour,
			},
		},
		QueueTableSize: DefaultQueueTableSize,
	}
}

// WithDefaults returns a copy of c with zero fields set to their defaults
// (threshold 1, window 1h, queue table size 100000). The rules slice is
// copied; the compiled expressions are shared, as they are immutable.
func (c Config) WithDefaults() Config {
	if c.QueueTableSize == 0 {
		c.QueueTableSize = DefaultQueueTableSize
	}
	c.Rules = rulesWithDefaults(c.Rules)
	return c
}

func rulesWithDefaults(rules []Rule) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		if r.Threshold == 0 {
			r.Threshold = DefaultThreshold
		}
		if r.Window == 0 {
			r.Window = DefaultWindow
		}
		r.Kinds = append([]Kind(nil), r.Kinds...)
		out[i] = r
	}
	return out
}

// Validate reports every problem in c, each naming its field. Zero
// threshold, window and queue table size stand for their defaults.
func (c Config) Validate() error {
	var errs []error
	if c.QueueTableSize < 0 {
		errs = append(errs, fmt.Errorf("matcher.queue_table_size: %w: %d, want >= 1 (0 for the default)", ErrOutOfRange, c.QueueTableSize))
	}
	errs = append(errs, validateRules(c.Rules)...)
	return errors.Join(errs...)
}

func validateRules(rules []Rule) []error {
	var errs []error
	seen := make(map[string]int, len(rules))
	for i, r := range rules {
		field := func(name string) string { return fmt.Sprintf("matcher.rules[%d].%s", i, name) }
		switch {
		case r.Name == "":
			errs = append(errs, fmt.Errorf("%s: %w", field("name"), ErrRequired))
		case !validName(r.Name):
			errs = append(errs, fmt.Errorf("%s: %w %q: use letters, digits, '.', '_' and '-'", field("name"), ErrBadName, r.Name))
		default:
			if j, dup := seen[r.Name]; dup {
				errs = append(errs, fmt.Errorf("%s: %w %q, also rules[%d]", field("name"), ErrDuplicate, r.Name, j))
			} else {
				seen[r.Name] = i
			}
		}
		for j, k := range r.Kinds {
			if !k.Valid() {
				errs = append(errs, fmt.Errorf("%s[%d]: %w %q, want one of %v", field("kinds"), j, ErrUnknownKind, k, kinds))
			}
		}
		if r.Pattern.empty() {
			errs = append(errs, fmt.Errorf("%s: %w", field("pattern"), ErrRequired))
		}
		if r.Threshold < 0 {
			errs = append(errs, fmt.Errorf("%s: %w: %d, want >= 1", field("threshold"), ErrOutOfRange, r.Threshold))
		}
		if r.Window < 0 {
			errs = append(errs, fmt.Errorf("%s: %w: %v, want > 0", field("window"), ErrOutOfRange, r.Window))
		}
		if r.BanFor < 0 {
			errs = append(errs, fmt.Errorf("%s: %w: %v, want >= 0", field("ban_for"), ErrOutOfRange, r.BanFor))
		}
	}
	return errs
}

// validName keeps rule names safe as a whitespace-separated output field and
// a metric label value.
func validName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
