// Package established remembers, per client address, the messages that
// the MX logs show accepted from it, and tells whether that makes the
// client an established sender (see matcher.EstablishedConfig). It is
// pure (log times only, no clock) and bounded.
package established

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Table is an LRU of senders: when full, the sender whose mail was
// accepted least recently is forgotten. It is not safe for concurrent
// use; the matcher's goroutine owns it.
type Table struct {
	lru         *simplelru.LRU[netip.Addr, *sender]
	minMessages int
	minSpan     time.Duration
}

// sender is one client's accepted mail, in log time. first and last are
// the earliest and latest seen, as several MX hosts' lines may arrive a
// little out of order.
type sender struct {
	accepted    int
	first, last time.Time
}

// Standing is what the table knows about one client.
type Standing struct {
	// Accepted counts its accepted messages, Since is the first one's time.
	Accepted int
	Since    time.Time
	// Established: at least minMessages, the first and last at least
	// minSpan apart.
	Established bool
}

// New returns a table of at most size senders; a sender is established
// after minMessages accepted messages spread over at least minSpan.
func New(size, minMessages int, minSpan time.Duration) (*Table, error) {
	lru, err := simplelru.NewLRU[netip.Addr, *sender](size, nil)
	if err != nil {
		return nil, fmt.Errorf("established: %w", err)
	}
	return &Table{lru: lru, minMessages: minMessages, minSpan: minSpan}, nil
}

// Accept counts one accepted message from addr at t. It reports whether
// addr is new to the table and whether another sender was forgotten to
// make room for it.
func (t *Table) Accept(addr netip.Addr, at time.Time) (added, evicted bool) {
	if e, ok := t.lru.Get(addr); ok {
		e.accepted++
		if at.Before(e.first) {
			e.first = at
		}
		if at.After(e.last) {
			e.last = at
		}
		return false, false
	}
	return true, t.lru.Add(addr, &sender{accepted: 1, first: at, last: at})
}

// Standing returns what is known about addr. It does not refresh addr in
// the LRU: only accepted mail keeps a sender remembered, offenses do not.
func (t *Table) Standing(addr netip.Addr) Standing {
	e, ok := t.lru.Peek(addr)
	if !ok {
		return Standing{}
	}
	return Standing{
		Accepted:    e.accepted,
		Since:       e.first,
		Established: e.accepted >= t.minMessages && e.last.Sub(e.first) >= t.minSpan,
	}
}

// Len is the number of senders remembered.
func (t *Table) Len() int { return t.lru.Len() }
