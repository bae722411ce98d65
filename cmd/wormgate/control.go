package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer"
	"github.com/wormgate/wormgate/enforcer/store"
)

// defaultSocket is where the daemon listens and the CLI dials.
const defaultSocket = "/run/wormgate/control.sock"

// socketEnv overrides control.socket for serve and the default of
// --socket for the other commands: one variable points both at a
// daemon that runs beside another (a lab, a test).
const socketEnv = "WORMGATE_SOCKET"

// applyEnv applies the environment's overrides to a loaded config.
func applyEnv(cfg *Config) {
	if s := os.Getenv(socketEnv); s != "" {
		cfg.Control.Socket = s
	}
}

// socketDefault is --socket's default.
func socketDefault() string {
	if s := os.Getenv(socketEnv); s != "" {
		return s
	}
	return defaultSocket
}

// Limits of the control API: requests are small, and a slow or hostile
// client must never hold up the pipeline.
const (
	maxControlBody    = 8 << 10
	maxTargets        = 256
	maxReason         = 200
	controlWriteLimit = 30 * time.Second
)

// errBadRequest marks a request the caller got wrong: 400 over HTTP,
// exit code 2 in the CLI.
var errBadRequest = errors.New("bad request")

// control is the operator's API: the read side of the status server plus
// the writes (ban, unban, allow, disallow, reload). It is served on the
// unix socket, where the file's mode and group decide who may connect,
// and on the status server when a write token is configured.
type control struct {
	a      *app
	log    *slog.Logger
	token  atomic.Pointer[[]byte]
	writes *prometheus.CounterVec
}

func newControl(a *app) *control {
	c := &control{a: a, log: a.log}
	c.writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wormgate_control_writes_total",
		Help: "Operator writes through the control API, by operation, caller (socket or token) and result.",
	}, []string{"op", "via", "result"})
	a.reg.MustRegister(c.writes)
	return c
}

// routes registers the write endpoints on mux, each behind auth.
func (c *control) routes(mux *http.ServeMux, via string, auth func(http.HandlerFunc) http.HandlerFunc) {
	w := func(op string, h func(r *http.Request, who string) (any, error)) http.HandlerFunc {
		return auth(func(rw http.ResponseWriter, r *http.Request) {
			who := callerOf(r.Context(), via)
			v, err := h(r, who)
			result := "ok"
			if err != nil {
				result = "error"
			}
			c.writes.WithLabelValues(op, via, result).Inc()
			c.log.Info("control write", "op", op, "by", who, "ok", err == nil, "err", err)
			if err != nil {
				writeError(rw, err)
				return
			}
			writeJSON(rw, v)
		})
	}
	mux.HandleFunc("POST /api/v1/bans", w("ban", c.ban))
	mux.HandleFunc("POST /api/v1/unban", w("unban", c.unban))
	mux.HandleFunc("DELETE /api/v1/bans/{target...}", w("unban", c.unban))
	mux.HandleFunc("POST /api/v1/allows", w("allow", c.allow))
	mux.HandleFunc("POST /api/v1/disallow", w("disallow", c.disallow))
	mux.HandleFunc("DELETE /api/v1/allows/{target...}", w("disallow", c.disallow))
	mux.HandleFunc("POST /api/v1/reload", w("reload", c.reloadReq))
}

// readRoutes registers the control API's read endpoints that the status
// server does not already have.
func (c *control) readRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/why/{addr}", c.why)
	mux.HandleFunc("GET /api/v1/allows", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, c.a.enf.Allows()) })
}

// changeRequest is the body of ban, unban, allow and disallow.
type changeRequest struct {
	Targets []string `json:"targets"`
	// For is a duration ("1h", "7d"); empty: ban_for for bans, for good
	// for allows.
	For    string `json:"for,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// decode reads the request: the body, or for DELETE the path's target.
func decodeChange(r *http.Request) (changeRequest, []netip.Prefix, error) {
	var req changeRequest
	if t := r.PathValue("target"); t != "" {
		req.Targets = []string{t}
	} else {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return req, nil, err
			}
			return req, nil, fmt.Errorf("%w: body: %w", errBadRequest, err)
		}
	}
	nets, err := parseTargets(req.Targets)
	if err != nil {
		return req, nil, err
	}
	if len(req.Reason) > maxReason {
		return req, nil, fmt.Errorf("%w: reason: longer than %d bytes", errBadRequest, maxReason)
	}
	return req, nets, nil
}

// parseTargets parses addresses and prefixes, naming the bad one.
func parseTargets(ts []string) ([]netip.Prefix, error) {
	if len(ts) == 0 {
		return nil, fmt.Errorf("%w: no address or prefix given", errBadRequest)
	}
	if len(ts) > maxTargets {
		return nil, fmt.Errorf("%w: %d targets, at most %d at once", errBadRequest, len(ts), maxTargets)
	}
	out := make([]netip.Prefix, 0, len(ts))
	for _, t := range ts {
		p, err := parseTarget(t)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parseTarget(t string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(t); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%w: %q: an address with a zone cannot be banned", errBadRequest, t)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(t)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %q is not an IP address or prefix", errBadRequest, t)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%w: %q has host bits set (did you mean %v?)", errBadRequest, t, p.Masked())
	}
	return p, nil
}

// parseFor parses a duration as Go does, plus whole days ("7d").
func parseFor(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err == nil && days > 0 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: --for %q is not a positive duration (like 90m, 12h or 7d)", errBadRequest, s)
	}
	return d, nil
}

func (c *control) ban(r *http.Request, who string) (any, error) {
	req, nets, err := decodeChange(r)
	if err != nil {
		return nil, err
	}
	d := c.a.cfg.Load().Enforcer.BanFor
	if req.For != "" {
		if d, err = parseFor(req.For); err != nil {
			return nil, err
		}
	}
	return c.each(nets, func(n netip.Prefix) (enforcer.Result, error) {
		return c.a.enf.Ban(r.Context(), enforcer.ManualBan{Net: n, For: d, Reason: req.Reason, By: who})
	})
}

// each applies op to every target after checking them all first: the
// argument errors an operator makes change nothing.
func (c *control) each(nets []netip.Prefix, op func(netip.Prefix) (enforcer.Result, error)) (enforcer.Result, error) {
	res := enforcer.Result{Durable: true}
	if _, err := c.a.enf.CheckNets(nets); err != nil {
		return res, err
	}
	for _, n := range nets {
		r1, err := op(n)
		if err != nil {
			return res, err
		}
		res.Changed = append(res.Changed, r1.Changed...)
		res.Lifted = append(res.Lifted, r1.Lifted...)
		res.Durable = res.Durable && r1.Durable
	}
	return res, nil
}

func (c *control) unban(r *http.Request, who string) (any, error) {
	_, nets, err := decodeChange(r)
	if err != nil {
		return nil, err
	}
	return c.a.enf.Unban(r.Context(), nets, who)
}

func (c *control) allow(r *http.Request, who string) (any, error) {
	req, nets, err := decodeChange(r)
	if err != nil {
		return nil, err
	}
	var until time.Time
	if req.For != "" {
		d, err := parseFor(req.For)
		if err != nil {
			return nil, err
		}
		until = time.Now().Add(d)
	}
	return c.each(nets, func(n netip.Prefix) (enforcer.Result, error) {
		return c.a.enf.Allow(r.Context(), store.Allow{Net: n, Until: until, Reason: req.Reason, By: who})
	})
}

func (c *control) disallow(r *http.Request, who string) (any, error) {
	_, nets, err := decodeChange(r)
	if err != nil {
		return nil, err
	}
	return c.a.enf.Disallow(r.Context(), nets, who)
}

func (c *control) reloadReq(r *http.Request, who string) (any, error) {
	res := c.a.reload(r.Context(), who)
	if !res.OK {
		return nil, &reloadError{res: res}
	}
	return res, nil
}

// reloadError carries a failed reload's result to the reply.
type reloadError struct{ res reloadResult }

func (e *reloadError) Error() string { return e.res.Error }

func (c *control) why(w http.ResponseWriter, r *http.Request) {
	a, err := netip.ParseAddr(r.PathValue("addr"))
	if err != nil || a.Zone() != "" {
		writeError(w, fmt.Errorf("%w: %q is not an IP address", errBadRequest, r.PathValue("addr")))
		return
	}
	writeJSON(w, c.a.enf.Why(a))
}

// writeError answers with the status the error calls for and its text.
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var tooBig *http.MaxBytesError
	var rerr *reloadError
	switch {
	case errors.As(err, &tooBig):
		code = http.StatusRequestEntityTooLarge
		err = fmt.Errorf("request body larger than %d bytes", tooBig.Limit)
	case errors.As(err, &rerr):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(rerr.res)
		return
	case errors.Is(err, errBadRequest), errors.Is(err, enforcer.ErrTooWide), errors.Is(err, enforcer.ErrBadDuration),
		errors.Is(err, enforcer.ErrProtected), errors.Is(err, enforcer.ErrNetOverlap),
		errors.Is(err, enforcer.ErrNotBanned), errors.Is(err, enforcer.ErrNotAllowed):
		code = http.StatusBadRequest
	case errors.Is(err, enforcer.ErrNotReady):
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": strings.TrimPrefix(err.Error(), errBadRequest.Error()+": ")})
}

// limitBody caps request bodies.
func limitBody(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxControlBody)
		h(w, r)
	}
}

// requireToken guards the status server's write endpoints: 401 without a
// bearer token, 403 with a wrong one.
func (c *control) requireToken(h http.HandlerFunc) http.HandlerFunc {
	return limitBody(func(w http.ResponseWriter, r *http.Request) {
		want := c.token.Load()
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case want == nil || len(*want) == 0:
			writeErrorCode(w, http.StatusForbidden, "writes over HTTP are off (http.write_token_file is not set)")
		case !ok || got == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="wormgate"`)
			writeErrorCode(w, http.StatusUnauthorized, "a bearer token is required")
		case subtle.ConstantTimeCompare([]byte(got), *want) != 1:
			c.writes.WithLabelValues("auth", "token", "refused").Inc()
			writeErrorCode(w, http.StatusForbidden, "wrong token")
		default:
			h(w, r)
		}
	})
}

func writeErrorCode(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// minTokenLen keeps guessable tokens out.
const minTokenLen = 16

// loadToken reads the write token file: one line, at least minTokenLen
// characters, not readable by others.
func loadToken(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("http.write_token_file: %w", err)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("http.write_token_file: %s is readable by everyone (chmod 0640 it)", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("http.write_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return nil, fmt.Errorf("http.write_token_file: %s must hold one token of at least %d characters", path, minTokenLen)
	}
	return []byte(tok), nil
}

// callerKey carries the socket peer's identity in a request's context.
type callerKey struct{}

func callerOf(ctx context.Context, via string) string {
	if s, ok := ctx.Value(callerKey{}).(string); ok {
		return s
	}
	return via
}

// listenControl makes the control socket: its directory if missing
// (0750), a stale socket file replaced (one a running daemon answers on
// is not), mode 0660 and the configured group.
func listenControl(cfg ControlConfig, log *slog.Logger) (net.Listener, error) {
	path := cfg.Socket
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another wormgate answers on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket: removing the stale one: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if cfg.Group != "" {
		g, err := osuser.LookupGroup(cfg.Group)
		if err != nil {
			log.Warn("control socket: group not found; only the daemon's own user and group may use it", "group", cfg.Group, "err", err)
			return ln, nil
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			log.Warn("control socket: cannot hand it to its group", "group", cfg.Group, "err", err)
		}
	}
	return ln, nil
}

// controlServer is the HTTP server of the unix socket: every endpoint of
// the status server plus the writes; the socket's permissions are the
// authentication, the peer's uid is logged with every write.
func (c *control) server() *http.Server {
	mux := http.NewServeMux()
	c.a.status.routes(mux)
	c.readRoutes(mux)
	c.routes(mux, "socket", limitBody)
	// Profiles for an operator chasing memory or CPU, on the socket only.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	return &http.Server{
		Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: controlWriteLimit, IdleTimeout: time.Minute,
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			if who := peerOf(conn); who != "" {
				return context.WithValue(ctx, callerKey{}, who)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelWarn),
	}
}

// readAll drains and closes a response body.
func readAll(r io.ReadCloser) []byte {
	defer r.Close()
	b, _ := io.ReadAll(io.LimitReader(r, 64<<20))
	return b
}
