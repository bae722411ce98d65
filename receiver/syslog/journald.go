package syslog

import (
	"bytes"
	"errors"
	"time"
)

// This file reads the stamps of journalctl's text exports, which are
// otherwise laid out like rsyslog's traditional files ("TIMESTAMP
// HOSTNAME TAG: MSG"):
//
//	-o short              Aug 03 15:30:49                    (RFC 3164, parse3164)
//	-o short-precise      Aug 03 15:30:49.123456
//	-o short-iso          2026-08-03T15:30:49+0200
//	-o short-iso-precise  2026-08-03T15:30:49.123456+0200
//
// journalctl writes ISO 8601's basic zone offset, without the colon
// that RFC 3339 wants (systemd issue 26639), so parse3339 refuses it.
// Between entries it writes comment lines: "-- Boot 5d1e... --", and in
// older versions "-- Logs begin at ... --", "-- Reboot --", "-- No
// entries --".

// ErrComment is the error for a line of journalctl's own between
// entries ("-- Boot ... --"); it is no message, and no damage either.
var ErrComment = errors.New("syslog: journalctl comment line")

// errNotJournal says that journalStamp found no journalctl stamp; the
// caller keeps its own verdict on the line.
var errNotJournal = errors.New("syslog: no journalctl stamp")

// maxComment bounds the comment lines recognised; journalctl's are
// short.
const maxComment = 256

// journalStamp reads a journalctl stamp at the start of b: short-precise,
// short-iso or short-iso-precise, with ref and loc as for parse3164. It
// returns the time and the bytes read, ErrComment for a comment line, or
// errNotJournal.
func journalStamp(b []byte, ref time.Time, loc *time.Location) (time.Time, int, error) {
	if len(b) == 0 {
		return time.Time{}, 0, errNotJournal
	}
	if b[0] == '-' {
		if len(b) >= len("-- x --") && len(b) <= maxComment && bytes.HasPrefix(b, []byte("-- ")) && bytes.HasSuffix(b, []byte(" --")) {
			return time.Time{}, 0, ErrComment
		}
		return time.Time{}, 0, errNotJournal
	}
	if isDigit(b[0]) {
		return journalISO(b)
	}
	// short-precise: an RFC 3164 stamp with microseconds.
	t, n, err := parse3164(b, ref, loc)
	if err != nil {
		return time.Time{}, 0, errNotJournal
	}
	nsec, m, ok := fraction(b, n)
	if !ok || m == n {
		return time.Time{}, 0, errNotJournal
	}
	return t.Add(time.Duration(nsec)), m, nil
}

// journalISO reads "YYYY-MM-DDThh:mm:ss[.frac]±hhmm": it puts the colon
// that RFC 3339 wants into the zone of a copy on the stack and lets
// parse3339 read that.
func journalISO(b []byte) (time.Time, int, error) {
	const n = len("2006-01-02T15:04:05")
	var buf [maxISOStamp + 1]byte
	if len(b) <= n || b[10] != 'T' {
		return time.Time{}, 0, errNotJournal
	}
	_, i, ok := fraction(b, n)
	if !ok || i+5 > maxISOStamp || len(b) < i+5 || (b[i] != '+' && b[i] != '-') ||
		!isDigit(b[i+3]) || !isDigit(b[i+4]) || (len(b) > i+5 && isDigit(b[i+5])) {
		return time.Time{}, 0, errNotJournal
	}
	copy(buf[:], b[:i+3])
	buf[i+3] = ':'
	copy(buf[i+4:], b[i+3:i+5])
	t, m, err := parse3339(buf[:i+6])
	if err != nil || m != i+6 {
		return time.Time{}, 0, errNotJournal
	}
	return t, i + 5, nil
}

// maxISOStamp bounds the short-iso-precise stamps read: journalctl writes
// microseconds, 31 bytes in all.
const maxISOStamp = 48

// fraction reads an optional ".digits" at b[i:]: the nanoseconds (digits
// past the ninth are dropped) and where it ends. A '.' without a digit
// is no fraction.
func fraction(b []byte, i int) (nsec, end int, ok bool) {
	if i >= len(b) || b[i] != '.' {
		return 0, i, true
	}
	j := i + 1
	scale := 100000000
	for j < len(b) && isDigit(b[j]) {
		if j-i <= 9 {
			nsec += int(b[j]-'0') * scale
			scale /= 10
		}
		j++
	}
	return nsec, j, j > i+1
}
