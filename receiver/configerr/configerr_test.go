package configerr

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWithin(t *testing.T) {
	err := errors.Join(
		New("rules[0].name", ErrRequired, "required"),
		fmt.Errorf("context: %w", errors.Join(New("[2]", ErrDuplicate, "again"), New("", ErrInvalid, "whole section"))),
		io.EOF,
	)
	var got []string
	for _, fe := range Flatten(Within("matcher", err)) {
		got = append(got, fe.Error())
	}
	want := []string{"matcher.rules[0].name: required", "matcher[2]: again", "matcher: whole section", "matcher: EOF"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Within (-want +got):\n%s", diff)
	}
	if Within("x", nil) != nil {
		t.Error("Within(nil) != nil")
	}
}

func TestErrorf(t *testing.T) {
	cause := errors.New("cause")
	err := Errorf(ErrType, "%q is not a thing: %w", "x", cause)
	if diff := cmp.Diff(`"x" is not a thing: cause`, err.Error()); diff != "" {
		t.Errorf("Error() (-want +got):\n%s", diff)
	}
	if !errors.Is(err, ErrType) || !errors.Is(err, cause) || !Worded(err) {
		t.Errorf("Errorf() = %v, want it to wrap ErrType and its cause and be worded", err)
	}
	fe := &FieldError{Path: "a.b", Err: err}
	if !errors.Is(fe, ErrType) || fe.Error() != `a.b: "x" is not a thing: cause` {
		t.Errorf("FieldError = %v", fe)
	}
	if Worded(cause) {
		t.Error("Worded(plain error) = true")
	}
	// A worded error without a path stays whole in Flatten.
	if got := Flatten(err); len(got) != 1 || got[0].Err != err {
		t.Errorf("Flatten(worded) = %v", got)
	}
}
