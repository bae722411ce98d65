package matcher

import (
	"errors"
	"fmt"
	"regexp"
)

// ErrPattern is wrapped by every error about a regular expression that does
// not compile.
var ErrPattern = errors.New("invalid pattern")

// Regexp is a regular expression (RE2 syntax, as package regexp) that is
// compiled when the configuration is decoded, so that a bad pattern fails
// the load instead of the first match. The zero value holds no expression.
type Regexp struct{ *regexp.Regexp }

// MustRegexp compiles expr and panics if it does not compile; for
// expressions fixed in code.
func MustRegexp(expr string) Regexp { return Regexp{regexp.MustCompile(expr)} }

// UnmarshalText compiles text. Empty text leaves r empty, which Validate
// reports as missing for a required pattern.
func (r *Regexp) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		r.Regexp = nil
		return nil
	}
	re, err := regexp.Compile(string(text))
	if err != nil {
		return fmt.Errorf("%w %q: %w", ErrPattern, text, err)
	}
	r.Regexp = re
	return nil
}

// MarshalText returns the source text of the expression.
func (r Regexp) MarshalText() ([]byte, error) {
	if r.Regexp == nil {
		return nil, nil
	}
	return []byte(r.Regexp.String()), nil
}

// String returns the source text, or "" for an empty Regexp.
func (r Regexp) String() string {
	if r.Regexp == nil {
		return ""
	}
	return r.Regexp.String()
}

func (r *Regexp) empty() bool { return r == nil || r.Regexp == nil }
