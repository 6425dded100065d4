package api

import (
	"encoding/json"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Type is a JSON-schema type name as PVE's JSONSchema uses them.
type Type string

const (
	String  Type = "string"
	Integer Type = "integer"
	Boolean Type = "boolean"
	Number  Type = "number"
)

// Param declares one parameter of a route (path, query, form or JSON body alike).
type Param struct {
	// Name is the parameter's name; "net[n]" declares the indexed family net0, net1, … up to
	// MaxIndex, spelled as in PVE's schema.
	Name        string
	MaxIndex    int
	Type        Type
	Optional    bool
	Description string
	Enum        []string
	// Pattern is matched against the whole value.
	Pattern *regexp.Regexp
	// Format names a PVE standard format for docs and is checked by Check.
	Format    string
	Check     func(string) error
	Minimum   *int64
	Maximum   *int64
	MaxLength int
	Default   any
}

// Min and Max build the bounds of integer parameters.
func Min(v int64) *int64 { return &v }
func Max(v int64) *int64 { return &v }

// Params are the validated parameters of a call, typed as declared.
type Params map[string]any

// Has reports whether the parameter was given.
func (p Params) Has(name string) bool { _, ok := p[name]; return ok }

// Str returns a string parameter ("" when absent).
func (p Params) Str(name string) string { s, _ := p[name].(string); return s }

// Int returns an integer parameter (0 when absent).
func (p Params) Int(name string) int64 { n, _ := p[name].(int64); return n }

// Bool returns a boolean parameter (false when absent).
func (p Params) Bool(name string) bool { b, _ := p[name].(bool); return b }

// rawValue is what arrived for a parameter before validation: strings from query and form,
// anything from a JSON body.
type rawValue any

// readParams merges path parameters, the body (form or JSON) and the query string, query over
// body like pveproxy. The body must be replayable (the proxy buffers it).
func readParams(r *http.Request, body []byte, pathVars map[string]string) (map[string]rawValue, *Error) {
	raw := map[string]rawValue{}
	if len(body) > 0 {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		switch ct {
		case "application/json":
			var obj map[string]any
			dec := json.NewDecoder(strings.NewReader(string(body)))
			dec.UseNumber()
			if err := dec.Decode(&obj); err != nil {
				return nil, Errorf(http.StatusBadRequest, "unable to parse JSON body - %v", err)
			}
			for k, v := range obj {
				raw[k] = v
			}
		case "application/x-www-form-urlencoded", "":
			vals, err := url.ParseQuery(string(body))
			if err != nil {
				return nil, Errorf(http.StatusBadRequest, "unable to parse form body - %v", err)
			}
			addValues(raw, vals)
		default:
			return nil, Errorf(http.StatusUnsupportedMediaType, "unsupported content type '%s'", ct)
		}
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, "unable to parse query string - %v", err)
	}
	addValues(raw, q)
	delete(raw, "_dc") // ExtJS cache buster, dropped by pveproxy too
	for k, v := range pathVars {
		if prev, ok := raw[k]; ok && fmt.Sprint(prev) != v {
			return nil, ParamErr(k, "duplicate parameter (not allowed)")
		}
		raw[k] = v
	}
	return raw, nil
}

// RequestParams are a request's parameters from its (buffered) body and query string, as a
// pass-through call's log needs them: strings, or JSON values.
func RequestParams(r *http.Request, body []byte) (map[string]any, error) {
	raw, err := readParams(r, body, nil)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(raw))
	for k, v := range raw {
		out[k] = v
	}
	return out, nil
}

func addValues(raw map[string]rawValue, vals url.Values) {
	for k, vs := range vals {
		if len(vs) == 1 {
			raw[k] = vs[0]
		} else {
			l := make([]any, len(vs))
			for i, v := range vs {
				l[i] = v
			}
			raw[k] = l
		}
	}
}

// validate checks raw values against the declared parameters with PVE's messages.
func validate(decl []Param, raw map[string]rawValue) (Params, *Error) {
	out := Params{}
	errs := map[string]string{}
	known := map[string]bool{}
	for _, p := range decl {
		if base, ok := strings.CutSuffix(p.Name, "[n]"); ok {
			for k, v := range raw {
				if i, ok := indexOf(k, base); ok && i <= p.MaxIndex {
					known[k] = true
					val, msg := p.convert(v)
					if msg != "" {
						errs[k] = msg
					} else {
						out[k] = val
					}
				}
			}
			continue
		}
		known[p.Name] = true
		v, ok := raw[p.Name]
		if !ok || v == nil {
			if !p.Optional {
				errs[p.Name] = "property is missing and it is not optional"
			} else if p.Default != nil {
				out[p.Name] = p.Default
			}
			continue
		}
		val, msg := p.convert(v)
		if msg != "" {
			errs[p.Name] = msg
			continue
		}
		out[p.Name] = val
	}
	for k := range raw {
		if !known[k] {
			errs[k] = "property is not defined in schema and the schema does not allow additional properties"
		}
	}
	if len(errs) > 0 {
		return nil, ParamError(errs)
	}
	return out, nil
}

func (p Param) convert(v rawValue) (any, string) {
	if _, isList := v.([]any); isList {
		return nil, fmt.Sprintf("type check ('%s') failed - got ARRAY", p.Type)
	}
	if _, isObj := v.(map[string]any); isObj {
		return nil, fmt.Sprintf("type check ('%s') failed - got HASH", p.Type)
	}
	if _, isBool := v.(bool); isBool && p.Type != Boolean {
		// A JSON true/false is an object to Perl, not a number or string.
		return nil, fmt.Sprintf("type check ('%s') failed - got JSON::PP::Boolean", p.Type)
	}
	s := scalarString(v)
	switch p.Type {
	case Integer:
		if !isInteger.MatchString(s) {
			return nil, fmt.Sprintf("type check ('integer') failed - got '%s'", s)
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(s, "\n"), 10, 64)
		if err != nil { // beyond 64 bits: Perl keeps it as a float, out of every declared range
			if p.Maximum != nil && !strings.HasPrefix(s, "-") {
				return nil, fmt.Sprintf("value must have a maximum value of %d", *p.Maximum)
			}
			if p.Minimum != nil && strings.HasPrefix(s, "-") {
				return nil, fmt.Sprintf("value must have a minimum value of %d", *p.Minimum)
			}
			return nil, fmt.Sprintf("type check ('integer') failed - got '%s'", s)
		}
		if p.Minimum != nil && n < *p.Minimum {
			return nil, fmt.Sprintf("value must have a minimum value of %d", *p.Minimum)
		}
		if p.Maximum != nil && n > *p.Maximum {
			return nil, fmt.Sprintf("value must have a maximum value of %d", *p.Maximum)
		}
		return n, ""
	case Number:
		if !isNumber.MatchString(s) {
			return nil, fmt.Sprintf("type check ('number') failed - got '%s'", s)
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(s, "\n"), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Sprintf("type check ('number') failed - got '%s'", s)
		}
		return f, ""
	case Boolean:
		switch b := v.(type) {
		case bool:
			return b, ""
		}
		switch s {
		case "1":
			return true, ""
		case "0":
			return false, ""
		}
		return nil, fmt.Sprintf("type check ('boolean') failed - got '%s'", s)
	default:
		if p.MaxLength > 0 && len(s) > p.MaxLength {
			return nil, fmt.Sprintf("value may only be %d characters long", p.MaxLength)
		}
		if len(p.Enum) > 0 && !slices.Contains(p.Enum, s) {
			return nil, fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", s, strings.Join(p.Enum, ", "))
		}
		if p.Pattern != nil && !p.Pattern.MatchString(s) {
			return nil, "value does not match the regex pattern"
		}
		if p.Check != nil {
			if err := p.Check(s); err != nil {
				return nil, err.Error()
			}
		}
		return s, ""
	}
}

// perlNumber prints a JSON number as Perl does after decoding it: an integer literal that
// fits 64 bits stays as written, anything else becomes a double printed with "%.15g".
func perlNumber(n json.Number) string {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return strconv.FormatInt(i, 10)
	}
	if u, err := strconv.ParseUint(string(n), 10, 64); err == nil {
		return strconv.FormatUint(u, 10)
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return string(n)
	}
	return strconv.FormatFloat(f, 'g', 15, 64)
}

// indexOf parses "<base><digits>" ("net3" → 3).
func indexOf(name, base string) (int, bool) {
	d, ok := strings.CutPrefix(name, base)
	if !ok || d == "" || (len(d) > 1 && d[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(d)
	return n, err == nil && n >= 0
}

// PVE's JSONSchema is_integer and is_number. Perl's "$" also matches before a final newline.
var (
	isInteger = regexp.MustCompile(`^[+-]?[0-9]+\n?$`)
	isNumber  = regexp.MustCompile(`^[+-]?([0-9]+\.[0-9]+|[0-9]+\.|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?\n?$`)
)

// scalarString is the string PVE's checks see for a value: query and form values as sent,
// JSON numbers as Perl prints the number the JSON decoder made of them (1e2 and 100.0 are
// 100, 1.5 stays 1.5, 1e15 is 1e+15).
func scalarString(v rawValue) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return perlNumber(x)
	case bool:
		if x {
			return "1"
		}
		return "0"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
