package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/dryrun"
	"github.com/wormgate/wormgate/enforcer/store"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver/syslog"
)

func TestZZMem(t *testing.T) {
	cfg := defaultConfig()
	cfg.Enforcer.MaxNewBansPerSecond = 1_000_000
	log := slog.New(slog.DiscardHandler)
	m, _ := matcher.New(cfg.Matcher)
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), dryrun.New(log), log, prometheus.NewRegistry(), enforcer.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	for !e.Ready() {
		time.Sleep(time.Millisecond)
	}
	var offs []matcher.Offense
	peer := netip.MustParseAddr("127.0.0.1")
	for i := range 200_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		qid := fmt.Sprintf("A%09X", i)
		for _, l := range pairLines(traditional, qid, a.String()) {
			msg, err := syslog.Parse([]byte(l), time.Now(), time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			msg.Peer = peer
			offs = m.Match(offs[:0], msg)
			for _, o := range offs {
				e.Offend(o)
			}
		}
	}
	e.Flush(ctx)
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap %d MB, bans %d", ms.HeapAlloc>>20, e.ActiveCount())
	f, _ := os.Create("/tmp/memprof/heap.prof")
	pprof.WriteHeapProfile(f)
	f.Close()
	cancel()
}
