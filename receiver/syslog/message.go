package syslog

import (
	"net/netip"
	"time"
)

// Message is one syslog record, normalised from whichever wire or file
// format carried it. It is the only thing the matcher ever sees.
type Message struct {
	// Time is the sender's timestamp, in the sender's zone when it said
	// one (RFC 3339, RFC 5424) and in the receiver's local zone otherwise.
	Time time.Time
	// Host is the HOSTNAME field as the sender wrote it, never the
	// receiver's own name.
	Host string
	// Program is the full tag without the PID, e.g. "postfix/cleanup" or
	// "postfix-out/smtpd", so that the Postfix service survives.
	Program string
	// PID is 0 when the sender gave none.
	PID int
	// Text is the MSG part, without a trailing newline.
	Text string
	// Peer is the network address the message came from; invalid for
	// messages read from a file.
	Peer netip.Addr
	// Transport is "udp", "tcp", "tls" or "file".
	Transport string
}
