// Package receiver turns syslog traffic from the MX hosts (UDP, TCP, TLS)
// and rsyslog log files into Messages for the matcher.
//
// It owns the sockets, the RFC 6587 framing, the sender allow-list and the
// limits itself; of gopkg.in/mcuadros/go-syslog.v2 only the RFC 5424 format
// parser is used, behind recover(), because the library's servers crash and
// lose messages on hostile input (see go-syslog-notes.md). Traditional
// (RFC 3164 and rsyslog file) lines go through a hand-written parser that is
// fast enough for `wormgate check` to replay more than a million lines per
// second.
//
// Metrics (all labelled by transport "udp", "tcp" or "tls"):
//
//	wormgate_syslog_messages_total{transport}        parsed messages forwarded
//	wormgate_syslog_dropped_total{transport,reason}  reason: sender_denied, parse_error,
//	                                                 oversize, framing_error, queue_full, conn_limit,
//	                                                 sender_conn_limit, handshake_limit
//	wormgate_syslog_connections{transport}           open TCP/TLS connections
//	wormgate_syslog_tls_handshake_failures_total     TLS handshakes that failed or timed out
package receiver
