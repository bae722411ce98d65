package logfile

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/wormgate/wormgate/receiver/syslog"
)

// MaxLine is the longest line read, as in the receiver; longer lines are
// reported and skipped, so one runaway line cannot hold a megabyte per
// byte of input.
const MaxLine = 1 << 20

// peekSize is how much of each file is looked at to find its first
// timestamp, which orders the files.
const peekSize = 64 << 10

// StdinName is the name that OpenAll reads from Options.Stdin.
const StdinName = "-"

// ErrLineTooLong is the Err of a Line longer than MaxLine.
var ErrLineTooLong = errors.New("logfile: line too long")

// Options says where standard input comes from and how stamps without a
// year or zone are read.
type Options struct {
	// Stdin is read for the name "-".
	Stdin io.Reader
	// Now anchors the year of standard input, which has no modification
	// time; zero means the clock's, since year 1 would be no anchor.
	Now time.Time
	// Location is the zone of stamps that name none; nil means local
	// time, as rsyslog writes them.
	Location *time.Location
}

// Line is one line of a file. Its Text is only valid until the next call
// of Next.
type Line struct {
	// No counts lines from 1.
	No int
	// Text is the line without its terminator; nil for a line longer than
	// MaxLine.
	Text []byte
	// Msg is set when Err is nil.
	Msg syslog.Message
	// Err says why the line is not a Message: ErrLineTooLong or the error
	// of syslog.Parse (syslog.ErrEmpty for a blank line).
	Err error
}

// File is one opened log file. It is not safe for concurrent use.
type File struct {
	// Name is the name given, or "(stdin)".
	Name string
	// First is the file's first timestamp; zero if none was found near
	// the start.
	First time.Time

	br      *bufio.Reader
	closers []io.Closer
	loc     *time.Location
	// ref anchors the year of the next RFC 3164 stamp.
	ref time.Time
	// lineNo is the number of the line Next returned last.
	lineNo int
	// err is returned by the next call of Next: a read error that came
	// with the last bytes of the file is held until they are used.
	err error
}

// OpenAll opens every file and orders them by their first timestamps.
// Files without one keep their order among themselves and come last. On
// error the files opened so far are closed.
func OpenAll(names []string, opt Options) ([]*File, error) {
	files := make([]*File, 0, len(names))
	for _, name := range names {
		f, err := Open(name, opt)
		if err != nil {
			for _, f := range files {
				_ = f.Close()
			}
			return nil, err
		}
		files = append(files, f)
	}
	slices.SortStableFunc(files, func(a, b *File) int {
		switch {
		case a.First.IsZero() && b.First.IsZero():
			return 0
		case a.First.IsZero():
			return 1
		case b.First.IsZero():
			return -1
		}
		return a.First.Compare(b.First)
	})
	return files, nil
}

// Open opens one file; "-" is opt.Stdin.
func Open(name string, opt Options) (*File, error) {
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	if name == StdinName {
		if opt.Stdin == nil {
			return nil, fmt.Errorf("open %s: %w", name, os.ErrNotExist)
		}
		return New("(stdin)", opt.Stdin, opt.Now, opt.Location)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err // an *os.PathError names the operation and the file
	}
	ref := opt.Now
	if fi, err := f.Stat(); err == nil {
		ref = fi.ModTime()
	}
	lf, err := New(name, f, ref, opt.Location)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	lf.closers = append(lf.closers, f)
	return lf, nil
}

// New reads r as the log file name, gunzipping it if it is gzip. ref
// anchors the year of its first RFC 3164 stamp; loc is the zone of stamps
// that name none (nil: local time). Close does not close r.
func New(name string, r io.Reader, ref time.Time, loc *time.Location) (*File, error) {
	if loc == nil {
		loc = time.Local
	}
	f := &File{Name: name, ref: ref, loc: loc}
	br := bufio.NewReaderSize(r, MaxLine)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
		f.closers = append(f.closers, zr)
		br = bufio.NewReaderSize(zr, MaxLine)
	}
	f.br = br
	head, err := br.Peek(peekSize)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		_ = f.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i], head[i+1:]
		} else {
			head = nil
		}
		if msg, err := syslog.Parse(line, ref, loc); err == nil {
			f.First = msg.Time
			break
		}
	}
	return f, nil
}

// Close closes what Open opened, innermost first.
func (f *File) Close() error {
	var errs []error
	for i := len(f.closers) - 1; i >= 0; i-- {
		errs = append(errs, f.closers[i].Close())
	}
	f.closers = nil
	return errors.Join(errs...)
}

// Next reads the next line into l. It returns io.EOF after the last line;
// any other error is the file's and ends it. A line that is not a Message
// is no error of Next's: l.Err says why. The caller owns l, so that it can
// live on the caller's stack: returning a Line or keeping it in f costs
// copies or write barriers on every line of a replay.
func (f *File) Next(l *Line) error {
	if f.err != nil {
		return f.err
	}
	text, err := f.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Skip the rest of the line, however long, in buffer-sized steps.
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = f.br.ReadSlice('\n')
		}
		f.hold(err)
		f.lineNo++
		*l = Line{No: f.lineNo, Err: ErrLineTooLong}
		return nil
	}
	f.hold(err)
	if len(text) == 0 {
		return f.err
	}
	f.lineNo++
	l.No, l.Text = f.lineNo, syslog.TrimEnd(text)
	l.Msg, l.Err = syslog.Parse(l.Text, f.ref, f.loc)
	if l.Err == nil {
		l.Msg.Transport = "file"
		f.ref = l.Msg.Time
	}
	return nil
}

func (f *File) hold(err error) {
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		f.err = io.EOF
	default:
		f.err = fmt.Errorf("read %s: %w", f.Name, err)
	}
}
