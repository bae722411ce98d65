package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/enforcer/dryrun"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/nft/nftest"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// BenchmarkDecisionPath measures message -> offense -> ban decision: one
// op is a client= line and its cleanup reject from a new client, matched
// and decided (the kernel write is batched behind it and measured by
// BenchmarkRejectToKernel and the enforcer's benchmarks).
func BenchmarkDecisionPath(b *testing.B) {
	cfg := defaultConfig()
	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		b.Fatal(err)
	}
	enf, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), dryrun.New(slog.New(slog.NewTextHandler(io.Discard, nil))),
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	const n = 1 << 16
	msgs := make([]syslog.Message, 0, 2*n)
	now := time.Now()
	for i := range n {
		addr := netip.AddrFrom4([4]byte{203, byte(i >> 16), byte(i >> 8), byte(i)})
		p := rejectPair(fmt.Sprintf("%010X", i+1), addr.String())
		msgs = append(msgs,
			syslog.Message{Time: now, Host: "mx1", Program: "postfix/smtpd", PID: 5320, Text: p[0]},
			syslog.Message{Time: now, Host: "mx1", Program: "postfix/cleanup", PID: 5325, Text: p[1]})
	}
	var offs []matcher.Offense
	bans := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		j := 2 * (i % n)
		offs = m.Match(offs[:0], msgs[j])
		offs = m.Match(offs[:0], msgs[j+1])
		for _, o := range offs {
			if d := enf.Offend(o); d.Verdict == policy.VerdictBan || d.Verdict == policy.VerdictExtend {
				bans++
			}
		}
	}
	b.StopTimer()
	if bans == 0 {
		b.Fatal("no ban decided")
	}
}

// BenchmarkRejectToKernel measures, with the real binary in a namespace,
// the time from writing a reject pair to a syslog TCP socket to the
// kernel announcing the new set element (nftables monitor events). Each
// op is one event; p50 and p99 are reported. Run with -benchtime=1000x.
func BenchmarkRejectToKernel(b *testing.B) {
	nftest.Require(b, "ip", "nft")
	gw := nftest.NewNS(b)
	startDaemon(b, gw, "--config", stateDirConfig(b, "max_new_bans_per_second: 1000000"))

	// nft monitor reports each committed element change from the
	// kernel's own netlink notifications: independent of wormgate's code.
	mon := gw.Command(context.Background(), "nft", "monitor", "new", "elements")
	out, err := mon.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := mon.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = mon.Process.Kill(); _ = mon.Wait() }()
	seen := make(chan netip.Addr, 4096)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			// add element inet wormgate blocked4 { 192.0.2.7 timeout 1d expires 1d }
			_, elems, ok := strings.Cut(sc.Text(), "{")
			if !ok {
				continue
			}
			for _, e := range strings.Split(strings.TrimSuffix(strings.TrimSpace(elems), "}"), ",") {
				if f := strings.Fields(e); len(f) > 0 {
					if a, err := netip.ParseAddr(f[0]); err == nil {
						seen <- a
					}
				}
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // let nft join the multicast group

	c, err := gw.Dial(context.Background(), "tcp", "127.0.0.1:514")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		addr := benchAddr(i)
		payload := lfFrames(pairLines(traditional, fmt.Sprintf("CD%08X", i+1), addr.String()))
		start := time.Now()
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(5 * time.Second)
	wait:
		for {
			select {
			case a := <-seen:
				if a == addr {
					break wait
				}
			case <-timeout:
				b.Fatalf("event %d: %v not in the kernel after 5s", i, addr)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	b.ReportMetric(float64(p(0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(p(0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(slices.Max(lat).Microseconds()), "max-µs")
}

// benchAddr spreads events over the documentation ranges: IPv4 from the
// three TEST-NETs and IPv6 from 2001:db8::/32.
func benchAddr(i int) netip.Addr {
	if i%2 == 1 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 3, 14: byte(i >> 8), 15: byte(i)})
	}
	nets := [][3]byte{{192, 0, 2}, {198, 51, 100}, {203, 0, 113}}
	j := (i / 2) % (3 * 256)
	n := nets[j/256]
	return netip.AddrFrom4([4]byte{n[0], n[1], n[2], byte(j)})
}

// BenchmarkBulkToKernel sends 100,000 reject pairs from distinct clients
// (2001:db8:100::/48) over one syslog TCP connection to the real binary in
// a namespace, with the new-ban rate limit lifted and the durable record
// on, and measures until every ban is in the kernel: the daemon's
// firewall has nothing pending and holds them all, and `nft` then counts
// them in the set. In the same run it loads the same 100,000 timed
// elements with `nft -f` into a fresh table. Each op is one of each; the
// medians are reported. Run with -benchtime=5x.
func BenchmarkBulkToKernel(b *testing.B) {
	nftest.Require(b, "ip", "nft")
	const n = 100_000
	addrs := make([]netip.Addr, n)
	var payload []byte
	for i := range n {
		addrs[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		payload = append(payload, lfFrames(pairLines(traditional, fmt.Sprintf("EF%08X", i+1), addrs[i].String()))...)
	}
	var nftFile strings.Builder
	nftFile.WriteString("add element inet wormgate blocked6 { ")
	for i, a := range addrs {
		if i > 0 {
			nftFile.WriteString(", ")
		}
		nftFile.WriteString(a.String() + " timeout 1d")
	}
	nftFile.WriteString(" }\n")
	elemFile := filepath.Join(b.TempDir(), "elements.nft")
	if err := os.WriteFile(elemFile, []byte(nftFile.String()), 0o600); err != nil {
		b.Fatal(err)
	}

	var wg, nf []time.Duration
	for b.Loop() {
		b.StopTimer()
		gw := nftest.NewNS(b)
		d := startDaemon(b, gw, "--config", stateDirConfig(b, "max_new_bans_per_second: 1000000"))
		c, err := gw.Dial(context.Background(), "tcp", "127.0.0.1:514")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
		for {
			st := d.status(b)
			if st.BansActive == n && st.Enforcer.Pending == 0 {
				break
			}
			if time.Since(start) > time.Minute {
				b.Fatalf("after 1m: %d bans, %d pending", st.BansActive, st.Enforcer.Pending)
			}
			time.Sleep(10 * time.Millisecond)
		}
		wg = append(wg, time.Since(start))
		b.StopTimer()
		c.Close()
		if got := strings.Count(gw.Run(b, "nft", "list", "set", "inet", "wormgate", "blocked6"), "expires"); got != n {
			b.Fatalf("%d elements in the kernel set, want %d", got, n)
		}

		// nft -f of the same elements into a fresh table of the same shape.
		fresh := nftest.NewNS(b)
		fresh.Run(b, "nft", "add table inet wormgate; add set inet wormgate blocked6 { type ipv6_addr; flags timeout; }")
		b.StartTimer()
		start = time.Now()
		fresh.Run(b, "nft", "-f", elemFile)
		nf = append(nf, time.Since(start))
	}
	b.StopTimer()
	med := func(ds []time.Duration) time.Duration { s := slices.Clone(ds); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(float64(med(wg).Milliseconds()), "wormgate-ms")
	b.ReportMetric(float64(med(nf).Milliseconds()), "nft-f-ms")
	b.ReportMetric(float64(med(nf))/float64(med(wg)), "nft/wormgate")
	b.Logf("100k reject pairs over TCP to all in the kernel: %v (median of %d); nft -f of the same elements: %v", med(wg), len(wg), med(nf))
	if med(wg) >= med(nf) {
		b.Errorf("wormgate (%v) is not faster than nft -f (%v)", med(wg), med(nf))
	}
}

type statusReply struct {
	BansActive int `json:"bans_active"`
	Enforcer   struct {
		Pending   int      `json:"pending"`
		RecordLag int      `json:"record_lag"`
		Degraded  bool     `json:"degraded"`
		Failing   []string `json:"failing"`
	} `json:"enforcer"`
}

// status reads /api/v1/status.
func (d *daemon) status(t testing.TB) statusReply {
	t.Helper()
	resp, err := d.client.Get("http://127.0.0.1:9514/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st statusReply
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
