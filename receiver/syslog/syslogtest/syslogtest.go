// Package syslogtest holds what tests of every package share about the
// mail log: the one copy of the real Postfix sample. Only tests may import
// it (the import-graph test in cmd/wormgate checks that).
package syslogtest

import (
	_ "embed"
	"path/filepath"
	"runtime"
	"strings"
)

// SampleLog is real output of Postfix 3.7.11 (Debian 12) as rsyslog 8
// writes it to a file, with RFC 3339 timestamps: an infected client at
// 203.0.113.66 / 2001:db8:66::66 and four decoy addresses (192.0.2.96-99)
// planted in the Subject, an attachment name, MAIL FROM and HELO. The
// only addresses that may be blocked from it are the client's own.
//
//go:embed postfix-3.7-rsyslog-file.log
var SampleLog string

// SampleLines returns SampleLog split into lines, without terminators.
func SampleLines() []string {
	return strings.Split(strings.TrimSuffix(SampleLog, "\n"), "\n")
}

// SamplePath is the sample's path on disk, for tests that run a command on
// a file.
func SamplePath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "postfix-3.7-rsyslog-file.log")
}
