package syslog

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/mcuadros/go-syslog.v2/format"
)

// parse5424GoSyslog runs go-syslog's RFC 5424 parser and normalises its
// map the way parse5424 does. It is the fallback for the lines parse5424
// refuses but go-syslog takes (see rfc5424.go), and the reference the
// differential fuzz test compares parse5424 with. The library is not
// trusted: a panic inside it becomes ErrMalformed.
func parse5424GoSyslog(line []byte, ref time.Time) (m Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = Message{}, fmt.Errorf("rfc5424: %w: panic in go-syslog", ErrMalformed)
		}
	}()
	p := (&format.RFC5424{}).GetParser(line)
	if perr := p.Parse(); perr != nil {
		return Message{}, fmt.Errorf("rfc5424: %w: %w", ErrMalformed, perr)
	}
	parts := p.Dump()
	str := func(k string) string {
		s, _ := parts[k].(string)
		if s == "-" {
			return ""
		}
		return s
	}
	m.Host = str("hostname")
	m.Program = str("app_name")
	for i := 0; i < len(m.Program); i++ {
		if m.Program[i] == '[' {
			return Message{}, fmt.Errorf("rfc5424: %w: '[' in APP-NAME", ErrMalformed)
		}
	}
	m.PID = atoiPID(str("proc_id"))
	text, _ := parts["message"].(string)
	// RFC 5424 allows a BOM to announce UTF-8; it is not part of the text.
	if len(text) >= 3 && text[:3] == "\xef\xbb\xbf" {
		text = text[3:]
	}
	// rsyslog keeps the space that syslog(3) puts after "tag:" in the msg
	// property, and RSYSLOG_SyslogProtocol23Format adds its own: messages
	// from /dev/log arrive as "- -  QID: ...". One leading space is never
	// part of the text.
	m.Text = strings.TrimPrefix(text, " ")
	ts, _ := parts["timestamp"].(time.Time)
	if ts.IsZero() {
		// NILVALUE: the sender had no clock; the time of receipt is the
		// best we have.
		ts = ref
	} else {
		// go-syslog yields time.Local when the offset happens to match the
		// receiver's zone; the sender's offset is what Message promises.
		_, off := ts.Zone()
		ts = ts.In(fixedZone(off))
	}
	m.Time = ts
	return m, nil
}
