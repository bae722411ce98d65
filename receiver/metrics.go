package receiver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, exported so that callers and tests can read them back from
// the registry.
const (
	MetricMessages        = "wormgate_syslog_messages_total"
	MetricDropped         = "wormgate_syslog_dropped_total"
	MetricConnections     = "wormgate_syslog_connections"
	MetricTLSHandshakeErr = "wormgate_syslog_tls_handshake_failures_total"
	// MetricConnectionsClosed counts stream connections the receiver cut
	// off, by transport and reason (ReasonIdle, ReasonSlow).
	MetricConnectionsClosed = "wormgate_syslog_connections_closed_total"
)

// Transports, the values of Message.Transport and of the transport label.
const (
	TransportUDP = "udp"
	TransportTCP = "tcp"
	TransportTLS = "tls"
)

// Drop reasons, the values of the reason label of MetricDropped.
const (
	ReasonSenderDenied = "sender_denied"
	ReasonParseError   = "parse_error"
	ReasonOversize     = "oversize"
	ReasonFraming      = "framing_error"
	ReasonQueueFull    = "queue_full"
	ReasonConnLimit    = "conn_limit"
	// ReasonSenderConnLimit: one sender already holds
	// max_connections_per_sender connections.
	ReasonSenderConnLimit = "sender_conn_limit"
	// ReasonHandshakeLimit: max_tls_handshakes handshakes were under way.
	ReasonHandshakeLimit = "handshake_limit"
)

// Reasons for closing a connection, the values of the reason label of
// MetricConnectionsClosed.
const (
	// ReasonIdle: no complete message for idle_timeout.
	ReasonIdle = "idle"
	// ReasonSlow: a message begun and not complete within
	// message_timeout (a slowloris).
	ReasonSlow = "slow"
)

var (
	closeReasons  = []string{ReasonIdle, ReasonSlow}
	netTransports = []string{TransportUDP, TransportTCP, TransportTLS}
	dropReasons   = []string{ReasonSenderDenied, ReasonParseError, ReasonOversize, ReasonFraming, ReasonQueueFull, ReasonConnLimit,
		ReasonSenderConnLimit, ReasonHandshakeLimit}
)

// transportMetrics holds the resolved children for one transport, so that
// the per-message path does no label lookups.
type transportMetrics struct {
	messages     prometheus.Counter
	senderDenied prometheus.Counter
	parseError   prometheus.Counter
	oversize     prometheus.Counter
	framing      prometheus.Counter
	queueFull    prometheus.Counter
	connLimit    prometheus.Counter
	senderLimit  prometheus.Counter
	hsLimit      prometheus.Counter
	conns        prometheus.Gauge // nil for UDP
	// closed is by reason; nil for UDP.
	closed map[string]prometheus.Counter
}

type metrics struct {
	by           map[string]*transportMetrics
	tlsHandshake prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricMessages,
		Help: "Syslog messages parsed and forwarded to the matcher.",
	}, []string{"transport"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricDropped,
		Help: "Syslog input dropped before reaching the matcher, by reason.",
	}, []string{"transport", "reason"})
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricConnections,
		Help: "Open syslog stream connections.",
	}, []string{"transport"})
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricConnectionsClosed,
		Help: "Syslog stream connections closed by the receiver, by reason: idle (no complete message for idle_timeout) or slow (a message not complete within message_timeout).",
	}, []string{"transport", "reason"})
	hs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: MetricTLSHandshakeErr,
		Help: "TLS handshakes with syslog senders that failed or timed out.",
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{messages, dropped, conns, closed, hs} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	m := &metrics{by: make(map[string]*transportMetrics), tlsHandshake: hs}
	// Children are created up front so every series shows as 0.
	for _, tr := range netTransports {
		tm := &transportMetrics{messages: messages.WithLabelValues(tr)}
		for _, r := range dropReasons {
			c := dropped.WithLabelValues(tr, r)
			switch r {
			case ReasonSenderDenied:
				tm.senderDenied = c
			case ReasonParseError:
				tm.parseError = c
			case ReasonOversize:
				tm.oversize = c
			case ReasonFraming:
				tm.framing = c
			case ReasonQueueFull:
				tm.queueFull = c
			case ReasonConnLimit:
				tm.connLimit = c
			case ReasonSenderConnLimit:
				tm.senderLimit = c
			case ReasonHandshakeLimit:
				tm.hsLimit = c
			}
		}
		if tr != TransportUDP {
			tm.conns = conns.WithLabelValues(tr)
			tm.closed = make(map[string]prometheus.Counter, len(closeReasons))
			for _, r := range closeReasons {
				tm.closed[r] = closed.WithLabelValues(tr, r)
			}
		}
		m.by[tr] = tm
	}
	return m, nil
}
