package itest

import (
	"net/url"
	"strings"
	"testing"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// TestOnPVE8 runs the CSI sequence and the restore API against a stand-in that answers as
// PVE 8.4 (its API schema, its authentication texts): pvesnap serves both releases, and the
// stand-in's default is PVE 9.
func TestOnPVE8(t *testing.T) {
	e := StartWith(t, simpve.Options{Release: "8.4.1"})
	if r := e.Sim.Release(); !strings.HasPrefix(r, "8.") {
		t.Fatalf("stand-in release %s", r)
	}
	seedVolume(t, e, "local-zfs", "vm-100-disk-0", 8<<20)
	c, _ := e.Token("pve1", "kubernetes-csi@pve", map[string]string{"/": "PVEAuditor", "/storage": "PVEDatastoreAdmin"})
	csiSequence(t, e, c, "local-zfs", "vm-100-disk-0")

	e.inventoryVM()
	_, err := e.fa.Array.SnapshotVolumes("p8", "pve-san1")
	must(t, err)
	root := e.Root("pve1")
	r, _ := root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:p8"}, "mode": {"overwrite"}, "newid": {"150"}})
	if r.Code != 400 {
		t.Fatalf("overwrite with newid on PVE 8: %d %s", r.Code, r.Status)
	}
	r, _ = root.Do("GET", "/nodes/pve1/pvesnap/vms/100", nil)
	if r.Code != 200 || !strings.Contains(string(r.Data), `"fa1:p8"`) {
		t.Fatalf("VM 100's restore points on PVE 8: %d %s", r.Code, r.Raw)
	}
}
