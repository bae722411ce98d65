package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wormgate/wormgate/receiver/syslog/syslogtest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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
// server", saslauthd's "generic failure"), each session ending with its
// failed AUTH in the statistics, ban nobody, with the default rules or
// the aggressive profile; five real failures of one client within ten
// minutes still ban it.
func TestCheckSASLBackendDown(t *testing.T) {
	aggressive := writeConfig(t, "matcher:\n  profile: aggressive\n")
	t0 := time.Date(2026, 11, 26, 18, 0, 0, 0, time.UTC)
	var b strings.Builder
	for i := range 50 {
		reason := "Connection lost to authentication server"
		if i%2 == 1 {
			reason = "generic failure"
		}
		at := t0.Add(time.Duration(i) * time.Second).Format(time.RFC3339Nano)
		client := fmt.Sprintf("unknown[198.51.100.%d]:587", 10+i%5)
		fmt.Fprintf(&b, "%s mx1 postfix/submission/smtpd[%d]: warning: %s: SASL LOGIN authentication failed: %s\n", at, 100+i, client, reason)
		fmt.Fprintf(&b, "%s mx1 postfix/submission/smtpd[%d]: disconnect from %s ehlo=1 auth=0/1 quit=1 commands=2/3\n", at, 100+i, client)
	}
	for _, args := range [][]string{{"-"}, {"--config", aggressive, "-"}} {
		if out, _ := runCheck(t, b.String(), args...); strings.TrimSpace(out) != "" {
			t.Errorf("check %q: server-side SASL failures banned:\n%s", args, out)
		}
	}
	for i := range 5 {
		fmt.Fprintf(&b, "%s mx1 postfix/submission/smtpd[%d]: warning: unknown[203.0.113.80]:587: SASL LOGIN authentication failed: authentication failure\n",
			t0.Add(time.Minute+time.Duration(i)*time.Minute).Format(time.RFC3339Nano), 200+i)
	}
	out, _ := runCheck(t, b.String(), "-")
	if diff := cmp.Diff([]string{"203.0.113.80"}, firstFields(out)); diff != "" {
		t.Errorf("bans (-want +got):\n%s", diff)
	}
}

// runCheckCode runs check and returns its exit code and output.
func runCheckCode(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(t.Context(), append([]string{"check"}, args...), strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

// TestCheckFlagOrder: flags may stand before, between or after the files,
// and "--" ends them.
func TestCheckFlagOrder(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want []string // first fields of standard output
	}{
		{"flags first", []string{"--json", sample}, exitOK, []string{"json 2001:db8:66::66", "json 203.0.113.66"}},
		{"flag after the file", []string{sample, "--explain", "192.0.2.99"}, exitOK, []string{"192.0.2.99:"}},
		{"flags around the file", []string{"--explain", "203.0.113.66", sample, "--json"}, exitOK, []string{"json line 8", "json line 12", "json line 16", "json line 19", "json line 24", "json line 28"}},
		{"flag between files", []string{sample, "--format=rfc3339", "-"}, exitOK, []string{"2001:db8:66::66", "203.0.113.66"}},
		{"-- ends the flags", []string{"--json", "--", sample}, exitOK, []string{"json 2001:db8:66::66", "json 203.0.113.66"}},
		{"-- makes a flag a file", []string{sample, "--", "--json"}, exitFailure, []string{"2001:db8:66::66", "203.0.113.66"}},
		{"-- as a flag's value", []string{"--explain", "--", sample}, exitUsage, nil},
		{"unknown flag after the file", []string{sample, "--jsn"}, exitUsage, nil},
		{"flag without its value at the end", []string{sample, "--explain"}, exitUsage, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCheckCode(t, "", tt.args...)
			if code != tt.code {
				t.Fatalf("check %q exited %d, want %d: %s", tt.args, code, tt.code, errOut)
			}
			if diff := cmp.Diff(tt.want, outputKeys(t, out), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("check %q: output (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

// outputKeys returns the first field of each text line of check's
// output, and "json ADDR" or "json line N" for a JSON ban or hit.
func outputKeys(t *testing.T, out string) []string {
	t.Helper()
	var keys []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "{") {
			if f := strings.Fields(l); len(f) > 0 {
				keys = append(keys, f[0])
			}
			continue
		}
		var v struct {
			Addr string `json:"addr"`
			Line int    `json:"line"`
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("decode %q: %v", l, err)
		}
		if v.Addr != "" {
			keys = append(keys, "json "+v.Addr)
		} else {
			keys = append(keys, fmt.Sprintf("json line %d", v.Line))
		}
	}
	return keys
}

// gzipBytes compresses data.
func gzipBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCheckDamagedFiles: a truncated or corrupt gzip, and a file that
// cannot be opened, are reported with the file (and the last line read);
// what was read is replayed, the other files too, and check exits 1.
func TestCheckDamagedFiles(t *testing.T) {
	raw, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	// The sample, then enough ordinary lines that the damage lies well
	// past what opening a file reads ahead (64 KB).
	var b strings.Builder
	b.Write(raw)
	for i := range 4000 {
		fmt.Fprintf(&b, "2026-11-26T18:2%d:%02d.000000+00:00 vm postfix/smtpd[5320]: connect from unknown[198.51.100.%d]\n", i/600, i/10%60, 1+i%250)
	}
	full := gzipBytes(t, []byte(b.String()))
	truncated := full[:len(full)*3/4]
	corrupt := slices.Clone(full)
	for i := len(corrupt) * 3 / 4; i < len(corrupt)*3/4+64; i++ {
		corrupt[i] ^= 0x55
	}
	// What a reader gets out of the truncated stream before the error:
	// every line up to the cut, the last one partial.
	zr, err := gzip.NewReader(bytes.NewReader(truncated))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err == nil {
		t.Fatal("the truncated gzip reads without error")
	}
	truncatedLines := strings.Count(string(got), "\n")
	if !strings.HasSuffix(string(got), "\n") {
		truncatedLines++
	}

	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tr := write("mail.log.2.gz", truncated)
	co := write("mail.log.3.gz", corrupt)
	short := write("mail.log.4.gz", full[:40]) // damaged within the read-ahead
	relay := write("mail.log", []byte(
		"2026-11-26T19:00:00.000000+00:00 vm postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.70]: 454 4.7.1 <v@x>: Relay access denied; proto=ESMTP helo=<x>\n"+
			"2026-11-26T19:00:01.000000+00:00 vm postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.70]: 454 4.7.1 <v@x>: Relay access denied; proto=ESMTP helo=<x>\n"+
			"2026-11-26T19:00:02.000000+00:00 vm postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.70]: 454 4.7.1 <v@x>: Relay access denied; proto=ESMTP helo=<x>\n"))
	missing := filepath.Join(dir, "mail.log.9.gz")

	tests := []struct {
		name       string
		args       []string
		want       []string // banned addresses
		wantErrOut []string // in standard error
	}{
		{
			name: "truncated gzip",
			args: []string{tr},
			want: []string{"2001:db8:66::66", "203.0.113.66"},
			wantErrOut: []string{
				// The last line, cut short, may be unparsable.
				fmt.Sprintf("check: %s: %d lines (", tr, truncatedLines),
				fmt.Sprintf("); damaged: scan %s: after line %d: read %s: unexpected EOF; the lines before were replayed\n", tr, truncatedLines, tr),
				fmt.Sprintf("wormgate check: damaged or truncated: scan %s: after line %d: read %s: unexpected EOF\n", tr, truncatedLines, tr),
			},
		},
		{
			name:       "corrupt gzip among good files",
			args:       []string{relay, co},
			want:       []string{"2001:db8:66::66", "203.0.113.66", "203.0.113.70"},
			wantErrOut: []string{"wormgate check: damaged or truncated: scan " + co + ": after line "},
		},
		{
			name:       "damaged within the read-ahead, and missing",
			args:       []string{short, relay, missing},
			want:       []string{"203.0.113.70"},
			wantErrOut: []string{"wormgate check: open " + short + ": unexpected EOF\nopen " + missing + ": no such file or directory\n", "check: 3 lines in 1 files"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCheckCode(t, "", tt.args...)
			if code != exitFailure {
				t.Errorf("exit code %d, want %d", code, exitFailure)
			}
			if diff := cmp.Diff(tt.want, firstFields(out)); diff != "" {
				t.Errorf("banned (-want +got):\n%s\nstderr: %s", diff, errOut)
			}
			for _, s := range tt.wantErrOut {
				if !strings.Contains(errOut, s) {
					t.Errorf("standard error lacks %q:\n%s", s, errOut)
				}
			}
		})
	}
}

// TestCheckUnparsable: unparsable lines are counted per file; a file of
// which not one line could be read fails check, with the formats it
// reads.
func TestCheckUnparsable(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Date(2026, 11, 26, 18, 20, 0, 0, time.UTC)
	garbage := writeLog(t, dir, "app.log", []string{"GET / HTTP/1.1 200", "", "{\"level\":\"info\"}", "12:00:01 postfix/smtpd[1]: x"}, mtime)
	mixed := writeLog(t, dir, "mixed.log", append(syslogtest.SampleLines(), "garbage", "more garbage"), mtime)
	tests := []struct {
		name       string
		args       []string
		code       int
		want       []string
		wantErrOut []string
	}{
		{
			name: "some lines unparsable",
			args: []string{mixed},
			code: exitOK,
			want: []string{"2001:db8:66::66", "203.0.113.66"},
			wantErrOut: []string{
				"check: 31 lines in 1 files (2 unparsable, 0 too long)",
				"check: " + mixed + ": 31 lines (2 unparsable, 0 too long, 0 blank or comments)\n",
			},
		},
		{
			name: "every line unparsable",
			args: []string{mixed, garbage},
			code: exitFailure,
			want: []string{"2001:db8:66::66", "203.0.113.66"},
			wantErrOut: []string{
				"check: " + garbage + ": 4 lines (3 unparsable, 0 too long, 1 blank or comments)\n",
				"check: " + garbage + ": not one line in a format check reads: check reads RFC 3164",
				"journalctl -o short, short-precise, short-iso and short-iso-precise; see --format\n",
				"wormgate check: " + garbage + ": not one line in a format check reads (see the formats above)\n",
			},
		},
		{
			name: "every line in another format than --format",
			args: []string{"--format", "journald-short-iso", mixed},
			code: exitFailure,
			wantErrOut: []string{
				"check: " + mixed + ": 31 lines (31 unparsable, 29 of them not journald-short-iso, 0 too long, 0 blank or comments)\n",
				"wormgate check: " + mixed + ": not one line in a format check reads",
			},
		},
		{
			name: "an empty file is no failure",
			args: []string{writeLog(t, dir, "empty.log", nil, mtime)},
			code: exitOK,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCheckCode(t, "", tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d: %s", code, tt.code, errOut)
			}
			if diff := cmp.Diff(tt.want, firstFields(out), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("banned (-want +got):\n%s", diff)
			}
			for _, s := range tt.wantErrOut {
				if !strings.Contains(errOut, s) {
					t.Errorf("standard error lacks %q:\n%s", s, errOut)
				}
			}
		})
	}
}

// journalExport writes the sample as `journalctl -o mode` would: the
// same records with journalctl's stamp, after its boot comment.
func journalExport(t *testing.T, mode string) []string {
	t.Helper()
	out := []string{"-- Boot 5d1e0c4b1a2f4f0e9d3c2b1a0f9e8d7c --"}
	zone := time.FixedZone("", 3600)
	for _, l := range syslogtest.SampleLines() {
		stamp, rest, _ := strings.Cut(l, " ")
		tm, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil {
			t.Fatal(err)
		}
		tm = tm.In(zone)
		layout := map[string]string{
			"short":             "Jan 02 15:04:05",
			"short-precise":     "Jan 02 15:04:05.000000",
			"short-iso":         "2006-01-02T15:04:05-0700",
			"short-iso-precise": "2006-01-02T15:04:05.000000-0700",
		}[mode]
		out = append(out, tm.Format(layout)+" "+rest)
	}
	return out
}

// TestCheckJournald replays the sample exported by journalctl in each
// text format: the same bans as from rsyslog's file, no line unparsable;
// --format reads each export as its own format only.
func TestCheckJournald(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)
	wantBans := []string{"2001:db8:66::66", "203.0.113.66"}
	for _, mode := range []string{"short", "short-precise", "short-iso", "short-iso-precise"} {
		p := writeLog(t, dir, mode+".log", journalExport(t, mode), mtime)
		for _, format := range []string{"auto", "journald-" + mode, "rfc3339"} {
			t.Run(mode+"/"+format, func(t *testing.T) {
				code, out, errOut := runCheckCode(t, "", "--format", format, p)
				if format == "rfc3339" {
					if code != exitFailure || !strings.Contains(errOut, "29 of them not rfc3339") {
						t.Errorf("journalctl -o %s read as rfc3339: exit %d, stderr %s", mode, code, errOut)
					}
					return
				}
				if code != exitOK {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				if diff := cmp.Diff(wantBans, firstFields(out)); diff != "" {
					t.Errorf("banned (-want +got):\n%s", diff)
				}
				if s := "check: " + p + ": 30 lines (0 unparsable, 0 too long, 1 blank or comments)\n"; !strings.Contains(errOut, s) {
					t.Errorf("standard error lacks %q:\n%s", s, errOut)
				}
			})
		}
	}
}

// TestCheckTimeRange: --since and --until count only the offenses within
// the range; a client= record before it still attributes a reject in
// it. Bad times are usage errors.
func TestCheckTimeRange(t *testing.T) {
	local := func(h, m, s int) time.Time { return time.Date(2026, 8, 3, h, m, s, 0, time.Local) }
	line := func(tm time.Time, text string) string {
		return tm.Format(time.RFC3339Nano) + " mx1 " + text
	}
	relay := func(tm time.Time) string {
		return line(tm, "postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[203.0.113.70]: 454 4.7.1 <v@x>: Relay access denied; proto=ESMTP helo=<x>")
	}
	in := strings.Join([]string{
		line(local(10, 0, 0), "postfix/smtpd[1]: C31CFB81BD: client=unknown[203.0.113.66]"),
		line(local(10, 0, 5), "postfix/cleanup[2]: C31CFB81BD: reject: body x from unknown[203.0.113.66]; from=<a@[192.0.2.1]> to=<b@example.test> proto=ESMTP helo=<x>: 5.7.1 W32.Mydoom worm"),
		relay(local(11, 0, 0)), relay(local(11, 10, 0)), relay(local(11, 20, 0)),
	}, "\n") + "\n"
	tests := []struct {
		name       string
		args       []string
		code       int
		want       []string
		wantErrOut string
	}{
		{"no range", nil, exitOK, []string{"203.0.113.66", "203.0.113.70"}, ""},
		{"since between client= and reject", []string{"--since", local(10, 0, 1).Format(time.RFC3339)}, exitOK, []string{"203.0.113.66", "203.0.113.70"}, "check: 1 lines outside --since "},
		{"since in local time", []string{"--since", "2026-08-03 10:00:06"}, exitOK, []string{"203.0.113.70"}, "check: 2 lines outside --since "},
		{"since cuts a threshold short", []string{"--since", "2026-08-03T11:05:00"}, exitOK, nil, "check: 3 lines outside --since "},
		{"until, inclusive", []string{"--until", local(10, 0, 5).UTC().Format(time.RFC3339)}, exitOK, []string{"203.0.113.66"}, "check: 3 lines outside --until "},
		{"both", []string{"--since", "2026-08-03 10:30:00", "--until", "2026-08-03 11:20:00"}, exitOK, []string{"203.0.113.70"}, "check: 2 lines outside --since "},
		{"a day", []string{"--since", "2026-08-04"}, exitOK, nil, "check: 5 lines outside --since "},
		{"bad time", []string{"--since", "yesterday"}, exitUsage, nil, `wormgate check: usage: --since "yesterday": want RFC 3339`},
		{"empty range", []string{"--since", "2026-08-03 12:00:00", "--until", "2026-08-03 11:00:00"}, exitUsage, nil, "wormgate check: usage: --until 2026-08-03 11:00:00 is before --since 2026-08-03 12:00:00\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCheckCode(t, in, append(tt.args, "-")...)
			if code != tt.code {
				t.Fatalf("exit code %d, want %d: %s", code, tt.code, errOut)
			}
			if diff := cmp.Diff(tt.want, firstFields(out), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("banned (-want +got):\n%s\nstderr: %s", diff, errOut)
			}
			if !strings.Contains(errOut, tt.wantErrOut) {
				t.Errorf("standard error lacks %q:\n%s", tt.wantErrOut, errOut)
			}
		})
	}
}

// TestCheckJSONDurations: durations in --json read as Go writes them.
func TestCheckJSONDurations(t *testing.T) {
	out, _ := runCheck(t, "", "--json", "--explain", "203.0.113.66", sample)
	var hits []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var h map[string]any
		if err := dec.Decode(&h); err != nil {
			t.Fatal(err)
		}
		hits = append(hits, h)
	}
	if len(hits) != 6 {
		t.Fatalf("%d hits, want 6", len(hits))
	}
	for _, h := range hits {
		if diff := cmp.Diff("1h0m0s", h["window"]); diff != "" {
			t.Errorf("window (-want +got):\n%s", diff)
		}
	}
}

// TestParseInterspersed: flags among the arguments, "--" as the end of
// the flags or as a flag's value.
func TestParseInterspersed(t *testing.T) {
	type result struct {
		Config string
		JSON   bool
		Rest   []string
	}
	tests := []struct {
		args []string
		want result
	}{
		{[]string{"a", "--json", "b"}, result{JSON: true, Rest: []string{"a", "b"}}},
		{[]string{"a", "--config", "c.yaml", "-"}, result{Config: "c.yaml", Rest: []string{"a", "-"}}},
		{[]string{"--config=c.yaml", "a", "--", "--json"}, result{Config: "c.yaml", Rest: []string{"a", "--json"}}},
		{[]string{"--config", "--", "--json", "a"}, result{Config: "--", JSON: true, Rest: []string{"a"}}},
		{[]string{"--json", "--", "a"}, result{JSON: true, Rest: []string{"a"}}},
		{[]string{"--", "--", "a"}, result{Rest: []string{"--", "a"}}},
		{nil, result{}},
	}
	for _, tt := range tests {
		fs := newFlagSet("test", "test", io.Discard)
		config := fs.String("config", "", "")
		asJSON := fs.Bool("json", false, "")
		rest, err := parseInterspersed(fs, tt.args)
		if err != nil {
			t.Errorf("parseInterspersed(%q) = %v", tt.args, err)
			continue
		}
		if diff := cmp.Diff(tt.want, result{*config, *asJSON, rest}, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("parseInterspersed(%q) (-want +got):\n%s", tt.args, diff)
		}
	}
}
