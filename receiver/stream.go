package receiver

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// streamReader is what a stream connection's frames are read through. It
// holds a connection's slot only while the sender keeps it busy: idle
// senders (no complete message for idle_timeout) and slow ones (a message
// begun and not complete within message_timeout, the slowloris that
// trickles a byte at a time) are cut off.
//
// All of its time keeping happens per read, never per message: a read
// stamps the time its data arrived, which is the time of receipt of every
// message in it, and the deadline for the next read follows from the
// frames that began and ended in between. Reading the clock per message
// cost more than parsing the message.
type streamReader struct {
	fr   *frameReader
	conn net.Conn
	// idle and message are idle_timeout and message_timeout.
	idle, message time.Duration
	// readAt is when the last read returned data.
	readAt time.Time
	// lastMsg is when the last complete message arrived (at first, when
	// the connection was accepted); frameAt when the message under way
	// began.
	lastMsg, frameAt time.Time
	// begun and ended are fr's counters as of the last read.
	begun, ended uint64
	// deadline is the read deadline set on conn.
	deadline time.Time
	// timedOut is ReasonIdle or ReasonSlow once a bound has cut the
	// connection off.
	timedOut string

	// ctx ends the waits for out, where batches go.
	ctx context.Context
	out chan<- []syslog.Message
	// batch holds the messages parsed since the last read: they go out
	// together before the next read (which may block), or when MaxBatch
	// are waiting.
	batch []syslog.Message
	// messages counts the messages handed on, a batch at a time.
	messages prometheus.Counter
}

func newStreamReader(ctx context.Context, conn net.Conn, cfg Config, out chan<- []syslog.Message, messages prometheus.Counter) *streamReader {
	now := time.Now()
	s := &streamReader{ctx: ctx, conn: conn, out: out, idle: cfg.IdleTimeout, message: cfg.MessageTimeout,
		readAt: now, lastMsg: now, messages: messages}
	s.fr = newFrameReader(s, cfg.MaxMessageSize)
	return s
}

// Read reads from the connection, at most until the bound that applies.
func (s *streamReader) Read(p []byte) (int, error) {
	// A read may block: what was parsed so far goes out first.
	if !s.send() {
		return 0, s.ctx.Err()
	}
	bound, reason := s.bound()
	// The deadline moves only when the bound tightens. One that fires
	// before the bound is set again (once per idle_timeout or
	// message_timeout of a busy sender), which is cheaper than a timer
	// update per read.
	if s.deadline.IsZero() || bound.Before(s.deadline) {
		s.setDeadline(bound)
	}
	for {
		n, err := s.conn.Read(p)
		if n > 0 {
			s.readAt = time.Now()
			return n, err
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if time.Now().Before(bound) {
			s.setDeadline(bound)
			continue
		}
		s.timedOut = reason
		return n, err
	}
}

// bound is when the next read must have returned: idle_timeout after the
// last complete message or, while a message is under way, message_timeout
// after its first byte if that comes first.
func (s *streamReader) bound() (time.Time, string) {
	// The frame reader asks for data only when it has used up what it
	// had, so frames that ended or began since the last read did so in
	// that read's data.
	if s.fr.ended != s.ended {
		s.ended, s.lastMsg = s.fr.ended, s.readAt
	}
	if s.fr.begun != s.begun {
		s.begun, s.frameAt = s.fr.begun, s.readAt
	}
	bound := s.lastMsg.Add(s.idle)
	if s.begun != s.ended {
		if b := s.frameAt.Add(s.message); b.Before(bound) {
			return b, ReasonSlow
		}
	}
	return bound, ReasonIdle
}

func (s *streamReader) setDeadline(t time.Time) {
	_ = s.conn.SetReadDeadline(t)
	s.deadline = t
}

// forward adds msg to the batch, and hands the batch on once it is full.
// It reports false when ctx ended while the output was full.
func (s *streamReader) forward(msg syslog.Message) bool {
	if s.batch == nil {
		s.batch = newBatch()
	}
	s.batch = append(s.batch, msg)
	if len(s.batch) < MaxBatch {
		return true
	}
	return s.send()
}

// send hands the batch on, waiting while the output is full: TCP then
// pushes back to the sender. It reports false when ctx ended first; the
// batch is then lost, as the daemon is stopping.
func (s *streamReader) send() bool {
	if len(s.batch) == 0 {
		return true
	}
	select {
	case s.out <- s.batch:
	default:
		select {
		case s.out <- s.batch:
		case <-s.ctx.Done():
			return false
		}
		// The sender was held up by us, not idle or slow: its clocks
		// start again from here.
		s.readAt = time.Now()
	}
	s.messages.Add(float64(len(s.batch)))
	s.batch = nil
	return true
}
