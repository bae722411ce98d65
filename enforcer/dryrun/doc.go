// Package dryrun is the enforcer's Firewall for enforcer.dry_run: it
// changes nothing in the kernel, logs what it would block or unblock, and
// remembers it in memory with expiries so that the status pages and the
// API behave as with nftables.
package dryrun
