package main

import (
	"os"
	"testing"
)

// BenchmarkCheckFile replays the file named by $WORMGATE_BENCH_LOG (e.g.
// one written by `go run ./cmd/wormgate/bench`) through check, for
// profiling with -cpuprofile; check-bench.sh measures the binary itself.
func BenchmarkCheckFile(b *testing.B) {
	path := os.Getenv("WORMGATE_BENCH_LOG")
	if path == "" {
		b.Skip("set WORMGATE_BENCH_LOG to a mail log")
	}
	for b.Loop() {
		c, err := newChecker(defaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		srcs, err := openSources([]string{path}, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, src := range srcs {
			if err := c.scan(src); err != nil {
				b.Fatal(err)
			}
			src.close()
		}
		b.ReportMetric(float64(c.lines), "lines/op")
	}
}
