package main

import (
	"context"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer/nft"
	"github.com/wormgate/wormgate/matcher"
)

// matcherCollector exports the matcher's atomic counters: the matcher is
// pure and knows nothing of Prometheus.
type matcherCollector struct{ m *matcher.Matcher }

var (
	descEvents = prometheus.NewDesc("wormgate_events_total",
		"Postfix events recognised, by kind, whether or not a rule matched.", []string{"kind"}, nil)
	descMatched = prometheus.NewDesc("wormgate_events_matched_total",
		"Offenses produced by rules, by event kind.", []string{"kind"}, nil)
	descUnattributed = prometheus.NewDesc("wormgate_events_unattributed_total",
		"Events a rule matched but no client= record attributed; nobody was banned.", []string{"kind"}, nil)
	descAmbiguous = prometheus.NewDesc("wormgate_client_records_ambiguous_total",
		"client= records from a re-injection source whose original client could not be read with certainty; their events attribute nobody.", nil, nil)
	descQueueEntries = prometheus.NewDesc("wormgate_queue_table_entries",
		"(host, queue ID) -> client records held.", nil, nil)
	descQueueEvictions = prometheus.NewDesc("wormgate_queue_table_evictions_total",
		"Records pushed out of the full queue table before their message ended.", nil, nil)
)

func (c matcherCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEvents, descMatched, descUnattributed, descAmbiguous, descQueueEntries, descQueueEvictions} {
		ch <- d
	}
}

func (c matcherCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Stats()
	for _, k := range matcher.Kinds() {
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(st.Events[k]), string(k))
		ch <- prometheus.MustNewConstMetric(descMatched, prometheus.CounterValue, float64(st.Matched[k]), string(k))
		ch <- prometheus.MustNewConstMetric(descUnattributed, prometheus.CounterValue, float64(st.Unattributed[k]), string(k))
	}
	ch <- prometheus.MustNewConstMetric(descAmbiguous, prometheus.CounterValue, float64(st.AmbiguousClients))
	ch <- prometheus.MustNewConstMetric(descQueueEntries, prometheus.GaugeValue, float64(st.QueueEntries))
	ch <- prometheus.MustNewConstMetric(descQueueEvictions, prometheus.CounterValue, float64(st.QueueEvictions))
}

// dropCounter reads the kernel's drop counters.
type dropCounter interface {
	// Counters returns what wormgate's rules dropped since they were last
	// (re)created.
	Counters(ctx context.Context) (nft.DropCounts, error)
}

// kernelCollector exports the rule counters, so that an operator sees the
// bans hit and the syslog guard refuse forged or foreign senders. A scrape
// waits at most a second for the firewall, which may be busy restoring a
// big set.
type kernelCollector struct{ fw dropCounter }

var (
	descDroppedPackets = prometheus.NewDesc("wormgate_kernel_dropped_packets_total",
		"Packets from banned addresses dropped by wormgate's chain since its rules were last created.", nil, nil)
	descDroppedBytes = prometheus.NewDesc("wormgate_kernel_dropped_bytes_total",
		"Bytes from banned addresses dropped by wormgate's chain since its rules were last created.", nil, nil)
	descGuardDropped = prometheus.NewDesc("wormgate_syslog_guard_dropped_packets_total",
		"Packets to the syslog listeners dropped in the kernel, by reason: rpf (the source failed the reverse-path check: forged) or sender (not in allowed_senders).", []string{"reason"}, nil)
)

func (c kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDroppedPackets
	ch <- descDroppedBytes
	ch <- descGuardDropped
}

func (c kernelCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d, err := c.fw.Counters(ctx)
	if err != nil {
		// Before set-up or while a restore holds the firewall: leave the
		// series out of this scrape rather than fail the whole scrape.
		return
	}
	ch <- prometheus.MustNewConstMetric(descDroppedPackets, prometheus.CounterValue, float64(d.BanPackets))
	ch <- prometheus.MustNewConstMetric(descDroppedBytes, prometheus.CounterValue, float64(d.BanBytes))
	ch <- prometheus.MustNewConstMetric(descGuardDropped, prometheus.CounterValue, float64(d.RPFPackets), "rpf")
	ch <- prometheus.MustNewConstMetric(descGuardDropped, prometheus.CounterValue, float64(d.SenderPackets), "sender")
}

// senderCollector exports what each syslog sender sent. The label set is
// bounded: the sender guard learns at most maxSenders senders.
type senderCollector struct{ senders func() map[string]senderStat }

var (
	descSenderMessages = prometheus.NewDesc("wormgate_syslog_sender_messages_total",
		"Syslog messages received from each sender (the peer address), since start.", []string{"sender"}, nil)
	descSenderLast = prometheus.NewDesc("wormgate_syslog_sender_last_message_timestamp_seconds",
		"When each syslog sender's last message arrived (Unix time); an MX whose Postfix lost its log socket stops here.", []string{"sender"}, nil)
)

var (
	descSenderParseErrors = prometheus.NewDesc("wormgate_syslog_sender_parse_errors_total",
		"Syslog messages from each sender that did not parse, since start.", []string{"sender"}, nil)
	descSenderUnattributed = prometheus.NewDesc("wormgate_syslog_sender_unattributed_events_total",
		"Events from each sender that matched a rule but could not be attributed to a client, since start.", []string{"sender"}, nil)
)

func (c senderCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSenderMessages
	ch <- descSenderLast
	ch <- descSenderParseErrors
	ch <- descSenderUnattributed
}

func (c senderCollector) Collect(ch chan<- prometheus.Metric) {
	for addr, st := range c.senders() {
		ch <- prometheus.MustNewConstMetric(descSenderMessages, prometheus.CounterValue, float64(st.Messages), addr)
		if !st.Last.IsZero() {
			ch <- prometheus.MustNewConstMetric(descSenderLast, prometheus.GaugeValue, float64(st.Last.UnixNano())/1e9, addr)
		}
		ch <- prometheus.MustNewConstMetric(descSenderParseErrors, prometheus.CounterValue, float64(st.ParseErrors), addr)
		ch <- prometheus.MustNewConstMetric(descSenderUnattributed, prometheus.CounterValue, float64(st.Unattributed), addr)
	}
}

// newBuildInfo is wormgate_build_info: 1, with the version in labels, so
// that dashboards and alerts can tell which build runs where.
func newBuildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "wormgate_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": buildVersion(), "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
