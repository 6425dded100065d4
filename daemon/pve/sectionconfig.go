package pve

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Section is one "<type>: <id>" block of a PVE section-config file (storage.cfg, arrays.cfg).
type Section struct {
	Type  string
	ID    string
	Props map[string]string
	Order []string // property order as read, so a rewrite keeps the operator's layout
	Line  int
}

// Get returns a property ("" when absent).
func (s *Section) Get(k string) string { return s.Props[k] }

// Bool reads a boolean property the way PVE writes them (a bare key means 1).
func (s *Section) Bool(k string) bool {
	v, ok := s.Props[k]
	return ok && (v == "1" || v == "")
}

// Set sets a property, keeping order.
func (s *Section) Set(k, v string) {
	if s.Props == nil {
		s.Props = map[string]string{}
	}
	if _, ok := s.Props[k]; !ok {
		s.Order = append(s.Order, k)
	}
	s.Props[k] = v
}

var (
	sectionHeadRe = regexp.MustCompile(`^([a-z][a-z0-9_-]*):\s*(\S+)\s*$`)
	sectionPropRe = regexp.MustCompile(`^\s+([a-z][a-z0-9_-]*)(?:\s+(.*?))?\s*$`)
)

// ParseSectionConfig parses the section-config format: a header line "<type>: <id>", then
// indented "key value" lines, sections separated by blank lines; '#' starts a comment line.
func ParseSectionConfig(name string, b []byte) ([]*Section, error) {
	var out []*Section
	var cur *Section
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			cur = nil
		case strings.HasPrefix(trimmed, "#"):
		case line[0] != ' ' && line[0] != '\t':
			m := sectionHeadRe.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("%s:%d: expected '<type>: <id>', got %q", name, n, line)
			}
			if seen[m[2]] {
				return nil, fmt.Errorf("%s:%d: section '%s' defined twice", name, n, m[2])
			}
			seen[m[2]] = true
			cur = &Section{Type: m[1], ID: m[2], Props: map[string]string{}, Line: n}
			out = append(out, cur)
		default:
			if cur == nil {
				return nil, fmt.Errorf("%s:%d: property outside of a section", name, n)
			}
			m := sectionPropRe.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("%s:%d: cannot parse property %q", name, n, trimmed)
			}
			if _, dup := cur.Props[m[1]]; dup {
				return nil, fmt.Errorf("%s:%d: property '%s' given twice in section '%s'", name, n, m[1], cur.ID)
			}
			cur.Set(m[1], m[2])
		}
	}
	return out, sc.Err()
}

// FormatSectionConfig writes sections back in PVE's layout (tab-indented, blank line between).
func FormatSectionConfig(secs []*Section) []byte {
	var b bytes.Buffer
	for i, s := range secs {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s: %s\n", s.Type, s.ID)
		keys := s.Order
		if len(keys) != len(s.Props) {
			keys = keys[:0:0]
			for k := range s.Props {
				keys = append(keys, k)
			}
			sort.Strings(keys)
		}
		for _, k := range keys {
			if v := s.Props[k]; v == "" {
				fmt.Fprintf(&b, "\t%s\n", k)
			} else {
				fmt.Fprintf(&b, "\t%s %s\n", k, v)
			}
		}
	}
	return b.Bytes()
}
