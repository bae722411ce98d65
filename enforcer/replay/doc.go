// Package replay is the engine of `wormgate check`: it runs messages read
// from old log files through the daemon's own matcher and ban policy, with
// no network and no firewall, and says who would have been banned, when
// and why.
//
// It keeps the would-be ban table, the offenses of one address that
// --explain asks about (each with the policy's Decision, so the numbers
// shown are the ones the policy decided on, not a second count), and the
// counts for the summary, and writes the reports `wormgate check` prints.
// Time comes from the log, never from the clock: thresholds and windows
// run on the log's own timestamps.
package replay
