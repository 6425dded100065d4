package pveschema

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

var (
	formatsMu sync.RWMutex
	formats   = map[string]Format{}
)

// Register adds a named format (sim/pve registers the ones that depend on schema data).
func Register(name string, f Format) {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	formats[name] = f
}

// Lookup returns a named format.
func Lookup(name string) (Format, bool) {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	f, ok := formats[name]
	return f, ok
}

func verifier(re *regexp.Regexp, msg string) Format {
	return Format{Verify: func(s string) error {
		if !re.MatchString(s) {
			return dief(msg, s)
		}
		return nil
	}}
}

// pve-common's formats (src/PVE/JSONSchema.pm), with its messages.
var (
	configIDRe  = regexp.MustCompile(`(?i)^[a-z][a-z0-9_-]+$`)
	idRe        = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
	vmidRe      = regexp.MustCompile(`^[1-9][0-9]{2,8}$`)
	nodeRe      = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	bridgeRe    = regexp.MustCompile(`^[-_.\w\d]+$`)
	macRe       = regexp.MustCompile(`(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$`)
	dnsLabel    = `([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)`
	dnsNameRe   = regexp.MustCompile(`^(` + dnsLabel + `\.)*` + dnsLabel + `$`)
	urlencRe    = regexp.MustCompile(`^[-%a-zA-Z0-9_.!~*'()]*$`)
	tagRe       = regexp.MustCompile(`(?i)^[a-z0-9_][a-z0-9_\-+.]*$`)
	ifaceRe     = regexp.MustCompile(`(?i)^[a-z][a-z0-9_]{1,20}([:.]\d+)?$`)
	taskStateRe = regexp.MustCompile(`(?i)^(ok|error|warning|unknown)$`)
	sizeRe      = regexp.MustCompile(`^(\d+(\.\d+)?)([KMGT](?:iB)?)?$`)
	startupRe   = regexp.MustCompile(`^(order=)?(\d+)$|^up=(\d+)$|^down=(\d+)$`)
)

// ParseStorageID is parse_id for storage IDs.
func ParseStorageID(id string) error {
	if len(id) < 2 {
		return dief("storage ID '%s' cannot be shorter than 2 characters", id)
	}
	if !idRe.MatchString(id) {
		return dief("storage ID '%s' contains illegal characters", id)
	}
	return nil
}

// IsIPv4 and IsIPv6 stand for pve-common's $IPV4RE and $IPV6RE: dotted quads of 0-255, and the
// textual IPv6 forms (with an embedded IPv4 tail allowed).
func IsIPv4(s string) bool {
	ip := net.ParseIP(s)
	return ip != nil && strings.Count(s, ".") == 3 && !strings.Contains(s, ":") && validQuad(s)
}

func validQuad(s string) bool {
	for _, p := range strings.Split(s, ".") {
		if p == "" || len(p) > 3 {
			return false
		}
	}
	return true
}

func IsIPv6(s string) bool {
	return strings.Contains(s, ":") && net.ParseIP(s) != nil && !strings.Contains(s, "%")
}

func cidr(s string, v6 bool) bool {
	addr, bits, ok := strings.Cut(s, "/")
	if !ok || bits == "" || strings.TrimLeft(bits, "0123456789") != "" {
		return false
	}
	n, _ := strconv.Atoi(bits)
	if v6 {
		return IsIPv6(addr) && n > 7 && n <= 128
	}
	return IsIPv4(addr) && n > 7 && n <= 32
}

// ParseSize is JSONSchema.pm's parse_size (bytes, or false).
func ParseSize(s string) (int64, bool) {
	m := sizeRe.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	switch strings.TrimSuffix(m[3], "iB") {
	case "K":
		f *= 1 << 10
	case "M":
		f *= 1 << 20
	case "G":
		f *= 1 << 30
	case "T":
		f *= 1 << 40
	}
	return int64(f), true
}

func init() {
	Register("string", Format{Verify: func(string) error { return nil }})
	Register("urlencoded", verifier(urlencRe, "invalid urlencoded string: %s"))
	Register("pve-configid", verifier(configIDRe, "invalid configuration ID '%s'"))
	Register("pve-storage-id", Format{Verify: ParseStorageID})
	Register("pve-bridge-id", verifier(bridgeRe, "invalid bridge ID '%s'"))
	Register("pve-vmid", Format{Verify: func(s string) error {
		if !vmidRe.MatchString(s) {
			return dief("value does not look like a valid VM ID")
		}
		return nil
	}})
	Register("pve-node", Format{Verify: func(s string) error {
		if !nodeRe.MatchString(s) {
			return dief("value does not look like a valid node name")
		}
		return nil
	}})
	Register("mac-addr", Format{Verify: func(s string) error {
		if !macRe.MatchString(s) {
			return dief("value does not look like a valid unicast MAC address")
		}
		return nil
	}})
	Register("ipv4", Format{Verify: func(s string) error {
		if !IsIPv4(s) {
			return dief("value does not look like a valid IPv4 address")
		}
		return nil
	}})
	Register("ipv6", Format{Verify: func(s string) error {
		if !IsIPv6(s) {
			return dief("value does not look like a valid IPv6 address")
		}
		return nil
	}})
	Register("ip", Format{Verify: func(s string) error {
		if !IsIPv4(s) && !IsIPv6(s) {
			return dief("value does not look like a valid IP address")
		}
		return nil
	}})
	Register("CIDRv4", Format{Verify: func(s string) error {
		if !cidr(s, false) {
			return dief("value does not look like a valid IPv4 CIDR network")
		}
		return nil
	}})
	Register("CIDRv6", Format{Verify: func(s string) error {
		if !cidr(s, true) {
			return dief("value does not look like a valid IPv6 CIDR network")
		}
		return nil
	}})
	Register("CIDR", Format{Verify: func(s string) error {
		if !cidr(s, false) && !cidr(s, true) {
			return dief("value does not look like a valid CIDR network")
		}
		return nil
	}})
	Register("pve-ipv4-config", Format{Verify: func(s string) error {
		if s == "dhcp" || s == "manual" || cidr(s, false) {
			return nil
		}
		return dief("value does not look like a valid ipv4 network configuration")
	}})
	Register("pve-ipv6-config", Format{Verify: func(s string) error {
		if s == "auto" || s == "dhcp" || s == "manual" || cidr(s, true) {
			return nil
		}
		return dief("value does not look like a valid ipv6 network configuration")
	}})
	Register("dns-name", Format{Verify: func(s string) error {
		if !dnsNameRe.MatchString(s) {
			return dief("value does not look like a valid DNS name")
		}
		return nil
	}})
	Register("pve-iface", verifier(ifaceRe, "invalid network interface name '%s'"))
	Register("address", Format{Verify: func(s string) error {
		if !IsIPv4(s) && !IsIPv6(s) && !dnsNameRe.MatchString(s) {
			return dief("value does not look like a valid address: %s", s)
		}
		return nil
	}})
	Register("disk-size", Format{Verify: func(s string) error {
		if _, ok := ParseSize(s); !ok {
			return dief("value does not look like a valid disk size: %s", s)
		}
		return nil
	}})
	Register("pve-startup-order", Format{Verify: func(s string) error {
		ok := s != "" && s != "0"
		for _, p := range strings.Split(s, ",") {
			if strings.TrimSpace(p) == "" {
				continue
			}
			if !startupRe.MatchString(p) {
				ok = false
			}
		}
		if !ok {
			return dief("unable to parse startup options")
		}
		return nil
	}})
	Register("pve-tag", verifier(tagRe, "invalid characters in tag"))
	Register("pve-task-status-type", verifier(taskStateRe, "invalid status '%s'"))
	Register("storage-pair", Format{Verify: func(s string) error { return idPair(s, ParseStorageID) }})
	Register("bridge-pair", Format{Verify: func(s string) error {
		return idPair(s, func(id string) error {
			if !bridgeRe.MatchString(id) {
				return dief("invalid bridge ID '%s'", id)
			}
			return nil
		})
	}})
}

// idPair is parse_idmap for one entry of a storage-pair-list or bridge-pair-list.
func idPair(entry string, check func(string) error) error {
	if entry == "1" {
		return nil
	}
	if src, dst, ok := strings.Cut(entry, ":"); ok && !strings.Contains(dst, ":") && src != "" && dst != "" {
		for _, id := range []string{src, dst} {
			if err := check(id); err != nil {
				return dief("entry '%s' contains invalid ID - %s", entry, err.Error())
			}
		}
		return nil
	}
	if err := check(entry); err != nil {
		return dief("entry '%s' contains invalid ID - %s", entry, err.Error())
	}
	return nil
}
