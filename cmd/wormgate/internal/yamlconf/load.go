package yamlconf

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/wormgate/wormgate/receiver/configerr"
)

// Error is every problem of one file, sorted by line. It prints one
// problem a line, each "file:line: path: message" (without the line where
// it is unknown), so that editors and grep can jump to them.
type Error struct {
	File     string
	Problems []*configerr.FieldError
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap gives errors.Is and errors.As every problem.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p
	}
	return out
}

// Load decodes data, the contents of the file called name, over v, a
// pointer to a struct that holds the defaults: unknown keys are errors,
// and what the file leaves out keeps its default. It then calls validate
// (which should check the value v points to) and gives each of its
// FieldErrors the line of its path, or of the nearest enclosing path the
// file has. It returns nil or an *Error with every problem.
//
// A value that failed to decode is not validated again: its field keeps
// its default or zero value, and "required" after "is not a regular
// expression" would only repeat the problem.
func Load(name string, data []byte, v any, validate func() error) error {
	d := decodeFile(data, v)
	decodeErrs := len(d.errs)
	if validate != nil {
		for _, fe := range configerr.Flatten(validate()) {
			if d.failedAt(fe.Path, decodeErrs) {
				continue
			}
			fe.Line = d.lineOf(fe.Path)
			d.errs = append(d.errs, fe)
		}
	}
	if len(d.errs) == 0 {
		return nil
	}
	// Problems without a line concern values the file does not set;
	// they go last.
	slices.SortStableFunc(d.errs, func(a, b *configerr.FieldError) int {
		return cmp.Compare(lineKey(a.Line), lineKey(b.Line))
	})
	return &Error{File: name, Problems: d.errs}
}

func lineKey(line int) int {
	if line <= 0 {
		return int(^uint(0) >> 1)
	}
	return line
}

// lineOf returns the line of path or of its nearest ancestor in the file.
func (d *decoder) lineOf(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		path = parent(path)
	}
	return 0
}

// parent drops the last element of a path: a.b[2].c, a.b[2], a.b, a.
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// failedAt reports whether one of the first n errors (those of decoding)
// is at path or at an ancestor of it.
func (d *decoder) failedAt(path string, n int) bool {
	for _, fe := range d.errs[:n] {
		p := fe.Path
		if p == "" {
			// A syntax error: nothing was decoded, the defaults hold.
			continue
		}
		if path == p || strings.HasPrefix(path, p) && (path[len(p)] == '.' || path[len(p)] == '[') {
			return true
		}
	}
	return false
}
