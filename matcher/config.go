package matcher

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
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
	ErrBadHost     = errors.New("invalid host name")
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
	// Hosts, when set, lists the syslog host names (as the MX hosts send
	// them) whose events this rule counts; empty means every host.
	Hosts []string `yaml:"hosts"`
	// Pattern must match somewhere in the event's text (unanchored, like
	// grep). For the cleanup kinds (cleanup_reject, cleanup_discard,
	// cleanup_hold, cleanup_warning) that text is only the administrator's
	// text after the last ": " of the line ("5.7.1 Rejected, probably
	// sent by a W32.HLLW.Mankx virus"), never the Subject, file names,
	// MAIL FROM or HELO that the sender wrote before it. For every other
	// kind it is the whole log text after "prog[pid]: "; there the
	// address is the client's own, so its text can only implicate itself.
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
	// ReinjectionSources are the content filters (amavis, a milter-less
	// after-queue filter) that hand mail back to Postfix with XFORWARD.
	// Only a client= record whose connecting client is in one of these
	// prefixes may name the original client in orig_client; for any
	// other client the connecting address is the origin, whatever the
	// rest of the record says. Default: loopback.
	ReinjectionSources []netip.Prefix `yaml:"reinjection_sources"`
}

// DefaultConfig returns the built-in rules: a rule set an operator can
// run unchanged on an MX. Content rules (worms, executable attachments)
// ban on the first hit, because the administrator's own header_checks
// already decided the message was malicious. Reputation and behaviour
// rules (DNSBL listings, password guessing, relay probing, pregreeting)
// ban for shorter times or only after repeats, because an ordinary but
// misconfigured server or user can cause them once. Unknown users and
// other smtpd rejects never ban by default: every mail server sends them.
func DefaultConfig() Config {
	return Config{
		Rules: []Rule{
			{
				// worm-signature bans a client whose message a header or
				// body check rejected or discarded with a text that names
				// a worm or virus ("probably sent by a W32.HLLW.Mankx
				// virus", "produced by W32-SoBig worm"). The pattern sees
				// only the administrator's text, so that a Subject such as
				// "Your mail server sent us a virus" cannot select it.
				Name:      "worm-signature",
				Kinds:     []Kind{KindCleanupReject, KindCleanupDiscard},
				Pattern:   MustRegexp(`(?i)\b(w32|worm|virus)\b`),
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
				Pattern:   MustRegexp(`(?i)\battachment with \.\w+ extension`),
				Threshold: 1,
				Window:    time.Hour,
				BanFor:    24 * time.Hour,
			},
			{
				// dnsbl-listed bans a client that smtpd
				// (reject_rbl_client, reject_rhsbl_*: "Client host
				// [addr] blocked using zen.example") or postscreen
				// ("client [addr] blocked using ...") refused for a DNS
				// blocklist. One hit: the listing is already the
				// evidence. Six hours: listings of shared or dynamic
				// addresses are often short, and a dropped connection
				// only delays a real server's mail, which it retries.
				Name:      "dnsbl-listed",
				Kinds:     []Kind{KindSMTPDReject},
				Pattern:   MustRegexp(`\] blocked using `),
				Threshold: 1,
				Window:    time.Hour,
				BanFor:    6 * time.Hour,
			},
			{
				// sasl-guessing bans password guessers: 5 failed SMTP
				// AUTH attempts within 10 minutes. A user with a stale
				// password in a mail client fails about once per check
				// interval and is not caught; a guesser is, for an hour
				// (the enforcer's escalation lengthens repeat bans).
				Name:      "sasl-guessing",
				Kinds:     []Kind{KindSASLFailed},
				Pattern:   MustRegexp(`authentication failed`),
				Threshold: 5,
				Window:    10 * time.Minute,
				BanFor:    time.Hour,
			},
			{
				// relay-probing bans a client that tries to relay through
				// the MX 3 times within an hour ("Relay access denied").
				// A single denial is usually a misconfigured mail client
				// or a stale MX record, so one is not enough.
				Name:      "relay-probing",
				Kinds:     []Kind{KindSMTPDReject},
				Pattern:   MustRegexp(`Relay access denied`),
				Threshold: 3,
				Window:    time.Hour,
				BanFor:    12 * time.Hour,
			},
			{
				// postscreen-pregreet bans a client that talked before
				// postscreen's greeting, which SMTP forbids and spam bots
				// do. One hit; a short ban, because some mail clients'
				// account set-up probes port 25 the same way.
				Name:      "postscreen-pregreet",
				Kinds:     []Kind{KindPostscreenPregreet},
				Pattern:   MustRegexp(`^PREGREET `),
				Threshold: 1,
				Window:    time.Hour,
				BanFor:    6 * time.Hour,
			},
		},
		QueueTableSize:     DefaultQueueTableSize,
		ReinjectionSources: DefaultReinjectionSources(),
	}
}

// DefaultReinjectionSources is loopback: a content filter on the MX itself.
func DefaultReinjectionSources() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
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
		r.Hosts = append([]string(nil), r.Hosts...)
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
	for i, p := range c.ReinjectionSources {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("matcher.reinjection_sources[%d]: %w", i, ErrRequired))
		}
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
		for j, h := range r.Hosts {
			if h == "" || strings.ContainsAny(h, " \t") {
				errs = append(errs, fmt.Errorf("%s[%d]: %w %q", field("hosts"), j, ErrBadHost, h))
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
