package matcher

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"

	"github.com/google/go-cmp/cmp"

	"github.com/wormgate/wormgate/receiver/syslog"
)

// parseFileLine parses the "RFC3339 host prog[pid]: text" lines that
// Debian's rsyslog writes; it exists only so that these tests do not depend
// on the receiver's parser.
func parseFileLine(t testing.TB, line string) syslog.Message {
	t.Helper()
	ts, rest, ok1 := strings.Cut(line, " ")
	host, rest, ok2 := strings.Cut(rest, " ")
	tag, text, ok3 := strings.Cut(rest, ": ")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("malformed test line %q", line)
	}
	tm, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatalf("test line %q: %v", line, err)
	}
	msg := syslog.Message{Time: tm, Host: host, Program: tag, Text: text, Transport: "file"}
	if i := strings.IndexByte(tag, '['); i >= 0 && strings.HasSuffix(tag, "]") {
		msg.Program = tag[:i]
		pid, err := strconv.Atoi(tag[i+1 : len(tag)-1])
		if err != nil {
			t.Fatalf("test line %q: pid: %v", line, err)
		}
		msg.PID = pid
	}
	return msg
}

func readSample(t testing.TB) []string {
	t.Helper()
	return syslogtest.SampleLines()
}

func newMatcher(t testing.TB, cfg Config) *Matcher {
	t.Helper()
	m, err := New(complete(cfg))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// complete gives a test's config what the loader gives every loaded one (a
// queue table size, the established-sender settings; each rule's
// threshold, window and evidence, from SetDefaults),
// so that a test names only the fields it is about.
func complete(cfg Config) Config {
	if cfg.QueueTableSize == 0 {
		cfg.QueueTableSize = DefaultQueueTableSize
	}
	if cfg.Established == (EstablishedConfig{}) {
		cfg.Established = DefaultEstablished()
	}
	cfg.Rules = completeRules(cfg.Rules)
	return cfg
}

func completeRules(rules []Rule) []Rule {
	var def Rule
	def.SetDefaults()
	out := make([]Rule, len(rules))
	for i, r := range rules {
		if r.Threshold == 0 {
			r.Threshold = def.Threshold
		}
		if r.Window == 0 {
			r.Window = def.Window
		}
		if r.Evidence == "" {
			r.Evidence = def.Evidence
		}
		out[i] = r
	}
	return out
}

// msgAt is a message from host "mx" at a fixed time.
func msgAt(program, text string) syslog.Message {
	return syslog.Message{
		Time:    time.Date(2026, 11, 26, 18, 19, 13, 0, time.UTC),
		Host:    "mx",
		Program: program,
		PID:     4242,
		Text:    text,
	}
}

// addrCmp compares netip.Addr values, whose fields cmp cannot see.
var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func addrString(a netip.Addr, ok bool) (string, bool) {
	if !ok {
		return "", false
	}
	return a.String(), true
}
