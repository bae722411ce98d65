// Command wormgate receives the mail log of MX hosts over syslog and
// drops the clients that worms and abusers use in the gateway's kernel.
//
// This package is the only place that wires things together: flags,
// configuration loading and reload, subcommands, signals and the status
// HTTP server. The domain lives in receiver, matcher and enforcer.
package main
