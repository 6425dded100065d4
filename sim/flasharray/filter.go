package flasharray

import (
	"fmt"
	"strconv"
	"strings"
)

// The subset of Purity's filter language that clients use (research C §3.2):
//
//	name='vm-100-*'   serial!='…'   provisioned>1048576   source.name='vol'
//	iqns='iqn…'       (array fields match when any element matches)
//	is_local          not(destroyed)   contains(name,'disk')   a and (b or c)
//
// Comparisons are case-insensitive; '*' in a string value is a wildcard.

type filterExpr interface {
	eval(item map[string]any) bool
}

type andExpr struct{ l, r filterExpr }
type orExpr struct{ l, r filterExpr }
type notExpr struct{ e filterExpr }
type cmpExpr struct {
	field, op string
	value     any // string or float64 or bool
}
type existsExpr struct{ field string }
type containsExpr struct{ field, sub string }

func (e andExpr) eval(m map[string]any) bool { return e.l.eval(m) && e.r.eval(m) }
func (e orExpr) eval(m map[string]any) bool  { return e.l.eval(m) || e.r.eval(m) }
func (e notExpr) eval(m map[string]any) bool { return !e.e.eval(m) }

func lookup(m map[string]any, field string) any {
	var cur any = m
	for _, k := range strings.Split(field, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

func (e existsExpr) eval(m map[string]any) bool {
	switch v := norm(lookup(m, e.field)).(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		for _, x := range v {
			if x != nil {
				return true
			}
		}
		return false
	}
	return true
}

func (e containsExpr) eval(m map[string]any) bool {
	for _, v := range values(lookup(m, e.field)) {
		if s, ok := v.(string); ok && strings.Contains(strings.ToLower(s), strings.ToLower(e.sub)) {
			return true
		}
	}
	return false
}

// values flattens an array field into its elements.
func values(v any) []any {
	v = norm(v)
	if l, ok := v.([]any); ok {
		return l
	}
	return []any{v}
}

// norm turns the Go values answers are built from into JSON's kinds.
func norm(v any) any {
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	}
	return v
}

func (e cmpExpr) eval(m map[string]any) bool {
	any := false
	for _, v := range values(lookup(m, e.field)) {
		c, ok := compare(v, e.value)
		if !ok {
			if e.op == "!=" {
				any = true
			}
			continue
		}
		switch e.op {
		case "=":
			any = any || c == 0
		case "!=":
			any = any || c != 0
		case "<":
			any = any || c < 0
		case ">":
			any = any || c > 0
		case "<=":
			any = any || c <= 0
		case ">=":
			any = any || c >= 0
		}
	}
	return any
}

// compare compares an item's value with a filter literal: numbers numerically, strings
// case-insensitively with '*' wildcards (for = and !=).
func compare(v, lit any) (int, bool) {
	switch x := v.(type) {
	case float64:
		var y float64
		switch l := lit.(type) {
		case float64:
			y = l
		case string:
			f, err := strconv.ParseFloat(l, 64)
			if err != nil {
				return 0, false
			}
			y = f
		default:
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case bool:
		s := fmt.Sprint(lit)
		if strings.EqualFold(s, strconv.FormatBool(x)) {
			return 0, true
		}
		return 1, true
	case string:
		l := strings.ToLower(fmt.Sprint(lit))
		s := strings.ToLower(x)
		if strings.Contains(l, "*") {
			return boolCmp(globMatch(l, s)), true
		}
		return strings.Compare(s, l), true
	}
	return 0, false
}

func boolCmp(match bool) int {
	if match {
		return 0
	}
	return 1
}

// globMatch matches '*' against any run of characters.
func globMatch(pat, s string) bool {
	parts := strings.Split(pat, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(s, p)
		}
		j := strings.Index(s, p)
		if j < 0 {
			return false
		}
		s = s[j+len(p):]
	}
	return true
}

// parseFilter parses a filter expression.
func parseFilter(s string) (filterExpr, error) {
	p := &filterParser{toks: tokenize(s)}
	if p.toks == nil && strings.TrimSpace(s) != "" {
		return nil, fmt.Errorf("invalid filter %q", s)
	}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.toks) {
		return nil, fmt.Errorf("invalid filter %q: unexpected %q", s, p.toks[p.i].text)
	}
	return e, nil
}

type token struct {
	kind byte // 'i' identifier, 's' string, 'n' number, 'o' operator, '(' ')' ','
	text string
}

func tokenize(s string) []token {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{kind: c, text: string(c)})
			i++
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil
			}
			out = append(out, token{kind: 's', text: s[i+1 : i+1+j]})
			i += j + 2
		case strings.ContainsRune("=!<>", rune(c)):
			j := i + 1
			if j < len(s) && s[j] == '=' {
				j++
			}
			op := s[i:j]
			if op == "!" {
				return nil
			}
			out = append(out, token{kind: 'o', text: op})
			i = j
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(s) && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9')) {
				j++
			}
			out = append(out, token{kind: 'n', text: s[i:j]})
			i = j
		case c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z'):
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] == '.' || (s[j]|0x20 >= 'a' && s[j]|0x20 <= 'z') || (s[j] >= '0' && s[j] <= '9')) {
				j++
			}
			out = append(out, token{kind: 'i', text: s[i:j]})
			i = j
		default:
			return nil
		}
	}
	return out
}

type filterParser struct {
	toks []token
	i    int
}

func (p *filterParser) peek() *token {
	if p.i < len(p.toks) {
		return &p.toks[p.i]
	}
	return nil
}

func (p *filterParser) keyword(k string) bool {
	if t := p.peek(); t != nil && t.kind == 'i' && strings.EqualFold(t.text, k) {
		p.i++
		return true
	}
	return false
}

func (p *filterParser) or() (filterExpr, error) {
	l, err := p.and()
	for err == nil && p.keyword("or") {
		var r filterExpr
		if r, err = p.and(); err == nil {
			l = orExpr{l, r}
		}
	}
	return l, err
}

func (p *filterParser) and() (filterExpr, error) {
	l, err := p.unary()
	for err == nil && p.keyword("and") {
		var r filterExpr
		if r, err = p.unary(); err == nil {
			l = andExpr{l, r}
		}
	}
	return l, err
}

func (p *filterParser) unary() (filterExpr, error) {
	if p.keyword("not") {
		e, err := p.unary()
		return notExpr{e}, err
	}
	return p.primary()
}

func (p *filterParser) expect(kind byte) (token, error) {
	t := p.peek()
	if t == nil || t.kind != kind {
		return token{}, fmt.Errorf("invalid filter: expected %q", string(kind))
	}
	p.i++
	return *t, nil
}

func (p *filterParser) primary() (filterExpr, error) {
	t := p.peek()
	if t == nil {
		return nil, fmt.Errorf("invalid filter: unexpected end")
	}
	if t.kind == '(' {
		p.i++
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		_, err = p.expect(')')
		return e, err
	}
	if t.kind != 'i' || strings.EqualFold(t.text, "and") || strings.EqualFold(t.text, "or") {
		return nil, fmt.Errorf("invalid filter: unexpected %q", t.text)
	}
	p.i++
	if strings.EqualFold(t.text, "contains") && p.peek() != nil && p.peek().kind == '(' {
		p.i++
		f, err := p.expect('i')
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(','); err != nil {
			return nil, err
		}
		s, err := p.expect('s')
		if err != nil {
			return nil, err
		}
		_, err = p.expect(')')
		return containsExpr{f.text, s.text}, err
	}
	op := p.peek()
	if op == nil || op.kind != 'o' {
		return existsExpr{t.text}, nil
	}
	p.i++
	v := p.peek()
	if v == nil {
		return nil, fmt.Errorf("invalid filter: %s %s needs a value", t.text, op.text)
	}
	p.i++
	switch v.kind {
	case 's':
		return cmpExpr{t.text, op.text, v.text}, nil
	case 'n':
		f, err := strconv.ParseFloat(v.text, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid filter: bad number %q", v.text)
		}
		return cmpExpr{t.text, op.text, f}, nil
	case 'i':
		return cmpExpr{t.text, op.text, v.text}, nil // true/false
	}
	return nil, fmt.Errorf("invalid filter: unexpected %q", v.text)
}
