// Package policy decides, from offenses, who is banned and for how long:
// thresholds within windows, escalation for repeat offenders, never-block
// prefixes and the bounded offender memory. It is pure (no clock, no I/O:
// time comes from the offenses), so the daemon's enforcer and `wormgate
// check` decide alike, and each Decision carries what --explain prints.
package policy
