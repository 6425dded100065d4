package server

import (
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/pvesnap/pvesnap/daemon/pve"
)

// guiPort is pveproxy's: the panel injected into its page calls pvesnap from there.
const guiPort = "8006"

// corsAllowed accepts exactly the GUI of this cluster's nodes, https on pveproxy's port by
// node name or by the address in .members, and the configured origins. Origins are compared
// in canonical form (lower-case host, addresses in one spelling, default ports dropped), so
// neither a longer name (pve1.evil.example) nor a different case or spelling of one gets in.
func (d *Daemon) corsAllowed(origin string) bool {
	o, ok := canonicalOrigin(origin)
	if !ok {
		return false
	}
	for _, c := range d.Cfg.CORSOrigins {
		if cc, ok := canonicalOrigin(c); ok && cc == o {
			return true
		}
	}
	names := map[string]bool{strings.ToLower(d.Cfg.Node): true}
	if h, err := os.Hostname(); err == nil {
		names[strings.ToLower(h)] = true
	}
	if m, err := pve.ReadMembers(d.Cfg.Paths.PVE); err == nil {
		for n, e := range m.NodeList {
			names[strings.ToLower(n)] = true
			if a, err := netip.ParseAddr(e.IP); err == nil {
				names[canonicalHost(a)] = true
			}
		}
	}
	for n := range names {
		if o == "https://"+n+":"+guiPort {
			return true
		}
	}
	return false
}

// canonicalOrigin is an origin (scheme://host[:port], nothing else) in one spelling.
func canonicalOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Opaque != "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Host == "" || s != strings.TrimSpace(s) {
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return "", false
		}
		host = canonicalHost(a)
	} else if strings.ContainsAny(host, "[]%:") {
		return "", false
	}
	port := u.Port()
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		return u.Scheme + "://" + host + ":" + port, true
	}
	return u.Scheme + "://" + host, true
}

func canonicalHost(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}
