package matcher

// Kind names the sort of Postfix event a rule can select. The values are
// part of the configuration format.
type Kind string

// The event kinds. The comments show the Postfix wording that produces them.
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
	// KindSMTPDReject is an smtpd (or postscreen) access reject:
	// "NOQUEUE|QID: reject: RCPT|MAIL|CONNECT|HELO|DATA|ETRN|VRFY from
	// name[addr](:port)?: ...".
	KindSMTPDReject Kind = "smtpd_reject"
	// KindSASLFailed is a failed SMTP AUTH attempt: "smtpd: warning:
	// name[addr](:port)?: SASL LOGIN|PLAIN|... authentication failed: ...".
	KindSASLFailed Kind = "sasl_failed"
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
