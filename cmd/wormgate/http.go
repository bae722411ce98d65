package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/receiver"
)

// status serves the read side of the HTTP contract.
type status struct {
	started  time.Time
	cfg      *atomic.Pointer[Config]
	enf      *enforcer.Enforcer
	rcv      *receiver.Receiver
	reg      *prometheus.Registry
	firewall string
	// httpAddr is the status server's bound address ("" when off).
	httpAddr string
	// senders reports what each syslog sender sent; lastReload is the
	// last reload's result (nil before the first).
	senders    func() map[string]senderStat
	lastReload *atomic.Pointer[reloadResult]
}

// routes registers the read side on mux: the status server and the
// control socket both serve it.
func (s *status) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("GET /api/v1/status", s.apiStatus)
	mux.HandleFunc("GET /api/v1/bans", s.apiBans)
}

func (s *status) healthz(w http.ResponseWriter, r *http.Request) {
	if !s.enf.Ready() {
		http.Error(w, "firewall not ready", http.StatusServiceUnavailable)
		return
	}
	// Degraded is unhealthy even while bans still reach the kernel: an
	// operator must learn that the record or the firewall is failing.
	if st := s.enf.Status(); st.Degraded {
		http.Error(w, fmt.Sprintf("degraded: %s failing: %s", strings.Join(st.Failing, ", "), st.LastError), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// banJSON is a ban as the API shows it.
type banJSON struct {
	Addr             string    `json:"addr"`
	Net              string    `json:"net,omitempty"`
	Rule             string    `json:"rule"`
	Hits             int       `json:"hits"`
	Hosts            []string  `json:"hosts,omitempty"`
	Start            time.Time `json:"start"`
	Until            time.Time `json:"until"`
	RemainingSeconds float64   `json:"remaining_seconds"`
	Manual           bool      `json:"manual,omitempty"`
	Reason           string    `json:"reason,omitempty"`
}

func (s *status) apiBans(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	rule, host := r.URL.Query().Get("rule"), r.URL.Query().Get("host")
	bans := s.enf.Bans()
	out := make([]banJSON, 0, len(bans))
	for _, b := range bans {
		if (rule != "" && b.Rule != rule) || (host != "" && !slices.Contains(b.Hosts, host)) {
			continue
		}
		j := banJSON{
			Addr: b.Addr.String(), Rule: b.Rule, Hits: b.Hits, Hosts: b.Hosts, Manual: b.Manual, Reason: b.Reason,
			Start: b.Start.UTC(), Until: b.Until.UTC(), RemainingSeconds: b.Until.Sub(now).Seconds(),
		}
		if b.Net.IsValid() {
			j.Net = b.Net.String()
		}
		out = append(out, j)
	}
	writeJSON(w, map[string]any{"bans": out, "next_cursor": ""})
}

func (s *status) apiStatus(w http.ResponseWriter, r *http.Request) {
	cfg := s.cfg.Load()
	addrs := func(as []net.Addr) []string {
		out := make([]string, 0, len(as))
		for _, a := range as {
			out = append(out, a.String())
		}
		return out
	}
	rules := make([]string, 0, len(cfg.Matcher.Rules))
	for _, r := range cfg.Matcher.Rules {
		rules = append(rules, r.Name)
	}
	writeJSON(w, map[string]any{
		"version":        buildVersion(),
		"started":        s.started.UTC(),
		"uptime_seconds": time.Since(s.started).Seconds(),
		"firewall":       s.firewall,
		"http":           s.httpAddr,
		"firewall_ready": s.enf.Ready(),
		"enforcer":       s.enf.Status(),
		"table":          cfg.Enforcer.NFTables.Table,
		"ports":          cfg.Enforcer.NFTables.Ports,
		"listeners": map[string][]string{
			"udp": addrs(s.rcv.UDPAddrs()), "tcp": addrs(s.rcv.TCPAddrs()), "tls": addrs(s.rcv.TLSAddrs()),
		},
		"rules":       rules,
		"bans_active": s.enf.ActiveCount(),
		"senders":     s.senders(),
		"last_reload": s.lastReload.Load(),
		"counters":    s.counters(),
	})
}

// counters flattens the wormgate_ metrics into name{labels} -> value, so
// the status page and scripts need no Prometheus parser.
func (s *status) counters() map[string]float64 {
	out := map[string]float64{}
	mfs, err := s.reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "wormgate_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := name
			if lp := m.GetLabel(); len(lp) > 0 {
				labels := make([]string, 0, len(lp))
				for _, l := range lp {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				sort.Strings(labels)
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
