package enforcer

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

// BenchmarkFlood1M feeds 1,000,000 distinct offenders through an Enforcer
// with the default sizes and reports the heap and the process's peak RSS.
// Half the offenders are under a threshold-1 rule (each one's ban is rate
// limited after the first thousand), half under a threshold-3 rule that
// they never reach: the memory is the offender LRU's.
func BenchmarkFlood1M(b *testing.B) {
	for b.Loop() {
		e, err := New(DefaultConfig(), map[string]policy.RulePolicy{
			"worm": {Threshold: 1, Window: time.Hour},
			"sasl": {Threshold: 3, Window: time.Hour},
		}, newRecordingFirewall(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		ip := netip.MustParseAddr("2001:db8::")
		for i := range 1_000_000 {
			ip = ip.Next()
			rule := "sasl"
			if i%2 == 0 {
				rule = "worm"
			}
			e.Offend(matcher.Offense{Addr: ip, Rule: rule, Host: "mx1"})
			if i%10_000 == 0 {
				if err := e.Flush(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heapMB")
		b.ReportMetric(float64(len(e.Bans())), "bans")
		runtime.KeepAlive(e)
		b.StartTimer()
	}
	b.ReportMetric(peakRSSMB(b), "peakRSS_MB")
}

// peakRSSMB reads VmHWM, the process's peak resident set.
func peakRSSMB(b *testing.B) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Logf("peak RSS unknown: %v", err)
		return 0
	}
	for l := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb float64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb); err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}
