package yamlconf

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"

	"github.com/wormgate/wormgate/receiver/configerr"
)

// upper is a yaml.Unmarshaler: it takes a scalar and upper-cases it, and
// refuses "bad" with an unworded error.
type upper string

func (u *upper) UnmarshalYAML(n *yaml.Node) error {
	if n.Value == "bad" {
		return errors.New("parse(\"bad\"): refused")
	}
	*u = upper(strings.ToUpper(n.Value))
	return nil
}

// item has defaults of its own, as matcher.Rule does.
type item struct {
	Name  string `yaml:"name"`
	Count int    `yaml:"count"`
}

func (i *item) SetDefaults() { *i = item{Count: 7} }

type Inner struct {
	Level  slog.Level `yaml:"level"`
	Weight float32    `yaml:"weight"`
}

type sample struct {
	Inner    `yaml:",inline"`
	Name     string            `yaml:"name"`
	On       bool              `yaml:"on"`
	Small    int8              `yaml:"small"`
	Port     uint16            `yaml:"port" desc:"a port (1-65535)"`
	Ports    []uint16          `yaml:"ports"`
	Wait     time.Duration     `yaml:"wait"`
	Nets     []netip.Prefix    `yaml:"nets"`
	Addr     *netip.Addr       `yaml:"addr"`
	Items    []item            `yaml:"items"`
	ByName   map[string]item   `yaml:"by_name"`
	Up       upper             `yaml:"up"`
	Sub      *struct{ X int }  `yaml:"sub"`
	Labels   map[string]string `yaml:"labels"`
	Skipped  int               `yaml:"-"`
	Untagged int
}

func TestDecode(t *testing.T) {
	addr := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		name, in string
		want     func(*sample)
		errs     []string
	}{
		{name: "empty file", in: ""},
		{name: "only comments", in: "# nothing\n"},
		{name: "every kind", in: `
level: warn
weight: 2.5
name: 25
on: true
small: -128
port: 0x19
ports: [25, 465]
wait: 1h30m
nets: [192.0.2.0/24]
addr: 192.0.2.1
items:
  - name: a
  - name: b
    count: 2
by_name:
  x: {name: c}
up: shout
sub: {x: 3}
labels: {a: b}
untagged: 9
`, want: func(s *sample) {
			s.Level, s.Weight, s.Name, s.On, s.Small, s.Port = slog.LevelWarn, 2.5, "25", true, -128, 25
			s.Ports, s.Wait = []uint16{25, 465}, 90*time.Minute
			s.Nets, s.Addr = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, &addr
			s.Items = []item{{Name: "a", Count: 7}, {Name: "b", Count: 2}}
			s.ByName = map[string]item{"x": {Name: "c", Count: 7}}
			s.Up, s.Sub, s.Labels, s.Untagged = "SHOUT", &struct{ X int }{3}, map[string]string{"a": "b"}, 9
		}},
		{name: "nulls empty lists and keep sections", in: "ports:\nnets: ~\naddr:\n", want: func(s *sample) {
			s.Ports, s.Nets, s.Addr = nil, nil, nil
		}},
		{name: "anchors and merge keys", in: "items:\n  - &a {name: a, count: 1}\n  - <<: *a\n    name: b\nname: &n x\nup: *n\n", want: func(s *sample) {
			s.Items = []item{{Name: "a", Count: 1}, {Name: "b", Count: 1}}
			s.Name, s.Up = "x", "X"
		}},
		{name: "wrong forms", in: "name: [a]\nports: 25\nitems: {name: a}\nwait: {}\nnets: [[1]]\n", errs: []string{
			`1: name: want a string, not a list`,
			`2: ports: want a list, not 25`,
			`3: items: want a list, not a mapping`,
			`4: wait: want a duration (e.g. 10m, 1h30m), not a mapping`,
			`5: nets[0]: want an IP prefix, not a list`,
		}},
		{name: "numbers", in: "small: 128\nport: -1\nports: [65536, x, 1.0]\nweight: 1e300\nuntagged: 99999999999999999999\n", errs: []string{
			`1: small: 128 is not a whole number from -128 to 127`,
			`2: port: -1 is not a port (1-65535)`,
			`3: ports[0]: 65536 is not a whole number from 0 to 65535`,
			`3: ports[1]: "x" is not a whole number from 0 to 65535`,
			`3: ports[2]: 1.0 is not a whole number from 0 to 65535`,
			`4: weight: 1e300 is not a number`,
			`5: untagged: 99999999999999999999 is not a whole number`,
		}},
		{name: "text values", in: "level: loud\naddr: 192.0.2.300\nup: bad\non: yes\nwait: 5\n", errs: []string{
			`1: level: "loud" is not a log level (debug, info, warn or error)`,
			`2: addr: "192.0.2.300" is not an IP address: IPv4 field has value >255`,
			`3: up: "bad" is not a string: refused`,
			`4: on: "yes" is not true or false`,
			`5: wait: 5 is not a duration (e.g. 10m, 1h30m)`,
		}},
		{name: "unknown and duplicate keys", in: "nmae: x\nitems:\n  - name: a\n    cuont: 1\nname: y\nname: z\nskipped: 1\n? [a]\n: b\n", errs: []string{
			`1: nmae: unknown field (did you mean name?)`,
			`4: items[0].cuont: unknown field (did you mean count?)`,
			`6: name: given twice (first on line 5)`,
			`7: skipped: unknown field`,
			`8: a key must be a name, not a list`,
		}},
		{name: "missing values", in: "name:\nwait: ~\nlevel:\n", errs: []string{
			`1: name: missing value (want a string)`,
			`2: wait: missing value (want a duration (e.g. 10m, 1h30m))`,
			`3: level: missing value (want a log level (debug, info, warn or error))`,
		}},
		{name: "not a mapping", in: "- a\n", errs: []string{`1: want a mapping (key: value lines), not a list`}},
		{name: "syntax", in: "name: x\nports: [1,\n", errs: []string{`3: not valid YAML: did not find expected node content`}},
		{name: "two documents", in: "name: x\n---\nname: y\n", errs: []string{`2: a second YAML document (after ---): the configuration is one document`}, want: func(s *sample) { s.Name = "x" }},
		{name: "unknown anchor", in: "name: *x\n", errs: []string{`not valid YAML: unknown anchor 'x' referenced`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := func() sample {
				return sample{Name: "default", Ports: []uint16{1}, Nets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Addr: &addr}
			}
			got := base()
			d := decodeFile([]byte(tt.in), &got)
			var errs []string
			for _, fe := range d.errs {
				s := fe.Error()
				if fe.Line > 0 {
					s = fmt.Sprint(fe.Line, ": ", s)
				}
				errs = append(errs, s)
			}
			if diff := cmp.Diff(tt.errs, errs); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if tt.errs != nil && tt.want == nil {
				return
			}
			want := base()
			if tt.want != nil {
				tt.want(&want)
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	in := "name: x\nitems:\n  - name: a\n  - count: 0\nports: [nope]\n"
	var s sample
	validate := func() error {
		return errors.Join(
			configerr.New("items[1].name", configerr.ErrRequired, "required"),
			configerr.New("items[1].count", configerr.ErrOutOfRange, "0 is out of range"),
			configerr.New("ports[0]", configerr.ErrRequired, "repeats the decoding error"),
			configerr.New("wait", configerr.ErrRequired, "not in the file"),
			configerr.Within("name", configerr.New("", configerr.ErrInvalid, "at its own line")),
		)
	}
	err := Load("f.yaml", []byte(in), &s, validate)
	want := `f.yaml:1: name: at its own line
f.yaml:4: items[1].name: required
f.yaml:4: items[1].count: 0 is out of range
f.yaml:5: ports[0]: "nope" is not a whole number from 0 to 65535
f.yaml: wait: not in the file`
	if diff := cmp.Diff(want, fmt.Sprint(err)); diff != "" {
		t.Errorf("Load() (-want +got):\n%s", diff)
	}
	if !errors.Is(err, configerr.ErrOutOfRange) || !errors.Is(err, configerr.ErrType) {
		t.Errorf("Load() = %v, want it to wrap every problem's sentinel", err)
	}
	if err := Load("f.yaml", []byte("name: x\n"), &s, func() error { return nil }); err != nil {
		t.Errorf("Load(valid) = %v", err)
	}
}

func TestCyclicMerge(t *testing.T) {
	var s sample
	d := decodeFile([]byte("items: [&a {<<: [*a, *a]}]\n"), &s)
	if len(d.errs) == 0 || !strings.Contains(d.errs[0].Error(), "more than 100000 values") {
		t.Fatalf("errors = %v, want the value limit", d.errs)
	}
}

func TestPlainCause(t *testing.T) {
	tests := []struct{ in, want string }{
		{`netip.ParsePrefix("1.2.3.300/24"): ParseAddr("1.2.3.300"): IPv4 field has value >255`, "IPv4 field has value >255"},
		{`ParseAddr("a\"): b"): unexpected character`, "unexpected character"},
		{`no call here: (x)`, `no call here: (x)`},
		{`f("unterminated): x`, `f("unterminated): x`},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, plainCause(tt.in)); diff != "" {
			t.Errorf("plainCause(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestAliasBomb(t *testing.T) {
	// Each level doubles the values; without a bound this would be 2^30.
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x]\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d]\n", i, i, i-1, i-1)
	}
	b.WriteString("labels: {k: *a30}\n")
	var s struct {
		Labels map[string][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][]string `yaml:"labels"`
	}
	d := decodeFile([]byte(b.String()), &s)
	if len(d.errs) == 0 || !strings.Contains(d.errs[len(d.errs)-1].Error(), "more than 100000 values") {
		t.Fatalf("errors = %v, want the value limit", d.errs)
	}
}

// FuzzDecode checks that no file makes the walker panic, and that every
// problem it reports is a worded configerr error.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: x\nports: [1, 2]\nitems: [{name: a}]\nby_name: {a: {count: 2}}\n"))
	f.Add([]byte("items:\n  - &a {name: a}\n  - <<: [*a, *a]\n    count: 3\n"))
	f.Add([]byte("a: &x [*x]\nsub: *x\n"))
	f.Add([]byte("sub: &a {<<: *a}\n"))
	f.Add([]byte("? [a]\n: b\n--- \nname: 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s sample
		d := decodeFile(data, &s)
		for _, fe := range d.errs {
			if !configerr.Worded(fe.Err) {
				t.Fatalf("unworded error %v", fe)
			}
		}
		_ = Load("f.yaml", data, &s, func() error { return nil })
	})
}
