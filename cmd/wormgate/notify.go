package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	// Named: the tests have a type daemon.
	sd "github.com/coreos/go-systemd/v22/daemon"
)

// The unit is Type=notify: systemd counts wormgate as started only on
// READY=1, so `systemctl start` returns, and units ordered after it start,
// once the bans are in the kernel and the syslog listeners take messages.
// Without NOTIFY_SOCKET (not run by systemd) every function here is a
// no-op.

// readyPoll is how often notifyLifecycle asks whether the firewall is set
// up; set-up takes from milliseconds to seconds (retries), and a start
// announced 20 ms late costs nothing.
const readyPoll = 20 * time.Millisecond

// notifying reports whether systemd listens (NOTIFY_SOCKET is set).
func notifying() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

func sdNotify(log *slog.Logger, state string) {
	sent, err := sd.SdNotify(false, state)
	if err != nil {
		// systemd then times the start out or keeps the unit "reloading":
		// loud, but no reason to stop blocking worms.
		log.Warn("sd_notify failed", "state", state, "err", err)
		return
	}
	if sent {
		log.Debug("sd_notify", "state", state)
	}
}

// notifyReady tells systemd that the service is up, or that a reload is
// over.
func notifyReady(log *slog.Logger) { sdNotify(log, sd.SdNotifyReady) }

// notifyReloading tells systemd that a reload began; READY=1 must follow.
// MONOTONIC_USEC lets systemd (253 and later) match the two.
func notifyReloading(log *slog.Logger) {
	sdNotify(log, sd.SdNotifyReloading+"\n"+sd.SdNotifyMonotonicUsec())
}

// notifyStopping tells systemd that the service is shutting down.
func notifyStopping(log *slog.Logger) { sdNotify(log, sd.SdNotifyStopping) }

// notifyLifecycle sends READY=1 as soon as ready reports the firewall set
// up, and STOPPING=1 when ctx ends. The caller has bound every listener
// before it runs this.
func notifyLifecycle(ctx context.Context, log *slog.Logger, ready func() bool) {
	if !notifying() {
		return
	}
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for !ready() {
		select {
		case <-ctx.Done():
			notifyStopping(log)
			return
		case <-tick.C:
		}
	}
	notifyReady(log)
	<-ctx.Done()
	notifyStopping(log)
}

// notifyReload sends RELOADING=1 and returns the function that sends
// READY=1 when the reload is over, whatever its outcome (a failed reload
// keeps the service running on the old config). Before ready reports the
// start finished both are left out: READY=1 would announce it too early.
func notifyReload(log *slog.Logger, ready func() bool) (done func()) {
	if !notifying() || !ready() {
		return func() {}
	}
	notifyReloading(log)
	return func() { notifyReady(log) }
}
