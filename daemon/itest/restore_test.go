package itest

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// The restore route's refusals, and a restore that fails in its worker leaving nothing behind.
func TestRestoreAPI(t *testing.T) {
	e := Start(t)
	e.inventoryVM()
	fa := e.fa.Array
	root := e.Root("pve1")

	// A snapshot from before the disk existed: 409 naming snapshot, disk and times.
	fa.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
	_, err := fa.SnapshotVolumes("before-disk", "pve-san1")
	must(t, err)
	fa.Now = time.Now
	r, _ := root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:before-disk"}, "mode": {"overwrite"}})
	if r.Code != 409 || !strings.Contains(r.Status, "snapshot pve-san1.before-disk was taken") || !strings.Contains(r.Status, "before disk scsi0 (san1:vm-100-disk-0)") {
		t.Fatalf("predating snapshot: %d %s", r.Code, r.Status)
	}
	if r, _ := root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:nope"}}); r.Code != 404 {
		t.Fatalf("unknown point: %d %s", r.Code, r.Status)
	}
	_, err = fa.SnapshotVolumes("good", "pve-san1")
	must(t, err)

	// A restore in progress on VM 100 refuses another.
	db, err := store.Open(filepath.Join(e.Sim.NodePaths("pve1").State, "pvesnap.db"))
	must(t, err)
	defer db.Close()
	j, err := restore.Begin(t0ctx(), db, "busyjob1", restore.KindRestore, "vm:100", nil)
	must(t, err)
	r, _ = root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "mode": {"overwrite"}})
	if r.Code != 409 || !strings.Contains(r.Status, "vm:100 is being restored by job busyjob1") {
		t.Fatalf("concurrent restore: %d %s", r.Code, r.Status)
	}
	must(t, restore.Unwind(t0ctx(), db, j.Job, func(context.Context, restore.Action) error { return nil }, t.Logf))

	// mode=new with options of overwrite and vice versa.
	if r, _ := root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "mode": {"overwrite"}, "newid": {"150"}}); r.Code != 400 {
		t.Fatalf("overwrite with newid: %d %s", r.Code, r.Status)
	}
	// Per-disk targets: only disks the point restores, only LVM storages, each one checked for
	// Datastore.AllocateSpace like the common target.
	for _, c := range []struct {
		disks string
		code  int
		want  string
	}{
		{"scsi9:san1", 400, "disk scsi9 is not restored from fa1:good"},
		{"scsi0:local-lvm", 400, "storage 'local-lvm' is not an LVM storage available on node pve1"},
		{"scsi0:san1,scsi0:san1", 400, "disk-storage"},
	} {
		r, _ := root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "newid": {"150"}, "disk-storage": {c.disks}})
		if r.Code != c.code || !strings.Contains(r.Status+string(r.Raw), c.want) {
			t.Errorf("disk-storage %s: %d %s %s", c.disks, r.Code, r.Status, r.Raw)
		}
	}
	if r, _ := root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "mode": {"overwrite"}, "disk-storage": {"scsi0:san1"}}); r.Code != 400 {
		t.Errorf("overwrite with disk-storage: %d %s", r.Code, r.Status)
	}
	must(t, e.Sim.SetStorageConfig(simpve.DefaultStorageConfig+sanStorage+"\nlvm: san2\n\tvgname vgsan2\n\tcontent images\n"))
	ops, _ := e.Token("pve1", "ops@pve", map[string]string{"/vms": "PVEVMAdmin", "/storage/san1": "PVEDatastoreUser"})
	if r, _ := ops.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "newid": {"150"}, "disk-storage": {"scsi0:san2"}}); r.Code != 403 || r.Status != "Permission check failed (/storage/san2, Datastore.AllocateSpace)" {
		t.Errorf("disk-storage on a storage without Datastore.AllocateSpace: %d %s", r.Code, r.Status)
	}

	// A new-VM restore whose device never appears (no real hardware here): the task fails and
	// undoes everything: no temp volume, no connection, no reserved VMID.
	r, err = root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "newid": {"150"}})
	must(t, err)
	var upid string
	json.Unmarshal(r.Data, &upid)
	if r.Code != 200 || !strings.Contains(upid, ":pvesnaprestore:100:root@pam:") {
		t.Fatalf("restore: %d %s %s", r.Code, r.Status, r.Raw)
	}
	st, err := root.WaitTask(upid, 60*time.Second)
	must(t, err)
	logR, _ := root.Do("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/log", url.Values{"limit": {"500"}})
	if !strings.Contains(st, "no device with serial") {
		t.Fatalf("task status %q\n%s", st, logR.Raw)
	}
	for _, want := range []string{"VMID 150 reserved", "copied to pvesnap-", "connected pvesnap-", "clean up step", "undo step 1 (reserve VMID)"} {
		if !strings.Contains(string(logR.Raw), want) {
			t.Errorf("task log lacks %q:\n%s", want, logR.Raw)
		}
	}
	for _, v := range fa.VolumeNames() {
		if strings.HasPrefix(v, "pvesnap-") {
			t.Errorf("array volume %s left behind", v)
		}
	}
	if _, err := os.Stat(filepath.Join(e.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "150.conf")); !os.IsNotExist(err) {
		t.Errorf("reserved VM 150 config left behind: %v", err)
	}
	jobs, _ := restore.Unfinished(t0ctx(), db)
	if len(jobs) != 0 {
		t.Errorf("unfinished jobs: %+v", jobs)
	}
}

// The array goes away during a restore: the task fails, its cleanup cannot reach the array
// and the job waits in cleanup-failed; once the array is back, recovery removes the temporary
// volume and nothing is left.
func TestRestoreArrayUnreachable(t *testing.T) {
	e := Start(t)
	e.inventoryVM()
	fa := e.fa.Array
	_, err := fa.SnapshotVolumes("good", "pve-san1")
	must(t, err)
	root := e.Root("pve1")
	addr := strings.TrimPrefix(e.fa.URL, "https://")
	r, err := root.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "newid": {"160"}})
	must(t, err)
	var upid string
	json.Unmarshal(r.Data, &upid)
	if r.Code != 200 {
		t.Fatalf("restore: %d %s", r.Code, r.Status)
	}
	// The temporary volume exists: take the array away.
	for i := 0; ; i++ {
		if hasTemp(fa) {
			break
		}
		if i > 100 {
			t.Fatal("the restore never made its temporary volume")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.fa.Close()
	st, err := root.WaitTask(upid, 60*time.Second)
	must(t, err)
	if !strings.Contains(st, "cleanup failed too") {
		t.Fatalf("task status %q", st)
	}
	db, err := store.Open(filepath.Join(e.Sim.NodePaths("pve1").State, "pvesnap.db"))
	must(t, err)
	defer db.Close()
	jobs, _ := restore.Unfinished(t0ctx(), db)
	if len(jobs) != 1 || jobs[0].State != restore.StateStuck || !hasTemp(fa) {
		t.Fatalf("with the array down: jobs %+v, temporary volume present %v", jobs, hasTemp(fa))
	}
	if _, err := os.Stat(filepath.Join(e.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "160.conf")); !os.IsNotExist(err) {
		t.Errorf("reserved VM 160 left behind: %v", err)
	}
	// The array is back: the daemon's recovery finishes the cleanup.
	srv, err := flasharray.Listen(fa, addr, filepath.Dir(e.fa.CAFile))
	must(t, err)
	defer srv.Close()
	if n := e.Restore["pve1"].Recover(t0ctx()); n != 1 {
		t.Fatalf("recovered %d jobs", n)
	}
	if hasTemp(fa) {
		t.Fatalf("temporary volume left: %v", fa.VolumeNames())
	}
	if jobs, _ := restore.Unfinished(t0ctx(), db); len(jobs) != 0 {
		t.Fatalf("jobs after recovery: %+v", jobs)
	}
}

func hasTemp(fa *flasharray.Array) bool {
	for _, v := range fa.VolumeNames() {
		if strings.HasPrefix(v, "pvesnap-") {
			return true
		}
	}
	return false
}
