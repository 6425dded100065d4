package pve

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadMigration(t *testing.T) {
	for _, c := range []struct {
		cfg      string
		insecure bool
		network  string
		bad      bool
	}{
		{"", false, "", false},
		{"keyboard: en-us\n", false, "", false},
		{"migration: insecure\n", true, "", false},
		{"migration: type=insecure,network=10.1.2.0/24\n", true, "10.1.2.0/24", false},
		{"migration: secure,network=192.168.7.5/16\n", false, "192.168.0.0/16", false},
		{"migration_unsecure: 1\n", true, "", false},
		{"migration_unsecure: 1\nmigration: type=secure\n", false, "", false}, // the new key wins, as in PVE
		{"migration: type=fast\n", false, "", true},
		{"migration: insecure,network=10.1.2.0\n", false, "", true},
	} {
		dir := t.TempDir()
		if c.cfg != "" {
			os.WriteFile(filepath.Join(dir, "datacenter.cfg"), []byte(c.cfg), 0o644)
		}
		m, err := ReadMigration(dir)
		if (err != nil) != c.bad {
			t.Errorf("%q: %v", c.cfg, err)
			continue
		}
		net := ""
		if m.Network != nil {
			net = m.Network.String()
		}
		if !c.bad && (m.Insecure != c.insecure || net != c.network) {
			t.Errorf("%q: %+v", c.cfg, m)
		}
	}
}
