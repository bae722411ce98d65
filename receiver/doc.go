// Package receiver turns syslog traffic from the MX hosts (UDP, TCP, TLS)
// and rsyslog log files into Messages for the matcher.
//
// It owns the sockets, the RFC 6587 framing, the sender allow-list and the
// limits itself; of gopkg.in/mcuadros/go-syslog.v2 only the RFC 5424 format
// parser is used, behind recover(), as the fallback and fuzzing reference of
// our own (receiver/syslog), because the library's servers crash and lose
// messages on hostile input (see go-syslog-notes.md). Traditional
// (RFC 3164 and rsyslog file) lines go through a hand-written parser that is
// fast enough for `wormgate check` to replay more than a million lines per
// second.
//
// Messages leave in batches, a read's worth of one connection or the
// datagrams that waited for a full output (see Receiver): one channel
// operation per message made four senders contend for the channel more
// than they parsed. A consumer gives batches back with Release.
//
// A stream connection holds its slot only while it brings messages: see
// streamReader for the idle and slowloris bounds, and for why nothing
// there reads the clock per message.
//
// Metrics (all labelled by transport "udp", "tcp" or "tls"):
//
//	wormgate_syslog_messages_total{transport}        parsed messages handed on (counted a
//	                                                 batch at a time, when the batch is)
//	wormgate_syslog_dropped_total{transport,reason}  reason: sender_denied, parse_error,
//	                                                 oversize, framing_error, queue_full, conn_limit,
//	                                                 sender_conn_limit, handshake_limit
//	wormgate_syslog_connections{transport}           open TCP/TLS connections
//	wormgate_syslog_connections_closed_total{transport,reason}
//	                                                 connections cut off: idle (no complete
//	                                                 message for idle_timeout), slow (a message
//	                                                 unfinished message_timeout after its first byte)
//	wormgate_syslog_tls_handshake_failures_total     TLS handshakes that failed or timed out
package receiver
