package receiver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

var (
	// errFraming means the stream cannot be resynchronised (bad octet
	// count, or the peer closed inside a frame): the connection ends.
	errFraming = errors.New("syslog framing error")
	// errOversize means one LF-terminated frame exceeded the limit and was
	// discarded up to its terminator; the next frame is fine.
	errOversize = errors.New("syslog frame exceeds max_message_size")
)

// frameBufSize is the per-connection read buffer. Frames larger than it are
// assembled in a separate buffer that grows only up to the message limit,
// so a thousand idle senders do not each hold 64 KiB.
const frameBufSize = 16 << 10

// frameReader splits a stream into syslog frames per RFC 6587, deciding per
// frame: a frame that starts with a digit is octet-counted ("LEN SP MSG"),
// anything else ends at LF or NUL (a CR before the LF is left to Parse).
// A leading '-' is a negative octet count, hence a framing error.
type frameReader struct {
	br  *bufio.Reader
	max int
	acc []byte
	// begun and ended count the frames whose first byte has been read and
	// those that are complete (returned or skipped as oversize): the
	// connection's timeouts tell an idle sender (begun == ended) from one
	// that is in the middle of a message.
	begun, ended uint64
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, min(frameBufSize, max+16)), max: max}
}

// Next returns the next frame without its terminator; the slice is valid
// until the following call. It returns io.EOF at a clean end of stream,
// errFraming (fatal), errOversize (frame skipped) or the read error.
func (f *frameReader) Next() ([]byte, error) {
	for {
		// Separators between frames, e.g. the LF some senders put after
		// an octet-counted frame, are skipped in place.
		buf, _ := f.br.Peek(f.br.Buffered())
		i := 0
		for i < len(buf) && (buf[i] == '\n' || buf[i] == '\r' || buf[i] == 0) {
			i++
		}
		_, _ = f.br.Discard(i)
		if i == len(buf) {
			if _, err := f.br.Peek(1); err != nil {
				return nil, err
			}
			continue
		}
		c := buf[i]
		f.begun++
		var b []byte
		var err error
		if c == '-' || isDigit(c) {
			b, err = f.octetCounted()
		} else {
			b, err = f.line()
		}
		if err == nil || errors.Is(err, errOversize) {
			f.ended++
		}
		return b, err
	}
}

func (f *frameReader) octetCounted() ([]byte, error) {
	// Mostly the count and the whole frame are buffered: the frame is
	// returned in place, with no copy.
	buf, _ := f.br.Peek(f.br.Buffered())
	if n, sp, ok := octetCount(buf, f.max); ok && len(buf)-sp-1 >= n {
		_, _ = f.br.Discard(sp + 1 + n)
		return buf[sp+1 : sp+1+n], nil
	}
	n, digits := 0, 0
	for {
		c, err := f.br.ReadByte()
		if err != nil {
			return nil, truncated(err)
		}
		if c == ' ' && digits > 0 {
			break
		}
		// MSG-LEN = NONZERO-DIGIT *DIGIT, and no larger than the limit.
		if !isDigit(c) || (digits == 0 && c == '0') {
			return nil, errFraming
		}
		n = n*10 + int(c-'0')
		digits++
		if n > f.max {
			return nil, errFraming
		}
	}
	if n <= f.br.Size() {
		b, err := f.br.Peek(n)
		if err != nil {
			return nil, truncated(err)
		}
		_, _ = f.br.Discard(n)
		return b, nil
	}
	if cap(f.acc) < n {
		f.acc = make([]byte, n)
	}
	f.acc = f.acc[:n]
	if _, err := io.ReadFull(f.br, f.acc); err != nil {
		return nil, truncated(err)
	}
	return f.acc, nil
}

// octetCount reads a valid "MSG-LEN SP" at the start of b: the length and
// the offset of the space. Anything else, including a count cut short by
// the end of b, is left to the byte-wise reader, which knows the errors.
func octetCount(b []byte, max int) (n, sp int, ok bool) {
	if len(b) == 0 || b[0] == '0' {
		return 0, 0, false
	}
	for i, c := range b {
		switch {
		case c == ' ' && i > 0:
			return n, i, true
		case !isDigit(c):
			return 0, 0, false
		}
		if n = n*10 + int(c-'0'); n > max {
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// truncated maps an end of stream inside a frame to a framing error; other
// errors (deadline, reset, shutdown) pass through.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errFraming
	}
	return err
}

func (f *frameReader) line() ([]byte, error) {
	f.acc = f.acc[:0]
	over := false
	for {
		if f.br.Buffered() == 0 {
			if _, err := f.br.Peek(1); err != nil {
				if !errors.Is(err, io.EOF) {
					return nil, err
				}
				// The last line of a stream need not end in LF
				// (printf ... | nc); it is still a whole message.
				if over {
					return nil, errOversize
				}
				if len(f.acc) > 0 {
					return f.acc, nil
				}
				return nil, io.EOF
			}
		}
		buf, _ := f.br.Peek(f.br.Buffered())
		if i := indexTerm(buf); i >= 0 {
			frame := buf[:i]
			_, _ = f.br.Discard(i + 1)
			switch {
			case over || len(f.acc)+len(frame) > f.max:
				return nil, errOversize
			case len(f.acc) == 0:
				return frame, nil
			}
			f.acc = append(f.acc, frame...)
			return f.acc, nil
		}
		if !over {
			if len(f.acc)+len(buf) > f.max {
				// Keep reading to the terminator, but stop storing.
				over = true
				f.acc = f.acc[:0]
			} else {
				f.acc = append(f.acc, buf...)
			}
		}
		_, _ = f.br.Discard(len(buf))
	}
}

// indexTerm finds the first LF or NUL.
func indexTerm(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	lim := b
	if i >= 0 {
		lim = b[:i]
	}
	if j := bytes.IndexByte(lim, 0); j >= 0 {
		return j
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
