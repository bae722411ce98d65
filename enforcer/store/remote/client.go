package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wormgate/wormgate/enforcer/store"
)

// ErrHelperGone means the helper died or its pipe broke: the call's
// effect is unknown (a commit may or may not be on disk; the enforcer
// retries it). The next call after a backoff starts a new helper.
var ErrHelperGone = errors.New("record helper gone")

// ErrClosed is returned by calls after Close.
var ErrClosed = errors.New("record client closed")

// ErrAbandoned is returned by Close when the helper did not exit in
// time and was killed without waiting for it.
var ErrAbandoned = errors.New("record helper abandoned")

// The backoff between helper restarts, doubled at each loss in a row.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// link is one helper: the pipe to it and the means to end it.
type link struct {
	*codec
	// w carries the requests; closing it asks the helper to stop.
	w io.Closer
	// r carries the replies; closing it ends a wait for a reply.
	r    io.Closer
	kill func()
	// exited is closed when the helper has ended; waitErr then says how.
	exited  <-chan struct{}
	waitErr func() error
	// quiet is set when Close asked the helper to end: its exit is no
	// news.
	quiet atomic.Bool
}

// cut ends the helper without waiting for it, and any wait on its pipe.
func (l *link) cut() {
	l.kill()
	_ = l.w.Close()
	_ = l.r.Close()
}

// spawner starts a helper.
type spawner func() (*link, error)

// Client is the record in a helper process; it implements the
// enforcer's Record. Calls are serialised: one request on the pipe at a
// time. A call has no deadline of its own (a commit on a slow disk may
// take long; the enforcer's watchdog decides when the record is
// failing); Close bounds the end.
type Client struct {
	spawn spawner
	log   *slog.Logger
	lost  prometheus.Counter

	// calls orders the requests on the pipe.
	calls sync.Mutex

	mu        sync.Mutex
	cur       *link
	closed    bool
	recovered string
	backoff   time.Duration
	retryAt   time.Time
}

// Option configures a Client.
type Option func(*Client) error

// WithRegisterer registers wormgate_record_helper_lost_total with reg.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *Client) error {
		if err := reg.Register(c.lost); err != nil {
			return fmt.Errorf("record helper metrics: %w", err)
		}
		return nil
	}
}

func newClient(spawn spawner, log *slog.Logger, opts ...Option) (*Client, error) {
	c := &Client{
		spawn: spawn,
		log:   log,
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wormgate_record_helper_lost_total",
			Help: "Record helper processes that died or whose pipe broke; a new one starts at the next record call.",
		}),
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Start runs exe with args followed by "--dir" and dir (the command line
// of a helper that calls ServeDir on its stdin and stdout) and waits,
// until ctx is done, for its hello. An error opening the record is
// returned as the helper reported it: errors.Is finds store.ErrStoreLocked
// and store.ErrCorrupt in it.
func Start(ctx context.Context, exe string, args []string, dir string, log *slog.Logger, opts ...Option) (*Client, error) {
	c, err := newClient(processSpawner(exe, append(slices.Clone(args), "--dir", dir), log), log, opts...)
	if err != nil {
		return nil, err
	}
	if _, err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// processSpawner starts exe as the helper, its stdin and stdout the
// pipe, its stderr to log.
func processSpawner(exe string, args []string, log *slog.Logger) spawner {
	return func() (*link, error) {
		reqR, reqW, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("pipe: %w", err)
		}
		repR, repW, err := os.Pipe()
		if err != nil {
			_, _ = reqR.Close(), reqW.Close()
			return nil, fmt.Errorf("pipe: %w", err)
		}
		cmd := exec.Command(exe, args...)
		if exe == selfExe {
			cmd.Args[0] = os.Args[0] // what ps and pgrep show
		}
		// Not our stderr: a helper asleep on a hung disk would hold it
		// open after this process exited, and whoever reads it (the
		// journal, a supervisor) would wait for the disk.
		stderr := &lineLog{log: log}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = reqR, repW, stderr
		err = startProcess(cmd)
		// The helper has its own copies; ours would hide its death
		// from the pipe.
		_, _ = reqR.Close(), repW.Close()
		if err != nil {
			_, _ = reqW.Close(), repR.Close()
			return nil, fmt.Errorf("start %s: %w", exe, err)
		}
		exited := make(chan struct{})
		var werr error
		go func() {
			// Blocks as long as the helper sleeps on a hung disk, even
			// when killed: the kernel delivers SIGKILL when the disk
			// answers.
			werr = cmd.Wait()
			stderr.flush()
			close(exited)
		}()
		return &link{
			codec:   newCodec(repR, reqW),
			w:       reqW,
			r:       repR,
			kill:    func() { _ = cmd.Process.Kill() },
			exited:  exited,
			waitErr: func() error { <-exited; return werr },
		}, nil
	}
}

// connect starts a helper and waits until ctx is done for its hello.
func (c *Client) connect(ctx context.Context) (*link, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	l, err := c.spawn()
	if err != nil {
		c.failedLocked()
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrHelperGone, err)
	}
	c.cur = l
	c.mu.Unlock()
	go c.watch(l)

	stop := context.AfterFunc(ctx, l.cut)
	var hello reply
	err = l.receive(&hello)
	stop()
	switch {
	case err != nil:
		c.drop(l)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: no hello: %w", ErrHelperGone, context.Cause(ctx))
		}
		return nil, fmt.Errorf("%w: no hello: %w", ErrHelperGone, err)
	case hello.Proto != protoVersion:
		c.drop(l)
		return nil, fmt.Errorf("%w: it speaks protocol %d, not %d", ErrHelperGone, hello.Proto, protoVersion)
	case hello.Err != nil:
		// The helper could not open the record and exits by itself.
		c.drop(l)
		return nil, hello.Err.err()
	}
	c.mu.Lock()
	c.recovered = hello.Recovered
	c.mu.Unlock()
	return l, nil
}

// watch reports a helper that fails without having been asked to end.
// It leaves the pipe alone: a reply the helper wrote before it ended
// is still to be read. The next call finds the helper gone.
func (c *Client) watch(l *link) {
	<-l.exited
	if err := l.waitErr(); err != nil && !l.quiet.Load() {
		c.log.Error("record helper exited; a new one starts at the next record call", "err", err)
	}
}

// drop ends l if it is the current helper and delays the next one.
func (c *Client) drop(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(l)
}

func (c *Client) dropLocked(l *link) {
	if c.cur != l {
		return
	}
	c.cur = nil
	l.cut()
	c.failedLocked()
}

func (c *Client) failedLocked() {
	if c.closed {
		return
	}
	c.lost.Inc()
	c.backoff = min(max(2*c.backoff, minBackoff), maxBackoff)
	c.retryAt = time.Now().Add(c.backoff)
}

// ready returns the current helper, starting a new one when the last
// was lost and its backoff has passed.
func (c *Client) ready() (*link, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if l := c.cur; l != nil {
		select {
		case <-l.exited:
			c.dropLocked(l)
		default:
			c.mu.Unlock()
			return l, nil
		}
	}
	if wait := time.Until(c.retryAt); wait > 0 {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: next start in %v", ErrHelperGone, wait.Round(time.Millisecond))
	}
	c.mu.Unlock()
	l, err := c.connect(context.Background())
	if err != nil {
		return nil, err
	}
	c.log.Warn("record helper restarted")
	return l, nil
}

// call sends req and waits for its reply.
func (c *Client) call(req request) (reply, error) {
	c.calls.Lock()
	defer c.calls.Unlock()
	l, err := c.ready()
	if err != nil {
		return reply{}, err
	}
	var rep reply
	if err := l.send(req); err != nil {
		c.drop(l)
		return reply{}, fmt.Errorf("%w: %w", ErrHelperGone, err)
	}
	if err := l.receive(&rep); err != nil {
		c.drop(l)
		return reply{}, fmt.Errorf("%w: %w", ErrHelperGone, err)
	}
	c.mu.Lock()
	c.backoff = 0
	c.recovered = rep.Recovered
	c.mu.Unlock()
	return rep, rep.Err.err()
}

// Load returns what the record holds that is live at now, within lim.
func (c *Client) Load(now time.Time, lim store.Limits) (store.Snapshot, error) {
	rep, err := c.call(request{Op: opLoad, Now: now, Limits: lim})
	return rep.Snapshot, err
}

// Commit writes ch in one fsynced transaction in the helper.
func (c *Client) Commit(ch store.Change) error {
	if ch.Empty() {
		return nil
	}
	_, err := c.call(request{Op: opCommit, Change: ch})
	return err
}

// FleetQueue returns the fleet's queued decisions the record holds.
func (c *Client) FleetQueue() (map[uint64][]byte, error) {
	rep, err := c.call(request{Op: opFleetQueue})
	return rep.FleetQueue, err
}

// CommitFleetQueue adds put and removes done in one fsynced transaction
// in the helper.
func (c *Client) CommitFleetQueue(put map[uint64][]byte, done []uint64) error {
	if len(put)+len(done) == 0 {
		return nil
	}
	_, err := c.call(request{Op: opCommitFleetQueue, FleetPut: put, FleetDone: done})
	return err
}

// Recovered names the file the helper moved an unreadable record to, or "".
func (c *Client) Recovered() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recovered
}

// Close asks the helper to close the record and exit, and waits for it
// until ctx is done; then it kills the helper and returns ErrAbandoned
// without waiting further (a helper asleep on a hung disk cannot be
// reaped until the disk answers). A call in flight returns
// ErrHelperGone.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	l := c.cur
	c.cur, c.closed = nil, true
	c.mu.Unlock()
	if l == nil {
		return nil
	}
	l.quiet.Store(true)
	_ = l.w.Close()
	select {
	case <-l.exited:
		_ = l.r.Close()
		if err := l.waitErr(); err != nil {
			return fmt.Errorf("close record: helper: %w", err)
		}
		return nil
	case <-ctx.Done():
		l.cut()
		return fmt.Errorf("close record: %w: it did not exit in time (%w); killed", ErrAbandoned, context.Cause(ctx))
	}
}

// maxLine bounds a line of the helper's stderr held before it is logged.
const maxLine = 64 << 10

// lineLog logs what the helper writes to its stderr (a panic, an error
// it could not send), a line at a time. exec writes to it from one
// goroutine.
type lineLog struct {
	log *slog.Logger
	buf []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.Error("record helper", "stderr", string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > maxLine {
		l.flush()
	}
	return len(p), nil
}

// flush logs what is left of an unfinished line.
func (l *lineLog) flush() {
	if len(l.buf) > 0 {
		l.log.Error("record helper", "stderr", string(l.buf))
		l.buf = nil
	}
}
