// Package pveschema checks values against Proxmox VE's JSON schemas the way PVE's own
// JSONSchema.pm does (check_prop, check_type, check_object, check_format,
// parse_property_string), with its error messages, so the simulated pveproxy refuses what
// pveproxy refuses and says so in the same words. Schemas are PVE's, as apidata.js publishes
// them (sim/reference); the named formats PVE registers in code (pve-node, pve-qm-boot, …)
// are read from the Perl sources and live in formats*.go.
//
// Values are what a request decodes to in Perl terms: strings from query and form fields,
// json.Number, bool, nil, []any and map[string]any from a JSON body.
package pveschema

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pvesnap/pvesnap/sim/reference"
)

// Schema is one property's schema (or an object's) as apidata.js publishes it.
type Schema = map[string]any

// Errors maps a property path ("vmid", "scsi0.size") to PVE's message for it.
type Errors map[string]string

// add is JSONSchema.pm's add_error: a second message for the same path is appended after a
// literal backslash-n (Perl's single-quoted '\n').
func (e Errors) add(path, msg string) {
	if path == "" {
		path = "_root"
	}
	if old, ok := e[path]; ok {
		e[path] = old + `\n` + msg
		return
	}
	e[path] = msg
}

// Keys returns the paths in order (Perl hashes have none; tests and messages want one).
func (e Errors) Keys() []string {
	out := make([]string, 0, len(e))
	for k := range e {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Scalar renders a non-reference value as Perl stringifies it; ok is false for references
// (arrays, hashes, JSON booleans).
func Scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	}
	return "", false
}

// refName is Perl's ref() of a decoded JSON value.
func refName(v any) string {
	switch v.(type) {
	case []any:
		return "ARRAY"
	case map[string]any:
		return "HASH"
	case bool:
		return "JSON::PP::Boolean"
	}
	return ""
}

var (
	integerRe = regexp.MustCompile(`^[+-]?\d+$`)
	numberRe  = regexp.MustCompile(`^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`)
)

// IsInteger and IsNumber are JSONSchema.pm's is_integer and is_number.
func IsInteger(s string) bool { return integerRe.MatchString(s) }
func IsNumber(s string) bool  { return numberRe.MatchString(s) }

// checkType is check_type for a single type name; it reports whether the value passed.
func checkType(path string, typ any, value any, errs Errors) bool {
	switch t := typ.(type) {
	case nil:
		return true
	case []any:
		names := make([]string, len(t))
		for i, x := range t {
			names[i] = fmt.Sprint(x)
			if checkType(path, x, value, Errors{}) {
				return true
			}
		}
		errs.add(path, fmt.Sprintf("type check ('%s') failed", strings.Join(names, "|")))
		return false
	case map[string]any:
		tmp := Errors{}
		CheckProp(value, t, path, tmp)
		if len(tmp) == 0 {
			return true
		}
		errs.add(path, "type check failed")
		return false
	}
	typName := fmt.Sprint(typ)
	if typName == "any" {
		return true
	}
	if value == nil {
		if typName == "null" {
			return true
		}
		errs.add(path, "internal error")
		return false
	}
	if typName == "null" {
		errs.add(path, fmt.Sprintf("type check ('%s') failed - value is not null", typName))
		return false
	}
	vt := refName(value)
	switch typName {
	case "array":
		if vt != "ARRAY" {
			errs.add(path, fmt.Sprintf("type check ('%s') failed", typName))
			return false
		}
		return true
	case "object":
		if vt != "HASH" {
			errs.add(path, fmt.Sprintf("type check ('%s') failed", typName))
			return false
		}
		return true
	}
	if vt != "" {
		if typName == "boolean" && vt == "JSON::PP::Boolean" {
			return true
		}
		errs.add(path, fmt.Sprintf("type check ('%s') failed - got %s", typName, vt))
		return false
	}
	s, _ := Scalar(value)
	switch typName {
	case "boolean":
		if s == "1" || s == "0" {
			return true
		}
	case "integer":
		if IsInteger(s) {
			return true
		}
	case "number":
		if IsNumber(s) {
			return true
		}
	default:
		return true // string and types PVE does not check
	}
	errs.add(path, fmt.Sprintf("type check ('%s') failed - got '%s'", typName, s))
	return false
}

// CheckProp is check_prop: value against one property schema, errors under path.
func CheckProp(value any, schema Schema, path string, errs Errors) {
	if schema == nil {
		errs.add(path, "Invalid schema definition.")
		return
	}
	if _, ok := schema["alias"]; ok {
		return // remapped to its target by check_object
	}
	if value == nil {
		if t, _ := schema["type"].(string); t == "null" {
			return
		}
		if !reference.Truthy(schema["optional"]) && !reference.Truthy(schema["group"]) {
			errs.add(path, "property is missing and it is not optional")
		}
		return
	}
	if !checkType(path, schema["type"], value, errs) {
		return
	}
	switch v := value.(type) {
	case []any:
		if items, ok := schema["items"].(map[string]any); ok {
			for i, el := range v {
				CheckProp(el, items, fmt.Sprintf("%s[%d]", path, i), errs)
			}
		}
		return
	case map[string]any:
		props, hasProps := schema["properties"].(map[string]any)
		if hasProps || schema["additionalProperties"] != nil {
			checkObject(path, toSchemas(props), v, schema["additionalProperties"], errs)
		}
		return
	case bool:
		return // a JSON boolean is a reference to Perl: nothing below applies
	}
	s, _ := Scalar(value)
	if f := schema["format"]; f != nil {
		if err := CheckFormat(f, s, path); err != nil {
			errs.add(path, "invalid format - "+err.Error())
			return
		}
	}
	if p, ok := schema["pattern"].(string); ok {
		re, err := Pattern(p)
		if err != nil || !re.MatchString(s) {
			errs.add(path, "value does not match the regex pattern")
			return
		}
	}
	if max, ok := number(schema["maxLength"]); ok && float64(len([]rune(s))) > max {
		errs.add(path, fmt.Sprintf("value may only be %s characters long", numText(schema["maxLength"])))
		return
	}
	if min, ok := number(schema["minLength"]); ok && float64(len([]rune(s))) < min {
		errs.add(path, fmt.Sprintf("value must be at least %s characters long", numText(schema["minLength"])))
		return
	}
	if IsNumber(s) {
		if max, ok := number(schema["maximum"]); ok && greater(s, max) {
			errs.add(path, fmt.Sprintf("value must have a maximum value of %s", numText(schema["maximum"])))
			return
		}
		if min, ok := number(schema["minimum"]); ok && greater(fmt.Sprint(min), mustFloat(s)) {
			errs.add(path, fmt.Sprintf("value must have a minimum value of %s", numText(schema["minimum"])))
			return
		}
	}
	if enum, ok := schema["enum"].([]any); ok {
		var names []string
		found := false
		for _, e := range enum {
			es := fmt.Sprint(e)
			if n, ok := e.(float64); ok {
				es = strconv.FormatFloat(n, 'f', -1, 64)
			}
			names = append(names, es)
			found = found || es == s
		}
		if !found {
			errs.add(path, fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", s, strings.Join(names, ", ")))
		}
	}
}

// greater compares a numeric string with a bound exactly (big numbers such as 2^32-1 stay
// exact), as Perl's numeric > does for the values PVE sees.
func greater(s string, bound float64) bool {
	a, ok1 := new(big.Float).SetString(s)
	b := new(big.Float).SetFloat64(bound)
	return ok1 && a.Cmp(b) > 0
}

func mustFloat(s string) float64 { f, _ := strconv.ParseFloat(s, 64); return f }

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	case int:
		return float64(x), true
	}
	return 0, false
}

func numText(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func toSchemas(m map[string]any) map[string]Schema {
	out := make(map[string]Schema, len(m))
	for k, v := range m {
		if s, ok := v.(map[string]any); ok {
			out[k] = s
		}
	}
	return out
}

// checkObject is check_object: aliases remapped, every schema property checked, then the
// value's properties the schema does not know refused unless additionalProperties allows them.
func checkObject(path string, schema map[string]Schema, value map[string]any, additional any, errs Errors) {
	sub := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	for _, k := range slices.Sorted(maps.Keys(value)) {
		ps, ok := schema[k]
		if !ok {
			continue
		}
		alias, ok := ps["alias"].(string)
		if !ok {
			continue
		}
		if value[alias] != nil {
			errs.add(sub(k), fmt.Sprintf("cannot set both '%s' and its alias target '%s'", k, alias))
		} else {
			value[alias] = value[k]
			delete(value, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(schema)) {
		CheckProp(value[k], schema[k], sub(k), errs)
	}
	for _, k := range slices.Sorted(maps.Keys(value)) {
		if ps, ok := schema[k]; ok {
			if req, ok := ps["requires"].(string); ok && value[req] == nil {
				errs.add(sub(req), fmt.Sprintf("missing property required by '%s'", sub(k)))
			}
			continue
		}
		if additional != nil && !reference.Truthy(additional) {
			errs.add(sub(k), "property is not defined in schema and the schema does not allow additional properties")
			continue
		}
		if as, ok := additional.(map[string]any); ok {
			CheckProp(value[k], as, sub(k), errs)
		}
	}
}

var (
	patternMu    sync.Mutex
	patternCache = map[string]*regexp.Regexp{}
	perlGroupRe  = regexp.MustCompile(`\(\?\^([a-z]*):`)
)

// Pattern compiles a schema pattern as PVE applies it, m/^$pattern$/: anchored, '$' also
// before a final newline. apidata.js carries qr// patterns stringified ("(?^:…)", "(?^i:…)").
// Go has no atomic groups; the one PVE uses (runningcpu's "(?>[+-]?[\w…]+,?)+") accepts the
// same strings as a plain group, it only stops Perl from backtracking.
func Pattern(p string) (*regexp.Regexp, error) {
	patternMu.Lock()
	defer patternMu.Unlock()
	if re, ok := patternCache[p]; ok {
		return re, nil
	}
	goRe := perlGroupRe.ReplaceAllStringFunc(p, func(m string) string {
		flags := perlGroupRe.FindStringSubmatch(m)[1]
		if flags == "" {
			return "(?:"
		}
		return "(?" + flags + ":"
	})
	goRe = strings.ReplaceAll(goRe, "(?>", "(?:")
	re, err := regexp.Compile(`^(?:` + goRe + `)\n?$`)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", p, err)
	}
	patternCache[p] = re
	return re, nil
}

// CheckObject validates an object (a call's parameters, a property string's keys) against
// the property schemas; additional is the schema's additionalProperties (nil: unset).
func CheckObject(value map[string]any, props map[string]Schema, additional any) Errors {
	errs := Errors{}
	checkObject("", props, value, additional, errs)
	return errs
}
