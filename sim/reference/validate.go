package reference

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
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
		additional := truthy(s["additionalProperties"])
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
				if pm, ok := p.(map[string]any); ok && !truthy(pm["optional"]) && !strings.HasSuffix(k, "[n]") {
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

func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case float64:
		return x != 0
	case json.Number:
		return x.String() != "0"
	case int:
		return x != 0
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
