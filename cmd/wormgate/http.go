package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/fleet"
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
	// fleet reports the fleet's state (Enabled false standalone).
	fleet func() fleet.Status
}

// routes registers the read side on mux: the TCP status server and the
// control socket serve the same routes.
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
		"fleet":       s.fleet(),
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

// httpLimits bound what the status server spends on its clients, so that
// clients that never read (or never finish a request) cannot hold memory
// or every slot for long.
type httpLimits struct {
	// maxRequests is how many requests are served at once; more are
	// answered 503 at once and counted.
	maxRequests int
	// readHeader, read, write and idle are the http.Server timeouts.
	// write is per request: a client that does not read its response
	// within it is disconnected and its slot freed.
	readHeader, read, write, idle time.Duration
	maxHeaderBytes                int
}

// defaultHTTPLimits: a page of the largest size (about 300 kB) takes
// milliseconds to write to a client that reads, and a scrape or a page
// walk never needs more than a handful of requests at once.
var defaultHTTPLimits = httpLimits{
	maxRequests: 64,
	readHeader:  5 * time.Second,
	read:        10 * time.Second,
	write:       10 * time.Second,
	idle:        time.Minute,
	// The request line and a few headers; net/http adds 4 kB of slack.
	maxHeaderBytes: 8 << 10,
}

// httpServer serves h within lim; requests past lim.maxRequests are
// answered 503 and counted in rejected.
func httpServer(h http.Handler, lim httpLimits, rejected prometheus.Counter, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           limitRequests(h, lim.maxRequests, rejected),
		ReadHeaderTimeout: lim.readHeader,
		ReadTimeout:       lim.read,
		WriteTimeout:      lim.write,
		IdleTimeout:       lim.idle,
		MaxHeaderBytes:    lim.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// limitRequests serves at most n requests at once. Past that it answers
// 503 without waiting: a queue would hold the excess clients' memory,
// which is what the cap is there to bound.
func limitRequests(h http.Handler, n int, rejected prometheus.Counter) http.Handler {
	slots := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			h.ServeHTTP(w, r)
		default:
			rejected.Inc()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests at once; retry", http.StatusServiceUnavailable)
		}
	})
}

// Page sizes of /api/v1/bans.
const (
	defaultBansLimit = 100
	maxBansLimit     = 1000
)

// errBadQuery marks a query string /api/v1/bans cannot serve: 400.
var errBadQuery = errors.New("bad query")

// bansParams are the query parameters of /api/v1/bans.
var bansParams = []string{"limit", "cursor", "rule", "host", "q", "sort"}

// parseBansQuery reads the query string of /api/v1/bans:
//   - limit: bans per page, 0 (only the total) to maxBansLimit, default
//     defaultBansLimit; a larger one is an error, not clamped, so that a
//     client learns the maximum instead of missing bans;
//   - cursor: next_cursor of the previous page (opaque to clients; today
//     an address at or past the last of that page);
//   - rule: the rule's name, exactly;
//   - host: an MX host that reported the ban, exactly;
//   - q: an address (that address, or the network ban holding it), a
//     CIDR prefix (the bans inside it, and network bans overlapping it) or
//     part of an address's text ("198.51.100.", "db8:").
//
// Unknown and repeated parameters are errors.
func parseBansQuery(v url.Values) (enforcer.BansQuery, error) {
	q := enforcer.BansQuery{Limit: defaultBansLimit}
	for k, vs := range v {
		if !slices.Contains(bansParams, k) {
			return q, fmt.Errorf("%w: unknown parameter %q (known: %s)", errBadQuery, k, strings.Join(bansParams, ", "))
		}
		if len(vs) > 1 {
			return q, fmt.Errorf("%w: parameter %q given %d times", errBadQuery, k, len(vs))
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxBansLimit {
			return q, fmt.Errorf("%w: limit %q: want a number from 0 to %d", errBadQuery, s, maxBansLimit)
		}
		q.Limit = n
	}
	if s := v.Get("sort"); s != "" {
		key, desc := strings.CutPrefix(s, "-")
		if !slices.Contains(enforcer.SortKeys, key) {
			return q, fmt.Errorf("%w: sort %q: want one of %s, or one of them after a - for descending order", errBadQuery, s, strings.Join(enforcer.SortKeys, ", "))
		}
		q.Sort, q.Desc = key, desc
	}
	if s := v.Get("cursor"); s != "" {
		a, k, err := parseCursor(s, q.Sort)
		if err != nil {
			return q, fmt.Errorf("%w: cursor %q is not a next_cursor this API returned for this sort", errBadQuery, s)
		}
		q.After, q.AfterKey = a, k
	}
	q.Rule, q.Host = v.Get("rule"), v.Get("host")
	if s := v.Get("q"); s != "" {
		if err := parseBansSearch(s, &q); err != nil {
			return q, err
		}
	}
	return q, nil
}

// A cursor is the address of the previous page's last ban; for the other
// sorts, "k" and the base64 of that ban's sort key and address in JSON.
// Clients never look inside.
type keyCursor struct {
	Key  enforcer.PageKey `json:"k"`
	Addr netip.Addr       `json:"a"`
}

func formatCursor(page enforcer.BansPage, sort string) string {
	if sort == "" || sort == enforcer.SortAddr {
		return page.Next.String()
	}
	b, _ := json.Marshal(keyCursor{Key: page.NextKey, Addr: page.Next})
	return "k" + base64.RawURLEncoding.EncodeToString(b)
}

func parseCursor(s, sort string) (netip.Addr, enforcer.PageKey, error) {
	if sort == "" || sort == enforcer.SortAddr {
		a, err := netip.ParseAddr(s)
		return a, enforcer.PageKey{}, err
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, "k"))
	if err != nil || !strings.HasPrefix(s, "k") {
		return netip.Addr{}, enforcer.PageKey{}, errBadQuery
	}
	var c keyCursor
	if err := json.Unmarshal(raw, &c); err != nil || !c.Addr.IsValid() {
		return netip.Addr{}, enforcer.PageKey{}, errBadQuery
	}
	return c.Addr, c.Key, nil
}

// parseBansSearch reads q into a prefix or an address text to look for.
// Bans are keyed by unmapped addresses, so a mapped IPv4 address or
// prefix is searched as the IPv4 one.
func parseBansSearch(s string, q *enforcer.BansQuery) error {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("%w: q %q is not a prefix: %w", errBadQuery, s, err)
		}
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		q.Within = p
		return nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		q.Within = netip.PrefixFrom(a, a.BitLen())
		return nil
	}
	if strings.Trim(strings.ToLower(s), "0123456789abcdef.:") != "" || len(s) > len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") {
		return fmt.Errorf("%w: q %q: want an address, a prefix (CIDR) or part of an address", errBadQuery, s)
	}
	q.Text = strings.ToLower(s)
	return nil
}

// banJSON is a ban as the API shows it.
type banJSON struct {
	Addr netip.Addr `json:"addr"`
	// Net is set on a network ban (made by hand).
	Net              netip.Prefix `json:"net,omitzero"`
	Rule             string       `json:"rule"`
	Hits             int          `json:"hits"`
	Hosts            []string     `json:"hosts,omitempty"`
	Manual           bool         `json:"manual,omitempty"`
	Reason           string       `json:"reason,omitempty"`
	Origin           string       `json:"origin,omitempty"`
	Start            time.Time    `json:"start"`
	Until            time.Time    `json:"until"`
	RemainingSeconds float64      `json:"remaining_seconds"`
}

// bansReply is the body of /api/v1/bans. NextCursor is absent on the
// last page.
type bansReply struct {
	Total      int       `json:"total"`
	NextCursor string    `json:"next_cursor,omitempty"`
	Bans       []banJSON `json:"bans"`
}

// apiBans answers one page of the active bans, in address order; see
// parseBansQuery for the parameters.
func (s *status) apiBans(w http.ResponseWriter, r *http.Request) {
	q, err := parseBansQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	page := s.enf.BansPage(q)
	w.Header().Set("Content-Type", "application/json")
	// A failed write is a client gone or too slow (the write deadline):
	// nobody is left to tell.
	_ = writeBansPage(w, page, formatCursor(page, q.Sort), time.Now())
}

// writeBansPage writes page as a bansReply, one ban a line, as it goes:
// the ResponseWriter sends it in chunks and nothing holds the whole body.
func writeBansPage(w io.Writer, page enforcer.BansPage, cursor string, now time.Time) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	fmt.Fprintf(&buf, `{"total":%d`, page.Total)
	if page.Next.IsValid() {
		buf.WriteString(`,"next_cursor":`)
		if err := enc.Encode(cursor); err != nil {
			return err
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
	}
	buf.WriteString(`,"bans":[`)
	for i, b := range page.Bans {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
		if err := enc.Encode(banJSON{
			Addr: b.Addr, Net: b.Net, Rule: b.Rule, Hits: b.Hits, Hosts: b.Hosts, Manual: b.Manual, Reason: b.Reason, Origin: b.Origin,
			Start: b.Start.UTC(), Until: b.Until.UTC(), RemainingSeconds: b.Until.Sub(now).Seconds(),
		}); err != nil {
			return err
		}
		buf.Truncate(buf.Len() - 1)
		if buf.Len() >= 16<<10 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return err
			}
			buf.Reset()
		}
	}
	buf.WriteString("\n]}\n")
	_, err := w.Write(buf.Bytes())
	return err
}
