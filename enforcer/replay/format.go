package replay

import (
	"errors"
	"fmt"
	"strings"
)

// Format is a log line format that `check --format` insists on. The
// values are part of the command line.
type Format string

// The formats. Without one (FormatAuto) each line is read by its own
// shape, which is what the receiver does too.
const (
	FormatAuto Format = "auto"
	// FormatRFC3164: "[<PRI>]Mmm dd hh:mm:ss HOST TAG: MSG", as rsyslog's
	// traditional file format and `journalctl -o short` write it.
	FormatRFC3164 Format = "rfc3164"
	// FormatRFC3339: the same with "YYYY-MM-DDThh:mm:ss[.frac]±hh:mm", as
	// Debian's rsyslog writes its files (RSYSLOG_FileFormat).
	FormatRFC3339 Format = "rfc3339"
	// FormatRFC5424: "<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG".
	FormatRFC5424 Format = "rfc5424"
	// FormatJournalShort is `journalctl -o short`, the same as
	// FormatRFC3164.
	FormatJournalShort Format = "journald-short"
	// FormatJournalShortPrecise is `journalctl -o short-precise`:
	// "Mmm dd hh:mm:ss.uuuuuu HOST TAG: MSG".
	FormatJournalShortPrecise Format = "journald-short-precise"
	// FormatJournalShortISO is `journalctl -o short-iso`:
	// "YYYY-MM-DDThh:mm:ss±hhmm HOST TAG: MSG".
	FormatJournalShortISO Format = "journald-short-iso"
	// FormatJournalShortISOPrecise is `journalctl -o short-iso-precise`:
	// "YYYY-MM-DDThh:mm:ss.uuuuuu±hhmm HOST TAG: MSG".
	FormatJournalShortISOPrecise Format = "journald-short-iso-precise"
)

// Formats lists every Format, for usage texts.
var Formats = []Format{FormatAuto, FormatRFC3164, FormatRFC3339, FormatRFC5424,
	FormatJournalShort, FormatJournalShortPrecise, FormatJournalShortISO, FormatJournalShortISOPrecise}

// ErrFormat is the error of ParseFormat.
var ErrFormat = errors.New("unknown log format")

// ParseFormat returns the Format named s; "" is FormatAuto.
func ParseFormat(s string) (Format, error) {
	if s == "" {
		return FormatAuto, nil
	}
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return "", fmt.Errorf("%w %q (%s)", ErrFormat, s, strings.Join(names, ", "))
}

// shape returns the layout of a line that parsed, from its stamp:
// FormatRFC3164 (also journald-short), FormatJournalShortPrecise,
// FormatRFC3339, FormatJournalShortISO, FormatJournalShortISOPrecise or
// FormatRFC5424. It looks at a few bytes only: the parser has already
// read the stamp, so only the shape of a valid one is in question.
func shape(line []byte) Format {
	if len(line) > 0 && line[0] == '<' {
		i := 1
		for i < len(line) && line[i] != '>' {
			i++
		}
		line = line[min(i+1, len(line)):]
		if len(line) >= 2 && line[0] == '1' && line[1] == ' ' {
			return FormatRFC5424
		}
	}
	if len(line) == 0 || line[0] < '0' || line[0] > '9' {
		// "Mmm dd hh:mm:ss" with any padding and perhaps a year; the
		// precise stamp has a '.' right after the seconds.
		sp := 0
		for i := 0; i < len(line); i++ {
			switch line[i] {
			case ':':
				// The second ':' of the time; the seconds follow.
				if sp++; sp == 2 {
					if i+3 < len(line) && line[i+3] == '.' {
						return FormatJournalShortPrecise
					}
					return FormatRFC3164
				}
			case ' ':
				if sp > 0 {
					return FormatRFC3164
				}
			}
		}
		return FormatRFC3164
	}
	// "YYYY-MM-DDThh:mm:ss", a fraction, then the zone.
	i := len("2006-01-02T15:04:05")
	frac := i < len(line) && line[i] == '.'
	for i < len(line) && (line[i] == '.' || ('0' <= line[i] && line[i] <= '9')) {
		i++
	}
	if i < len(line) && (line[i] == '+' || line[i] == '-') && i+3 < len(line) && line[i+3] != ':' {
		if frac {
			return FormatJournalShortISOPrecise
		}
		return FormatJournalShortISO
	}
	return FormatRFC3339
}

// accepts reports whether a line of shape s is in format f.
func (f Format) accepts(s Format) bool {
	switch f {
	case FormatAuto:
		return true
	case FormatJournalShort:
		return s == FormatRFC3164
	}
	return f == s
}
