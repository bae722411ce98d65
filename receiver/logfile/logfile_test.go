package logfile

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/receiver/syslog"
	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"
)

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeFile writes data to dir/name with the given modification time,
// which anchors RFC 3164 years.
func writeFile(t *testing.T, dir, name string, data []byte, mtime time.Time) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

// got is what a test keeps of one Line.
type got struct {
	No   int
	Text string
	Time time.Time
	Host string
	Err  error
}

func readAll(t *testing.T, f *File) []got {
	t.Helper()
	var out []got
	var l Line
	for {
		err := f.Next(&l)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		g := got{No: l.No, Text: string(l.Text), Err: l.Err}
		if l.Err == nil {
			g.Time, g.Host = l.Msg.Time, l.Msg.Host
			if l.Msg.Transport != "file" {
				t.Errorf("line %d: transport %q, want file", l.No, l.Msg.Transport)
			}
		}
		out = append(out, g)
	}
}

func TestNext(t *testing.T) {
	utc := func(h, m, s int) time.Time { return time.Date(2026, 11, 26, h, m, s, 0, time.UTC) }
	long := "2026-11-26T18:00:02+00:00 mx1 postfix/smtpd[1]: " + strings.Repeat("x", MaxLine)
	tests := []struct {
		name string
		in   string
		want []got
	}{
		{
			name: "LF, CRLF, a blank line and no final newline",
			in:   "2026-11-26T18:00:00+00:00 mx1 postfix/smtpd[1]: a\r\n\n2026-11-26T18:00:01+00:00 mx2 postfix/smtpd[1]: b",
			want: []got{
				{No: 1, Text: "2026-11-26T18:00:00+00:00 mx1 postfix/smtpd[1]: a", Time: utc(18, 0, 0), Host: "mx1"},
				{No: 2, Text: "", Err: syslog.ErrEmpty},
				{No: 3, Text: "2026-11-26T18:00:01+00:00 mx2 postfix/smtpd[1]: b", Time: utc(18, 0, 1), Host: "mx2"},
			},
		},
		{
			name: "a line longer than MaxLine is skipped and counted as one",
			in:   "2026-11-26T18:00:00+00:00 mx1 postfix/smtpd[1]: a\n" + long + "\n2026-11-26T18:00:03+00:00 mx1 postfix/smtpd[1]: c\n",
			want: []got{
				{No: 1, Text: "2026-11-26T18:00:00+00:00 mx1 postfix/smtpd[1]: a", Time: utc(18, 0, 0), Host: "mx1"},
				{No: 2, Err: ErrLineTooLong},
				{No: 3, Text: "2026-11-26T18:00:03+00:00 mx1 postfix/smtpd[1]: c", Time: utc(18, 0, 3), Host: "mx1"},
			},
		},
		{
			name: "a too long last line without a newline",
			in:   long,
			want: []got{{No: 1, Err: ErrLineTooLong}},
		},
		{
			name: "unparsable",
			in:   "<999>garbage\n",
			want: []got{{No: 1, Text: "<999>garbage", Err: syslog.ErrPriority}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, data := range map[string][]byte{"plain": []byte(tt.in), "gzip": gzipped(t, tt.in)} {
				f, err := New("test", bytes.NewReader(data), time.Now(), time.UTC)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, readAll(t, f), cmp.Comparer(func(a, b error) bool { return errors.Is(a, b) })); diff != "" {
					t.Errorf("lines (-want +got):\n%s", diff)
				}
				if err := f.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}
		})
	}
}

// TestYearRollover reads RFC 3164 stamps (no year) from Dec 31 into Jan 1:
// whatever the file's modification time, the Jan 1 lines are in the year
// after the Dec 31 ones.
func TestYearRollover(t *testing.T) {
	in := "Dec 31 23:59:30 mx1 postfix/smtpd[1]: a\nJan  1 00:00:10 mx1 postfix/smtpd[1]: b\n"
	want := []time.Time{
		time.Date(2025, 12, 31, 23, 59, 30, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC),
	}
	dir := t.TempDir()
	for _, mtime := range []time.Time{
		time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC), // written until just after midnight
		time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), // rotated and touched later
		time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC),
	} {
		t.Run(mtime.Format(time.DateOnly), func(t *testing.T) {
			f, err := Open(writeFile(t, dir, "mail.log", []byte(in), mtime), Options{Location: time.UTC})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var times []time.Time
			for _, g := range readAll(t, f) {
				times = append(times, g.Time)
			}
			if diff := cmp.Diff(want, times); diff != "" {
				t.Errorf("times (-want +got):\n%s", diff)
			}
			if !f.First.Equal(want[0]) {
				t.Errorf("First = %v, want %v", f.First, want[0])
			}
		})
	}
}

// TestOpenAllOrders gives the halves of the sample newest first, one of
// them gzipped and one on standard input, plus a file without a stamp:
// they come back oldest first, the stampless one last.
func TestOpenAllOrders(t *testing.T) {
	lines := syslogtest.SampleLines()
	older := strings.Join(lines[:7], "\n") + "\n"
	newer := strings.Join(lines[7:], "\n") + "\n"
	dir := t.TempDir()
	mtime := time.Date(2026, 11, 26, 18, 20, 0, 0, time.UTC)
	gz := writeFile(t, dir, "mail.log.1.gz", gzipped(t, older), mtime)
	junk := writeFile(t, dir, "junk", []byte("no stamp here\n"), mtime)
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  []string
	}{
		{"newest first", []string{junk, StdinName, gz}, newer, []string{gz, "(stdin)", junk}},
		{"oldest first", []string{gz, junk, StdinName}, newer, []string{gz, "(stdin)", junk}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := OpenAll(tt.args, Options{Stdin: strings.NewReader(tt.stdin), Now: mtime})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range files {
				names = append(names, f.Name)
				if err := f.Close(); err != nil {
					t.Errorf("close %s: %v", f.Name, err)
				}
			}
			if diff := cmp.Diff(tt.want, names); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	badGzip := writeFile(t, dir, "bad.gz", []byte{0x1f, 0x8b, 0, 0}, time.Now())
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"missing", []string{filepath.Join(dir, "nope")}, os.ErrNotExist},
		{"no stdin", []string{StdinName}, os.ErrNotExist},
		{"bad gzip", []string{badGzip}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := OpenAll(tt.args, Options{}); !errors.Is(err, tt.want) {
				t.Errorf("OpenAll(%q) = %v, want %v", tt.args, err, tt.want)
			}
		})
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

// TestReadError: a read error ends the file after the lines read before
// it, and names the file.
func TestReadError(t *testing.T) {
	errDisk := errors.New("disk on fire")
	line := "2026-11-26T18:00:00+00:00 mx1 postfix/smtpd[1]: a\n"
	n := 2*peekSize/len(line) + 1 // past what New peeks at
	r := io.MultiReader(strings.NewReader(strings.Repeat(line, n)), failingReader{errDisk})
	f, err := New("mail.log", r, time.Now(), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	var l Line
	for {
		err = f.Next(&l)
		if err != nil {
			break
		}
		lines++
	}
	if !errors.Is(err, errDisk) || !strings.Contains(err.Error(), "mail.log") {
		t.Errorf("error = %v, want %v naming mail.log", err, errDisk)
	}
	if lines != n {
		t.Errorf("read %d lines before the error, want %d", lines, n)
	}
}
