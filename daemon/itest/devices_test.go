package itest

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/pvesnap/pvesnap/lvm/engine"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

type pvDevices struct {
	Storage, PV, Warning string
	Devices              []engine.View
}

// The devices under the node's storages through :8009: Sys.Audit on the node (as its disks
// and their SMART data), rows filtered by Datastore.Audit like the storage mapping; the LU
// behind san1's PV answers as the fake hardware says, asked once until a refresh, and a
// failure prediction it reports comes back as the storage's warning, in SPC's words, with
// offload to it refused.
func TestDevicesAPI(t *testing.T) {
	e := Start(t)
	e.inventoryVM()
	list := func(who string, c *simpve.Client, params url.Values) []pvDevices {
		t.Helper()
		r, err := c.Do("GET", "/nodes/pve1/pvesnap/devices", params)
		must(t, err)
		if r.Code != 200 {
			t.Fatalf("%s: %d %s", who, r.Code, r.Status)
		}
		var out []pvDevices
		must(t, json.Unmarshal(r.Data, &out))
		return out
	}
	root := e.Root("pve1")
	pvs := list("root", root, nil)
	if len(pvs) != 1 || pvs[0].Storage != "san1" || pvs[0].PV != "/dev/sdb" || len(pvs[0].Devices) != 1 {
		t.Fatalf("devices: %+v", pvs)
	}
	d := pvs[0].Devices[0]
	if d.Name != "sdb" || d.Vendor != "PURE" || d.Size != 1<<40 || !d.Copy.Offload || d.Health.State != engine.HealthUnknown || pvs[0].Warning != "" {
		t.Fatalf("sdb: %+v", d)
	}
	lu := e.hw("pve1").LU("sdb")
	lu.SetIE(0x5D, 0x00)
	if again := list("root", root, nil); again[0].Warning != "" {
		t.Fatalf("asked again without a refresh: %+v", again[0])
	}
	pvs = list("root", root, url.Values{"refresh": {"1"}})
	const warn = "sdb: failing: failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00)"
	if pvs[0].Warning != warn || pvs[0].Devices[0].Copy.Offload ||
		pvs[0].Devices[0].Copy.Reason != "sdb: it reports itself failing (failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00))" {
		t.Fatalf("warning %q, copy %+v", pvs[0].Warning, pvs[0].Devices[0].Copy)
	}
	// PVEAuditor on / sees it; Sys.Audit on the node alone lists no storage it may not audit.
	auditor, _ := e.Token("pve1", "aud@pve", map[string]string{"/": "PVEAuditor"})
	if got := list("auditor", auditor, nil); len(got) != 1 || got[0].Warning != warn {
		t.Fatalf("auditor: %+v", got)
	}
	nodeOnly, _ := e.Token("pve1", "node@pve", map[string]string{"/nodes/pve1": "PVEAuditor"})
	if got := list("Sys.Audit on the node only", nodeOnly, nil); len(got) != 0 {
		t.Fatalf("rows without Datastore.Audit: %+v", got)
	}
	storageOnly, _ := e.Token("pve1", "st@pve", map[string]string{"/storage": "PVEAuditor"})
	if r, _ := storageOnly.Do("GET", "/nodes/pve1/pvesnap/devices", nil); r.Code != 403 || r.Status != "Permission check failed (/nodes/pve1, Sys.Audit)" {
		t.Fatalf("without Sys.Audit on the node: %d %s", r.Code, r.Status)
	}
}
