// Package enforcer turns offenses into bans and bans into kernel state.
//
// The Policy decides who is banned and for how long; it takes its clock
// from the offenses so that `wormgate check` replays a log through exactly
// the decisions the daemon would make. The Enforcer wraps a Policy for the
// live daemon: it keeps the authoritative record of active bans and is the
// only writer to the Firewall, which hides nftables (or a dry run) behind a
// small interface. With a Store (a bbolt file) every batch of bans is
// committed to disk before it reaches the kernel; start-up and the
// reconcile loop rebuild the kernel from that record in one atomic batch.
package enforcer
