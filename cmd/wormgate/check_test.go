package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"

	"github.com/google/go-cmp/cmp"
)

var sample = syslogtest.SamplePath()

func runCheck(t *testing.T, stdin string, args ...string) (stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	if code := run(t.Context(), append([]string{"check"}, args...), strings.NewReader(stdin), &o, &e); code != exitOK {
		t.Fatalf("check %q exited %d: %s", args, code, e.String())
	}
	return o.String(), e.String()
}

func firstFields(out string) []string {
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			got = append(got, f[0])
		}
	}
	return got
}

func TestCheckSample(t *testing.T) {
	out, errOut := runCheck(t, "", sample)
	if diff := cmp.Diff([]string{"2001:db8:66::66", "203.0.113.66"}, firstFields(out)); diff != "" {
		t.Errorf("banned addresses (-want +got):\n%s\nstderr: %s", diff, errOut)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Split(l, "\t"); len(f) != 5 {
			t.Errorf("ban line %q: want 5 tab-separated fields (addr rule hits first last)", l)
		}
	}
	if strings.Contains(out, "192.0.2.") {
		t.Errorf("a decoy address would be banned:\n%s", out)
	}
	if !strings.Contains(errOut, "29 lines") {
		t.Errorf("summary on stderr = %q, want it to count 29 lines", errOut)
	}
}

func TestCheckJSONStdinAndGzip(t *testing.T) {
	raw, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	gz := filepath.Join(t.TempDir(), "maillog.1.gz")
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(gz, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{"stdin": {"--json", "-"}, "gzip": {"--json", gz}} {
		t.Run(name, func(t *testing.T) {
			out, _ := runCheck(t, string(raw), args...)
			type ban struct {
				Addr string `json:"addr"`
				Rule string `json:"rule"`
				Hits int    `json:"hits"`
			}
			var got []ban
			dec := json.NewDecoder(strings.NewReader(out))
			for dec.More() {
				var b ban
				if err := dec.Decode(&b); err != nil {
					t.Fatalf("decode %q: %v", out, err)
				}
				got = append(got, b)
			}
			want := []ban{
				{Addr: "2001:db8:66::66", Rule: "worm-signature", Hits: 1},
				{Addr: "203.0.113.66", Rule: "executable-attachment", Hits: 6},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("bans (-want +got):\n%s", diff)
			}
		})
	}
}

// writeLog writes lines to dir/name, gzip-compressed if name ends in .gz,
// with the given modification time (which anchors RFC 3164 years).
func writeLog(t *testing.T, dir, name string, lines []string, mtime time.Time) string {
	t.Helper()
	data := []byte(strings.Join(lines, "\n") + "\n")
	if strings.HasSuffix(name, ".gz") {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(data)
		zw.Close()
		data = b.Bytes()
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

type jsonBan struct {
	Addr  string    `json:"addr"`
	Rule  string    `json:"rule"`
	Hits  int       `json:"hits"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

func decodeBans(t *testing.T, out string) []jsonBan {
	t.Helper()
	var got []jsonBan
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var b jsonBan
		if err := dec.Decode(&b); err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
		got = append(got, b)
	}
	return got
}

// TestCheckFilesInTimeOrder splits the sample at a log rotation that falls
// between a client= record and its cleanup reject. Given newest first, the
// files must still be replayed oldest first, or the reject would lose its
// client.
func TestCheckFilesInTimeOrder(t *testing.T) {
	raw, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	dir := t.TempDir()
	mtime := time.Date(2026, 11, 26, 18, 20, 0, 0, time.UTC)
	older := writeLog(t, dir, "mail.log.1.gz", lines[:7], mtime) // ends after D4101B81BD: client=
	newer := writeLog(t, dir, "mail.log", lines[7:], mtime)      // starts with its reject
	for _, args := range [][]string{{newer, older}, {older, newer}} {
		out, errOut := runCheck(t, "", append([]string{"--json"}, args...)...)
		got := decodeBans(t, out)
		var rules []string
		for _, b := range got {
			rules = append(rules, b.Addr+" "+b.Rule)
		}
		want := []string{"2001:db8:66::66 worm-signature", "203.0.113.66 executable-attachment"}
		if diff := cmp.Diff(want, rules); diff != "" {
			t.Errorf("check %v: bans (-want +got):\n%s\nstderr: %s", args, diff, errOut)
		}
		if !strings.Contains(errOut, "29 lines in 2 files") || !strings.Contains(errOut, "0 unattributed") {
			t.Errorf("check %v: summary %q, want 29 lines in 2 files and 0 unattributed", args, errOut)
		}
	}
}

func TestCheckExplain(t *testing.T) {
	out, _ := runCheck(t, "", "--explain", "203.0.113.66", "--json", sample)
	type hit struct {
		File    string `json:"file"`
		Line    int    `json:"line"`
		Rule    string `json:"rule"`
		Count   int    `json:"count"`
		Verdict string `json:"verdict"`
	}
	var got []hit
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var h hit
		if err := dec.Decode(&h); err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
		got = append(got, h)
	}
	want := []hit{
		{sample, 8, "executable-attachment", 1, "ban"},
		{sample, 12, "worm-signature", 1, "extend"},
		{sample, 16, "worm-signature", 1, "extend"},
		{sample, 19, "relay-probing", 1, "counted"},
		{sample, 24, "worm-signature", 1, "extend"},
		{sample, 28, "worm-signature", 1, "extend"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("explained hits (-want +got):\n%s", diff)
	}

	text, _ := runCheck(t, "", "--explain", "::ffff:203.0.113.66", sample)
	for _, s := range []string{
		"203.0.113.66: banned by executable-attachment at 2026-11-26T18:19:13Z",
		sample + ":19: 2026-11-26T18:19:14Z relay-probing (smtpd_reject): hit 1 of 3 within 1h0m0s\n\t2026-11-26T18:19:14.059921+00:00 vm postfix/smtpd[5320]: NOQUEUE: reject: RCPT",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("explanation lacks %q:\n%s", s, text)
		}
	}
	if decoy, _ := runCheck(t, "", "--explain", "192.0.2.99", sample); decoy != "192.0.2.99: no offenses\n" {
		t.Errorf("explain decoy = %q, want no offenses", decoy)
	}
	var o, e bytes.Buffer
	if code := run(t.Context(), []string{"check", "--explain", "not-an-address", sample}, strings.NewReader(""), &o, &e); code != exitUsage {
		t.Errorf("bad --explain exited %d, want %d", code, exitUsage)
	}
}

// TestCheckSASLBackendDown: 50 SASL failures in a minute that are the
// server's fault (Dovecot down: "Connection lost to authentication
// server", saslauthd's "generic failure") ban nobody with the default
// rules; five real failures of one client within ten minutes still ban
// it.
func TestCheckSASLBackendDown(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 18, 0, 0, 0, time.UTC)
	var b strings.Builder
	for i := range 50 {
		reason := "Connection lost to authentication server"
		if i%2 == 1 {
			reason = "generic failure"
		}
		fmt.Fprintf(&b, "%s mx1 postfix/submission/smtpd[%d]: warning: unknown[198.51.100.%d]:587: SASL LOGIN authentication failed: %s\n",
			t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), 100+i, 10+i%5, reason)
	}
	out, _ := runCheck(t, b.String(), "-")
	if strings.TrimSpace(out) != "" {
		t.Errorf("server-side SASL failures banned:\n%s", out)
	}
	for i := range 5 {
		fmt.Fprintf(&b, "%s mx1 postfix/submission/smtpd[%d]: warning: unknown[203.0.113.80]:587: SASL LOGIN authentication failed: authentication failure\n",
			t0.Add(time.Minute+time.Duration(i)*time.Minute).Format(time.RFC3339Nano), 200+i)
	}
	out, _ = runCheck(t, b.String(), "-")
	if diff := cmp.Diff([]string{"203.0.113.80"}, firstFields(out)); diff != "" {
		t.Errorf("bans (-want +got):\n%s", diff)
	}
}
