package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wormgate/wormgate/enforcer/fleet"
	"github.com/wormgate/wormgate/enforcer/fleet/natstest"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
)

// fleetLab is issue 14's lab: a 3-node NATS JetStream cluster in a hub
// namespace and three gateways, each `wormgate serve` in its own
// namespace with its own nftables, linked to the hub by its own veth.
type fleetLab struct {
	hub     *nftest.NS
	gws     []*nftest.NS
	hubAddr []string
	cluster *natstest.Cluster
	cfgs    []string
	ds      []*daemon
	mons    []*kernelMon
}

// natsPorts are the nodes' client ports in the hub namespace.
var natsPorts = []int{4222, 4223, 4224}

func newFleetLab(t *testing.T) *fleetLab {
	t.Helper()
	nftest.Require(t, "ip", "nft")
	lab := &fleetLab{hub: nftest.NewNS(t)}
	for i := range 3 {
		gw := nftest.NewNS(t)
		hub := netip.AddrFrom4([4]byte{192, 0, 2, byte(64*i + 1)})
		nftest.Link(t, lab.hub, []netip.Prefix{netip.PrefixFrom(hub, 26)}, gw, []netip.Prefix{netip.PrefixFrom(hub.Next(), 26)})
		lab.gws = append(lab.gws, gw)
		lab.hubAddr = append(lab.hubAddr, hub.String())
	}
	lab.cluster = natstest.Start(t, 3, natstest.Options{
		Host: "0.0.0.0", Ports: natsPorts,
		Command: func(name string, args ...string) *exec.Cmd {
			return lab.hub.Command(context.Background(), name, args...)
		},
	})
	lab.cluster.WaitReady(t, lab.hub.Dial, 60*time.Second)
	for i, gw := range lab.gws {
		var urls []string
		for _, p := range natsPorts {
			urls = append(urls, fmt.Sprintf("nats://%s:%d", lab.hubAddr[i], p))
		}
		dir := t.TempDir()
		cfg := filepath.Join(dir, "wormgate.yaml")
		body := fmt.Sprintf(`enforcer:
  state_dir: %s
  max_new_bans_per_second: 200000
  never_block: [198.51.100.0/24]
fleet:
  urls: [%s]
  name: gw%d
  replicas: 3
  insecure_lab: true
`, filepath.Join(dir, "state"), strings.Join(urls, ", "), i+1)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		lab.cfgs = append(lab.cfgs, cfg)
		lab.mons = append(lab.mons, monitorKernel(t, gw))
	}
	for i, gw := range lab.gws {
		lab.ds = append(lab.ds, startDaemon(t, gw, "--config", lab.cfgs[i]))
	}
	lab.waitLive(t, 30*time.Second)
	return lab
}

// waitLive waits until every gateway is connected, caught up and sees
// the other two.
func (lab *fleetLab) waitLive(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for i, d := range lab.ds {
		for {
			st := d.fleetStatus(t)
			if st.Live && len(st.Peers) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gw%d not live with 2 peers after %v: %+v", i+1, within, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// restart stops and starts gateway i with its record.
func (lab *fleetLab) restart(t, top *testing.T, i int) {
	t.Helper()
	lab.ds[i].stop(t)
	lab.ds[i] = startDaemon(top, lab.gws[i], "--config", lab.cfgs[i])
}

func (d *daemon) fleetStatus(t *testing.T) fleet.Status {
	t.Helper()
	resp, err := d.client.Get("http://127.0.0.1:9514/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Fleet fleet.Status `json:"fleet"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Fleet
}

// kernelMon follows one namespace's wormgate sets with `nft monitor`:
// when each element appeared and was deleted, as the kernel told.
type kernelMon struct {
	mu      sync.Mutex
	added   map[string]time.Time
	deleted map[string]time.Time
	errs    []string
}

func monitorKernel(t *testing.T, ns *nftest.NS) *kernelMon {
	t.Helper()
	m := &kernelMon{added: map[string]time.Time{}, deleted: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "nft", "monitor", "elements")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			m.line(sc.Text(), time.Now())
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = cmd.Wait()
	})
	return m
}

// line reads "add element inet wormgate blocked6 { A timeout 1d expires 1d, B ... }".
func (m *kernelMon) line(l string, now time.Time) {
	var add bool
	switch {
	case strings.HasPrefix(l, "add element inet wormgate "):
		add = true
	case strings.HasPrefix(l, "delete element inet wormgate "):
	default:
		if strings.Contains(strings.ToLower(l), "error") {
			m.mu.Lock()
			m.errs = append(m.errs, l)
			m.mu.Unlock()
		}
		return
	}
	open, closing := strings.IndexByte(l, '{'), strings.LastIndexByte(l, '}')
	if open < 0 || closing < open {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, el := range strings.Split(l[open+1:closing], ",") {
		f := strings.Fields(el)
		if len(f) == 0 {
			continue
		}
		if add {
			if _, seen := m.added[f[0]]; !seen {
				m.added[f[0]] = now
			}
			delete(m.deleted, f[0])
		} else if _, seen := m.deleted[f[0]]; !seen {
			m.deleted[f[0]] = now
		}
	}
}

// times returns when each of addrs appeared (zero: not yet).
func (m *kernelMon) times(addrs []string) []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]time.Time, len(addrs))
	for i, a := range addrs {
		out[i] = m.added[a]
	}
	return out
}

// missing counts the addresses of addrs not seen added.
func (m *kernelMon) missing(addrs []string) int {
	n := 0
	for _, at := range m.times(addrs) {
		if at.IsZero() {
			n++
		}
	}
	return n
}

func (m *kernelMon) deletedAt(a string) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.deleted[a]
}

func (m *kernelMon) errors() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.errs)
}

// addrRange is n IPv6 documentation addresses under prefix (a /64 as
// "2001:db8:x:y").
func addrRange(prefix string, n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = netip.MustParseAddr(fmt.Sprintf("%s::%x:%x", prefix, (i+1)>>16, (i+1)&0xffff)).String()
	}
	return out
}

// rejectSender writes reject pairs to a gateway's syslog TCP listener on
// one connection.
type rejectSender struct {
	c   net.Conn
	w   *bufio.Writer
	seq int
	tag string
}

func newRejectSender(t *testing.T, ns *nftest.NS, tag string) *rejectSender {
	t.Helper()
	c, err := ns.Dial(t.Context(), "tcp", "127.0.0.1:514")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rejectSender{c: c, w: bufio.NewWriterSize(c, 1<<20), tag: tag}
}

// send writes the pair for client; flush sends what is buffered.
func (s *rejectSender) send(t *testing.T, client string, flush bool) {
	t.Helper()
	s.seq++
	qid := fmt.Sprintf("%s%08X", s.tag, s.seq)
	for _, l := range pairLines(traditional, qid, client) {
		s.w.WriteString(l)
		s.w.WriteByte('\n')
	}
	if flush {
		if err := s.w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *rejectSender) flush(t *testing.T) {
	t.Helper()
	if err := s.w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// waitAll waits until every monitor in mons has seen every address.
func waitAll(t *testing.T, within time.Duration, what string, addrs []string, mons ...*kernelMon) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing := 0
		for _, m := range mons {
			missing += m.missing(addrs)
		}
		if missing == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			var errs, per []string
			for i, m := range mons {
				errs = append(errs, m.errors()...)
				first := ""
				for j, at := range m.times(addrs) {
					if at.IsZero() {
						first = addrs[j]
						break
					}
				}
				per = append(per, fmt.Sprintf("monitor %d: %d missing (first %s)", i, m.missing(addrs), first))
			}
			t.Fatalf("%s: %d element(s) missing after %v: %s (monitor errors: %q)", what, missing, within, strings.Join(per, "; "), errs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// percentiles returns p50, p99 and the maximum of ds (sorted in place).
func percentiles(ds []time.Duration) (p50, p99, top time.Duration) {
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return at(0.50), at(0.99), ds[len(ds)-1]
}

// TestServeFleet is issue 14's acceptance on a real 3-node NATS cluster
// and three real gateways with their own kernels.
func TestServeFleet(t *testing.T) {
	lab := newFleetLab(t)
	top := t
	gw1, gw2, gw3 := lab.mons[0], lab.mons[1], lab.mons[2]

	t.Run("1 a ban at gw1 reaches gw2 and gw3 within 100 ms", func(t *testing.T) {
		addrs := addrRange("2001:db8:1:1", 1000)
		s := newRejectSender(t, lab.gws[0], "A")
		sent := make([]time.Time, len(addrs))
		for i, a := range addrs {
			sent[i] = time.Now()
			s.send(t, a, true)
			time.Sleep(2 * time.Millisecond)
		}
		waitAll(t, 10*time.Second, "1,000 bans at gw2 and gw3", addrs, gw2, gw3)
		for gw, m := range map[string]*kernelMon{"gw2": gw2, "gw3": gw3} {
			lat := make([]time.Duration, len(addrs))
			for i, at := range m.times(addrs) {
				lat[i] = at.Sub(sent[i])
			}
			p50, p99, top := percentiles(lat)
			t.Logf("reject received at gw1 -> element in %s's kernel, %d bans: p50 %v, p99 %v, max %v", gw, len(addrs), p50, p99, top)
			if p99 > 100*time.Millisecond {
				t.Errorf("%s: p99 %v > 100ms", gw, p99)
			}
		}
		out := lab.ds[2].mustCLI(t, "why", addrs[0])
		if !strings.Contains(out, "decided by gateway gw1") {
			t.Errorf("wormgate why at gw3 does not name gw1:\n%s", out)
		}
		out = lab.ds[2].mustCLI(t, "bans", "--json")
		var bans []banReply
		if err := json.Unmarshal([]byte(out), &bans); err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(bans, func(b banReply) bool { return b.Addr == addrs[0] }); i < 0 || bans[i].Origin != "gw1" {
			t.Errorf("gw3's bans do not show %s from gw1", addrs[0])
		}
		// The dashboard's data: the fleet live with both peers.
		resp, err := lab.ds[2].client.Get("http://127.0.0.1:9514/api/v1/dashboard")
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Fleet fleet.Status `json:"fleet"`
		}
		err = json.NewDecoder(resp.Body).Decode(&dash)
		resp.Body.Close()
		if err != nil || !dash.Fleet.Enabled || !dash.Fleet.Live || !slices.Equal(dash.Fleet.Peers, []string{"gw1", "gw2"}) {
			t.Errorf("gw3's dashboard fleet = %+v, %v; want live with peers gw1 and gw2", dash.Fleet, err)
		}
	})

	t.Run("2 unban at gw3 is gone everywhere within 1 s and after restarts", func(t *testing.T) {
		a := "2001:db8:1:1::7"
		for i, m := range lab.mons {
			if m.missing([]string{a}) != 0 {
				t.Fatalf("%s not in gw%d's kernel before the unban", a, i+1)
			}
		}
		start := time.Now()
		lab.ds[2].mustCLI(t, "unban", a)
		deadline := start.Add(time.Second)
		for time.Now().Before(deadline) {
			if !gw1.deletedAt(a).IsZero() && !gw2.deletedAt(a).IsZero() && !gw3.deletedAt(a).IsZero() {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		for i, m := range lab.mons {
			at := m.deletedAt(a)
			if at.IsZero() {
				t.Errorf("%s still in gw%d's kernel 1s after the unban at gw3", a, i+1)
				continue
			}
			t.Logf("unban at gw3 -> gone from gw%d's kernel after %v", i+1, at.Sub(start).Round(time.Millisecond))
		}
		for i := range lab.ds {
			lab.restart(t, top, i)
		}
		lab.waitLive(t, 30*time.Second)
		time.Sleep(time.Second) // room for a wrong adoption or a late re-publish
		for i, gw := range lab.gws {
			if got := kernelAddrs(t, gw); slices.Contains(got, a) {
				t.Errorf("%s back in gw%d's kernel after the restarts", a, i+1)
			}
			if !slices.Contains(kernelAddrs(t, gw), "2001:db8:1:1::8") {
				t.Errorf("gw%d lost the other bans in its restart", i+1)
			}
		}
	})

	t.Run("3 a NATS node killed, gw2 cut off for 30 s", func(t *testing.T) {
		lab.cluster.Nodes[0].Kill()
		// A ban from every gateway right after the kill. A gateway whose
		// connection or watch was on the killed node reconnects to
		// another and watches anew: that waits for JetStream's meta
		// leader (an election if n1 led) or for the watch's silence to
		// show (a consumer that lived on n1), so these take seconds.
		start := time.Now()
		s1 := newRejectSender(t, lab.gws[0], "B")
		var probes []string
		for i, gw := range lab.gws {
			p := fmt.Sprintf("2001:db8:3::%d", i+1)
			newRejectSender(t, gw, "9").send(t, p, true)
			probes = append(probes, p)
		}
		waitAll(t, 30*time.Second, "a ban from each gateway with one NATS node down", probes, gw1, gw2, gw3)
		for i, p := range probes {
			var took []string
			for j, m := range lab.mons {
				took = append(took, fmt.Sprintf("gw%d %v", j+1, m.times([]string{p})[0].Sub(start).Round(time.Millisecond)))
			}
			t.Logf("with node n1 killed: a ban at gw%d reached %s", i+1, strings.Join(took, ", "))
		}

		// Cut gw2 off from NATS in its own namespace (a table of the
		// test's, beside wormgate's).
		lab.gws[1].Run(t, "nft", "add", "table", "inet", "fleetcut")
		lab.gws[1].Run(t, "nft", "add", "chain", "inet", "fleetcut", "out", "{ type filter hook output priority 0 ; }")
		lab.gws[1].Run(t, "nft", "add", "rule", "inet", "fleetcut", "out", "tcp", "dport", "4222-4224", "drop")
		cut := time.Now()
		lifted := false
		t.Cleanup(func() {
			if !lifted {
				_ = lab.gws[1].Command(context.Background(), "nft", "delete", "table", "inet", "fleetcut").Run()
			}
		})
		for lab.ds[1].fleetStatus(t).Connected {
			if time.Since(cut) > 10*time.Second {
				t.Fatal("gw2 still connected 10s after the cut")
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("gw2 noticed the cut after %v", time.Since(cut).Round(time.Millisecond))
		elsewhere := append(addrRange("2001:db8:3:1", 500), addrRange("2001:db8:3:3", 500)...)
		onGW2 := addrRange("2001:db8:3:2", 10)
		s3 := newRejectSender(t, lab.gws[2], "C")
		s2 := newRejectSender(t, lab.gws[1], "D")
		for i, a := range elsewhere {
			if i < 500 {
				s1.send(t, a, false)
			} else {
				s3.send(t, a, false)
			}
		}
		s1.flush(t)
		s3.flush(t)
		for _, a := range onGW2 {
			s2.send(t, a, true)
		}
		waitAll(t, 10*time.Second, "bans made at gw1 and gw3 during the cut, at both", elsewhere, gw1, gw3)
		waitAll(t, 10*time.Second, "bans made at gw2 during the cut, at gw2", onGW2, gw2)
		if st := lab.ds[1].fleetStatus(t); st.Connected || st.Queued != len(onGW2) {
			t.Errorf("gw2 during the cut: connected %v, queued %d; want false, %d", st.Connected, st.Queued, len(onGW2))
		}
		if n := gw3.missing(onGW2); n != len(onGW2) {
			t.Errorf("%d of gw2's bans reached gw3 during the cut", len(onGW2)-n)
		}
		if n := gw2.missing(elsewhere); n != len(elsewhere) {
			t.Errorf("%d of the others' bans reached gw2 during the cut", len(elsewhere)-n)
		}
		time.Sleep(time.Until(cut.Add(30 * time.Second)))

		lab.gws[1].Run(t, "nft", "delete", "table", "inet", "fleetcut")
		lifted = true
		liftedAt := time.Now()
		var reconnected time.Time
		for {
			if lab.ds[1].fleetStatus(t).Connected {
				reconnected = time.Now()
				break
			}
			if time.Since(liftedAt) > 10*time.Second {
				t.Fatal("gw2 not reconnected 10s after the cut was lifted")
			}
			time.Sleep(10 * time.Millisecond)
		}
		all := append(slices.Clone(elsewhere), onGW2...)
		done := waitAll(t, 10*time.Second, "all 1,010 bans on every gateway", all, gw1, gw2, gw3)
		t.Logf("cut lifted -> gw2 reconnected in %v; every gateway has all %d bans %v after reconnecting (%v after the lift)",
			reconnected.Sub(liftedAt).Round(time.Millisecond), len(all), done.Sub(reconnected).Round(time.Millisecond), done.Sub(liftedAt).Round(time.Millisecond))
		if d := done.Sub(reconnected); d > 2*time.Second {
			t.Errorf("all 1,010 bans on every gateway %v after gw2 reconnected, want within 2s", d)
		}
		lab.cluster.Nodes[0].Restart(t)
	})

	t.Run("4 100k bans at gw1 reach gw2 and gw3 within 5 s", func(t *testing.T) {
		addrs := addrRange("2001:db8:4:0", 100_000)
		s := newRejectSender(t, lab.gws[0], "E")
		start := time.Now()
		for _, a := range addrs {
			s.send(t, a, false)
		}
		s.flush(t)
		waitAll(t, 60*time.Second, "100k bans at gw1, gw2 and gw3", addrs, gw1, gw2, gw3)
		at1 := gw1.times(addrs)
		var end1 time.Time
		for _, at := range at1 {
			if at.After(end1) {
				end1 = at
			}
		}
		for gw, m := range map[string]*kernelMon{"gw2": gw2, "gw3": gw3} {
			lat := make([]time.Duration, len(addrs))
			var end time.Time
			for i, at := range m.times(addrs) {
				lat[i] = at.Sub(at1[i])
				if at.After(end) {
					end = at
				}
			}
			p50, p99, top := percentiles(lat)
			t.Logf("%s: 100k bans, gw1's kernel -> %s's kernel p50 %v, p99 %v, max %v; all in %s's kernel %v after the first was sent (gw1's: %v)",
				gw, gw, p50, p99, top, gw, end.Sub(start).Round(time.Millisecond), end1.Sub(start).Round(time.Millisecond))
			if top > 5*time.Second {
				t.Errorf("%s: a ban took %v from gw1's kernel to %s's, want within 5s", gw, top, gw)
			}
		}
	})

	t.Run("5 bad bucket entries are refused everywhere", func(t *testing.T) {
		nc, err := nats.Connect(lab.cluster.URLs()[1], nats.SetCustomDialer(hubDialer{lab.hub}))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		kv, err := js.KeyValue(t.Context(), "wormgate_bans")
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		ban := func(key string) {
			v := fmt.Sprintf(`{"op":"ban","origin":"intruder","time":%q,"until":%q}`, now.Format(time.RFC3339Nano), now.Add(time.Hour).Format(time.RFC3339Nano))
			if _, err := kv.Put(t.Context(), key, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		before := make([]map[string]float64, 3)
		for i, d := range lab.ds {
			before[i] = d.counters(t)
		}
		if _, err := kv.Put(t.Context(), "ban.203.0.113.77", []byte("\x00garbage{{")); err != nil {
			t.Fatal(err)
		}
		ban("ban.127.0.0.1")
		ban("ban.198.51.100.5")
		ban("ban.0.0.0.0/0")
		want := map[string]float64{"malformed": 1, "never_block": 2, "too_wide": 1}
		deadline := time.Now().Add(2 * time.Second)
		for i, d := range lab.ds {
			for {
				after := d.counters(t)
				ok := true
				for r, n := range want {
					k := "wormgate_fleet_rejected_total{reason=" + r + "}"
					ok = ok && after[k]-before[i][k] == n
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("gw%d: rejected counters did not rise by %v within 2s", i+1, want)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			got := kernelAddrs(t, lab.gws[i])
			for _, bad := range []string{"203.0.113.77", "127.0.0.1", "198.51.100.5", "0.0.0.0/0"} {
				if slices.Contains(got, bad) {
					t.Errorf("gw%d's kernel holds %s from a bad entry", i+1, bad)
				}
			}
			if !d.alive() {
				t.Errorf("gw%d died", i+1)
			}
		}
	})
}

type hubDialer struct{ ns *nftest.NS }

func (h hubDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.ns.Dial(ctx, network, addr)
}

// TestServeFleetNATSDown is acceptance 6's second half: with NATS out of
// reach at start the gateway starts, enforces alone and says so.
func TestServeFleetNATSDown(t *testing.T) {
	nftest.Require(t, "ip", "nft")
	gw := nftest.NewNS(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "wormgate.yaml")
	body := fmt.Sprintf("enforcer:\n  state_dir: %s\nfleet:\n  urls: [nats://127.0.0.1:4222]\n  name: alone\n  insecure_lab: true\n", filepath.Join(dir, "state"))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, gw, "--config", cfg)
	sendTCP(t, gw, "127.0.0.1:514", lfFrames(pairLines(traditional, "F00000001", "203.0.113.41")))
	waitKernel(t, gw, "203.0.113.41")
	st := d.fleetStatus(t)
	if !st.Enabled || st.Connected || st.Queued != 1 {
		t.Errorf("fleet status = %+v, want enabled, not connected, 1 queued", st)
	}
	out := d.mustCLI(t, "status")
	if !strings.Contains(out, "NOT CONNECTED") {
		t.Errorf("wormgate status does not say the fleet is not connected:\n%s", out)
	}
	if c := d.counters(t); c["wormgate_fleet_connected"] != 0 || c["wormgate_fleet_queued"] != 1 {
		t.Errorf("metrics: connected %v, queued %v; want 0, 1", c["wormgate_fleet_connected"], c["wormgate_fleet_queued"])
	}
}
