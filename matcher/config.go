package matcher

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wormgate/wormgate/receiver/configerr"
)

// Defaults for what a configuration leaves out: DefaultQueueTableSize is
// in DefaultConfig, and a rule that names no threshold or window gets
// DefaultThreshold and DefaultWindow from Rule.SetDefaults.
const (
	DefaultThreshold      = 1
	DefaultWindow         = time.Hour
	DefaultQueueTableSize = 100000
)

// Evidence says how much one offense of a rule proves about its client.
// The values are part of the configuration format.
type Evidence string

const (
	// EvidenceStrong: the offense alone is proof, whoever the client is
	// (a header_checks text that names a worm). The default.
	EvidenceStrong Evidence = "strong"
	// EvidenceWeak: the offense is suspicious, but an ordinary sender can
	// cause it (an executable attachment, which a provider's relay or a
	// site's own user may pass on). A weak rule's offense by an
	// authenticated or established client never bans.
	EvidenceWeak Evidence = "weak"
)

// Valid reports whether e is strong or weak.
func (e Evidence) Valid() bool { return e == EvidenceStrong || e == EvidenceWeak }

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
	// ban, at least 1 (DefaultThreshold when the file leaves it out).
	Threshold int `yaml:"threshold"`
	// Window is the period over which Threshold is counted, at least 1s
	// (DefaultWindow when the file leaves it out).
	Window time.Duration `yaml:"window"`
	// BanFor is how long a ban lasts; 0 means the enforcer's default.
	BanFor time.Duration `yaml:"ban_for"`
	// DryRun logs and counts the bans this rule would cause without
	// blocking anyone; for trying a new rule on live traffic.
	DryRun bool `yaml:"dry_run"`
	// Evidence is strong (the default: an offense counts against any
	// client) or weak (offenses by an authenticated or established client,
	// see EstablishedConfig, never ban it).
	Evidence Evidence `yaml:"evidence"`
}

// Config is the matcher's part of the configuration file.
type Config struct {
	// Profile names the built-in rule set that Rules stands for when it
	// is nil: ProfileDefault (also for "") or ProfileAggressive.
	Profile Profile `yaml:"profile"`
	// Rules are evaluated for every event; one event can match several
	// rules and then yields one offense per rule. nil means the
	// profile's rules; a list, empty or not, replaces them.
	Rules []Rule `yaml:"rules"`
	// RulesAdd are evaluated after Rules (or the profile's rules), so
	// that an operator can add rules without copying the built-in ones.
	// A name of RulesAdd must not be one of those.
	RulesAdd []Rule `yaml:"rules_add"`
	// QueueTableSize bounds how many (host, queue ID) -> client records are
	// remembered until their message is queued (qmgr), rejected or
	// removed; the least
	// recently used record goes first. The default, 100000, covers the
	// messages in flight on a busy site several times over.
	QueueTableSize int `yaml:"queue_table_size"`
	// ReinjectionSources are the content filters (amavis, a milter-less
	// after-queue filter) that hand mail back to Postfix with XFORWARD.
	// Only a client= record whose connecting client is in one of these
	// prefixes may name the original client in orig_client; for any
	// other client the connecting address is the origin, whatever the
	// rest of the record says. Default: loopback.
	ReinjectionSources []netip.Prefix `yaml:"reinjection_sources"`
	// Established defines the clients whose mail these MX logs show
	// accepted over time, which weak rules do not ban.
	Established EstablishedConfig `yaml:"established"`
}

// EstablishedConfig defines an established sender: a client address from
// which at least MinMessages accepted messages (qmgr's "(queue active)")
// were seen, the first and the last at least MinSpan apart. A provider's
// outbound relay passes hundreds of messages a week and qualifies; a worm
// that connects directly has its messages rejected and never does, and
// the span keeps a new sender from qualifying by a burst.
type EstablishedConfig struct {
	// TableSize bounds the client addresses remembered (an LRU: the
	// senders not heard from for longest go first).
	TableSize int `yaml:"table_size"`
	// MinMessages is the accepted messages needed, at least 1.
	MinMessages int `yaml:"min_messages"`
	// MinSpan is the time needed between the first and the last of them.
	MinSpan time.Duration `yaml:"min_span"`
}

// Defaults of EstablishedConfig, see DefaultEstablished.
const (
	DefaultEstablishedTableSize   = 100000
	DefaultEstablishedMinMessages = 20
	DefaultEstablishedMinSpan     = 48 * time.Hour
)

// DefaultEstablished is 20 accepted messages over at least two days. A
// relay of a large provider or a partner reaches that within days of
// ordinary traffic; a worm's messages are rejected, not accepted, and a
// spam bot would have to deliver clean mail from one address for two
// days first, which still leaves it exposed to every strong rule.
// 100000 addresses cost about 21 MB (about 210 bytes each).
func DefaultEstablished() EstablishedConfig {
	return EstablishedConfig{
		TableSize:   DefaultEstablishedTableSize,
		MinMessages: DefaultEstablishedMinMessages,
		MinSpan:     DefaultEstablishedMinSpan,
	}
}

// DefaultConfig returns the built-in configuration with the default
// profile's rules (see defaultRules), listed: a rule set an operator can
// run unchanged on an MX.
func DefaultConfig() Config {
	return Config{
		Profile:            ProfileDefault,
		Rules:              defaultRules(),
		QueueTableSize:     DefaultQueueTableSize,
		ReinjectionSources: DefaultReinjectionSources(),
		Established:        DefaultEstablished(),
	}
}

// defaultRules are the rules of the default profile. Content rules
// (worms, executable attachments) ban on the first hit, because the
// administrator's own header_checks already decided the message was
// malicious; but a bare executable attachment is weak evidence, which
// does not ban an authenticated or established client. Reputation and
// behaviour rules (DNSBL listings, password guessing, relay probing,
// pregreeting) ban for shorter times or only after repeats, because an
// ordinary but misconfigured server or user can cause them once. Unknown
// users and other smtpd rejects never ban by default: every mail server
// sends them. Neither do the protocol and rate records that an ordinary
// client can cause now and then (see aggressiveRules).
func defaultRules() []Rule {
	return []Rule{
		{
			// worm-signature bans a client whose message a header or
			// body check rejected or discarded with a text that names
			// a worm or virus ("probably sent by a W32.HLLW.Mankx
			// virus", "produced by W32-SoBig worm"). The pattern sees
			// only the administrator's text, so that a Subject such as
			// "Your mail server sent us a virus" cannot select it.
			// Strong evidence: it bans an established relay or an
			// authenticated user too, because the administrator's
			// header_checks named the worm.
			Name:      "worm-signature",
			Kinds:     []Kind{KindCleanupReject, KindCleanupDiscard},
			Pattern:   MustRegexp(`(?i)\b(w32|worm|virus)\b`),
			Threshold: 1,
			Window:    time.Hour,
			BanFor:    24 * time.Hour,
			Evidence:  EvidenceStrong,
		},
		{
			// executable-attachment bans a client whose message was
			// rejected or discarded for carrying an executable
			// attachment ("an attachment with .scr extension
			// detected"), which is how mass-mailing worms spread.
			// Weak evidence: a provider's relay or the site's own
			// user passes such a file on now and then, and banning
			// them stops all their mail; so their clients, when
			// authenticated or established, are not banned.
			Name:      "executable-attachment",
			Kinds:     []Kind{KindCleanupReject, KindCleanupDiscard},
			Pattern:   MustRegexp(`(?i)\battachment with \.\w+ extension`),
			Threshold: 1,
			Window:    time.Hour,
			BanFor:    24 * time.Hour,
			Evidence:  EvidenceWeak,
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
			Evidence:  EvidenceStrong,
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
			Evidence:  EvidenceStrong,
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
			Evidence:  EvidenceStrong,
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
			Evidence:  EvidenceStrong,
		},
	}
}

// DefaultReinjectionSources is loopback: a content filter on the MX itself.
func DefaultReinjectionSources() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// SetDefaults sets r to what a rule in the file starts from, before the
// file's keys are decoded over it: the configuration loader calls it for
// every rule, and it is the only place that fills in a rule's defaults.
// The matcher and the enforcer get complete rules and fill in nothing.
func (r *Rule) SetDefaults() {
	*r = Rule{Threshold: DefaultThreshold, Window: DefaultWindow, Evidence: EvidenceStrong}
}

// cloneRules copies rules deeply enough that the caller's later changes to
// its slices cannot reach the matcher; the compiled expressions are
// shared, as they are immutable.
func cloneRules(rules []Rule) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		r.Kinds = slices.Clone(r.Kinds)
		r.Hosts = slices.Clone(r.Hosts)
		out[i] = r
	}
	return out
}

// Validate reports every problem in c, each a *configerr.FieldError whose
// path is relative to the matcher section ("rules[0].pattern").
func (c Config) Validate() error {
	var errs []error
	if !c.Profile.Valid() {
		errs = append(errs, configerr.New("profile", configerr.ErrInvalid, "%q is not a rule profile (%s or %s)", c.Profile, ProfileDefault, ProfileAggressive))
	}
	if c.QueueTableSize < 1 {
		errs = append(errs, configerr.New("queue_table_size", configerr.ErrOutOfRange, "%d is out of range (at least 1)", c.QueueTableSize))
	}
	for i, p := range c.ReinjectionSources {
		if !p.IsValid() {
			errs = append(errs, configerr.New(fmt.Sprintf("reinjection_sources[%d]", i), configerr.ErrRequired, "empty prefix"))
		}
	}
	e := c.Established
	if e.TableSize < 1 {
		errs = append(errs, configerr.New("established.table_size", configerr.ErrOutOfRange, "%d is out of range (at least 1)", e.TableSize))
	}
	if e.MinMessages < 1 {
		errs = append(errs, configerr.New("established.min_messages", configerr.ErrOutOfRange, "%d is out of range (at least 1)", e.MinMessages))
	}
	if e.MinSpan < 0 {
		errs = append(errs, configerr.New("established.min_span", configerr.ErrOutOfRange, "%v is negative", e.MinSpan))
	}
	names := make(map[string]string)
	if c.Rules == nil && c.Profile.Valid() {
		// The built-in rules are valid (a test says so); only their
		// names matter here, for rules_add.
		for _, r := range c.Profile.rules() {
			names[r.Name] = fmt.Sprintf("a rule of profile %s", c.Profile.orDefault())
		}
	} else {
		errs = append(errs, validateRules("rules", c.Rules, names)...)
	}
	errs = append(errs, validateRules("rules_add", c.RulesAdd, names)...)
	return errors.Join(errs...)
}

// kindList is the valid kinds for messages.
var kindList = func() string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}()

// validateRules reports the problems of the rule list at field. names
// maps the rule names taken so far to where ("rules[0]"); the list's own
// names are added.
func validateRules(field string, rules []Rule, names map[string]string) []error {
	var errs []error
	for i, r := range rules {
		at := fmt.Sprintf("%s[%d]", field, i)
		bad := func(sub string, kind error, format string, args ...any) {
			errs = append(errs, configerr.New(at+"."+sub, kind, format, args...))
		}
		switch {
		case r.Name == "":
			bad("name", configerr.ErrRequired, "required")
		case !validName(r.Name):
			bad("name", configerr.ErrInvalid, "%q is not a rule name: use up to 64 letters, digits, '.', '_' and '-'", r.Name)
		default:
			if where, dup := names[r.Name]; dup {
				bad("name", configerr.ErrDuplicate, "%q is also the name of %s", r.Name, where)
			} else {
				names[r.Name] = at
			}
		}
		for j, k := range r.Kinds {
			if !k.Valid() {
				bad(fmt.Sprintf("kinds[%d]", j), configerr.ErrInvalid, "%q is not an event kind (%s)", k, kindList)
			}
		}
		for j, h := range r.Hosts {
			if h == "" || strings.ContainsAny(h, " \t") {
				bad(fmt.Sprintf("hosts[%d]", j), configerr.ErrInvalid, "%q is not a host name", h)
			}
		}
		if r.Pattern.empty() {
			bad("pattern", configerr.ErrRequired, "required")
		}
		if r.Threshold < 1 {
			bad("threshold", configerr.ErrOutOfRange, "%d is out of range (at least 1)", r.Threshold)
		}
		if r.Window < time.Second {
			bad("window", configerr.ErrOutOfRange, "%v is out of range (at least 1s)", r.Window)
		}
		if r.BanFor < 0 {
			bad("ban_for", configerr.ErrOutOfRange, "%v is negative (0 means enforcer.ban_for)", r.BanFor)
		}
		if !r.Evidence.Valid() {
			bad("evidence", configerr.ErrInvalid, "%q is not an evidence strength (strong or weak)", r.Evidence)
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
