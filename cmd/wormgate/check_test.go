package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sample = "testdata/postfix-3.7-rsyslog-file.log"

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
				{Addr: "203.0.113.66", Rule: "executable-attachment", Hits: 5},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("bans (-want +got):\n%s", diff)
			}
		})
	}
}
