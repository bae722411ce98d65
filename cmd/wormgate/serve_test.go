package main

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

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
	g := &senderGuard{enf: enf, seen: map[netip.Addr]struct{}{}, log: log}
	mx := netip.MustParseAddr("198.51.100.25")
	g.observe(mx)
	g.observe(netip.Addr{}) // file input has no peer

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
