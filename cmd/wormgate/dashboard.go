package main

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/fleet"
	"github.com/wormgate/wormgate/receiver"
)

// web holds the dashboard's page, script and style: no CDN, no build
// step, nothing fetched at run time.
//
//go:embed web
var web embed.FS

const (
	// sampleEvery is how often the dashboard samples the counters it
	// draws over time (kernel drops, messages); sampleKeep of them make
	// an hour.
	sampleEvery = 10 * time.Second
	sampleKeep  = 360
	// rateWindow is what rates (messages/s, messages/min per sender)
	// are averaged over.
	rateWindow  = time.Minute
	familiesTTL = 2 * time.Second
)

// dashboard serves the page at / and the two JSON endpoints only it
// needs; everything else it reads (/api/v1/bans, /api/v1/why) is the
// API's. It samples counters in the background: the kernel panel and
// the per-sender rates show change over time, which one read cannot.
type dashboard struct {
	st       *status
	log      *slog.Logger
	now      func() time.Time
	writable func() bool

	mu sync.Mutex
	// families caches the bans per address family for familiesTTL:
	// counting scans every ban, which a page polling every few seconds
	// (or several pages) must not repeat each time.
	families   [2]int
	familiesAt time.Time
	// samples is a ring of the last sampleKeep samples; next is where
	// the next one goes.
	samples []dashSample
	next    int
}

// dashSample is what the sampler read at T.
type dashSample struct {
	T time.Time
	// Kernel is false when the firewall has no drop counters (dry run)
	// or did not answer in time.
	Kernel         bool
	Packets, Bytes float64
	// Messages sums the syslog messages received; ParseErrors and
	// Unattributed are the receiver's and the matcher's.
	Messages, ParseErrors, Unattributed float64
	// Senders are the messages per sender address so far.
	Senders map[string]uint64
}

func newDashboard(st *status, writable func() bool, log *slog.Logger) *dashboard {
	return &dashboard{st: st, log: log, now: time.Now, writable: writable, samples: make([]dashSample, 0, sampleKeep)}
}

// routes registers the page and its endpoints. Reads only: the page's
// writes go to the control API's endpoints, behind the bearer token.
func (d *dashboard) routes(mux *http.ServeMux) {
	sub, _ := fs.Sub(web, "web") // cannot fail: the directory is embedded
	files := http.FileServerFS(sub)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		http.ServeFileFS(w, r, sub, "index.html")
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w)
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /api/v1/dashboard", d.apiDashboard)
	mux.HandleFunc("GET /api/v1/timeline", d.apiTimeline)
}

// setPageHeaders keeps the page to its own origin: the texts it shows
// (reject texts, HELO names, reasons) are partly written by attackers,
// and the script puts them in the page as text only.
func setPageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// run samples every sampleEvery until ctx is done.
func (d *dashboard) run(ctx context.Context) {
	d.sample()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.sample()
		}
	}
}

// sample reads the counters once and keeps them in the ring.
func (d *dashboard) sample() {
	s := dashSample{T: d.now(), Senders: map[string]uint64{}}
	c := d.st.counters()
	_, s.Kernel = c["wormgate_kernel_dropped_packets_total"]
	s.Packets = c["wormgate_kernel_dropped_packets_total"]
	s.Bytes = c["wormgate_kernel_dropped_bytes_total"]
	s.Messages = sumCounters(c, receiver.MetricMessages, "")
	s.ParseErrors = sumCounters(c, receiver.MetricDropped, "reason="+receiver.ReasonParseError)
	s.Unattributed = sumCounters(c, metricUnattributed, "")
	for a, st := range d.st.senders() {
		s.Senders[a] = st.Messages
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.samples) < sampleKeep {
		d.samples = append(d.samples, s)
	} else {
		d.samples[d.next] = s
	}
	d.next = (d.next + 1) % sampleKeep
}

// metricUnattributed is the matcher's unattributed events counter.
const metricUnattributed = "wormgate_events_unattributed_total"

// sumCounters sums the series of the metric name in c (as
// status.counters flattens them) whose labels include label ("k=v"; ""
// for every series).
func sumCounters(c map[string]float64, name, label string) float64 {
	var sum float64
	for k, v := range c {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		if label != "" && !slices.Contains(strings.Split(strings.Trim(rest, "{}"), ","), label) {
			continue
		}
		sum += v
	}
	return sum
}

// ordered returns the samples oldest first.
func (d *dashboard) ordered() []dashSample {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.samples) < sampleKeep {
		return slices.Clone(d.samples)
	}
	return append(slices.Clone(d.samples[d.next:]), d.samples[:d.next]...)
}

// dashReply is the body of /api/v1/dashboard: everything the page shows
// but the bans, the why view and the timeline.
type dashReply struct {
	Now     time.Time `json:"now"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Writes is true when this server takes writes with a bearer token.
	Writes bool `json:"writes"`
	// Rules are the configured rules' names, for the bans filter.
	Rules      []string      `json:"rules"`
	Firewall   dashFirewall  `json:"firewall"`
	LastReload *reloadResult `json:"last_reload"`
	Bans       dashBans      `json:"bans"`
	Rates      dashRates     `json:"rates"`
	Counters   dashCounters  `json:"counters"`
	// SilentAfterSeconds is http.dashboard.silent_after.
	SilentAfterSeconds float64      `json:"silent_after_seconds"`
	Senders            []dashSender `json:"senders"`
	Kernel             dashKernel   `json:"kernel"`
	// Fleet is the fleet member's state; Enabled false standalone.
	Fleet fleet.Status `json:"fleet"`
}

type dashFirewall struct {
	Mode      string   `json:"mode"`
	Ready     bool     `json:"ready"`
	Degraded  bool     `json:"degraded"`
	Failing   []string `json:"failing,omitempty"`
	LastError string   `json:"last_error,omitempty"`
}

type dashBans struct {
	Active int `json:"active"`
	// V4 and V6 are at most familiesTTL old.
	V4 int `json:"v4"`
	V6 int `json:"v6"`
	// LastHour counts new bans in the last hour (the timeline's).
	LastHour uint64 `json:"last_hour"`
}

type dashRates struct {
	// OffencesPerMin averages the last five whole minutes.
	OffencesPerMin float64 `json:"offences_per_min"`
	MessagesPerSec float64 `json:"messages_per_sec"`
	// KernelPacketsPerSec is dropped packets, between the last two
	// samples.
	KernelPacketsPerSec float64 `json:"kernel_packets_per_sec"`
}

type dashCounters struct {
	Messages      float64 `json:"messages"`
	ParseErrors   float64 `json:"parse_errors"`
	Unattributed  float64 `json:"unattributed"`
	KernelPackets float64 `json:"kernel_packets"`
	KernelBytes   float64 `json:"kernel_bytes"`
}

type dashSender struct {
	Addr     string    `json:"addr"`
	Host     string    `json:"host,omitempty"`
	First    time.Time `json:"first_message"`
	Last     time.Time `json:"last_message"`
	Messages uint64    `json:"messages"`
	// PerMin is messages per minute over the last minute of samples.
	PerMin        float64 `json:"per_min"`
	SilentSeconds float64 `json:"silent_seconds"`
	// Silent is set when SilentSeconds exceeds silent_after.
	Silent bool `json:"silent"`
	// ParseErrors and Unattributed count its unparsable messages and its
	// events that named no usable client.
	ParseErrors  uint64 `json:"parse_errors"`
	Unattributed uint64 `json:"unattributed"`
}

type dashKernel struct {
	// Available is false on the dry run (no kernel counters).
	Available   bool         `json:"available"`
	StepSeconds float64      `json:"step_seconds"`
	Points      []dashKPoint `json:"points"`
}

// dashKPoint is the drop rate between two samples, at the later one.
type dashKPoint struct {
	T       time.Time `json:"t"`
	Packets float64   `json:"packets_per_sec"`
	Bytes   float64   `json:"bytes_per_sec"`
}

func (d *dashboard) apiDashboard(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.RawQuery) > 0 {
		http.Error(w, fmt.Sprintf("%v: /api/v1/dashboard takes no parameters", errBadQuery), http.StatusBadRequest)
		return
	}
	writeCompactJSON(w, d.reply(d.now()))
}

func (d *dashboard) reply(now time.Time) dashReply {
	cfg := d.st.cfg.Load()
	es := d.st.enf.Status()
	rep := dashReply{
		Now: now.UTC(), Version: buildVersion(), Started: d.st.started.UTC(), Writes: d.writable(),
		Firewall:   dashFirewall{Mode: d.st.firewall, Ready: d.st.enf.Ready(), Degraded: es.Degraded, Failing: es.Failing, LastError: es.LastError},
		LastReload: d.st.lastReload.Load(),
		Bans:       dashBans{Active: d.st.enf.ActiveCount()},
		Senders:    []dashSender{},
		Kernel:     dashKernel{StepSeconds: sampleEvery.Seconds(), Points: []dashKPoint{}},
	}
	rep.SilentAfterSeconds = cfg.HTTP.Dashboard.SilentAfter.Seconds()
	if d.st.fleet != nil {
		rep.Fleet = d.st.fleet()
	}
	rep.Rules = make([]string, 0, len(cfg.Matcher.Rules))
	for _, r := range cfg.Matcher.Rules {
		rep.Rules = append(rep.Rules, r.Name)
	}

	rep.Bans.V4, rep.Bans.V6 = d.familyCounts(now)
	tl := d.st.enf.Timeline(enforcer.Range1h)
	var offs5 uint64
	for _, rs := range tl.Rules {
		rep.Bans.LastHour += rs.TotalBans
		// The last five buckets: four whole minutes and the one under way.
		for _, n := range rs.Offences[len(rs.Offences)-5:] {
			offs5 += uint64(n)
		}
	}
	minutes := 4 + now.Sub(now.Truncate(time.Minute)).Minutes()
	rep.Rates.OffencesPerMin = float64(offs5) / minutes

	samples := d.ordered()
	var past *dashSample // the newest sample at least rateWindow old, else the oldest
	for i := range samples {
		if i == 0 || now.Sub(samples[i].T) >= rateWindow {
			past = &samples[i]
		}
	}
	senders := d.st.senders()
	if n := len(samples); n > 0 {
		last := samples[n-1]
		rep.Counters = dashCounters{Messages: last.Messages, ParseErrors: last.ParseErrors, Unattributed: last.Unattributed, KernelPackets: last.Packets, KernelBytes: last.Bytes}
		rep.Kernel.Available = last.Kernel
		for i := 1; i < n; i++ {
			a, b := samples[i-1], samples[i]
			if !a.Kernel || !b.Kernel {
				continue
			}
			el := b.T.Sub(a.T).Seconds()
			p := dashKPoint{T: b.T.UTC(), Packets: counterRate(a.Packets, b.Packets, el), Bytes: counterRate(a.Bytes, b.Bytes, el)}
			rep.Kernel.Points = append(rep.Kernel.Points, p)
		}
		if k := rep.Kernel.Points; len(k) > 0 {
			rep.Rates.KernelPacketsPerSec = k[len(k)-1].Packets
		}
	}
	var msgsNow, msgsPast uint64
	for addr, st := range senders {
		msgsNow += st.Messages
		if past != nil {
			msgsPast += min(past.Senders[addr], st.Messages)
		}
		s := dashSender{Addr: addr, Host: st.Host, First: st.First.UTC(), Last: st.Last.UTC(), Messages: st.Messages,
			ParseErrors: st.ParseErrors, Unattributed: st.Unattributed}
		s.SilentSeconds = max(now.Sub(st.Last).Seconds(), 0)
		s.Silent = now.Sub(st.Last) > cfg.HTTP.Dashboard.SilentAfter
		if past != nil {
			// A sender first seen after the sample counts from zero.
			if el := now.Sub(past.T).Seconds(); el > 0 {
				s.PerMin = float64(st.Messages-min(past.Senders[addr], st.Messages)) / el * 60
			}
		}
		rep.Senders = append(rep.Senders, s)
	}
	// Like the senders' rates: what they sent since the sample a minute
	// old, so that the headline and the MX panel agree.
	if past != nil {
		if el := now.Sub(past.T).Seconds(); el > 0 {
			rep.Rates.MessagesPerSec = float64(msgsNow-msgsPast) / el
		}
	}
	slices.SortFunc(rep.Senders, func(a, b dashSender) int { return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Addr, b.Addr)) })
	return rep
}

// familyCounts returns the active bans per address family, counted at
// most familiesTTL ago.
func (d *dashboard) familyCounts(now time.Time) (v4, v6 int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.familiesAt.IsZero() || now.Sub(d.familiesAt) >= familiesTTL || now.Before(d.familiesAt) {
		d.families[0] = d.st.enf.BansPage(enforcer.BansQuery{Within: netip.MustParsePrefix("0.0.0.0/0")}).Total
		d.families[1] = d.st.enf.BansPage(enforcer.BansQuery{Within: netip.MustParsePrefix("::/0")}).Total
		d.familiesAt = now
	}
	return d.families[0], d.families[1]
}

// counterRate is a counter's rate over el seconds; a counter that went
// down was reset (the rules were recreated) and counts from zero.
func counterRate(a, b, el float64) float64 {
	if el <= 0 {
		return 0
	}
	if b < a {
		return b / el
	}
	return (b - a) / el
}

// timelineRanges are the values of /api/v1/timeline's range.
var timelineRanges = map[string]enforcer.TimelineRange{
	"1h": enforcer.Range1h, "24h": enforcer.Range24h, "7d": enforcer.Range7d,
}

// apiTimeline answers offences and new bans per rule per step:
// range=1h (minutes), 24h (5 minutes) or 7d (hours); default 1h.
func (d *dashboard) apiTimeline(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	for k, vs := range v {
		if k != "range" || len(vs) > 1 {
			http.Error(w, fmt.Sprintf("%v: want only range=1h, 24h or 7d", errBadQuery), http.StatusBadRequest)
			return
		}
	}
	name := cmp.Or(v.Get("range"), "1h")
	rg, ok := timelineRanges[name]
	if !ok {
		http.Error(w, fmt.Sprintf("%v: range %q: want 1h, 24h or 7d", errBadQuery, name), http.StatusBadRequest)
		return
	}
	tl := d.st.enf.Timeline(rg)
	writeCompactJSON(w, struct {
		Range string `json:"range"`
		enforcer.Timeline
	}{name, tl})
}

// writeCompactJSON writes v without indentation: the page polls these
// endpoints, and the timeline's arrays are long.
func writeCompactJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// checkToken answers a request that passed requireToken: the page asks
// it once to learn that the token it was given works, before it shows
// any write button.
func checkToken(w http.ResponseWriter, r *http.Request) {
	writeCompactJSON(w, map[string]bool{"write": true})
}

// writable reports whether the status server takes writes (a token is
// configured).
func (c *control) writable() bool {
	t := c.token.Load()
	return t != nil && len(*t) > 0
}
