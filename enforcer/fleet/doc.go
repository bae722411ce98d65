// Package fleet shares a gateway's decisions with the other gateways of a
// site over a NATS JetStream key-value bucket, and applies theirs through
// the local enforcer.
//
// Every decision is one key: ban.<address or network> holds the latest
// ban or unban of it, allow.<address or network> the latest allow or
// disallow, gw.<name> each gateway's heartbeat. A value is a small JSON
// object (see value) and carries a per-key TTL: a ban lives as long as it
// lasts, an unban (a tombstone) at least as long as the ban it lifted, so
// that an older ban published late by a gateway that was cut off cannot
// bring the address back. The bucket's revision order is the fleet's
// order: a gateway applies every revision it sees after the one it
// applied before, and its own never-block list and allows still win.
//
// When NATS cannot be reached the gateway goes on enforcing alone: its
// decisions wait in a queue, kept in the record (enforcer/store) once
// they have waited a moment, and are published on reconnect after the
// gateway has caught up with the bucket; a queued decision that the
// bucket has since overtaken is dropped, not published.
package fleet
