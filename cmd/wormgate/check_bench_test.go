package main

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/logfile"
)

// BenchmarkCheckFile replays the file named by $WORMGATE_BENCH_LOG (e.g.
// one written by `go run ./cmd/wormgate/bench`) the way check does, with
// each rule profile, for profiling with -cpuprofile; check-bench.sh
// measures the binary itself.
func BenchmarkCheckFile(b *testing.B) {
	path := os.Getenv("WORMGATE_BENCH_LOG")
	if path == "" {
		b.Skip("set WORMGATE_BENCH_LOG to a mail log")
	}
	for _, p := range []matcher.Profile{matcher.ProfileDefault, matcher.ProfileAggressive} {
		cfg := defaultConfig()
		cfg.Matcher.Profile, cfg.Matcher.Rules = p, nil
		cfg.Matcher = cfg.Matcher.Resolved()
		b.Run(string(p), func(b *testing.B) {
			var lines int
			for b.Loop() {
				r, err := newReplay(cfg, netip.Addr{})
				if err != nil {
					b.Fatal(err)
				}
				files, err := logfile.OpenAll([]string{path}, logfile.Options{Now: time.Now()})
				if err != nil {
					b.Fatal(err)
				}
				for _, f := range files {
					if err := r.Scan(f); err != nil {
						b.Fatal(err)
					}
					if err := f.Close(); err != nil {
						b.Fatal(err)
					}
				}
				lines = r.Counts().Lines
			}
			b.ReportMetric(float64(lines), "lines/op")
			b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}
