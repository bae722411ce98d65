package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// requireBinary returns the path of the first of names on PATH. Under
// CI=true a missing one fails the test; elsewhere it skips.
func requireBinary(t testing.TB, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs one of %v on PATH (CI=true, so this is a failure, not a skip)", names)
	}
	t.Skipf("needs one of %v on PATH", names)
	return ""
}

const (
	promRules     = "../../deploy/prometheus/wormgate-rules.yml"
	promRulesTest = "../../deploy/prometheus/wormgate-rules-test.yml"
	grafanaJSON   = "../../deploy/grafana/wormgate.json"
)

// TestPromRules is acceptance 3: promtool accepts the shipped rules and
// their unit tests pass, and each alert has a test case in which it
// fires and one in which it does not.
func TestPromRules(t *testing.T) {
	promtool := requireBinary(t, "promtool")
	for _, args := range [][]string{{"check", "rules", promRules}, {"test", "rules", promRulesTest}} {
		out, err := exec.CommandContext(t.Context(), promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, promRules, &rules)
	var tests struct {
		Tests []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				Alert string `yaml:"alertname"`
				Exp   []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, promRulesTest, &tests)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, c := range tc.Cases {
			if len(c.Exp) > 0 {
				fires[c.Alert] = true
			} else {
				quiet[c.Alert] = true
			}
		}
	}
	var alerts, exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			exprs = append(exprs, r.Expr)
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: a case that fires %v, one that does not %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	// The alerts the dashboard issue asks for.
	for _, want := range []string{"WormgateMXSilent", "WormgateFirewallDegraded", "WormgateFirewallWriteErrors", "WormgateReloadFailed",
		"WormgateOutbreak", "WormgateUnattributedEventsRising", "WormgateParseErrorsRising"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s in %s", want, promRules)
		}
	}
	checkMetricNames(t, promRules, strings.Join(exprs, "\n"))
}

// TestGrafanaDashboard: the shipped Grafana dashboard is valid JSON with
// panels, and every metric it queries is one wormgate exports.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(grafanaJSON)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", grafanaJSON, err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) < 10 {
		t.Fatalf("%s: title %q, uid %q, %d panels", grafanaJSON, dash.Title, dash.UID, len(dash.Panels))
	}
	var exprs []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	checkMetricNames(t, grafanaJSON, strings.Join(exprs, "\n"))
}

var metricName = regexp.MustCompile(`\bwormgate_[a-z0-9_]+`)

// checkMetricNames fails for each wormgate_ metric in exprs that no
// production source file of the module names: a renamed metric must not
// leave an alert that can never fire or a panel that stays empty.
func checkMetricNames(t *testing.T, what, exprs string) {
	t.Helper()
	known := exportedMetrics(t)
	used := metricName.FindAllString(exprs, -1)
	if len(used) == 0 {
		t.Fatalf("%s queries no wormgate_ metric", what)
	}
	for _, m := range used {
		if !known[m] {
			t.Errorf("%s queries %s, which wormgate does not export", what, m)
		}
	}
}

// exportedMetrics are the wormgate_ names in the module's non-test Go
// files (metric names are string literals there).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`"(wormgate_[a-z0-9_]+)"`).FindAllStringSubmatch(string(b), -1) {
			known[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !known["wormgate_bans_active"] || !known["wormgate_syslog_sender_last_message_timestamp_seconds"] {
		t.Fatalf("metric scan found too little: %d names", len(known))
	}
	return known
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
