package syslog

import (
	"strings"
	"time"
)

// RFC 5424 field limits (section 6).
const (
	maxHostname = 255
	maxAppName  = 48
	maxProcID   = 128
	maxMsgID    = 32
	maxSecFrac  = 6
)

// parse5424 parses an RFC 5424 line (rsyslog's
// RSYSLOG_SyslogProtocol23Format, what deploy/rsyslog-forward.conf sends)
// with one allocation: Host, Program and Text share one copy of the line.
// hdr is the offset just after "<PRI>1 ".
//
// It follows the RFC where go-syslog is lax, and falls back to go-syslog
// (parse5424GoSyslog) for what it refuses, so that no line that parsed
// before is lost. Where both accept a line they agree (FuzzParse5424
// checks it), except where go-syslog is wrong: it ends STRUCTURED-DATA at
// the first "]" followed by a space or the end, even inside a quoted
// PARAM-VALUE ("[x a=\"b] c\"]"), so the message text starts too early;
// this parser reads SD-PARAMs with their escapes.
func parse5424(line []byte, hdr int, ref time.Time) (Message, error) {
	m, ok := fast5424(line, hdr, ref)
	if ok {
		return m, nil
	}
	return parse5424GoSyslog(line, ref)
}

func fast5424(line []byte, hdr int, ref time.Time) (Message, bool) {
	var m Message
	b := line[hdr:]
	if len(b) >= 2 && b[0] == '-' && b[1] == ' ' {
		// NILVALUE: the sender had no clock; the time of receipt is the
		// best we have.
		m.Time = ref
		hdr += 2
	} else {
		t, n, err := parse3339(b)
		if err != nil || n >= len(b) || b[n] != ' ' || b[10] != 'T' || !secFrac5424(b[19:n]) {
			return Message{}, false
		}
		m.Time = t
		hdr += n + 1
	}
	s := string(line[hdr:])
	var host, app, proc string
	var ok bool
	if host, s, ok = cutField(s, maxHostname); !ok {
		return Message{}, false
	}
	if app, s, ok = cutField(s, maxAppName); !ok || strings.IndexByte(app, '[') >= 0 {
		return Message{}, false
	}
	if proc, s, ok = cutField(s, maxProcID); !ok {
		return Message{}, false
	}
	if _, s, ok = cutField(s, maxMsgID); !ok {
		return Message{}, false
	}
	if s, ok = cutSD(s); !ok {
		return Message{}, false
	}
	m.Host, m.Program, m.PID = nilValue(host), nilValue(app), atoiPID(nilValue(proc))
	// RFC 5424 allows a BOM to announce UTF-8; it is not part of the text.
	s = strings.TrimPrefix(s, "\xef\xbb\xbf")
	// rsyslog keeps the space that syslog(3) puts after "tag:" in the msg
	// property, and RSYSLOG_SyslogProtocol23Format adds its own: messages
	// from /dev/log arrive as "- -  QID: ...". One leading space is never
	// part of the text.
	m.Text = strings.TrimPrefix(s, " ")
	return m, true
}

// secFrac5424 checks what follows the seconds up to the offset: nothing,
// or "." and 1 to 6 digits (parse3339, for files, takes more).
func secFrac5424(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '.' {
		i++
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == 1 || i-1 > maxSecFrac {
			return false
		}
	}
	// The offset: Z or +hh:mm / -hh:mm, with an upper-case Z (go-syslog's
	// and the RFC's reading).
	rest := b[i:]
	return (len(rest) == 1 && rest[0] == 'Z') || (len(rest) == 6 && (rest[0] == '+' || rest[0] == '-'))
}

// cutField cuts one header field of 1 to max characters and the space
// after it.
func cutField(s string, max int) (field, rest string, ok bool) {
	i := strings.IndexByte(s, ' ')
	if i <= 0 || i > max {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func nilValue(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// cutSD skips STRUCTURED-DATA: "-" or one or more
// [SD-ID *(SP PARAM-NAME="PARAM-VALUE")], where a value escapes '"', '\'
// and ']' with a backslash. It returns the MSG after the separating space
// ("" when the line ends with the SD).
func cutSD(s string) (string, bool) {
	if s == "-" {
		return "", true
	}
	if strings.HasPrefix(s, "- ") {
		return s[2:], true
	}
	i := 0
	for i < len(s) && s[i] == '[' {
		i++
		// SD-ID, then PARAM-NAMEs: printable, no '=', ' ', ']' or '"'.
		n := sdName(s[i:])
		if n == 0 {
			return "", false
		}
		i += n
		for i < len(s) && s[i] == ' ' {
			i++
			if n = sdName(s[i:]); n == 0 {
				return "", false
			}
			i += n
			if i+1 >= len(s) || s[i] != '=' || s[i+1] != '"' {
				return "", false
			}
			i += 2
			for {
				if i >= len(s) {
					return "", false
				}
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					i += 2
					continue
				}
				i++
				if c == '"' {
					break
				}
			}
		}
		if i >= len(s) || s[i] != ']' {
			return "", false
		}
		i++
	}
	switch {
	case i == 0:
		return "", false
	case i == len(s):
		return "", true
	case s[i] == ' ':
		return s[i+1:], true
	}
	return "", false
}

// sdName is the length of an SD-NAME (1 to 32 of PRINTUSASCII except
// '=', SP, ']' and '"') at the start of s, or 0.
func sdName(s string) int {
	n := 0
	for n < len(s) && n <= 32 {
		c := s[n]
		if c <= ' ' || c > '~' || c == '=' || c == ']' || c == '"' {
			break
		}
		n++
	}
	if n > 32 {
		return 0
	}
	return n
}
