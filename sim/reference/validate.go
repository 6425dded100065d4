package reference

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Dialect selects the schema conventions.
type Dialect int

const (
	// PVEDialect: apidata.js — properties are required unless "optional": 1; booleans are 0/1;
	// "net[n]" names an indexed family.
	PVEDialect Dialect = iota
	// OpenAPI: the FlashArray spec — "required" lists; any property may be null (the array
	// sends null references such as "pod": {"name": null}).
	OpenAPI
)

// Validate checks value (decoded JSON, numbers as json.Number or float64) against schema and
// returns every mismatch with its JSON path.
func Validate(d Dialect, schema map[string]any, value any) []string {
	var errs []string
	validate(d, schema, value, "$", &errs)
	sort.Strings(errs)
	return errs
}

var indexedRe = regexp.MustCompile(`^(.*)\[n\]$`)

func validate(d Dialect, s map[string]any, v any, path string, errs *[]string) {
	if s == nil {
		return
	}
	bad := func(format string, args ...any) { *errs = append(*errs, path+": "+fmt.Sprintf(format, args...)) }
	typ, _ := s["type"].(string)
	if v == nil {
		if d == OpenAPI || typ == "null" || typ == "" {
			return
		}
		bad("null where %s expected", typ)
		return
	}
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("got %T, want object", v)
			return
		}
		props, _ := s["properties"].(map[string]any)
		if len(props) == 0 {
			return // a loose object ({type: object} without properties)
		}
		additional := Truthy(s["additionalProperties"])
		for k, val := range m {
			ps, ok := props[k].(map[string]any)
			if !ok {
				ps = indexedProp(props, k)
			}
			if ps == nil {
				if !additional {
					bad("property %q not in the schema", k)
				}
				continue
			}
			validate(d, ps, val, path+"."+k, errs)
		}
		required := map[string]bool{}
		if d == PVEDialect {
			for k, p := range props {
				if pm, ok := p.(map[string]any); ok && !Truthy(pm["optional"]) && !strings.HasSuffix(k, "[n]") {
					required[k] = true
				}
			}
		} else if r, ok := s["required"].([]any); ok {
			for _, k := range r {
				required[fmt.Sprint(k)] = true
			}
		}
		for k := range required {
			if _, ok := m[k]; !ok {
				bad("required property %q missing", k)
			}
		}
	case "array":
		l, ok := v.([]any)
		if !ok {
			bad("got %T, want array", v)
			return
		}
		items, _ := s["items"].(map[string]any)
		for i, e := range l {
			validate(d, items, e, fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case "integer":
		if !isInteger(v) {
			bad("got %s, want integer", describe(v))
		}
	case "number":
		if !isNumber(v) {
			bad("got %s, want number", describe(v))
		}
	case "boolean":
		if _, ok := v.(bool); ok {
			return
		}
		if d == PVEDialect && isInteger(v) {
			if n := fmt.Sprint(v); n == "0" || n == "1" {
				return
			}
		}
		bad("got %s, want boolean", describe(v))
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("got %s, want string", describe(v))
			return
		}
		if enum, ok := s["enum"].([]any); ok && len(enum) > 0 {
			found := false
			for _, e := range enum {
				if fmt.Sprint(e) == str {
					found = true
				}
			}
			if !found {
				bad("value %q not in enum %v", str, enum)
			}
		}
	case "null":
		bad("got %s, want null", describe(v))
	}
}

// indexedProp finds "net[n]" for "net0".
func indexedProp(props map[string]any, k string) map[string]any {
	for name, p := range props {
		if m := indexedRe.FindStringSubmatch(name); m != nil && strings.HasPrefix(k, m[1]) {
			rest := k[len(m[1]):]
			if rest != "" && strings.Trim(rest, "0123456789") == "" {
				pm, _ := p.(map[string]any)
				return pm
			}
		}
	}
	return nil
}

// Truthy is Perl's truth of a schema flag (optional => 1, "0" and 0 are false).
func Truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case float64:
		return x != 0
	case json.Number:
		return x.String() != "0"
	case int:
		return x != 0
	case string:
		return x != "" && x != "0"
	}
	return false
}

func isNumber(v any) bool {
	switch v.(type) {
	case float64, json.Number, int, int64:
		return true
	}
	return false
}

func isInteger(v any) bool {
	switch x := v.(type) {
	case float64:
		return x == float64(int64(x))
	case json.Number:
		_, err := x.Int64()
		return err == nil
	case int, int64:
		return true
	}
	return false
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T %v", v, v)
}

// CheckFARequest checks one FlashArray REST request against the spec of its version: the
// path and method exist, every query parameter is declared (with a value of its type), the
// required parameters are there and the JSON body fits the body schema. rel is the path
// after /api/<version> ("/volumes") or "/api_version".
func CheckFARequest(spec FASpec, method, rel string, query map[string][]string, header map[string][]string, body []byte) []string {
	op := spec[rel][strings.ToLower(method)]
	if op == nil {
		return []string{fmt.Sprintf("%s %s: not in the spec", method, rel)}
	}
	var errs []string
	declared := map[string]FAParam{}
	for _, p := range op.Params {
		declared[p.In+":"+strings.ToLower(p.Name)] = p
	}
	for k, vs := range query {
		p, ok := declared["query:"+strings.ToLower(k)]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s %s: query parameter %q not in the spec", method, rel, k))
			continue
		}
		typ, _ := p.Schema["type"].(string)
		for _, v := range vs {
			if !literalFits(typ, v) {
				errs = append(errs, fmt.Sprintf("%s %s: query parameter %s=%q is not a %s", method, rel, k, v, typ))
			}
		}
	}
	for _, p := range op.Params {
		if !p.Required {
			continue
		}
		switch p.In {
		case "query":
			if _, ok := query[p.Name]; !ok {
				errs = append(errs, fmt.Sprintf("%s %s: required query parameter %q missing", method, rel, p.Name))
			}
		case "header":
			if !hasHeader(header, p.Name) {
				errs = append(errs, fmt.Sprintf("%s %s: required header %q missing", method, rel, p.Name))
			}
		}
	}
	if len(body) > 0 {
		if op.Body == nil {
			errs = append(errs, fmt.Sprintf("%s %s: body sent but the operation takes none", method, rel))
		} else {
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				errs = append(errs, fmt.Sprintf("%s %s: body is not JSON: %v", method, rel, err))
			}
			for _, e := range Validate(OpenAPI, op.Body, v) {
				errs = append(errs, fmt.Sprintf("%s %s request body: %s", method, rel, e))
			}
		}
	}
	return errs
}

// CheckFAResponse checks an answer: a 200 body against the operation's response schema, an
// error against the error envelope ({"errors":[{"context","message"}]}, or the gateway's
// {"message"} for 401/403/429).
func CheckFAResponse(spec FASpec, method, rel string, status int, body []byte) []string {
	op := spec[rel][strings.ToLower(method)]
	if op == nil {
		return []string{fmt.Sprintf("%s %s: not in the spec", method, rel)}
	}
	var v any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &v); err != nil {
			return []string{fmt.Sprintf("%s %s: answer is not JSON: %v", method, rel, err)}
		}
	}
	var errs []string
	switch {
	case status == 200 && v != nil:
		if op.Response == nil {
			return []string{fmt.Sprintf("%s %s: the spec defines no body for 200", method, rel)}
		}
		for _, e := range Validate(OpenAPI, op.Response, v) {
			errs = append(errs, fmt.Sprintf("%s %s answer: %s", method, rel, e))
		}
	case status >= 400:
		m, _ := v.(map[string]any)
		if list, ok := m["errors"].([]any); ok && len(list) > 0 {
			for _, e := range list {
				em, _ := e.(map[string]any)
				if _, ok := em["message"].(string); !ok {
					errs = append(errs, fmt.Sprintf("%s %s %d: error without a message: %v", method, rel, status, e))
				}
				for k := range em {
					if k != "message" && k != "context" && k != "location_context" {
						errs = append(errs, fmt.Sprintf("%s %s %d: unknown error field %q", method, rel, status, k))
					}
				}
			}
		} else if _, ok := m["message"].(string); !(ok && (status == 401 || status == 403 || status == 429)) {
			errs = append(errs, fmt.Sprintf("%s %s %d: not an error envelope: %s", method, rel, status, body))
		}
	}
	return errs
}

func hasHeader(h map[string][]string, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func literalFits(typ, v string) bool {
	switch typ {
	case "integer":
		_, err := strconv.ParseInt(v, 10, 64)
		return err == nil
	case "number":
		_, err := strconv.ParseFloat(v, 64)
		return err == nil
	case "boolean":
		return v == "true" || v == "false"
	}
	return true
}
