// Package matcher turns Postfix log messages into offenses: it knows
// Postfix's log grammar (queue IDs, smtpd's client= records, the wording of
// cleanup and smtpd rejects) and the operator's rules, and decides which
// client address an event belongs to.
//
// The package is pure logic without I/O, so that the daemon and
// "wormgate check" replay give the same verdicts for the same lines.
//
// Attribution is the security boundary. A cleanup reject line carries
// attacker-written header text before the client address and an
// attacker-written sender and HELO after it, so no position in that line can
// be trusted. A cleanup event is therefore attributed only through the
// client that smtpd recorded for the same queue ID on the same host, in a
// client= line where Postfix writes the address before any attacker text.
// smtpd and postscreen lines that start with the client (NOQUEUE rejects,
// SASL failures) are read at that anchored position only. Rules select
// events; they can never choose the address.
//
// An offense also carries what the same logs said about its client
// before: whether the message's client= record shows SMTP AUTH (read only
// right after the address, where no client text can be), and how many
// of its messages qmgr accepted and since when (package established), so
// that the policy can spare authenticated and established clients from
// weak evidence.
//
// The rules come in two built-in profiles: the default one, which counts
// only what an ordinary client hardly ever causes (worm rejects, DNSBL
// listings, password guessing, relay probing, pregreeting), and the
// aggressive one, which adds the rest of smtpd's, postscreen's and
// anvil's abuse records with thresholds that one glitch never reaches.
// An operator adds rules to either (Config.RulesAdd) or replaces them
// (Config.Rules).
package matcher
