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
