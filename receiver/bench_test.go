package receiver

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"
)

// Wire formats of the benchmarks, as rsyslog's omfwd sends them.
const (
	// formatLF is RSYSLOG_TraditionalForwardFormat, LF-terminated.
	formatLF = "lf"
	// formatOctet is RSYSLOG_SyslogProtocol23Format (RFC 5424, its
	// template ends in LF) with RFC 6587 octet counting.
	formatOctet = "octet"
)

// wireStream is the real Postfix sample as an MX host's rsyslog forwards
// it, repeated to n frames, and the offset where each frame ends.
func wireStream(tb testing.TB, format string, n int) (stream []byte, ends []int) {
	tb.Helper()
	lines := syslogtest.SampleLines()
	var b strings.Builder
	for i := range n {
		line := lines[i%len(lines)]
		// "TIMESTAMP HOST PROG[PID]: TEXT", as rsyslog writes files.
		ts, rest, _ := strings.Cut(line, " ")
		host, rest, _ := strings.Cut(rest, " ")
		tag, text, _ := strings.Cut(rest, ": ")
		prog, pid, ok := strings.Cut(tag, "[")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil {
			tb.Fatalf("sample line %q: %v", line, err)
		}
		switch format {
		case formatLF:
			fmt.Fprintf(&b, "<22>%s %s %s: %s\n", t.Format(time.Stamp), host, tag, text)
		case formatOctet:
			frame := fmt.Sprintf("<22>1 %s %s %s %s - - %s\n", ts, host, prog, strings.TrimSuffix(pid, "]"), text)
			fmt.Fprintf(&b, "%d %s", len(frame), frame)
		default:
			tb.Fatalf("unknown format %q", format)
		}
		ends = append(ends, b.Len())
	}
	return []byte(b.String()), ends
}

// loopReader hands out its stream again and again, up to len(p) bytes a
// read, as a socket hands over what has arrived.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// BenchmarkFrameReader is the framing alone, per frame: octet counting and
// LF frames are read in place, so neither allocates per message.
func BenchmarkFrameReader(b *testing.B) {
	for _, format := range []string{formatLF, formatOctet} {
		b.Run(format, func(b *testing.B) {
			stream, ends := wireStream(b, format, 1000)
			fr := newFrameReader(&loopReader{b: stream}, DefaultConfig().MaxMessageSize)
			b.SetBytes(int64(len(stream) / len(ends)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := fr.Next(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTCPStream is the receiver's whole TCP path, per message: a real
// loopback connection, framing, parsing, the output channel (as deep as
// serve's) and a reader that only counts. conns senders share b.N
// messages.
func BenchmarkTCPStream(b *testing.B) {
	for _, format := range []string{formatLF, formatOctet} {
		for _, conns := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/conns=%d", format, conns), func(b *testing.B) {
				benchStream(b, format, conns)
			})
		}
	}
}

func benchStream(b *testing.B, format string, conns int) {
	stream, ends := wireStream(b, format, 29*100)
	out := newInbox(8192)
	h := start(b, out, func(c *Config) { c.UDPListen = nil })
	cs := make([]net.Conn, conns)
	for i := range cs {
		c, err := net.Dial("tcp", h.r.TCPAddrs()[0].String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		cs[i] = c
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(stream) / len(ends)))
	b.ResetTimer()
	errs := make(chan error, conns)
	for i, c := range cs {
		n := b.N / conns
		if i == 0 {
			n += b.N % conns
		}
		go func() { errs <- writeFrames(c, stream, ends, n) }()
	}
	stall := time.NewTimer(5 * time.Second)
	for i := 0; i < b.N; {
		select {
		case batch := <-out.ch:
			if i/4096 != (i+len(batch))/4096 {
				stall.Reset(5 * time.Second)
			}
			i += len(batch)
			Release(batch) // as serve does
		case <-stall.C:
			b.Fatalf("receiver stalled after %d of %d messages", i, b.N)
		}
	}
	for range conns {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := metric(b, h.reg, MetricDropped, "transport", TransportTCP, "reason", ReasonParseError); got != 0 {
		b.Fatalf("%v parse errors", got)
	}
}

// writeFrames writes the first n frames of stream, which ends at ends,
// wrapping around.
func writeFrames(w io.Writer, stream []byte, ends []int, n int) error {
	for ; n >= len(ends); n -= len(ends) {
		if _, err := w.Write(stream); err != nil {
			return err
		}
	}
	if n > 0 {
		if _, err := w.Write(stream[:ends[n-1]]); err != nil {
			return err
		}
	}
	return nil
}

// TestFrameReaderInPlace: frames of rsyslog's two TCP formats come out of
// the read buffer itself, with no allocation and no copy per message.
func TestFrameReaderInPlace(t *testing.T) {
	for _, format := range []string{formatLF, formatOctet} {
		t.Run(format, func(t *testing.T) {
			stream, ends := wireStream(t, format, 1000)
			fr := newFrameReader(&loopReader{b: stream}, DefaultConfig().MaxMessageSize)
			if n := testing.AllocsPerRun(5000, func() {
				if _, err := fr.Next(); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("%v allocations per frame, want 0", n)
			}
			// Frames that lie wholly in the buffer are slices of it: only
			// a frame cut by the buffer's end is assembled.
			fr = newFrameReader(&loopReader{b: stream}, DefaultConfig().MaxMessageSize)
			inPlace := 0
			for range len(ends) {
				b, err := fr.Next()
				if err != nil {
					t.Fatal(err)
				}
				if len(fr.acc) == 0 || &b[0] != &fr.acc[0] {
					inPlace++
				}
			}
			if want := len(ends) * 95 / 100; inPlace < want {
				t.Errorf("%d of %d frames read in place, want at least %d", inPlace, len(ends), want)
			}
		})
	}
}
