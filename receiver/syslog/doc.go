// Package syslog is the grammar of the syslog lines wormgate reads, from
// the wire or from a log file: RFC 3164 as rsyslog forwards it, RFC 3339
// timestamps as Debian's rsyslog writes files, raw <PRI> lines and RFC
// 5424, all turned into one Message. It does no I/O and owns no socket, so
// that the matcher, which imports it for Message, stays pure; the receiver
// owns sockets and framing and calls Parse.
package syslog
