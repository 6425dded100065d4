package pve

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Migration is the cluster's "migration" setting in datacenter.cfg: whether data moved
// between nodes is encrypted ("type", secure by default; PVE: "On secure, completely private
// networks this can be disabled to increase performance") and over which network.
type Migration struct {
	Insecure bool
	Network  *net.IPNet // nil: the nodes' own addresses (.members)
}

// ReadDatacenter reads the top-level keys of <pveRoot>/datacenter.cfg (a missing file has
// none). Values are left as written: property strings are the caller's to parse.
func ReadDatacenter(pveRoot string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(pveRoot, "datacenter.cfg"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	keys := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		keys[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return keys, nil
}

// ReadMigration reads the setting from <pveRoot>/datacenter.cfg, with PVE's rules: no file
// or no key is secure; the old "migration_unsecure: 1" counts when "migration" is not set.
func ReadMigration(pveRoot string) (Migration, error) {
	dc, err := ReadDatacenter(pveRoot)
	if err != nil {
		return Migration{}, err
	}
	value := dc["migration"]
	if value == "" {
		return Migration{Insecure: dc["migration_unsecure"] == "1"}, nil
	}
	p := ParsePropertyString(value, "type")
	var m Migration
	switch p["type"] {
	case "", "secure":
	case "insecure":
		m.Insecure = true
	default:
		return Migration{}, fmt.Errorf("datacenter.cfg: migration type '%s' is not secure or insecure", p["type"])
	}
	if n := p["network"]; n != "" {
		if _, m.Network, err = net.ParseCIDR(n); err != nil {
			return Migration{}, fmt.Errorf("datacenter.cfg: migration network '%s': %v", n, err)
		}
	}
	return m, nil
}
