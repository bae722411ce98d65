package main

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// reloadResult is what a reload did, as `wormgate reload`, the log and
// /api/v1/status show it.
type reloadResult struct {
	OK   bool      `json:"ok"`
	Time time.Time `json:"time"`
	By   string    `json:"by"`
	// Error is why the file was refused (the old config stays).
	Error string `json:"error,omitempty"`
	// Applied are the settings that changed and now apply.
	Applied []string `json:"applied,omitempty"`
	// NeedsRestart are the settings that changed but apply only after a
	// restart; until then the old values run.
	NeedsRestart []string `json:"needs_restart,omitempty"`
	// Lifted are the bans the new never_block list lifted.
	Lifted []netip.Prefix `json:"lifted,omitempty"`
}

// restartOnly are the settings a running daemon cannot change: paths are
// prefixes of the YAML paths. Everything else applies at a reload.
var restartOnly = []string{
	"receiver.", "enforcer.state_dir", "enforcer.dry_run", "enforcer.nftables.table",
	"enforcer.nftables.syslog_guard", "http.listen", "control.", "log.",
	"matcher.reinjection_sources", "matcher.established", "fleet.",
}

// appliedAtReload are the matcher settings a reload applies (the rules);
// the matcher's other settings need a restart.
var appliedAtReload = []string{"matcher.rules", "matcher.profile", "matcher.rules_add"}

func needsRestart(path string) bool {
	for _, p := range appliedAtReload {
		if path == p || strings.HasPrefix(path, p+"[") || strings.HasPrefix(path, p+".") {
			return false
		}
	}
	if strings.HasPrefix(path, "matcher.") {
		return true
	}
	for _, p := range restartOnly {
		if strings.HasPrefix(path+".", p) || strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// reloadMetrics are the gauges of the last reload.
type reloadMetrics struct {
	ok   prometheus.Gauge
	when prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) reloadMetrics {
	m := reloadMetrics{
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wormgate_config_last_reload_successful", Help: "Whether the last configuration reload succeeded (1) or failed (0).",
		}),
		when: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wormgate_config_last_reload_success_timestamp_seconds", Help: "When the configuration was last loaded successfully (start or reload).",
		}),
	}
	reg.MustRegister(m.ok, m.when)
	m.ok.Set(1)
	m.when.SetToCurrentTime()
	return m
}

// reload loads the config file again and applies what can change at run
// time: rules, never_block (lifting covered bans), ban durations, the
// port set, the caps, the history bounds, the write token and the TLS
// files. A file that does not load changes nothing. Settings that need a
// restart keep their running values and are named in the result.
func (a *app) reload(ctx context.Context, by string) reloadResult {
	a.rmu.Lock()
	defer a.rmu.Unlock()
	defer notifyReload(a.log, a.enf.Ready)()
	res := reloadResult{Time: time.Now().UTC(), By: by}
	defer func() {
		a.lastReload.Store(&res)
		if res.OK {
			a.reloadM.ok.Set(1)
			a.reloadM.when.SetToCurrentTime()
			a.log.Info("config reloaded", "path", a.path, "by", by, "applied", res.Applied, "needs_restart", res.NeedsRestart, "lifted", len(res.Lifted))
			if len(res.NeedsRestart) > 0 {
				a.log.Warn("changed settings apply only after a restart; the running values stay", "settings", res.NeedsRestart)
			}
		} else {
			a.reloadM.ok.Set(0)
			a.log.Error("reload failed; keeping the old config", "path", a.path, "by", by, "err", res.Error)
		}
	}()
	if a.path == "" {
		res.Error = "running on the embedded default config: there is no file to reload (start serve with --config)"
		return res
	}
	old := a.cfg.Load()
	cfg, err := loadConfig(a.path)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	applyEnv(&cfg)
	tok, err := loadToken(cfg.HTTP.WriteTokenFile)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Applied, res.NeedsRestart = diffConfig(old, &cfg)
	if err := a.matcher.SetRules(cfg.Matcher.Rules); err != nil {
		res.Error = err.Error()
		return res
	}
	er, err := a.enf.Reconfigure(ctx, cfg.Enforcer, rulePolicies(cfg.Matcher))
	if err != nil {
		// The port set is the only part that can fail, and it comes first:
		// the enforcer kept its old settings. Put the old rules back.
		_ = a.matcher.SetRules(old.Matcher.Rules)
		res.Applied = nil
		res.Error = err.Error()
		return res
	}
	res.Lifted = er.Lifted
	if cfg.Process != old.Process {
		if cfg.Process.MemoryLimitMiB == 0 {
			resetMemoryLimit()
		}
		applyMemoryLimit(cfg.Process, a.log)
	}
	if a.control != nil {
		a.control.token.Store(&tok)
	}
	if a.rcv != nil {
		if err := a.rcv.ReloadTLS(); err != nil {
			a.log.Error("reload: TLS files not reloaded; keeping the old ones", "err", err)
		}
	}
	a.cfg.Store(&cfg)
	res.OK = true
	return res
}

// diffConfig names the settings that differ between old and next by
// their YAML paths, split into those a reload applies and those that
// need a restart; for the latter, next gets old's values back, so that
// the running config never shows them as applied.
func diffConfig(old, next *Config) (applied, restart []string) {
	var walk func(path string, o, n reflect.Value)
	walk = func(path string, o, n reflect.Value) {
		if o.Kind() == reflect.Struct && !leafType(o.Type()) {
			for i := range o.NumField() {
				f := o.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				switch {
				case name == "-":
					continue
				case opts == "inline" || (name == "" && f.Anonymous):
					walk(path, o.Field(i), n.Field(i))
					continue
				case name == "":
					name = strings.ToLower(f.Name)
				}
				p := name
				if path != "" {
					p = path + "." + name
				}
				walk(p, o.Field(i), n.Field(i))
			}
			return
		}
		if reflect.DeepEqual(o.Interface(), n.Interface()) {
			return
		}
		if needsRestart(path) {
			restart = append(restart, path)
			n.Set(o)
			return
		}
		applied = append(applied, path)
	}
	walk("", reflect.ValueOf(old).Elem(), reflect.ValueOf(next).Elem())
	slices.Sort(applied)
	slices.Sort(restart)
	return applied, restart
}

// leafType: structs compared as one value (time, addresses, regexps).
func leafType(t reflect.Type) bool {
	switch t {
	case reflect.TypeFor[time.Time](), reflect.TypeFor[netip.Addr](), reflect.TypeFor[netip.Prefix]():
		return true
	}
	// The binary's own types are in package main, in tests under their
	// import path.
	p := t.PkgPath()
	return p != "" && p != "main" && !strings.HasPrefix(p, "github.com/wormgate/")
}

// String summarises a result for the CLI.
func (r reloadResult) String() string {
	var b strings.Builder
	if !r.OK {
		fmt.Fprintf(&b, "reload failed; the old config stays:\n%s\n", r.Error)
		return b.String()
	}
	if len(r.Applied) == 0 && len(r.NeedsRestart) == 0 {
		b.WriteString("config reloaded: nothing changed\n")
	} else {
		b.WriteString("config reloaded\n")
	}
	for _, p := range r.Applied {
		fmt.Fprintf(&b, "  applied        %s\n", p)
	}
	for _, p := range r.NeedsRestart {
		fmt.Fprintf(&b, "  needs restart  %s (the running value stays)\n", p)
	}
	for _, n := range r.Lifted {
		fmt.Fprintf(&b, "  ban lifted     %v (now on the never-block list)\n", n)
	}
	return b.String()
}
