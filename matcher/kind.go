package matcher

// Kind names the sort of Postfix event a rule can select. The values are
// part of the configuration format.
type Kind string

// The event kinds. The comments show the Postfix wording that produces them
// (format strings from Postfix 3.x) and where the client address is read.
const (
	// KindCleanupReject is a header_checks/body_checks REJECT:
	// "cleanup: QID: reject: header|body ... from name[addr]; from=<...> ...".
	KindCleanupReject Kind = "cleanup_reject"
	// KindCleanupDiscard is a header_checks/body_checks DISCARD:
	// "cleanup: QID: discard: header|body ...".
	KindCleanupDiscard Kind = "cleanup_discard"
	// KindCleanupHold is a header_checks/body_checks HOLD:
	// "cleanup: QID: hold: header|body ...".
	KindCleanupHold Kind = "cleanup_hold"
	// KindCleanupWarning is a header_checks/body_checks WARN:
	// "cleanup: QID: warning: header|body ...".
	KindCleanupWarning Kind = "cleanup_warning"
	// KindMilterReject is a milter reject: from cleanup at end of message
	// ("QID: milter-reject: END-OF-MESSAGE from name[addr]: ...",
	// attributed through the client= record like every cleanup event), or
	// from smtpd in an earlier stage ("NOQUEUE: milter-reject: RCPT from
	// name[addr]: ...", read at the anchored position).
	KindMilterReject Kind = "milter_reject"
	// KindSMTPDReject is an smtpd or postscreen access reject:
	// "NOQUEUE|QID: reject: RCPT|MAIL|CONNECT|HELO|DATA|ETRN|VRFY from
	// name[addr](:port)?: ..." (smtpd_check.c), and postscreen's
	// "NOQUEUE: reject: RCPT from [addr]:port: 550 5.7.1 Service
	// unavailable; client [addr] blocked using ..." (postscreen_smtpd.c),
	// which has the same wording and anchor; a rule tells them apart by
	// program.
	KindSMTPDReject Kind = "smtpd_reject"
	// KindSASLFailed is a failed SMTP AUTH attempt: "smtpd: warning:
	// name[addr](:port)?: SASL LOGIN|PLAIN|... authentication failed: ..."
	// (smtpd_sasl_glue.c).
	KindSASLFailed Kind = "sasl_failed"
	// KindSASLServerError is an SMTP AUTH attempt that failed through the
	// server's fault, not the password: "SASL LOGIN authentication
	// failed: Connection lost to authentication server" (Dovecot down),
	// "generic failure", a temporary failure. Ordinary users retrying
	// while the backend is down produce these, so no default rule counts
	// them.
	KindSASLServerError Kind = "sasl_server_error"
	// KindSASLBadMechanism is an AUTH with a mechanism the server did not
	// offer ("Invalid authentication mechanism"): a scanner's habit, but
	// also a misconfigured client's, so no default rule counts it.
	KindSASLBadMechanism Kind = "sasl_bad_mechanism"
	// KindPostscreenPregreet is a client that talked before postscreen's
	// greeting: "PREGREET %d after %s from [%s]:%s: %.100s"
	// (postscreen_early.c). Almost only spam bots do that.
	KindPostscreenPregreet Kind = "postscreen_pregreet"
	// KindPostscreenDNSBL is a client whose combined DNSBL score reached
	// postscreen_dnsbl_threshold: "DNSBL rank %d for [%s]:%s"
	// (postscreen_early.c).
	KindPostscreenDNSBL Kind = "postscreen_dnsbl"
	// KindPostscreenHangup is a client that hung up during postscreen's
	// tests: "HANGUP after %s from [%s]:%s in %s" (postscreen_misc.c).
	KindPostscreenHangup Kind = "postscreen_hangup"
	// KindSMTPDLostAuth is a client that dropped the connection in the
	// middle of AUTH, as password guessers do after a failure: "lost
	// connection after AUTH from name[addr](:port)?" (smtpd.c).
	KindSMTPDLostAuth Kind = "smtpd_lost_auth"
	// KindSMTPDTooManyErrors is a client that smtpd disconnected after
	// smtpd_hard_error_limit errors: "too many errors after %s from
	// name[addr](:port)?" (smtpd.c).
	KindSMTPDTooManyErrors Kind = "smtpd_too_many_errors"

	// The kinds below are the rest of smtpd's and postscreen's abuse
	// records. No default rule counts them; the aggressive profile does
	// (see ProfileAggressive).

	// KindSMTPDLostConnection is a client that dropped the connection at
	// any other stage than AUTH: "lost connection after %s from
	// name[addr](:port)?", with "DATA (%lu bytes)" or "BDAT (%lu bytes)"
	// for a stage with content (smtpd.c). The stage is in the text for a
	// rule to select: CONNECT (a scanner that only connects), STARTTLS
	// (a failed TLS handshake), UNKNOWN (after a command smtpd did not
	// know). Since Postfix 3.10 these records, like "too many errors",
	// start with "NOQUEUE: " or the queue ID.
	KindSMTPDLostConnection Kind = "smtpd_lost_connection"
	// KindSMTPDPipelining is a client that sent commands before smtpd's
	// reply where SMTP forbids it: "improper command pipelining after %s
	// from %s: %s" (smtpd.c smtpd_flag_ill_pipelining); the text after
	// the client is what the client sent.
	KindSMTPDPipelining Kind = "smtpd_pipelining"
	// KindSMTPDNonSMTP is a client that sent a mail header or a command of
	// smtpd_forbidden_commands (an HTTP request to port 25): "warning:
	// non-SMTP command from %s: %.100s" (smtpd.c).
	KindSMTPDNonSMTP Kind = "smtpd_non_smtp"
	// KindSMTPDRateLimit is a client over one of anvil's limits, which
	// smtpd enforces: "warning: Connection rate limit exceeded: %d from
	// %s for service %s", and the same for "Connection concurrency",
	// "Message delivery request rate", "Recipient address rate", "New
	// TLS session rate" and "AUTH command rate" (smtpd.c). The limit is
	// in the text for a rule to select.
	KindSMTPDRateLimit Kind = "smtpd_rate_limit"
	// KindSMTPDAuthFailedSession is a session whose end-of-session
	// statistics show failed AUTH commands: "disconnect from %s ...
	// auth=N/M ..." with N < M (smtpd.c smtpd_format_cmd_stats), and
	// for which the same smtpd process logged no SASL failure: AUTH
	// where it is not offered, aborted or malformed. A failure that
	// smtpd logged is its own kind's to count (a wrong password as
	// sasl_failed, a backend that is down as sasl_server_error, which
	// must not come back as a failed session).
	KindSMTPDAuthFailedSession Kind = "smtpd_auth_failed_session"
	// KindPostscreenCommandTimeLimit is a client that postscreen's SMTP
	// engine dropped at postscreen_command_time_limit: "COMMAND TIME
	// LIMIT from [%s]:%s after %s" (postscreen_smtpd.c).
	KindPostscreenCommandTimeLimit Kind = "postscreen_command_time_limit"
	// KindPostscreenCommandCountLimit is a client that sent more than
	// postscreen_command_count_limit commands: "COMMAND COUNT LIMIT from
	// [%s]:%s after %s".
	KindPostscreenCommandCountLimit Kind = "postscreen_command_count_limit"
	// KindPostscreenCommandLengthLimit is a client that sent a command
	// longer than line_length_limit: "COMMAND LENGTH LIMIT from [%s]:%s
	// after %s".
	KindPostscreenCommandLengthLimit Kind = "postscreen_command_length_limit"
	// KindPostscreenNonSMTP is postscreen's non-SMTP command test: "NON-SMTP
	// COMMAND from [%s]:%s after %s: %.100s %s"; the command and its
	// text after the client are the client's.
	KindPostscreenNonSMTP Kind = "postscreen_non_smtp"
	// KindPostscreenBareNewline is postscreen's bare newline test: "BARE
	// NEWLINE from [%s]:%s after %s", where the text after "after" is the
	// client's command.
	KindPostscreenBareNewline Kind = "postscreen_bare_newline"
	// KindPostscreenPipelining is postscreen's pipelining test: "COMMAND
	// PIPELINING from [%s]:%s after %.100s: %s", the command and text
	// being the client's.
	KindPostscreenPipelining Kind = "postscreen_pipelining"
)

// kinds lists every Kind; a Kind's position here indexes the counters and
// the per-kind rule lists.
var kinds = [...]Kind{
	KindCleanupReject,
	KindCleanupDiscard,
	KindCleanupHold,
	KindCleanupWarning,
	KindMilterReject,
	KindSMTPDReject,
	KindSASLFailed,
	KindSASLServerError,
	KindSASLBadMechanism,
	KindPostscreenPregreet,
	KindPostscreenDNSBL,
	KindPostscreenHangup,
	KindSMTPDLostAuth,
	KindSMTPDTooManyErrors,
	KindSMTPDLostConnection,
	KindSMTPDPipelining,
	KindSMTPDNonSMTP,
	KindSMTPDRateLimit,
	KindSMTPDAuthFailedSession,
	KindPostscreenCommandTimeLimit,
	KindPostscreenCommandCountLimit,
	KindPostscreenCommandLengthLimit,
	KindPostscreenNonSMTP,
	KindPostscreenBareNewline,
	KindPostscreenPipelining,
}

const numKinds = len(kinds)

// Kinds returns every known event kind.
func Kinds() []Kind { return append([]Kind(nil), kinds[:]...) }

// Valid reports whether k is a known event kind.
func (k Kind) Valid() bool { return k.index() >= 0 }

func (k Kind) index() int {
	for i, kk := range kinds {
		if kk == k {
			return i
		}
	}
	return -1
}

// adminText reports whether a rule pattern sees only the administrator's
// text of this kind's events (see Rule.Pattern).
func (k Kind) adminText() bool {
	switch k {
	case KindCleanupReject, KindCleanupDiscard, KindCleanupHold, KindCleanupWarning:
		return true
	}
	return false
}
