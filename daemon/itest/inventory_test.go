package itest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// inventoryVM makes VM 100 with a disk on san1 (the array-backed storage), once per environment.
func (e *Env) inventoryVM() {
	if e.invReady {
		return
	}
	e.withArray()
	st := e.Sim.Store("pve1", "san1")
	must(e.T, st.Create("vm-100-disk-0", 4<<30, volstore.Meta{Created: time.Now().Add(-time.Hour).Unix()}))
	must(e.T, e.Sim.WriteVMConfig("pve1", 100, fmt.Sprintf("name: web\nmemory: 1024\nmeta: creation-qemu=9.2.0,ctime=%d\nscsi0: san1:vm-100-disk-0,size=4G\n",
		time.Now().Add(-time.Hour).Unix())))
	e.invReady = true
}

// The inventory through :8009: VMs filtered by VM.Audit, an on-demand snapshot as a task
// (VM.Snapshot), the VM's restore points, the storage mapping filtered by Datastore.Audit.
func TestInventoryAPI(t *testing.T) {
	e := Start(t)
	e.inventoryVM()
	must(t, e.Sim.Store("pve1", "san1").Create("vm-101-disk-0", 4<<30, volstore.Meta{}))
	must(t, e.Sim.WriteVMConfig("pve1", 101, fmt.Sprintf("name: db\nmeta: ctime=%d\nvirtio0: san1:vm-101-disk-0\n", time.Now().Unix())))
	root := e.Root("pve1")
	one, _ := e.Token("pve1", "ops@pve", map[string]string{"/vms/100": "PVEVMAdmin"})
	none, _ := e.Token("pve1", "none@pve", map[string]string{"/nodes": "PVEAuditor"})

	list := func(c *simpve.Client) []map[string]any {
		r, err := c.Do("GET", "/nodes/pve1/pvesnap/vms", nil)
		must(t, err)
		if r.Code != 200 {
			t.Fatalf("vms: %d %s", r.Code, r.Status)
		}
		var out []map[string]any
		json.Unmarshal(r.Data, &out)
		return out
	}
	if l := list(root); len(l) != 2 {
		t.Fatalf("root sees %d VMs: %v", len(l), l)
	}
	if l := list(one); len(l) != 1 || l[0]["vmid"] != 100.0 || l[0]["name"] != "web" || l[0]["mapped_disks"] != 1.0 {
		t.Fatalf("VM.Audit on /vms/100 only: %v", l)
	}
	if l := list(none); len(l) != 0 {
		t.Fatalf("no VM.Audit: %v", l)
	}
	r, _ := one.Do("POST", "/nodes/pve1/pvesnap/vms/101/snapshot", nil)
	if r.Code != 403 || r.Status != "Permission check failed (/vms/101, VM.Snapshot)" {
		t.Fatalf("snapshot of another VM: %d %s", r.Code, r.Status)
	}
	r, err := one.Do("POST", "/nodes/pve1/pvesnap/vms/100/snapshot", url.Values{"suffix": {"before-upgrade"}})
	must(t, err)
	var upid string
	json.Unmarshal(r.Data, &upid)
	if r.Code != 200 || !strings.HasPrefix(upid, "UPID:pve1:") || !strings.Contains(upid, ":pvesnapsnap:100:ops@pve!csi:") {
		t.Fatalf("snapshot: %d %s %s", r.Code, r.Status, r.Raw)
	}
	st, err := root.WaitTask(upid, 30*time.Second)
	if err != nil || st != "OK" && !strings.HasPrefix(st, "WARNINGS") {
		log, _ := root.Do("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/log", nil)
		t.Fatalf("snapshot task: %q %v\n%s", st, err, log.Raw)
	}
	r, _ = one.Do("GET", "/nodes/pve1/pvesnap/vms/100", nil)
	var d struct {
		State  string `json:"state"`
		Points []struct {
			ID        string            `json:"id"`
			Snapshots map[string]string `json:"snapshots"`
		} `json:"points"`
	}
	json.Unmarshal(r.Data, &d)
	if r.Code != 200 || d.State != "live" || len(d.Points) != 1 || d.Points[0].ID != "fa1:before-upgrade" || d.Points[0].Snapshots["scsi0"] != "pve-san1.before-upgrade" {
		t.Fatalf("VM 100 after the snapshot: %d %s", r.Code, r.Raw)
	}
	if r, _ := root.Do("GET", "/nodes/pve1/pvesnap/vms/999", nil); r.Code != 404 {
		t.Fatalf("unknown VM: %d %s", r.Code, r.Status)
	}
	if r, _ := root.Do("POST", "/nodes/pve1/pvesnap/vms/100/snapshot", url.Values{"suffix": {"-bad"}}); r.Code != 400 || r.Errors["suffix"] == "" {
		t.Fatalf("bad suffix: %d %s %v", r.Code, r.Status, r.Errors)
	}
	r, _ = root.Do("GET", "/nodes/pve1/pvesnap/storages", nil)
	if r.Code != 200 || !strings.Contains(string(r.Raw), `"storage":"san1"`) || !strings.Contains(string(r.Raw), `"state":"mapped"`) {
		t.Fatalf("storages: %s", r.Raw)
	}
	r, _ = none.Do("GET", "/nodes/pve1/pvesnap/storages", nil)
	if r.Code != 200 || string(r.Data) != "[]" {
		t.Fatalf("storages without Datastore.Audit: %s", r.Raw)
	}
}
