package matcher

import (
	"errors"
	"regexp"
	"regexp/syntax"
	"strings"

	"github.com/wormgate/wormgate/receiver/configerr"
)

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
		// The expression is shown as YAML writes it in single quotes, so
		// that its backslashes read as in the file, and syntax.Error's
		// "error parsing regexp:" is left out: the message says that.
		quoted := "'" + strings.ReplaceAll(string(text), "'", "''") + "'"
		var se *syntax.Error
		if errors.As(err, &se) {
			if se.Expr == string(text) {
				return configerr.Errorf(configerr.ErrType, "%s is not a regular expression: %s", quoted, se.Code)
			}
			return configerr.Errorf(configerr.ErrType, "%s is not a regular expression: %s: `%s`", quoted, se.Code, se.Expr)
		}
		return configerr.Errorf(configerr.ErrType, "%s is not a regular expression: %w", quoted, err)
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
