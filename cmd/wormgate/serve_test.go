package main

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wormgate/wormgate/enforcer/dryrun"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/policy"
	"github.com/wormgate/wormgate/matcher"
)

func TestSenderGuardProtectsSyslogPeers(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := defaultConfig()
	enf, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), dryrun.New(log), log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	g := &senderGuard{enf: enf, seen: map[netip.Addr]*liveSender{}, log: log}
	mx := netip.MustParseAddr("198.51.100.25")
	// Banned before it was known as a sender (another MX logged it as a
	// client): learning it lifts the ban.
	if v := enf.Offend(matcher.Offense{Addr: mx, Rule: "worm-signature", Host: "mx1", Time: time.Now()}).Verdict; v != policy.VerdictBan {
		t.Fatalf("offense by a host not yet known as a sender: %v, want ban", v)
	}
	t0 := time.Now()
	g.observe(mx, "mx1", t0, true)
	g.observe(mx, "mx1", t0.Add(time.Second), true)
	g.observe(netip.Addr{}, "", t0, true) // file input has no peer
	if w := enf.Why(mx); w.Ban != nil {
		t.Errorf("the sender's ban was not lifted when it was learned: %+v", w.Ban)
	}
	want := map[string]senderStat{mx.String(): {Host: "mx1", First: t0, Last: t0.Add(time.Second), Messages: 2}}
	if diff := cmp.Diff(want, g.senders()); diff != "" {
		t.Errorf("senders (-want +got):\n%s", diff)
	}

	offend := func(a netip.Addr) policy.Verdict {
		return enf.Offend(matcher.Offense{Addr: a, Rule: "worm-signature", Host: "mx1", Time: time.Now()}).Verdict
	}
	if v := offend(mx); v != policy.VerdictNeverBlock {
		t.Errorf("offense by the syslog sender %v: verdict %v, want never_block", mx, v)
	}
	// Only the sender itself, not its neighbours.
	if v := offend(netip.MustParseAddr("198.51.100.26")); v != policy.VerdictBan {
		t.Errorf("offense by a neighbour of the sender: verdict %v, want ban", v)
	}
}
