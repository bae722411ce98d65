package matcher

import (
	"net/netip"
	"time"
)

// Offense is one event that a rule matched, attributed to the client
// that Postfix itself recorded (never to an address the sender wrote).
type Offense struct {
	Addr    netip.Addr
	Rule    string
	Kind    Kind
	Host    string
	QueueID string
	Time    time.Time
}
