package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

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
	enf, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), enforcer.NewDryRun(slog.New(slog.NewTextHandler(io.Discard, nil))),
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
