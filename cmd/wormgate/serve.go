package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wormgate/wormgate/enforcer/nft"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/matcher"
	"github.com/wormgate/wormgate/receiver"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// queueLen buffers messages between the receiver and the matcher, so a
// burst of UDP datagrams is not dropped while a firewall write is running.
const queueLen = 8192

func cmdServe(ctx context.Context, args []string, s streams) error {
	fs := newFlagSet("serve", "serve [--config FILE]\n\nRuns the appliance: syslog in, nftables bans out, status over HTTP.\nWithout --config it runs on the embedded default (see wormgate config).", s.stderr)
	path := fs.String("config", "", "configuration `file` (YAML); only what differs from the default")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, s.stderr)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default action: a second
		// signal kills the process even if shutdown hangs.
		<-ctx.Done()
		stop()
	}()
	return serve(ctx, cfg, *path, log)
}

// serve wires the components and runs them until ctx is done.
func serve(ctx context.Context, cfg Config, path string, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var fw enforcer.Firewall
	if cfg.Enforcer.DryRun {
		fw = enforcer.NewDryRun(log)
	} else {
		nf, err := nft.Open(cfg.Enforcer.NFTables, log)
		if err != nil {
			return err
		}
		fw = nf
	}
	defer fw.Close()

	m, err := matcher.New(cfg.Matcher)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	reg.MustRegister(matcherCollector{m})
	var opts []enforcer.Option
	if !cfg.Enforcer.DryRun {
		if cfg.Enforcer.StateDir == "" {
			log.Warn("enforcer.state_dir is empty: bans are not recorded and a flushed firewall or a reboot loses them")
		} else {
			st, err := enforcer.OpenStore(cfg.Enforcer.StateDir)
			if err != nil {
				return err
			}
			defer st.Close()
			opts = append(opts, enforcer.WithStore(st))
		}
	}
	enf, err := enforcer.New(cfg.Enforcer, rulePolicies(cfg.Matcher), fw, log, reg, opts...)
	if err != nil {
		return err
	}
	enf.AddNeverBlock(ownPrefixes(log)...)
	guard := &senderGuard{enf: enf, seen: make(map[netip.Addr]struct{}), log: log}
	msgs := make(chan syslog.Message, queueLen)
	rcv, err := receiver.New(cfg.Receiver, msgs, log, reg)
	if err != nil {
		return fmt.Errorf("%w: %w", errConfig, err)
	}
	if err := rcv.Open(); err != nil {
		return err
	}
	var httpLn net.Listener
	if cfg.HTTP.Listen != "" {
		if httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http: %w", err)
		}
	}
	var current atomic.Pointer[Config]
	current.Store(&cfg)
	st := &status{
		started: time.Now(), cfg: &current, enf: enf, rcv: rcv, reg: reg,
		firewall: map[bool]string{true: "dry-run", false: "nftables"}[cfg.Enforcer.DryRun],
	}

	g, gctx := errgroup.WithContext(ctx)
	// The enforcer outlives the receiver and the matcher: it stops only
	// when every received message has been matched, then flushes.
	enfCtx, enfStop := context.WithCancel(context.WithoutCancel(ctx))
	defer enfStop()
	g.Go(func() error {
		err := enf.Run(enfCtx)
		if err != nil {
			// Without a firewall there is no point in receiving.
			return err
		}
		return nil
	})
	g.Go(func() error {
		defer close(msgs)
		return rcv.Run(gctx)
	})
	g.Go(func() error {
		defer enfStop()
		var offs []matcher.Offense
		for msg := range msgs {
			guard.observe(msg.Peer)
			offs = m.Match(offs[:0], msg)
			for _, o := range offs {
				enf.Offend(o)
			}
		}
		return nil
	})
	if httpLn != nil {
		srv := &http.Server{Handler: st.handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		g.Go(func() error {
			if err := srv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 3*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	g.Go(func() error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				reload(path, &current, m, enf, log)
			}
		}
	})
	log.Info("wormgate started", "version", buildVersion(), "firewall", st.firewall,
		"udp", rcv.UDPAddrs(), "tcp", rcv.TCPAddrs(), "tls", rcv.TLSAddrs(), "http", cfg.HTTP.Listen, "rules", len(cfg.Matcher.Rules))
	err = g.Wait()
	log.Info("wormgate stopped", "err", err)
	return err
}

// ownPrefixes are the gateway's own addresses: never banned whatever the
// rules say.
func ownPrefixes(log *slog.Logger) []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		log.Warn("own addresses unknown; only the configured never_block list protects them", "err", err)
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
			ip = ip.Unmap()
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out
}

// maxSenders bounds the syslog senders learned for the never-block list;
// a site has a handful of MX hosts.
const maxSenders = 1024

// senderGuard protects the syslog senders themselves: an MX host that
// forwards its log must never be banned because of a line in it. It
// learns the exact peer addresses (not the whole allowed_senders ranges,
// which may hold clients that deserve a ban). Only the pipeline
// goroutine calls it.
type senderGuard struct {
	enf  *enforcer.Enforcer
	seen map[netip.Addr]struct{}
	log  *slog.Logger
}

func (g *senderGuard) observe(peer netip.Addr) {
	if !peer.IsValid() {
		return
	}
	if _, ok := g.seen[peer]; ok || len(g.seen) >= maxSenders {
		return
	}
	g.seen[peer] = struct{}{}
	g.enf.AddNeverBlock(netip.PrefixFrom(peer, peer.BitLen()))
	g.log.Info("syslog sender added to the never-block list", "addr", peer)
}

// reload swaps in the rules of a new, valid config; on any error the old
// config stays. Listener and firewall settings need a restart.
func reload(path string, current *atomic.Pointer[Config], m *matcher.Matcher, enf *enforcer.Enforcer, log *slog.Logger) {
	if path == "" {
		log.Info("SIGHUP ignored: running on the embedded default config")
		return
	}
	cfg, err := loadConfig(path)
	if err != nil {
		log.Error("reload failed; keeping the old config", "err", err)
		return
	}
	if err := m.SetRules(cfg.Matcher.Rules); err != nil {
		log.Error("reload failed; keeping the old config", "err", err)
		return
	}
	enf.SetRules(rulePolicies(cfg.Matcher))
	current.Store(&cfg)
	log.Info("config reloaded", "path", path, "rules", len(cfg.Matcher.Rules))
}
