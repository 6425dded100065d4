package itest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
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

// TestProxmoxerRestore drives the restore API with Debian's python3-proxmoxer, an
// independent client: the VM list, an on-demand snapshot, the VM's restore points and a
// restore as a new VM, followed through pvesnap's task endpoints. Without hardware the
// restored volume never appears, so the task must fail that way and leave no VM behind.
func TestProxmoxerRestore(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import proxmoxer, requests").Run(); err != nil {
		t.Skipf("SKIP: python3-proxmoxer is not installed (make test installs it): %v", err)
	}
	e := Start(t)
	e.inventoryVM()
	e.Sim.AddUser("backup@pve", "pw")
	e.Sim.AddACL("/vms", "backup@pve", "PVEVMAdmin", true)
	e.Sim.AddACL("/storage", "backup@pve", "PVEDatastoreAdmin", true)
	_, secret, err := e.Sim.AddToken("backup@pve", "restore", false)
	must(t, err)
	host, port, _ := strings.Cut(strings.TrimPrefix(e.URL("pve1"), "https://"), ":")
	cmd := exec.Command("/usr/bin/python3", "testdata/pvesnap_client.py", host, port, "restore", "100", "proxmoxer", "150", "no device with serial")
	cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+e.Sim.CAFile(), "PVE_USER=backup@pve", "PVE_TOKEN_NAME=restore", "PVE_TOKEN_VALUE="+secret)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK restore") {
		t.Fatalf("proxmoxer restore: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(string(out)))
}

// Restoring VM X's point reads X's data: PVE's rule for restoring X's backup (VM.Backup on
// /vms/X) holds in both modes, whatever the caller may do to the target; an in-place restore
// of a VM PVE would not restore over is refused before any work, in PVE's words.
func TestRestorePermissionsAndGuards(t *testing.T) {
	e := Start(t)
	e.inventoryVM()
	_, err := e.fa.Array.SnapshotVolumes("good", "pve-san1")
	must(t, err)
	// An auditor of VM 100 who may create VM 150 must not copy VM 100's disks into it.
	spy, _ := e.Token("pve1", "spy@pve", map[string]string{"/vms/100": "PVEAuditor", "/vms/150": "PVEVMAdmin", "/storage": "PVEDatastoreUser"})
	r, _ := spy.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "newid": {"150"}})
	if r.Code != 403 || !strings.Contains(r.Status, "Permission check failed (/vms/100, VM.Backup)") {
		t.Fatalf("new VM from a VM the caller may only audit: %d %s", r.Code, r.Status)
	}
	r, _ = spy.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "mode": {"overwrite"}})
	if r.Code != 403 || !strings.Contains(r.Status, "(/vms/100, VM.Backup)") {
		t.Fatalf("overwrite by an auditor: %d %s", r.Code, r.Status)
	}
	// A backup operator of VM 100 with VM.Allocate on 150 but no SDN.Use on its bridge.
	must(t, e.Sim.WriteVMConfig("pve1", 100, fmt.Sprintf("name: web\nmemory: 1024\nmeta: creation-qemu=9.2.0,ctime=%d\nscsi0: san1:vm-100-disk-0,size=4G\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n",
		time.Now().Add(-time.Hour).Unix())))
	ops, _ := e.Token("pve1", "ops@pve", map[string]string{"/vms/100": "PVEVMAdmin", "/vms/150": "PVEVMAdmin", "/storage": "PVEDatastoreUser"})
	r, _ = ops.Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "newid": {"150"}})
	if r.Code != 403 || !strings.Contains(r.Status, "(/sdn/zones/localnetwork/vmbr0, SDN.Use)") {
		t.Fatalf("a new VM on a bridge the caller may not use: %d %s", r.Code, r.Status)
	}
	// A VM under backup: refused at once, with PVE's words.
	must(t, e.Sim.WriteVMConfig("pve1", 100, fmt.Sprintf("name: web\nmemory: 1024\nlock: backup\nmeta: creation-qemu=9.2.0,ctime=%d\nscsi0: san1:vm-100-disk-0,size=4G\n",
		time.Now().Add(-time.Hour).Unix())))
	r, _ = e.Root("pve1").Do("POST", "/nodes/pve1/pvesnap/restore", url.Values{"vmid": {"100"}, "point": {"fa1:good"}, "mode": {"overwrite"}})
	if r.Code != 409 || !strings.Contains(r.Status, "unable to restore VM 100 - VM is locked (backup)") {
		t.Fatalf("overwrite of a VM under backup: %d %s", r.Code, r.Status)
	}
	for _, v := range e.fa.Array.VolumeNames() {
		if strings.HasPrefix(v, "pvesnap-") {
			t.Errorf("array volume %s made by a refused restore", v)
		}
	}
}

// Temporary volumes carry their cluster, node and job in their names; a sweep removes this
// node's leftovers that no journal knows and those of nodes that left the cluster, once old
// enough, and never another cluster's, a member node's, a running job's or a young one.
func TestSweepLeftovers(t *testing.T) {
	e := Start(t, "pve1", "pve2")
	e.inventoryVM()
	fa := e.fa.Array
	r := e.Restore["pve1"].R
	id, err := restore.NewIdentity(e.Sim.NodePaths("pve1").PVE, "pve1")
	must(t, err)
	db, err := store.Open(filepath.Join(e.Sim.NodePaths("pve1").State, "pvesnap.db"))
	must(t, err)
	defer db.Close()
	_, err = restore.Begin(t0ctx(), db, "running01", restore.KindRestore, "vm:300", nil)
	must(t, err)
	old := time.Now().Add(-3 * time.Hour)
	fa.Now = func() time.Time { return old }
	mk := func(name string) {
		_, err := fa.CreateVolume(name, 1<<30)
		must(t, err)
	}
	lost := id.TempVolume("lostjob01", 0)                                                                    // ours, job unknown: swept
	running := id.TempVolume("running01", 0)                                                                 // ours, job running: kept
	member := restore.Identity{Cluster: id.Cluster, Node: restore.NodeTag("pve2")}.TempVolume("job0002", 0)  // pve2 sweeps its own: kept
	gone := restore.Identity{Cluster: id.Cluster, Node: restore.NodeTag("retired")}.TempVolume("job0003", 1) // node left: swept
	other := restore.Identity{Cluster: "0badc0de", Node: id.Node}.TempVolume("job0004", 0)                   // another cluster: kept
	for _, v := range []string{lost, running, member, gone, other, "pvesnap-legacy01-0", "vm-900-disk-0"} {
		mk(v)
	}
	fa.Now = time.Now
	young := id.TempVolume("youngjob1", 0) // ours, unknown, but just made: kept for now
	mk(young)
	var log strings.Builder
	logf := func(f string, a ...any) { fmt.Fprintf(&log, f+"\n", a...) }
	found, err := r.Sweep(t0ctx(), true, restore.SweepGrace, logf)
	must(t, err)
	var names []string
	for _, s := range found {
		names = append(names, s.Volume)
	}
	if strings.Join(names, " ") != lost+" "+gone && strings.Join(names, " ") != gone+" "+lost {
		t.Fatalf("dry run found %v, want %s and %s\n%s", names, lost, gone, log.String())
	}
	if !strings.Contains(log.String(), "no journal of this node knows restore job lostjob01") || !strings.Contains(log.String(), "no member of the cluster") {
		t.Errorf("dry-run log:\n%s", log.String())
	}
	for _, v := range []string{lost, gone} {
		if !slicesContains(fa.VolumeNames(), v) {
			t.Fatalf("dry run removed %s", v)
		}
	}
	_, err = r.Sweep(t0ctx(), false, restore.SweepGrace, logf)
	must(t, err)
	left := fa.VolumeNames()
	for _, v := range []string{lost, gone} {
		if slicesContains(left, v) {
			t.Errorf("%s not swept: %v", v, left)
		}
	}
	for _, v := range []string{running, member, other, young, "pvesnap-legacy01-0", "vm-900-disk-0"} {
		if !slicesContains(left, v) {
			t.Errorf("%s swept, but it is not a leftover of this cluster's:\n%s", v, log.String())
		}
	}
}

func slicesContains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
