package policy

import (
	"net/netip"
	"time"
)

// NoteFleetBan merges what another gateway of the fleet knows of addr's
// bans into the offender memory, so that this gateway escalates a repeat
// offender by the fleet's history, not only by its own: bans is the
// number of bans the offender has had (the other gateway's count, which
// already includes the fleet's), until the end of the one now in force.
// The hits and hosts are this gateway's own and stay as they are.
func (p *Policy) NoteFleetBan(addr netip.Addr, bans int, until, now time.Time) History {
	addr = addr.Unmap()
	o, ok := p.offenders.Get(addr)
	if !ok {
		o = &Offender{Addr: addr, FirstSeen: now, LastSeen: now}
		p.offenders.Add(addr, o)
	}
	o.Bans = max(o.Bans, bans)
	if until.After(o.BannedUntil) {
		o.BannedUntil = until
	}
	return o.history()
}
