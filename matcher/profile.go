package matcher

import (
	"slices"
	"time"
)

// Profile names a built-in rule set. The values are part of the
// configuration format.
type Profile string

const (
	// ProfileDefault is the conservative rule set (defaultRules): worm
	// and virus rejects, executable attachments, DNSBL listings, password
	// guessing, relay probing and pregreeting. The empty Profile means
	// it too.
	ProfileDefault Profile = "default"
	// ProfileAggressive is the default rule set and rules for the rest
	// of smtpd's, postscreen's and anvil's abuse records
	// (aggressiveRules), each with a threshold that one glitch of an
	// ordinary client does not reach.
	ProfileAggressive Profile = "aggressive"
)

// Valid reports whether p names a profile.
func (p Profile) Valid() bool { return p == "" || p == ProfileDefault || p == ProfileAggressive }

func (p Profile) orDefault() Profile {
	if p == "" {
		return ProfileDefault
	}
	return p
}

// Rules returns a copy of the profile's rules; nil for an invalid
// profile.
func (p Profile) Rules() []Rule { return cloneRules(p.rules()) }

func (p Profile) rules() []Rule {
	switch p.orDefault() {
	case ProfileDefault:
		return defaultRules()
	case ProfileAggressive:
		return append(defaultRules(), aggressiveRules()...)
	}
	return nil
}

// EffectiveRules returns the rules c runs: Rules, or the profile's rules
// when Rules is nil, then RulesAdd.
func (c Config) EffectiveRules() []Rule {
	base := c.Rules
	if base == nil {
		base = c.Profile.rules()
	}
	return cloneRules(slices.Concat(base, c.RulesAdd))
}

// Resolved returns c with Rules set to its effective rules and RulesAdd
// cleared: the form in which every consumer of a loaded configuration
// can read the rules from Rules alone.
func (c Config) Resolved() Config {
	c.Rules = c.EffectiveRules()
	c.RulesAdd = nil
	return c
}

// AggressiveRules returns the rules that ProfileAggressive adds to the
// default profile's, for documentation and tests.
func AggressiveRules() []Rule { return aggressiveRules() }

// aggressiveRules are what ProfileAggressive adds: the records of SMTP
// abuse that a serious abuse filter counts, which an ordinary client
// can also cause now and then (a dropped connection, a rate limit on a
// busy day, a stale password). Each needs repeats within its window, so
// that one glitch never bans; the rules a busy legitimate relay could
// reach are weak evidence, which never bans an established sender or
// an authenticated client.
func aggressiveRules() []Rule {
	return []Rule{
		{
			// sasl-bad-mechanism: AUTH with mechanisms the server did
			// not offer, as scanners try them, 5 within 10 minutes (as
			// sasl-guessing). A misconfigured client tries once per
			// connection and polls far less often.
			Name:      "sasl-bad-mechanism",
			Kinds:     []Kind{KindSASLBadMechanism},
			Pattern:   MustRegexp(`authentication failed`),
			Threshold: 5,
			Window:    10 * time.Minute,
			BanFor:    time.Hour,
			Evidence:  EvidenceStrong,
		},
		{
			// auth-failed-sessions: 5 sessions within 30 minutes whose
			// statistics show failed AUTH commands (auth=0/1) that no
			// SASL failure was logged for: AUTH on a port that does
			// not offer it, aborted or malformed AUTH. (Wrong passwords
			// are sasl-guessing's; a SASL backend that is down never
			// counts.)
			Name:      "auth-failed-sessions",
			Kinds:     []Kind{KindSMTPDAuthFailedSession},
			Pattern:   MustRegexp(` auth=[0-9]+/`),
			Threshold: 5,
			Window:    30 * time.Minute,
			BanFor:    time.Hour,
			Evidence:  EvidenceStrong,
		},
		{
			// lost-connection-auth: 5 connections within 10 minutes
			// dropped in the middle of AUTH, as password guessers do
			// after a failure.
			Name:      "lost-connection-auth",
			Kinds:     []Kind{KindSMTPDLostAuth},
			Pattern:   MustRegexp(`lost connection after AUTH `),
			Threshold: 5,
			Window:    10 * time.Minute,
			BanFor:    time.Hour,
			Evidence:  EvidenceStrong,
		},
		{
			// lost-connection-connect: 15 connections within 10
			// minutes that said nothing, as port scanners and
			// connection floods do. A monitoring probe every minute
			// makes 10; put monitoring hosts in never_block anyway.
			// Weak: a relay whose network drops connections is no
			// scanner.
			Name:      "lost-connection-connect",
			Kinds:     []Kind{KindSMTPDLostConnection},
			Pattern:   MustRegexp(`lost connection after CONNECT from `),
			Threshold: 15,
			Window:    10 * time.Minute,
			BanFor:    time.Hour,
			Evidence:  EvidenceWeak,
		},
		{
			// rate-limit: 3 times over one of anvil's rate limits
			// within an hour (connections, messages, recipients, new
			// TLS sessions, AUTH commands); smtpd already refused the
			// excess, so a client that keeps coming back is the
			// abuser the limit was set for. Not the concurrency limit:
			// a busy relay reaches that. Weak: a partner's relay on a
			// busy day is spared once established.
			Name:      "rate-limit",
			Kinds:     []Kind{KindSMTPDRateLimit},
			Pattern:   MustRegexp(` rate limit exceeded: `),
			Threshold: 3,
			Window:    time.Hour,
			BanFor:    time.Hour,
			Evidence:  EvidenceWeak,
		},
		{
			// pipelining: 3 sessions within an hour that sent commands
			// before smtpd's or postscreen's reply where SMTP forbids
			// it, as spam bots do to save round trips.
			Name:      "pipelining",
			Kinds:     []Kind{KindSMTPDPipelining, KindPostscreenPipelining},
			Pattern:   MustRegexp(`(?i)command pipelining`),
			Threshold: 3,
			Window:    time.Hour,
			BanFor:    6 * time.Hour,
			Evidence:  EvidenceStrong,
		},
		{
			// non-smtp-command: 2 sessions within an hour that sent a
			// mail header or an HTTP request as a command: a proxy
			// abuser or a scanner, never a mail client.
			Name:      "non-smtp-command",
			Kinds:     []Kind{KindSMTPDNonSMTP, KindPostscreenNonSMTP},
			Pattern:   MustRegexp(`(?i)non-smtp command`),
			Threshold: 2,
			Window:    time.Hour,
			BanFor:    12 * time.Hour,
			Evidence:  EvidenceStrong,
		},
		{
			// postscreen-protocol: 3 failures of postscreen's deep
			// protocol tests within an hour (command time, count or
			// length limit, bare newline).
			Name: "postscreen-protocol",
			Kinds: []Kind{KindPostscreenCommandTimeLimit, KindPostscreenCommandCountLimit,
				KindPostscreenCommandLengthLimit, KindPostscreenBareNewline},
			Pattern:   MustRegexp(`^(COMMAND (TIME|COUNT|LENGTH) LIMIT|BARE NEWLINE) from `),
			Threshold: 3,
			Window:    time.Hour,
			BanFor:    6 * time.Hour,
			Evidence:  EvidenceStrong,
		},
		{
			// too-many-errors: 3 sessions within an hour that smtpd
			// ended at smtpd_hard_error_limit (20 errors by default),
			// as dictionary attacks and broken bots reach it.
			Name:      "too-many-errors",
			Kinds:     []Kind{KindSMTPDTooManyErrors},
			Pattern:   MustRegexp(`too many errors after `),
			Threshold: 3,
			Window:    time.Hour,
			BanFor:    6 * time.Hour,
			Evidence:  EvidenceStrong,
		},
	}
}
