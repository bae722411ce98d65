package fleet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/dryrun"
	"github.com/wormgate/wormgate/enforcer/fleet/natstest"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/enforcer/store"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/tlstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	natstest.Cleanup()
	os.Exit(code)
}

// member is one gateway: a real enforcer on the dry-run firewall, its
// record, and its fleet member, connected through a proxy the test can
// cut.
type member struct {
	name  string
	enf   *enforcer.Enforcer
	fleet *Fleet
	reg   *prometheus.Registry
	st    *store.Store
	stop  func()
}

func startMember(t *testing.T, name string, urls []string, stateDir string) *member {
	t.Helper()
	return startMemberWith(t, Config{URLs: urls, Bucket: "wormgate_bans", Replicas: 1, Name: name, InsecureLab: true}, stateDir)
}

func startMemberWith(t *testing.T, fc Config, stateDir string) *member {
	t.Helper()
	name := fc.Name
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := store.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	f, err := New(fc, log, reg, st)
	if err != nil {
		t.Fatal(err)
	}
	cfg := enforcer.DefaultConfig()
	cfg.NeverBlock = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}
	enf, err := enforcer.New(cfg, map[string]policy.RulePolicy{"worm": {Threshold: 1, Window: time.Hour}},
		dryrun.New(log), log, reg, enforcer.WithStore(st), enforcer.WithDecisionSink(f))
	if err != nil {
		t.Fatal(err)
	}
	f.SetApplier(enf)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := enf.Run(ctx); err != nil {
			t.Errorf("%s enforcer: %v", name, err)
		}
	})
	wg.Go(func() {
		if err := f.Run(ctx); err != nil {
			t.Errorf("%s fleet: %v", name, err)
		}
	})
	m := &member{name: name, enf: enf, fleet: f, reg: reg, st: st}
	var once sync.Once
	m.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			st.Close()
		})
	}
	t.Cleanup(m.stop)
	return m
}

func (m *member) offend(addr string) {
	m.enf.Offend(matcher.Offense{Addr: netip.MustParseAddr(addr), Rule: "worm", Host: "mx1", Time: time.Now()})
}

// ban returns the active ban of addr (or of its network).
func (m *member) ban(addr string) (policy.Ban, bool) {
	w := m.enf.Why(netip.MustParseAddr(addr))
	if w.Ban == nil {
		return policy.Ban{}, false
	}
	return *w.Ban, true
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy forwards TCP to a NATS node until cut: then it closes every
// connection and refuses new ones, as a lost link would.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
			if label == "" && m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestFleetSharesDecisions: bans, unbans, network bans and allows made
// on one gateway reach the other through a real NATS server, with their
// origin; each sees the other as a peer.
func TestFleetSharesDecisions(t *testing.T) {
	c := natstest.Start(t, 1, natstest.Options{})
	c.WaitReady(t, nil, 20*time.Second)
	a := startMember(t, "gwA", c.URLs(), t.TempDir())
	b := startMember(t, "gwB", c.URLs(), t.TempDir())
	waitFor(t, 10*time.Second, "both live", func() bool { return a.fleet.Status().Live && b.fleet.Status().Live })

	a.offend("203.0.113.5")
	waitFor(t, 2*time.Second, "gwA's ban at gwB", func() bool { _, ok := b.ban("203.0.113.5"); return ok })
	got, _ := b.ban("203.0.113.5")
	mine, _ := a.ban("203.0.113.5")
	if got.Origin != "gwA" || got.Rule != "worm" || !got.Until.Equal(mine.Until) {
		t.Errorf("gwB's ban = origin %q rule %q until %v; want gwA, worm, %v", got.Origin, got.Rule, got.Until, mine.Until)
	}
	if mine.Origin != "" {
		t.Errorf("gwA's own ban has origin %q, want none", mine.Origin)
	}

	if _, err := b.enf.Unban(t.Context(), []netip.Prefix{netip.MustParsePrefix("203.0.113.5/32")}, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "gwB's unban at gwA", func() bool { _, ok := a.ban("203.0.113.5"); return !ok })

	if _, err := a.enf.Ban(t.Context(), enforcer.ManualBan{Net: netip.MustParsePrefix("198.51.100.0/24"), For: time.Hour, Reason: "botnet", By: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "gwA's network ban at gwB", func() bool { bn, ok := b.ban("198.51.100.7"); return ok && bn.Net.Bits() == 24 })
	if bn, _ := b.ban("198.51.100.7"); bn.Origin != "gwA" || bn.Reason != "botnet" || !bn.Manual {
		t.Errorf("gwB's network ban = %+v, want origin gwA, reason botnet, manual", bn)
	}

	b.offend("203.0.113.9")
	waitFor(t, 2*time.Second, "gwB's ban at gwA", func() bool { _, ok := a.ban("203.0.113.9"); return ok })
	if _, err := a.enf.Allow(t.Context(), store.Allow{Net: netip.MustParsePrefix("203.0.113.9/32"), Reason: "partner", By: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "gwA's allow at gwB lifts gwB's ban", func() bool {
		w := b.enf.Why(netip.MustParseAddr("203.0.113.9"))
		return w.Ban == nil && w.Allow != nil && w.Allow.Origin == "gwA"
	})
	if _, err := a.enf.Disallow(t.Context(), []netip.Prefix{netip.MustParsePrefix("203.0.113.9/32")}, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "gwA's disallow at gwB", func() bool { return b.enf.Why(netip.MustParseAddr("203.0.113.9")).Allow == nil })

	waitFor(t, 10*time.Second, "peers", func() bool {
		return slices.Equal(a.fleet.Status().Peers, []string{"gwB"}) && slices.Equal(b.fleet.Status().Peers, []string{"gwA"})
	})
	if n := counter(t, b.reg, "wormgate_fleet_applied_total", "ban"); n < 2 {
		t.Errorf("gwB applied %v bans, want at least 2", n)
	}
}

// TestFleetRefusesBadEntries is acceptance 5 at the fleet's level: what
// anyone with access to the bucket writes there is checked and counted,
// and never bans a never-block address or the whole Internet.
func TestFleetRefusesBadEntries(t *testing.T) {
	c := natstest.Start(t, 1, natstest.Options{})
	c.WaitReady(t, nil, 20*time.Second)
	a := startMember(t, "gwA", c.URLs(), t.TempDir())
	waitFor(t, 10*time.Second, "live", func() bool { return a.fleet.Status().Live })
	nc, err := nats.Connect(c.URLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), "wormgate_bans")
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	good := func(op string) string {
		return `{"op":"` + op + `","origin":"evil","time":"` + time.Now().UTC().Format(time.RFC3339) + `","until":"` + until + `"}`
	}
	for _, e := range []struct{ key, val, reason string }{
		{"ban.203.0.113.50", "garbage{", "malformed"},
		{"ban.203.0.113.51", `{"op":"ban","origin":"evil"}`, "malformed"},
		{"ban.203.0.113.52", good("allow"), "malformed"},
		{"ban.203.0.113.53", `{"op":"ban","origin":"evil","time":"2026-01-01T00:00:00Z","until":"` + until + `","reason":"` + strings.Repeat("x", 2000) + `"}`, "oversized"},
		{"ban.203.000.113.54", good("ban"), "bad_key"},
		{"ban.nonsense", good("ban"), "bad_key"},
		{"ban.127.0.0.1", good("ban"), "never_block"},
		{"ban.192.0.2.3", good("ban"), "never_block"},
		{"ban.0.0.0.0/0", good("ban"), "too_wide"},
		{"ban.2001_db8__/32", good("ban"), "too_wide"},
	} {
		before := counter(t, a.reg, "wormgate_fleet_rejected_total", e.reason)
		if _, err := kv.Put(t.Context(), e.key, []byte(e.val)); err != nil {
			t.Fatalf("put %s: %v", e.key, err)
		}
		waitFor(t, 2*time.Second, e.key+" counted as "+e.reason, func() bool {
			return counter(t, a.reg, "wormgate_fleet_rejected_total", e.reason) == before+1
		})
	}
	if bans := a.enf.Bans(); len(bans) != 0 {
		t.Errorf("bans after bad entries: %+v", bans)
	}
	// A good entry after the bad ones still applies.
	if _, err := kv.Put(t.Context(), "ban.203.0.113.60", []byte(good("ban"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "a good entry applies", func() bool { _, ok := a.ban("203.0.113.60"); return ok })
}

// TestFleetPartition: a gateway cut off from NATS enforces alone and
// queues its decisions; on reconnect it catches up (an unban made
// meanwhile elsewhere wins over its older queued ban of the same
// address) and publishes the rest. A queue that outlives the process is
// published by the next run from the record.
func TestFleetPartition(t *testing.T) {
	c := natstest.Start(t, 1, natstest.Options{})
	c.WaitReady(t, nil, 20*time.Second)
	px := newProxy(t, strings.TrimPrefix(c.URLs()[0], "nats://"))
	dirA := t.TempDir()
	a := startMember(t, "gwA", []string{px.url()}, dirA)
	b := startMember(t, "gwB", c.URLs(), t.TempDir())
	waitFor(t, 10*time.Second, "both live", func() bool { return a.fleet.Status().Live && b.fleet.Status().Live })

	if _, err := b.enf.Ban(t.Context(), enforcer.ManualBan{Net: netip.MustParsePrefix("203.0.113.20/32"), For: time.Minute, By: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "gwB's ban at gwA", func() bool { _, ok := a.ban("203.0.113.20"); return ok })

	px.setCut(true)
	waitFor(t, 5*time.Second, "gwA notices", func() bool { return !a.fleet.Status().Connected })
	a.offend("203.0.113.20") // extends the ban here: an older decision than gwB's unban below
	a.offend("203.0.113.21")
	if _, ok := a.ban("203.0.113.21"); !ok {
		t.Fatal("gwA does not enforce alone")
	}
	if q := a.fleet.Status().Queued; q != 2 {
		t.Errorf("queued = %d, want 2", q)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := b.enf.Unban(t.Context(), []netip.Prefix{netip.MustParsePrefix("203.0.113.20/32")}, "test"); err != nil {
		t.Fatal(err)
	}
	b.offend("203.0.113.22")

	px.setCut(false)
	waitFor(t, 5*time.Second, "gwA reconnects", func() bool { return a.fleet.Status().Live })
	reconnected := time.Now()
	waitFor(t, 2*time.Second, "all caught up", func() bool {
		_, a20 := a.ban("203.0.113.20")
		_, b20 := b.ban("203.0.113.20")
		_, b21 := b.ban("203.0.113.21")
		_, a22 := a.ban("203.0.113.22")
		return !a20 && !b20 && b21 && a22
	})
	t.Logf("caught up %v after reconnecting", time.Since(reconnected).Round(time.Millisecond))
	if n := counter(t, a.reg, "wormgate_fleet_superseded_total", ""); n != 1 {
		t.Errorf("superseded = %v, want 1 (gwA's extension of 203.0.113.20)", n)
	}
	time.Sleep(300 * time.Millisecond)
	if _, ok := b.ban("203.0.113.20"); ok {
		t.Error("gwA's older queued ban brought 203.0.113.20 back at gwB")
	}

	// A queue that outlives the process.
	px.setCut(true)
	waitFor(t, 5*time.Second, "gwA notices", func() bool { return !a.fleet.Status().Connected })
	a.offend("203.0.113.23")
	a.stop()
	q, err := func() (map[uint64][]byte, error) {
		st, err := store.Open(dirA)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		return st.FleetQueue()
	}()
	if err != nil || len(q) != 1 {
		t.Fatalf("record holds %d queued decisions (%v), want 1", len(q), err)
	}
	px.setCut(false)
	startMember(t, "gwA", []string{px.url()}, dirA)
	waitFor(t, 5*time.Second, "the queued ban published by the next run", func() bool { _, ok := b.ban("203.0.113.23"); return ok })
}

func TestFleetNATSDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there
	a := startMember(t, "gwA", []string{"nats://" + addr}, t.TempDir())
	waitFor(t, 5*time.Second, "enforcer ready", a.enf.Ready)
	a.offend("203.0.113.30")
	if _, ok := a.ban("203.0.113.30"); !ok {
		t.Fatal("no local ban while NATS is down")
	}
	st := a.fleet.Status()
	if st.Connected || st.Queued != 1 {
		t.Errorf("status = %+v, want not connected, 1 queued", st)
	}
	if got, err := testutil.GatherAndCount(a.reg, "wormgate_fleet_connected"); err != nil || got != 1 {
		t.Fatalf("wormgate_fleet_connected: %d series, %v", got, err)
	}
	for name, want := range map[string]float64{"wormgate_fleet_connected": 0, "wormgate_fleet_queued": 1} {
		if got := gauge(t, a.reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestFleetTLS: with fleet.tls the gateway talks TLS and shows NATS its
// certificate; a server that verifies clients refuses one without.
func TestFleetTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "fleet-ca")
	srvCert, srvKey := ca.Issue(t, "localhost")
	c := natstest.Start(t, 1, natstest.Options{Extra: fmt.Sprintf("tls {\n cert_file: %q\n key_file: %q\n ca_file: %q\n verify: true\n timeout: 2\n}", srvCert, srvKey, ca.File)})
	url := strings.Replace(c.URLs()[0], "nats://127.0.0.1", "tls://localhost", 1)
	cert, key := ca.Issue(t, "gw1.example.net")
	a := startMemberWith(t, Config{URLs: []string{url}, Bucket: "wormgate_bans", Replicas: 1, Name: "gwA", TLS: TLSConfig{CA: ca.File, Cert: cert, Key: key}}, t.TempDir())
	waitFor(t, 10*time.Second, "live over TLS", func() bool { return a.fleet.Status().Live })
	b := startMemberWith(t, Config{URLs: []string{url}, Bucket: "wormgate_bans", Replicas: 1, Name: "gwB", TLS: TLSConfig{CA: ca.File}, InsecureLab: true}, t.TempDir())
	time.Sleep(2 * time.Second)
	if st := b.fleet.Status(); st.Connected || !strings.HasPrefix(st.LastError, "connect: ") {
		t.Errorf("a gateway without a client certificate: %+v, want not connected, with the connect error", st)
	}
}
