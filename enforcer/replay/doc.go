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
// run on the log's own timestamps, and a time range (Config.Since,
// Until) selects the offenses that count by them.
//
// What a replay reads is counted per file: unparsable lines, lines not in
// the format the caller insists on (Config.Format), and a file that ends
// early (a truncated gzip), whose lines up to there still count.
package replay
