package pveschema

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/pvesnap/pvesnap/sim/reference"
)

// Format is a named format as PVE registers it: a verifier (Verify) or a property-string
// schema (Props, with an optional Validate run on the parsed result).
type Format struct {
	Verify   func(s string) error
	Props    map[string]Schema
	Validate func(parsed map[string]any) error
}

// Die is an error whose text is exactly what Perl's die printed: usually ending in "\n".
type Die string

func (d Die) Error() string { return string(d) }

func dief(format string, args ...any) error { return Die(fmt.Sprintf(format, args...) + "\n") }

// formatError is the exception parse_property_string raises for a property string whose
// keys do not check out; it prints as PVE::Exception stringifies one.
type formatError struct{ errs Errors }

func (e *formatError) Error() string {
	var b strings.Builder
	b.WriteString("format error\n")
	for _, k := range e.errs.Keys() {
		fmt.Fprintf(&b, "%s: %s\n", k, e.errs[k])
	}
	return b.String()
}

var listSuffixRe = regexp.MustCompile(`^(.*?)(?:-(list|opt))?$`)

// CheckFormat is check_format: format is a name ("pve-vmid", "pve-tag-list") or a
// property-string schema (an object in apidata.js).
func CheckFormat(format any, value, path string) error {
	if m, ok := format.(map[string]any); ok {
		_, err := ParsePropertyString(toSchemas(m), value, path)
		return err
	}
	name := fmt.Sprint(format)
	if name == "regex" {
		return nil
	}
	sm := listSuffixRe.FindStringSubmatch(name)
	base, kind := sm[1], sm[2]
	f, ok := Lookup(base)
	if !ok {
		return dief("undefined format '%s'", name)
	}
	if kind != "" && f.Props != nil {
		return dief("'-%s' format must have code ref, not hash", kind)
	}
	switch kind {
	case "list":
		for _, v := range SplitList(value) {
			if err := f.Verify(v); err != nil {
				return err
			}
		}
		return nil
	case "opt":
		if value == "" || value == "0" {
			return nil
		}
		return f.Verify(value)
	}
	if f.Props != nil {
		parsed, err := ParsePropertyString(f.Props, value, path)
		if err != nil {
			return err
		}
		if f.Validate != nil {
			return f.Validate(parsed)
		}
		return nil
	}
	return f.Verify(value)
}

// SplitList is PVE::Tools::split_list: items separated by ',', ';' or white space (or NUL).
func SplitList(s string) []string {
	if strings.Contains(s, "\x00") {
		return strings.Split(s, "\x00")
	}
	return strings.Fields(strings.NewReplacer(",", " ", ";", " ").Replace(s))
}

var keyValueRe = regexp.MustCompile(`^([^=]+)=(.+)$`)

// ParsePropertyString is parse_property_string: "key=value,…" with an optional leading value
// for the default key, aliases and keyAliases, booleans read as PVE reads them, then every
// key checked against its schema (no additional keys).
func ParsePropertyString(format map[string]Schema, data, path string) (map[string]any, error) {
	res := map[string]any{}
	var defaultKey string
	for _, part := range strings.Split(data, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		if m := keyValueRe.FindStringSubmatch(part); m != nil {
			k, v := m[1], m[2]
			if _, dup := res[k]; dup {
				return nil, dief("duplicate key in comma-separated list property: %s", k)
			}
			schema := format[k]
			if alias, ok := schema["alias"].(string); ok {
				if keyAlias, ok := schema["keyAlias"].(string); ok {
					if _, dup := res[keyAlias]; dup {
						return nil, dief("key alias '%s' is already defined", keyAlias)
					}
					res[keyAlias] = k
				}
				k = alias
				schema = format[k]
				if _, dup := res[k]; dup {
					return nil, dief("key '%s' is already defined (via alias)", k)
				}
			}
			if schema == nil {
				return nil, dief("invalid key in comma-separated list property: %s", k)
			}
			if t, _ := schema["type"].(string); t == "boolean" {
				v = parseBoolean(v)
			}
			res[k] = v
			continue
		}
		if strings.Contains(part, "=") {
			return nil, errors.New("missing key in comma-separated list property\n")
		}
		if defaultKey != "" {
			return nil, dief("duplicate key in comma-separated list property: %s", defaultKey)
		}
		for _, key := range slices.Sorted(maps.Keys(format)) {
			if !reference.Truthy(format[key]["default_key"]) {
				continue
			}
			defaultKey = key
			if _, set := res[key]; set {
				return nil, dief("duplicate key in comma-separated list property: %s", defaultKey)
			}
			v := part
			if t, _ := format[key]["type"].(string); t == "boolean" {
				v = parseBoolean(v)
			}
			res[key] = v
			break
		}
		if defaultKey == "" {
			return nil, errors.New("value without key, but schema does not define a default key\n")
		}
	}
	errs := Errors{}
	checkObject(path, format, res, false, errs)
	if len(errs) > 0 {
		return nil, &formatError{errs}
	}
	return res, nil
}

// parseBoolean is JSONSchema.pm's parse_boolean; anything else stays as given (and fails
// the type check later).
func parseBoolean(s string) string {
	switch strings.ToLower(s) {
	case "1", "on", "yes", "true":
		return "1"
	case "0", "off", "no", "false":
		return "0"
	}
	return s
}
