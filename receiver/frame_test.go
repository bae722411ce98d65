package receiver

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// readFrames drains a frameReader: frames as strings, errors as "ERR:<kind>",
// stopping at EOF or at a fatal error.
func readFrames(r io.Reader, max int) []string {
	fr := newFrameReader(r, max)
	var got []string
	for {
		b, err := fr.Next()
		switch {
		case err == nil:
			got = append(got, string(b))
		case errors.Is(err, errOversize):
			got = append(got, "ERR:oversize")
		case errors.Is(err, errFraming):
			return append(got, "ERR:framing")
		case errors.Is(err, io.EOF):
			return got
		default:
			return append(got, "ERR:"+err.Error())
		}
	}
}

func TestFrameReader(t *testing.T) {
	big := strings.Repeat("x", 2000)
	tests := []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"LF lines", "<13>a\n<13>b\n", 1024, []string{"<13>a", "<13>b"}},
		{"CRLF and NUL terminators", "<13>a\r\n<13>b\x00<13>c\n", 1024, []string{"<13>a\r", "<13>b", "<13>c"}},
		{"octet-counted then LF on one stream", "5 <13>a<13>b\n6 <13>cd", 1024, []string{"<13>a", "<13>b", "<13>cd"}},
		{"octet-counted with LF trailer", "5 <13>a\n5 <13>b\n", 1024, []string{"<13>a", "<13>b"}},
		{"octet-counted frame may contain LF", "7 <13>a\nb", 1024, []string{"<13>a\nb"}},
		{"blank lines skipped", "\n\r\n<13>a\n\n", 1024, []string{"<13>a"}},
		{"unterminated last line kept", "<13>a\n<13>b", 1024, []string{"<13>a", "<13>b"}},
		{"oversize LF line skipped, stream goes on", "<13>" + big + "\n<13>ok\n", 1024, []string{"ERR:oversize", "<13>ok"}},
		{"oversize unterminated last line", "<13>" + big, 1024, []string{"ERR:oversize"}},
		{"line of exactly max", "<13>" + big[:1020] + "\n", 1024, []string{"<13>" + big[:1020]}},
		{"line larger than the read buffer", "<13>" + strings.Repeat("y", 40000) + "\n<13>z\n", 64 << 10, []string{"<13>" + strings.Repeat("y", 40000), "<13>z"}},
		{"octet frame larger than the read buffer", "40000 " + strings.Repeat("y", 40000) + "<13>z\n", 64 << 10, []string{strings.Repeat("y", 40000), "<13>z"}},
		{"negative octet count", "-1 x\n<13>a\n", 1024, []string{"ERR:framing"}},
		{"octet count over max", "70000 " + big, 64 << 10, []string{"ERR:framing"}},
		{"octet count leading zero", "05 <13>a", 1024, []string{"ERR:framing"}},
		{"octet count non-numeric", "12a <13>a", 1024, []string{"ERR:framing"}},
		{"octet count absurdly long", "99999999999999999999999 x", 1024, []string{"ERR:framing"}},
		{"half octet frame then EOF", "50 <13>abc", 1024, []string{"ERR:framing"}},
		{"EOF inside octet count", "<13>a\n12", 1024, []string{"<13>a", "ERR:framing"}},
		{"year-first file line is not a count", "2026-11-26T18:19:13Z vm p: x\n", 1024, []string{"ERR:framing"}},
		{"garbage is a line", "\xff\xfe\x01garbage\n<13>a\n", 1024, []string{"\xff\xfe\x01garbage", "<13>a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, readFrames(strings.NewReader(tt.in), tt.max)); diff != "" {
				t.Errorf("frames mismatch (-want +got):\n%s", diff)
			}
			// Byte-at-a-time delivery must give the same frames.
			if diff := cmp.Diff(tt.want, readFrames(iotest.OneByteReader(strings.NewReader(tt.in)), tt.max)); diff != "" {
				t.Errorf("one-byte reads: frames mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzFrameReader(f *testing.F) {
	for _, s := range []string{"<13>a\n", "5 <13>a", "-1 x", "50 <13>abc", "\x00\n\r", "70000 x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 256
		fr := newFrameReader(iotest.HalfReader(strings.NewReader(string(in))), max)
		for i := 0; ; i++ {
			b, err := fr.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, errFraming) && !errors.Is(err, errOversize) {
					t.Fatalf("unexpected error %v", err)
				}
				if errors.Is(err, errOversize) {
					continue
				}
				return
			}
			if len(b) > max {
				t.Fatalf("frame of %d bytes exceeds max %d", len(b), max)
			}
			if i > len(in) {
				t.Fatalf("more frames than input bytes")
			}
		}
	})
}
