package syslog

import (
	"errors"
	"sync/atomic"
	"time"
)

// Errors returned by Parse. Callers count them; they never carry the line,
// because the line is attacker-controlled and would flood logs.
var (
	ErrEmpty     = errors.New("syslog: empty line")
	ErrPriority  = errors.New("syslog: bad PRI")
	ErrTimestamp = errors.New("syslog: bad timestamp")
	ErrMalformed = errors.New("syslog: malformed syslog line")
)

// maxPRI is facility 23 (local7) * 8 + severity 7.
const maxPRI = 191

// halfYear decides the RFC 3164 year: a timestamp more than this away from
// the reference time belongs to the neighbouring year.
const halfYear = 183 * 24 * time.Hour

// Parse reads one syslog line as it comes from the wire (with a <PRI>) or
// from a file written by rsyslog (without one). ref is the time of receipt
// (or the replay's notion of now); it picks the year of RFC 3164 timestamps,
// which have none, and stands in for an RFC 5424 NILVALUE timestamp. loc is
// the zone of RFC 3164 timestamps. Peer and Transport are left to the caller.
//
// Traditional lines are parsed here without the library because replaying a
// log file must run at more than a million lines per second; the result
// costs one allocation (Host, Program and Text share one copy of the line).
func Parse(line []byte, ref time.Time, loc *time.Location) (Message, error) {
	line = TrimEnd(line)
	if len(line) == 0 {
		return Message{}, ErrEmpty
	}
	rest := line
	if rest[0] == '<' {
		n, ok := parsePRI(rest)
		if !ok {
			return Message{}, ErrPriority
		}
		rest = rest[n:]
		if len(rest) >= 2 && rest[0] == '1' && rest[1] == ' ' {
			return parse5424(line, len(line)-len(rest)+2, ref)
		}
	}
	return parseTraditional(rest, ref, loc)
}

// TrimEnd drops the terminators that framing leaves behind (CR of CRLF,
// NUL of NUL-framed senders, LF of datagrams and files).
func TrimEnd(b []byte) []byte {
	for len(b) > 0 {
		switch b[len(b)-1] {
		case '\n', '\r', 0:
			b = b[:len(b)-1]
		default:
			return b
		}
	}
	return b
}

// parsePRI returns the length of a valid "<PRI>" prefix.
func parsePRI(b []byte) (int, bool) {
	v := 0
	for i := 1; i < len(b) && i <= 4; i++ {
		c := b[i]
		switch {
		case c == '>':
			if i == 1 || v > maxPRI {
				return 0, false
			}
			return i + 1, true
		case c >= '0' && c <= '9':
			v = v*10 + int(c-'0')
		default:
			return 0, false
		}
	}
	return 0, false
}

// parseTraditional reads "TIMESTAMP HOSTNAME TAG: MSG" where TIMESTAMP is
// RFC 3164 or RFC 3339 and HOSTNAME may be missing.
func parseTraditional(b []byte, ref time.Time, loc *time.Location) (Message, error) {
	var (
		t   time.Time
		n   int
		err error
	)
	switch {
	case len(b) > 0 && b[0] >= '0' && b[0] <= '9':
		t, n, err = parse3339(b)
	default:
		t, n, err = parse3164(b, ref, loc)
	}
	if err != nil || (n < len(b) && b[n] != ' ') {
		// journalctl's exports (journald.go).
		if jt, jn, jerr := journalStamp(b, ref, loc); jerr != errNotJournal {
			t, n, err = jt, jn, jerr
		}
	}
	if err != nil {
		return Message{}, err
	}
	b = b[n:]
	if len(b) == 0 || b[0] != ' ' {
		return Message{}, ErrMalformed
	}
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}

	// One copy for all string fields; the offsets below index into it.
	s := string(b)
	i := 0
	hostEnd := indexSpace(s)
	if hostEnd < 0 {
		return Message{}, ErrMalformed
	}
	host := s[:hostEnd]
	if isTag(host) {
		// The sender left HOSTNAME out; do not invent one.
		host = ""
	} else {
		i = hostEnd + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
	}

	// TAG: program up to '[', ':' or space.
	p := i
	for i < len(s) && s[i] != '[' && s[i] != ':' && s[i] != ' ' {
		i++
	}
	if i == p || i == len(s) {
		return Message{}, ErrMalformed
	}
	prog := s[p:i]
	pid := 0
	if s[i] == '[' {
		end := i + 1
		for end < len(s) && s[end] != ']' && s[end] != ' ' {
			end++
		}
		if end == len(s) || s[end] != ']' {
			return Message{}, ErrMalformed
		}
		pid = atoiPID(s[i+1 : end])
		i = end + 1
		if i == len(s) || s[i] != ':' {
			return Message{}, ErrMalformed
		}
	}
	if s[i] != ':' {
		// "host word text": no TAG terminator, so this is not a line we
		// can attribute to a program.
		return Message{}, ErrMalformed
	}
	i++
	if i < len(s) && s[i] == ' ' {
		i++
	}
	return Message{Time: t, Host: host, Program: prog, PID: pid, Text: s[i:]}, nil
}

func indexSpace(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			return i
		}
	}
	return -1
}

// isTag reports whether the word after the timestamp is already the TAG
// ("prog[pid]:" or "prog:"), i.e. the HOSTNAME is missing. An IPv6 address
// used as a hostname also contains colons, but never only a final one and
// never "]:".
func isTag(w string) bool {
	n := len(w)
	if n < 2 || w[n-1] != ':' {
		return false
	}
	if w[n-2] == ']' {
		for i := 0; i < n-2; i++ {
			if w[i] == '[' {
				return i > 0
			}
		}
		return false
	}
	for i := 0; i < n-1; i++ {
		if w[i] == ':' {
			return false
		}
	}
	return true
}

// atoiPID returns the PID or 0 when it is not a plausible number; the PID is
// informational, so a strange one is not worth rejecting the line.
func atoiPID(s string) int {
	if len(s) == 0 || len(s) > 10 {
		return 0
	}
	v := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		v = v*10 + int(c-'0')
	}
	return v
}

// parse3164 reads an RFC 3164 timestamp, "Mmm dd hh:mm:ss", as senders
// really write it: the day space-padded ("Aug  3"), zero-padded ("Aug 03")
// or not padded at all ("Aug 3"), any run of spaces between the parts, and
// optionally a year before the time ("Aug  3 2026 15:30:49", as some
// devices and syslog-ng templates write). Without a year, the year is the
// one that puts the time nearest ref. It returns the time and the bytes
// read.
func parse3164(b []byte, ref time.Time, loc *time.Location) (time.Time, int, error) {
	if len(b) < len("Mmm d hh:mm:ss") {
		return time.Time{}, 0, ErrTimestamp
	}
	mon := month(b[0], b[1], b[2])
	if mon == 0 || b[3] != ' ' {
		return time.Time{}, 0, ErrTimestamp
	}
	i := skipSpaces(b, 3)
	day, i, ok := number(b, i, 2)
	if !ok || i >= len(b) || b[i] != ' ' {
		return time.Time{}, 0, ErrTimestamp
	}
	i = skipSpaces(b, i)
	year := 0
	if y, j, ok := number(b, i, 4); ok && j-i == 4 && j < len(b) && b[j] == ' ' {
		year = y
		i = skipSpaces(b, j)
	}
	if len(b) < i+8 || b[i+2] != ':' || b[i+5] != ':' {
		return time.Time{}, 0, ErrTimestamp
	}
	hh, ok1 := two(b[i], b[i+1])
	mm, ok2 := two(b[i+3], b[i+4])
	ss, ok3 := two(b[i+6], b[i+7])
	if !ok1 || !ok2 || !ok3 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, 0, ErrTimestamp
	}
	n := i + 8
	if loc == nil {
		loc = time.Local
	}
	explicit := year != 0
	if !explicit {
		year = ref.In(loc).Year()
	}
	t := time.Date(year, mon, day, hh, mm, ss, 0, loc)
	if !explicit {
		// The year nearest ref: a "Dec 31" line read on Jan 1 is last
		// year's, a "Jan 1" line stamped by a sender whose clock runs
		// ahead is next year's.
		if d := t.Sub(ref); d > halfYear {
			year--
		} else if d < -halfYear {
			year++
		}
		if year != t.Year() {
			t = time.Date(year, mon, day, hh, mm, ss, 0, loc)
		}
	}
	// time.Date normalises Feb 30 to Mar 2; such a line is not a date.
	// ss == 60 (leap second) legitimately rolls over and is allowed.
	if t.Day() != day && ss != 60 {
		return time.Time{}, 0, ErrTimestamp
	}
	return t, n, nil
}

func skipSpaces(b []byte, i int) int {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	return i
}

// number reads 1 to max decimal digits at b[i:].
func number(b []byte, i, max int) (v, end int, ok bool) {
	j := i
	for j < len(b) && j-i < max && isDigit(b[j]) {
		v = v*10 + int(b[j]-'0')
		j++
	}
	return v, j, j > i && (j == len(b) || !isDigit(b[j]))
}

// monthKeys are "Jan" to "Dec" packed as month packs its bytes.
var monthKeys = func() (k [12]uint32) {
	for i, m := range [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"} {
		k[i] = uint32(m[0])<<16 | uint32(m[1])<<8 | uint32(m[2])
	}
	return k
}()

// month reads an RFC 3164 month abbreviation; 0 for anything else.
func month(a, b, c byte) time.Month {
	key := uint32(a)<<16 | uint32(b)<<8 | uint32(c)
	for i, k := range monthKeys {
		if k == key {
			return time.Month(i + 1)
		}
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func two(a, b byte) (int, bool) {
	if !isDigit(a) || !isDigit(b) {
		return 0, false
	}
	return int(a-'0')*10 + int(b-'0'), true
}

// parse3339 reads "YYYY-MM-DDThh:mm:ss[.frac](Z|+hh:mm|-hh:mm)".
func parse3339(b []byte) (time.Time, int, error) {
	const n = len("2006-01-02T15:04:05")
	if len(b) < n+1 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return time.Time{}, 0, ErrTimestamp
	}
	y1, ok1 := two(b[0], b[1])
	y2, ok2 := two(b[2], b[3])
	mo, ok3 := two(b[5], b[6])
	day, ok4 := two(b[8], b[9])
	hh, ok5 := two(b[11], b[12])
	mm, ok6 := two(b[14], b[15])
	ss, ok7 := two(b[17], b[18])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) ||
		mo < 1 || mo > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, 0, ErrTimestamp
	}
	i := n
	nsec := 0
	if b[i] == '.' {
		i++
		start := i
		scale := 100000000
		for i < len(b) && isDigit(b[i]) {
			if i-start < 9 {
				nsec += int(b[i]-'0') * scale
				scale /= 10
			}
			i++
		}
		if i == start {
			return time.Time{}, 0, ErrTimestamp
		}
	}
	if i >= len(b) {
		return time.Time{}, 0, ErrTimestamp
	}
	var zone *time.Location
	switch b[i] {
	case 'Z', 'z':
		zone = time.UTC
		i++
	case '+', '-':
		if len(b) < i+6 || b[i+3] != ':' {
			return time.Time{}, 0, ErrTimestamp
		}
		zh, okh := two(b[i+1], b[i+2])
		zm, okm := two(b[i+4], b[i+5])
		if !okh || !okm || zh > 23 || zm > 59 {
			return time.Time{}, 0, ErrTimestamp
		}
		off := (zh*60 + zm) * 60
		if b[i] == '-' {
			off = -off
		}
		zone = fixedZone(off)
		i += 6
	default:
		return time.Time{}, 0, ErrTimestamp
	}
	year := y1*100 + y2
	if year < 1970 {
		// Not a clock reading; also keeps the zero time out of Message.
		return time.Time{}, 0, ErrTimestamp
	}
	t := time.Date(year, time.Month(mo), day, hh, mm, ss, nsec, zone)
	if t.Day() != day && ss != 60 {
		return time.Time{}, 0, ErrTimestamp
	}
	return t, i, nil
}

// zones caches one *time.Location per UTC offset (minute resolution,
// -23:59..+23:59) so that RFC 3339 timestamps do not allocate.
var zones [2*24*60 + 1]atomic.Pointer[time.Location]

// fixedZone returns the sender's zone as a fixed offset; offset 0 is
// time.UTC so that equal instants also compare equal in tests and logs.
func fixedZone(offsetSec int) *time.Location {
	if offsetSec == 0 {
		return time.UTC
	}
	idx := offsetSec/60 + 24*60
	if idx < 0 || idx >= len(zones) || offsetSec%60 != 0 {
		return time.FixedZone("", offsetSec)
	}
	if z := zones[idx].Load(); z != nil {
		return z
	}
	z := time.FixedZone("", offsetSec)
	zones[idx].CompareAndSwap(nil, z)
	return zones[idx].Load()
}
