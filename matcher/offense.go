package matcher

import (
	"net/netip"
	"time"
)

// Offense is one event that a rule matched, attributed to the client
// that Postfix itself recorded (never to an address the sender wrote).
// MaxOffenseText bounds Offense.Text.
const MaxOffenseText = 240

type Offense struct {
	Addr    netip.Addr
	Rule    string
	Kind    Kind
	Host    string
	QueueID string
	Time    time.Time
	// Text is the reject text the MX host logged, at most
	// MaxOffenseText bytes, for the offence history. The client wrote
	// parts of it: show it, never parse it.
	Text string

	// What the same MX logs said about the client before this event, for
	// the policy's handling of weak evidence; none of it comes from text
	// the client wrote.

	// Authenticated: the message's client= record shows a successful SMTP
	// AUTH (a sasl_method right after the client's address).
	Authenticated bool
	// Accepted counts the client's messages that qmgr took into its
	// active queue, from AcceptedSince (the first one's log time) on.
	Accepted      int
	AcceptedSince time.Time
	// Established: Accepted and its span reach EstablishedConfig's
	// minimums.
	Established bool
}
