// Package yamlconf decodes a YAML configuration file over a Go value and
// reports every problem of the file at once, each with its YAML path and
// line and in words.
//
// yaml.v3's own decoder stops at the first error of a kind and names Go
// types ("cannot unmarshal !!int `70000` into uint16", "field neverblock
// not found in type enforcer.Config"). This package parses the file into
// a yaml.Node tree and walks it against the Go value with reflection
// instead, so that it can keep going after an error, knows the path of
// every value, and remembers the line of every path for the errors that
// validation finds later.
package yamlconf

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/wormgate/wormgate/receiver/configerr"
)

// Defaulter is implemented (on the pointer) by types whose zero value is
// not what a value the file leaves out means. The decoder calls
// SetDefaults on every new list element, map value and pointer target
// before it decodes the file's node over it, just as the whole file is
// decoded over the defaults: a rule that names no threshold gets the
// default one here and nowhere else.
type Defaulter interface{ SetDefaults() }

// Limits that keep a hostile file cheap: a configuration has a few hundred
// values, and yaml aliases could otherwise make a short file expand to
// billions.
const (
	maxValues   = 100_000
	maxShowText = 64
)

// decoder walks one document. It never stops at an error: it records it
// and moves on to the next value.
type decoder struct {
	lines  map[string]int
	errs   []*configerr.FieldError
	values int
}

// decodeFile decodes data over v, a non-nil pointer to a struct.
func decodeFile(data []byte, v any) *decoder {
	d := &decoder{lines: make(map[string]int)}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if !errors.Is(err, io.EOF) {
			d.syntaxError(err)
		}
		return d
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntaxError(err)
	default:
		d.fail("", next.Line, configerr.ErrSyntax, "a second YAML document (after ---): the configuration is one document")
	}
	n := &root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return d
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// A file of only comments: the defaults.
		return d
	}
	d.decode(n, reflect.ValueOf(v).Elem(), "", "")
	return d
}

// yamlLine finds the line in yaml.v3's syntax errors ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// parserErrors start the messages of yaml.v3's parser (as opposed to its
// scanner), whose "line" is counted from 0: theirs is one too low.
var parserErrors = []string{"did not find expected", "found undefined tag handle", "found duplicate %", "found incompatible YAML document"}

func (d *decoder) syntaxError(err error) {
	msg, line := err.Error(), 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
		for _, p := range parserErrors {
			if strings.HasPrefix(msg, p) {
				line++
				break
			}
		}
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	d.fail("", line, configerr.ErrSyntax, "not valid YAML: %s", msg)
}

func (d *decoder) fail(path string, line int, kind error, format string, args ...any) {
	d.errs = append(d.errs, &configerr.FieldError{Path: path, Line: line, Err: configerr.Errorf(kind, format, args...)})
}

// decode sets v from n. what, from a field's `desc` tag, names the value
// in messages ("a port (1-65535)") where its Go type says too little.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path, what string) {
	if !d.count(n, path) {
		return
	}
	for n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.fail(path, n.Line, configerr.ErrSyntax, "alias *%s names no anchor", n.Value)
			return
		}
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		d.null(n, v, path, what)
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			p := reflect.New(v.Type().Elem())
			setDefaults(p)
			v.Set(p)
		}
		d.decode(n, v.Elem(), path, what)
		return
	}
	switch u := v.Addr().Interface().(type) {
	case yaml.Unmarshaler:
		if err := u.UnmarshalYAML(n); err != nil {
			d.valueError(n, v.Type(), path, what, err)
		}
		return
	case encoding.TextUnmarshaler:
		if n.Kind != yaml.ScalarNode {
			d.wrongForm(n, v.Type(), path, what)
			return
		}
		if err := u.UnmarshalText([]byte(n.Value)); err != nil {
			d.valueError(n, v.Type(), path, what, err)
		}
		return
	}
	if v.Type() == durationType {
		d.duration(n, v, path, what)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path, what)
	case reflect.Map:
		d.mapping(n, v, path, what)
	case reflect.String, reflect.Bool, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.scalar(n, v, path, what)
	default:
		// A Go type no configuration should have (a channel, an
		// interface): a programming error, reported rather than panicking.
		d.fail(path, n.Line, configerr.ErrInvalid, "cannot be set in the file")
	}
}

// count counts one more value and reports whether it is within the limit.
func (d *decoder) count(n *yaml.Node, path string) bool {
	d.values++
	if d.values == maxValues+1 {
		d.fail(path, n.Line, configerr.ErrInvalid, "the file has more than %d values (aliases included)", maxValues)
	}
	return d.values <= maxValues
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func setDefaults(p reflect.Value) {
	if dv, ok := p.Interface().(Defaulter); ok {
		dv.SetDefaults()
	}
}

// null handles an empty value ("key:" or "key: ~"): an empty list, map
// or pointer; a section left as it is; a missing value for the rest,
// since silently keeping a default the file seems to clear would surprise.
func (d *decoder) null(n *yaml.Node, v reflect.Value, path, what string) {
	switch v.Kind() {
	case reflect.Slice, reflect.Map, reflect.Pointer:
		v.SetZero()
	case reflect.Struct:
		if _, text := v.Addr().Interface().(encoding.TextUnmarshaler); !text {
			return
		}
		fallthrough
	default:
		d.fail(path, n.Line, configerr.ErrRequired, "missing value (want %s)", describe(v.Type(), what))
	}
}

// field is a struct field as the file names it.
type field struct {
	index []int
	what  string
}

// fields lists t's keys the way yaml.v3 does: the yaml tag's name or the
// lower-cased Go name, "-" skipped, ",inline" structs flattened.
func fields(t reflect.Type) map[string]field {
	out := make(map[string]field)
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(append([]int(nil), index...), i)
			if strings.Contains(","+opts+",", ",inline,") && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			out[name] = field{index: idx, what: f.Tag.Get("desc")}
		}
	}
	walk(t, nil)
	return out
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.wrongForm(n, v.Type(), path, "")
		return
	}
	fs := fields(v.Type())
	d.pairs(n, path, func(k, val *yaml.Node, p string) {
		f, ok := fs[k.Value]
		if !ok {
			d.fail(p, k.Line, configerr.ErrUnknownField, "unknown field%s", suggest(k.Value, fs))
			return
		}
		d.decode(val, v.FieldByIndex(f.index), p, f.what)
	})
}

// pairs calls do for every key of a mapping with its path, after
// recording its line; it reports keys that are not names and keys given
// twice. Keys merged in with "<<" come first, so that the mapping's own
// keys override them wherever they stand, as in yaml.v3.
func (d *decoder) pairs(n *yaml.Node, path string, do func(k, v *yaml.Node, path string)) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			d.merge(n.Content[i+1], path, do)
		}
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(path, k.Line, configerr.ErrType, "a key must be a name, not %s", show(k))
			continue
		}
		p := configerr.Join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.fail(p, k.Line, configerr.ErrDuplicate, "given twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.lines[p] = k.Line
		do(k, val, p)
	}
}

// merge handles "<<: *anchor" and "<<: [*a, *b]".
func (d *decoder) merge(n *yaml.Node, path string, do func(k, v *yaml.Node, path string)) {
	if !d.count(n, path) {
		return
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		d.pairs(n, path, do)
	case yaml.SequenceNode:
		for _, m := range n.Content {
			d.merge(m, path, do)
		}
	default:
		d.fail(path, n.Line, configerr.ErrType, "<< must merge a mapping, not %s", show(n))
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path, what string) {
	if n.Kind != yaml.SequenceNode {
		d.wrongForm(n, v.Type(), path, what)
		return
	}
	// A list in the file replaces the default list whole, as yaml.v3 does.
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.lines[p] = e.Line
		setDefaults(s.Index(i).Addr())
		d.decode(e, s.Index(i), p, what)
	}
	v.Set(s)
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path, what string) {
	t := v.Type()
	if n.Kind != yaml.MappingNode {
		d.wrongForm(n, t, path, what)
		return
	}
	if t.Key().Kind() != reflect.String {
		d.fail(path, n.Line, configerr.ErrInvalid, "cannot be set in the file")
		return
	}
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	d.pairs(n, path, func(k, val *yaml.Node, p string) {
		e := reflect.New(t.Elem())
		setDefaults(e)
		d.decode(val, e.Elem(), p, what)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e.Elem())
	})
	v.Set(m)
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value, path, what string) {
	if n.Kind != yaml.ScalarNode {
		d.wrongForm(n, v.Type(), path, what)
		return
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		d.fail(path, n.Line, configerr.ErrType, "%s is not %s", show(n), describe(v.Type(), what))
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path, what string) {
	t := v.Type()
	if n.Kind != yaml.ScalarNode {
		d.wrongForm(n, t, path, what)
		return
	}
	notA := func(kind error) { d.fail(path, n.Line, kind, "%s is not %s", show(n), describe(t, what)) }
	tag := n.ShortTag()
	switch v.Kind() {
	case reflect.String:
		// Any scalar is text, as in yaml.v3: "table: 25" is the string "25".
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if tag != "!!bool" || n.Decode(&b) != nil {
			notA(configerr.ErrType)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if tag != "!!int" {
			notA(configerr.ErrType)
			return
		}
		if n.Decode(&i) != nil || v.OverflowInt(i) {
			notA(configerr.ErrOutOfRange)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if tag != "!!int" {
			notA(configerr.ErrType)
			return
		}
		if n.Decode(&u) != nil || v.OverflowUint(u) {
			notA(configerr.ErrOutOfRange)
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		var f float64
		if (tag != "!!float" && tag != "!!int") || n.Decode(&f) != nil {
			notA(configerr.ErrType)
			return
		}
		if v.OverflowFloat(f) {
			notA(configerr.ErrOutOfRange)
			return
		}
		v.SetFloat(f)
	}
}

// wrongForm reports a list or mapping where another form belongs, or a
// single value where a list or mapping belongs.
func (d *decoder) wrongForm(n *yaml.Node, t reflect.Type, path, what string) {
	d.fail(path, n.Line, configerr.ErrType, "want %s, not %s", describe(t, what), show(n))
}

// valueError reports a value its type's own parser refused. Errors the
// type words itself (configerr.Errorf) are shown as they are; others get
// the value and a description of the type, and their text without Go
// function names.
func (d *decoder) valueError(n *yaml.Node, t reflect.Type, path, what string, err error) {
	if configerr.Worded(err) {
		d.errs = append(d.errs, &configerr.FieldError{Path: path, Line: n.Line, Err: err})
		return
	}
	desc, ok := described[t]
	if !ok || what != "" {
		desc = typeText{what: describe(t, what), cause: true}
	}
	if !desc.cause {
		d.fail(path, n.Line, configerr.ErrType, "%s is not %s", show(n), desc.what)
		return
	}
	d.fail(path, n.Line, configerr.ErrType, "%s is not %s: %s", show(n), desc.what, plainCause(err.Error()))
}

// typeText names a type in messages; cause says whether the parser's
// own error adds anything.
type typeText struct {
	what  string
	cause bool
}

// described names the library types a configuration uses; the others are
// named by their kind.
var described = map[reflect.Type]typeText{
	reflect.TypeFor[netip.Prefix]():   {"an IP prefix", true},
	reflect.TypeFor[netip.Addr]():     {"an IP address", true},
	reflect.TypeFor[netip.AddrPort](): {"an IP address and port", true},
	reflect.TypeFor[slog.Level]():     {"a log level (debug, info, warn or error)", false},
	durationType:                      {"a duration (e.g. 10m, 1h30m)", false},
}

// describe names what a value of t should be.
func describe(t reflect.Type, what string) string {
	if what != "" {
		return what
	}
	if d, ok := described[t]; ok {
		return d.what
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describe(t.Elem(), "")
	case reflect.Struct, reflect.Map:
		return "a mapping (key: value lines)"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if t.Size() == 8 {
			return "a whole number"
		}
		return fmt.Sprintf("a whole number from %d to %d", -(int64(1) << (t.Bits() - 1)), int64(1)<<(t.Bits()-1)-1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if t.Size() == 8 {
			return "a whole number of at least 0"
		}
		return fmt.Sprintf("a whole number from 0 to %d", uint64(1)<<t.Bits()-1)
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a value"
}

// show quotes a scalar the way it should appear in a message: numbers and
// booleans as written, text quoted, long text cut.
func show(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "*" + n.Value
	}
	s := n.Value
	if len(s) > maxShowText {
		cut := maxShowText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	switch n.ShortTag() {
	case "!!int", "!!float", "!!bool":
		return s
	}
	return strconv.Quote(s)
}

// plainCause drops the Go call prefixes from a parser's error,
// `netip.ParsePrefix("x"): ParseAddr("x"): IPv4 field has value >255`
// becoming "IPv4 field has value >255": the message shows the value
// already, and names no Go function.
func plainCause(s string) string {
	for {
		open := strings.IndexByte(s, '(')
		if open <= 0 || strings.IndexFunc(s[:open], func(r rune) bool {
			return r != '.' && r != '_' && !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
		}) >= 0 {
			return s
		}
		q, err := strconv.QuotedPrefix(s[open+1:])
		if err != nil {
			return s
		}
		rest, ok := strings.CutPrefix(s[open+1+len(q):], "): ")
		if !ok {
			return s
		}
		s = rest
	}
}

// suggest offers the known key closest to an unknown one: the same but for
// case and separators, or at most two typos away.
func suggest(key string, fs map[string]field) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("_", "", "-", "", " ", "").Replace(s))
	}
	best, bestDist := "", 3
	for name := range fs {
		dist := 0
		if norm(name) != norm(key) {
			dist = editDistance(key, name)
		}
		if dist < bestDist || dist == bestDist && name < best {
			best, bestDist = name, dist
		}
	}
	if best == "" || bestDist > 0 && len(key) < 4 {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance, capped for long strings: keys
// are short, and a long unknown key is no typo.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
