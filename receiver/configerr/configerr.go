// Package configerr is the one convention for configuration errors: every
// problem is a *FieldError that names its field by its YAML path
// ("matcher.rules[0].pattern"), reads as words ("0 is out of range (at
// least 1)"), and wraps one of the sentinels below so that callers and
// tests can classify it. It sits below every package that validates a
// part of the configuration, so that none of them imports another to
// report an error, and the loader can give each error the line of its
// path. It lives beside receiver/syslog as the other leaf that every room
// imports (the top level of the repository holds only the rooms); it
// imports nothing but the standard library's errors, fmt and strings.
package configerr

import (
	"errors"
	"fmt"
	"strings"
)

// The kinds of configuration problems. Each FieldError wraps exactly one.
var (
	// ErrSyntax is a file that is not YAML.
	ErrSyntax = errors.New("syntax error")
	// ErrUnknownField is a key the configuration does not have.
	ErrUnknownField = errors.New("unknown field")
	// ErrType is a value of the wrong form: text where a number belongs,
	// a list where a duration belongs, a string that is no IP prefix.
	ErrType = errors.New("wrong type")
	// ErrRequired is a value that is missing or empty.
	ErrRequired = errors.New("required")
	// ErrOutOfRange is a number or duration outside its bounds.
	ErrOutOfRange = errors.New("out of range")
	// ErrDuplicate is a value or key given twice where it must be unique.
	ErrDuplicate = errors.New("duplicate")
	// ErrInvalid is any other value that is well-formed but unusable.
	ErrInvalid = errors.New("invalid value")
)

// FieldError is one problem of a configuration, at one field.
type FieldError struct {
	// Path names the field as in the file: "enforcer.never_block[2]".
	// Empty for a problem of the whole file (a syntax error).
	Path string
	// Line is the file's line of the field, or 0 where it is unknown (a
	// field the file leaves out, or an error made outside the loader).
	// Error does not print it: only the loader knows the file name.
	Line int
	// Err says what is wrong, in words, and wraps a sentinel.
	Err error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// New returns a FieldError at path whose text is the formatted message
// and that wraps kind.
func New(path string, kind error, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Err: Errorf(kind, format, args...)}
}

// Errorf returns an error whose text is only the formatted message (%w
// works) but which also wraps kind: the message stays a sentence while
// errors.Is still classifies it.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// Worded reports whether err was made by Errorf (or New), that is,
// whether its text is fit to show as it is after a path.
func Worded(err error) bool {
	var k *kindError
	return errors.As(err, &k)
}

// Within returns err with section put in front of every path, for a
// section that validates its fields relative to itself: Within("matcher",
// rules[0].name: ...) is matcher.rules[0].name: .... Errors that are not
// FieldErrors are put at the section itself. Nil stays nil.
func Within(section string, err error) error {
	if err == nil {
		return nil
	}
	fes := Flatten(err)
	errs := make([]error, len(fes))
	for i, fe := range fes {
		fe.Path = Join(section, fe.Path)
		errs[i] = fe
	}
	return errors.Join(errs...)
}

// Join appends a relative path to a section path: a field after a dot,
// an index ("[2]") directly.
func Join(section, rel string) string {
	switch {
	case section == "":
		return rel
	case rel == "":
		return section
	case strings.HasPrefix(rel, "["):
		return section + rel
	}
	return section + "." + rel
}

// Flatten returns copies of the FieldErrors in err, unpacking joined
// errors; any other error becomes a FieldError with an empty path. Context
// wrapped around FieldErrors ("matcher: %w") is dropped: their paths
// already say where they are.
func Flatten(err error) []*FieldError {
	var fe *FieldError
	switch e := err.(type) {
	case nil:
		return nil
	case *FieldError:
		c := *e
		return []*FieldError{&c}
	case *kindError:
		return []*FieldError{{Err: e}}
	}
	if !errors.As(err, &fe) {
		return []*FieldError{{Err: err}}
	}
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		var out []*FieldError
		for _, inner := range e.Unwrap() {
			out = append(out, Flatten(inner)...)
		}
		return out
	case interface{ Unwrap() error }:
		return Flatten(e.Unwrap())
	}
	c := *fe
	return []*FieldError{&c}
}
