// Package store is the enforcer's durable record: the active bans and the
// offender history in one bbolt file, committed in key order, with a mark
// that says whether the last shutdown left it complete. The enforcer
// writes it behind the kernel; only `wormgate serve` uses it.
package store
