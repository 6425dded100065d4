package pve

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ProxyDefaultsFile is where pveproxy reads its settings (pve-http-server's
// PVE::APIServer::Utils::read_proxy_config for "pveproxy").
const ProxyDefaultsFile = "/etc/default/pveproxy"

// ProxyDefaults are the settings of /etc/default/pveproxy that concern who may connect and
// how: pvesnap applies them to its own listener, since pveproxy sees every call of pvesnap's
// clients as coming from 127.0.0.1.
type ProxyDefaults struct {
	// ListenIP is LISTEN_IP: the address pveproxy listens on (empty: all).
	ListenIP string
	// AllowFrom and DenyFrom are ALLOW_FROM and DENY_FROM; Policy is POLICY ("allow" unless
	// set to "deny"), which decides when a peer matches both lists or neither.
	AllowFrom, DenyFrom []IPRange
	Policy              string
	// Ciphers (TLS 1.2, OpenSSL names) and CipherSuites (TLS 1.3) as written; empty: pveproxy's
	// defaults.
	Ciphers, CipherSuites string
	// HonorCipherOrder is HONOR_CIPHER_ORDER (nil: unset, pveproxy's default 1).
	HonorCipherOrder *bool
	// DisableTLS12 and DisableTLS13 are DISABLE_TLS_1_2 and DISABLE_TLS_1_3.
	DisableTLS12, DisableTLS13 bool
	// TLSKeyFile is TLS_KEY_FILE: the key of pveproxy-ssl.pem when it is not pveproxy-ssl.key.
	TLSKeyFile string
	// File is the file read ("" when it does not exist).
	File string
}

// IPRange is one entry of ALLOW_FROM or DENY_FROM, as Net::IP reads it: an address, a
// prefix or a range "first-last"; "all" is 0/0 and ::/0.
type IPRange struct {
	From, To netip.Addr
	Text     string
}

// Contains reports whether a is in the range (of the same family).
func (r IPRange) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.BitLen() == r.From.BitLen() && a.Compare(r.From) >= 0 && a.Compare(r.To) <= 0
}

// Allowed is pve-http-server's check_host_access: a peer matching ALLOW_FROM and not
// DENY_FROM is allowed, one matching DENY_FROM and not ALLOW_FROM is refused, and POLICY
// decides the rest. IPv4-mapped IPv6 peers are checked as IPv4.
func (p *ProxyDefaults) Allowed(a netip.Addr) bool {
	if p == nil {
		return true
	}
	if !a.IsValid() {
		return false // pveproxy: "client IP not parsable"
	}
	match := func(rs []IPRange) bool {
		for _, r := range rs {
			if r.Contains(a) {
				return true
			}
		}
		return false
	}
	allow, deny := match(p.AllowFrom), match(p.DenyFrom)
	if allow == deny {
		return p.Policy != "deny"
	}
	return allow
}

// ReadProxyDefaults reads path (normally ProxyDefaultsFile). A missing file means pveproxy's
// defaults. pveproxy has bash source the file; pvesnap runs no shell, so it reads the
// assignments itself and refuses what only a shell could evaluate (expansions, commands),
// naming the line, rather than apply something other than what pveproxy applies.
func ReadProxyDefaults(path string) (*ProxyDefaults, error) {
	p := &ProxyDefaults{Policy: "allow"}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	p.File = path
	vars, err := parseShellAssignments(b)
	if err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s: %s", path, vars[key].line, key, fmt.Sprintf(format, args...))
	}
	for key, v := range vars {
		if v.value == "" { // read_proxy_config skips empty values
			continue
		}
		switch key {
		case "LISTEN_IP":
			if _, err := netip.ParseAddr(strings.Trim(v.value, "[]")); err != nil {
				return nil, bad(key, "%q is not an IP address", v.value)
			}
			p.ListenIP = strings.Trim(v.value, "[]")
		case "ALLOW_FROM", "DENY_FROM":
			var rs []IPRange
			for _, f := range strings.Split(v.value, ",") {
				r, err := ParseIPRanges(f)
				if err != nil {
					return nil, bad(key, "%v", err)
				}
				rs = append(rs, r...)
			}
			if key == "ALLOW_FROM" {
				p.AllowFrom = rs
			} else {
				p.DenyFrom = rs
			}
		case "POLICY":
			if v.value != "allow" && v.value != "deny" {
				return nil, bad(key, "unknown policy '%s'", v.value)
			}
			p.Policy = v.value
		case "CIPHERS":
			p.Ciphers = v.value
		case "CIPHERSUITES":
			p.CipherSuites = v.value
		case "TLS_KEY_FILE":
			p.TLSKeyFile = v.value
		case "HONOR_CIPHER_ORDER", "COMPRESSION", "DISABLE_TLS_1_2", "DISABLE_TLS_1_3":
			if v.value != "0" && v.value != "1" {
				return nil, bad(key, "unknown value '%s' - use 0 or 1", v.value)
			}
			on := v.value == "1"
			switch key {
			case "HONOR_CIPHER_ORDER":
				p.HonorCipherOrder = &on
			case "DISABLE_TLS_1_2":
				p.DisableTLS12 = on
			case "DISABLE_TLS_1_3":
				p.DisableTLS13 = on
			}
		}
	}
	if p.DisableTLS12 && p.DisableTLS13 {
		return nil, fmt.Errorf("%s: misconfigured TLS settings - cannot disable all supported TLS versions!", path)
	}
	return p, nil
}

// ParseIPRanges reads one ALLOW_FROM/DENY_FROM entry the way Net::IP does: "all", an
// address, a prefix (IPv4 may be short: "10/8", "0/0"; host bits must be zero) or a range
// "first-last". IPv4-mapped IPv6 entries become IPv4, like normalize_v4_in_v6.
func ParseIPRanges(s string) ([]IPRange, error) {
	s = strings.TrimSpace(s)
	if s == "all" {
		return []IPRange{
			{From: netip.MustParseAddr("0.0.0.0"), To: netip.MustParseAddr("255.255.255.255"), Text: "0/0"},
			{From: netip.IPv6Unspecified(), To: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Text: "::/0"},
		}, nil
	}
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err1 := netip.ParseAddr(strings.TrimSpace(first))
		b, err2 := netip.ParseAddr(strings.TrimSpace(last))
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("invalid IP range %q", s)
		}
		a, b = a.Unmap(), b.Unmap()
		if a.BitLen() != b.BitLen() || a.Compare(b) > 0 {
			return nil, fmt.Errorf("invalid IP range %q (begin after end, or mixed families)", s)
		}
		return []IPRange{{From: a, To: b, Text: s}}, nil
	}
	addr, bitsText, isPrefix := strings.Cut(s, "/")
	if isPrefix && !strings.Contains(addr, ":") {
		// Net::IP pads short IPv4 prefixes: "10/8" is 10.0.0.0/8.
		for strings.Count(addr, ".") < 3 {
			addr += ".0"
		}
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return nil, fmt.Errorf("invalid IP address %q", s)
	}
	bits := a.BitLen()
	if isPrefix {
		if bits, err = strconv.Atoi(bitsText); err != nil || bits < 0 || bits > a.BitLen() {
			return nil, fmt.Errorf("invalid prefix length in %q", s)
		}
	}
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	pfx := netip.PrefixFrom(a, bits)
	if pfx.Masked().Addr() != a {
		return nil, fmt.Errorf("invalid prefix %q: host bits set (the network is %s)", s, pfx.Masked())
	}
	return []IPRange{{From: a, To: lastAddr(pfx), Text: s}}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

type shellValue struct {
	value string
	line  int
}

// parseShellAssignments reads NAME=value lines (optionally "export NAME=value") with
// single-quoted, double-quoted or bare values and # comments. Anything a shell would have to
// evaluate ($, backquotes, several words, line continuations) is an error with its line.
func parseShellAssignments(b []byte) (map[string]shellValue, error) {
	out := map[string]shellValue{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, rest, ok := strings.Cut(line, "=")
		if !ok || !shellName(name) {
			return nil, fmt.Errorf("%d: not a plain NAME=value assignment: %q", n, sc.Text())
		}
		v, err := shellWord(rest)
		if err != nil {
			return nil, fmt.Errorf("%d: %s: %v", n, name, err)
		}
		out[name] = shellValue{value: v, line: n}
	}
	return out, sc.Err()
}

func shellName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// shellWord decodes one shell word followed at most by a comment.
func shellWord(s string) (string, error) {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return "", errors.New("unterminated single quote")
			}
			out.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				switch s[i] {
				case '$', '`':
					return "", errors.New("shell expansion is not supported; write the value itself")
				case '\\':
					if i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
						i++
					}
				}
				out.WriteByte(s[i])
			}
			if i >= len(s) {
				return "", errors.New("unterminated double quote")
			}
		case c == '\\':
			if i+1 >= len(s) {
				return "", errors.New("line continuations are not supported")
			}
			i++
			out.WriteByte(s[i])
		case c == '$' || c == '`':
			return "", errors.New("shell expansion is not supported; write the value itself")
		case c == ' ' || c == '\t':
			rest := strings.TrimSpace(s[i:])
			if rest != "" && rest[0] != '#' {
				return "", fmt.Errorf("more than one word (%q): quote the value", rest)
			}
			return out.String(), nil
		case c == ';' || c == '&' || c == '|' || c == '(' || c == ')' || c == '<' || c == '>':
			return "", fmt.Errorf("shell syntax %q is not supported", string(c))
		default:
			out.WriteByte(c)
		}
	}
	return out.String(), nil
}
