//go:build lab

package restore_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

// waitLog waits until the task's log contains s (or the task ended); it reports whether s
// came.
func (l *lab) waitLog(upid, s string, within time.Duration) bool {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if strings.Contains(l.taskLog(upid), s) {
			return true
		}
		d, err := l.API.Must("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/status", nil)
		if err == nil && !strings.Contains(string(d), `"status":"running"`) {
			return strings.Contains(l.taskLog(upid), s)
		}
	}
	return false
}

// One of the two iSCSI paths goes down in the middle of an in-place restore, after the copy's
// device was found and before its disks are copied, and comes back while the second disk is
// copied: the restore completes over the path left, the disks hold the snapshot's data, and
// once the session is back nothing of the copy is left on the node or the array.
func TestRestorePathDown(t *testing.T) {
	l := newLab(t, diskSize)
	upid, r := l.restore(url.Values{"vmid": {"100"}, "point": {"fa1:before"}, "mode": {"overwrite"}, "safety-snapshot": {"0"}})
	if r.Code != 200 {
		t.Fatalf("restore: %d %s", r.Code, r.Status)
	}
	if !l.waitLog(upid, "imported the snapshot's volume group", 5*time.Minute) {
		t.Fatalf("the restore never imported the copy:\n%s", l.taskLog(upid))
	}
	must(t, l.PathDown(1))
	down := time.Now()
	came := l.waitLog(upid, "disk scsi0: ", 10*time.Minute)
	must(t, l.PathUp(1))
	up := time.Now()
	st, log := l.wait(upid)
	if st != "OK" {
		t.Fatalf("restore with a path down: %s\n%s", st, log)
	}
	if !came {
		t.Errorf("the path came back only after the restore ended: it was not down during the copy\n%s", log)
	}
	if got := l.hashes(100); got != l.hashA {
		t.Fatalf("after the restore with a path down: disks hold %v, the snapshot had %v\n%s", got, l.hashA, log)
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "multipath") || strings.Contains(line, "path") && strings.Contains(line, "EXTENDED COPY") {
			t.Logf("task: %s", line)
		}
	}
	must(t, l.SessionsLoggedIn(2*time.Minute))
	l.noLeftovers(false)
	if !t.Failed() {
		fmt.Printf("RESULT restore_path_down path_down_s=%.0f data_verified=1 leftovers=0\n", up.Sub(down).Seconds())
	}
}

// A deleted VM (its config and disks gone, as qm destroy leaves it) is restored as a new VM
// from a snapshot taken while it lived.
func TestRestoreDeletedVM(t *testing.T) {
	l := newLab(t, diskSize)
	cfg := filepath.Join(l.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "100.conf")
	must(t, os.Remove(cfg))
	for i := 0; i < 2; i++ {
		must(t, lv.Remove(ctx, "vgsan1", fmt.Sprintf("vm-100-disk-%d", i)))
	}
	var vms []struct {
		VMID  int64  `json:"vmid"`
		State string `json:"state"`
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		d, err := l.API.Must("GET", "/nodes/pve1/pvesnap/vms", nil)
		must(t, err)
		json.Unmarshal(d, &vms)
		deleted := false
		for _, v := range vms {
			deleted = deleted || (v.VMID == 100 && v.State == "deleted")
		}
		if deleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VM 100 not listed as deleted: %s", d)
		}
	}
	upid, r := l.restore(url.Values{"vmid": {"100"}, "point": {"fa1:before"}, "mode": {"new"}, "newid": {"300"}})
	if r.Code != 200 {
		t.Fatalf("restore of the deleted VM: %d %s", r.Code, r.Status)
	}
	if st, log := l.wait(upid); st != "OK" {
		t.Fatalf("restore of the deleted VM: %s\n%s", st, log)
	}
	if got := l.hashes(300); got != l.hashA {
		t.Fatalf("VM 300 holds %v, the deleted VM's snapshot had %v", got, l.hashA)
	}
	l.noLeftovers(false)
	if !t.Failed() {
		fmt.Printf("RESULT restore_deleted_vm data_verified=1 leftovers=0\n")
	}
}

// ActiveCluster: pod1 is stretched over fa-lab (fa1, where this node's host is, connected to
// the pod's volume) and fa-b (fb, with no host of this node), so the storage's volume has one
// serial on both arrays. pvesnap maps it to fa1 and says why; a snapshot taken through fb is
// the pod's, so on fa1 too; the restore copies and connects on fa1 and leaves nothing on
// either array.
func TestRestoreActiveCluster(t *testing.T) {
	l := newLab(t, diskSize)
	fb := flasharray.New("fa-b", l.FA.Data)
	must(t, flasharray.Pair(l.FA, fb))
	fbSrv, err := flasharray.Listen(fb, "127.0.0.1:0", filepath.Join(l.O.Work, "fb"))
	must(t, err)
	defer fbSrv.Close()
	tok, _ := os.ReadFile(fbSrv.TokenFile)
	fbCli, err := pure.New(fbSrv.URL, strings.TrimSpace(string(tok)), pure.Options{CAFile: fbSrv.CAFile})
	must(t, err)
	must(t, fb.CreateHost("pve2", []string{"iqn.1993-08.org.debian:01:pve2"}, nil, nil)) // another node's
	must(t, l.FA.CreatePod("pod1"))
	vol, err := l.FACli.CreateVolume(ctx, "pod1::pve-ac", 1<<30)
	must(t, err)
	must(t, l.FA.StretchPod("pod1", fb))
	_, err = l.FACli.Connect(ctx, vol.Name, pure.Target{Host: "lab"})
	must(t, err)
	dev, err := l.Attach(vol.Serial)
	must(t, err)
	detach := func() { // the storage's own volume: the node's, not a leftover of the restore
		guest.Run("vgchange", "-an", "vgac")
		l.Detach(vol.Serial)
		l.FACli.Disconnect(ctx, vol.Name, pure.Target{Host: "lab"})
	}
	defer detach()
	for _, argv := range [][]string{{"pvcreate", "-ff", "-y", dev}, {"vgcreate", "vgac", dev}} {
		if out, err := guest.Run(argv[0], argv[1:]...); err != nil {
			t.Fatalf("%s: %v %s", argv[0], err, out)
		}
	}
	must(t, l.Sim.SetStorageConfig(simpve.DefaultStorageConfig+"\nlvm: san1\n\tvgname vgsan1\n\tcontent images\n\tshared 1\n"+
		"\nlvm: ac\n\tvgname vgac\n\tcontent images\n\tshared 1\n"))
	p := l.Sim.NodePaths("pve1")
	must(t, (&arrays.Config{PVE: p.PVE}).Add(arrays.Array{ID: "fb", Type: arrays.TypeFlashArray, Endpoint: fbSrv.URL, CA: fbSrv.CAFile},
		strings.TrimSpace(string(tok))))
	must(t, lv.Create(ctx, "vgac", "vm-400-disk-0", diskSize, lvm.CreateOptions{Tags: []string{"pve-vm-400"}}))
	disk := "/dev/vgac/vm-400-disk-0"
	must(t, l.Sim.WriteVMConfig("pve1", 400, fmt.Sprintf("name: stretched\nmemory: 1024\nmeta: creation-qemu=9.2.0,ctime=%d\nscsi0: ac:vm-400-disk-0,size=%dM\n",
		time.Now().Add(-time.Minute).Unix(), diskSize/mib)))
	must(t, guest.WritePattern(disk, 41, 0, 8*mib))
	before, err := guest.Hash(disk, 0, diskSize)
	must(t, err)
	time.Sleep(1100 * time.Millisecond)
	_, err = fbCli.CreateVolumeSnapshots(ctx, []string{vol.Name}, "before") // through fb: the pod's snapshot
	must(t, err)
	must(t, guest.WritePattern(disk, 42, 0, 8*mib))

	d, err := l.API.Must("GET", "/nodes/pve1/pvesnap/storages", url.Values{"refresh": {"1"}})
	must(t, err)
	var maps []struct {
		Storage, State, Array, Volume, Pod, Choice, Reason string
	}
	must(t, json.Unmarshal(d, &maps))
	found := false
	for _, m := range maps {
		if m.Storage != "ac" {
			continue
		}
		found = true
		if m.State != "mapped" || m.Array != "fa1" || m.Volume != "pod1::pve-ac" || m.Pod != "pod1" || !strings.Contains(m.Choice, "fa1 chosen, the only one with a path to this node") {
			t.Fatalf("mapping of the stretched volume: %+v", m)
		}
		t.Logf("mapping: %s", m.Choice)
	}
	if !found {
		t.Fatalf("storage ac not mapped: %s", d)
	}
	upid, r := l.restore(url.Values{"vmid": {"400"}, "point": {"fa1:before"}, "mode": {"overwrite"}, "safety-snapshot": {"0"}})
	if r.Code != 200 {
		t.Fatalf("restore: %d %s", r.Code, r.Status)
	}
	st, log := l.wait(upid)
	if st != "OK" {
		t.Fatalf("restore of a stretched pod's VM: %s\n%s", st, log)
	}
	if h, err := guest.Hash(disk, 0, diskSize); err != nil || h != before {
		t.Fatalf("VM 400's disk after the restore: %v, matches the snapshot: %v\n%s", err, h == before, log)
	}
	if !strings.Contains(log, "array fa1: pod1::pve-ac.before copied to pvesnap-") {
		t.Errorf("the copy was not made on fa1:\n%s", log)
	}
	detach()
	l.noLeftovers(false)
	for _, v := range fb.VolumeNames() {
		if strings.HasPrefix(v, "pvesnap-") {
			t.Errorf("array volume %s left on fb", v)
		}
	}
	if !t.Failed() {
		fmt.Printf("RESULT restore_active_cluster chosen=fa1 data_verified=1 leftovers=0\n")
	}
}

// The iSCSI fabric behaves as a SAN does, and pvesnap's device removal handles it on a real
// kernel with multipathd: a LUN the array maps shows only after a rescan; one it unmaps leaves
// both paths and its map behind; restore.Host removes them (map through multipathd, paths
// flushed and deleted) and nothing of the LUN is left, in the kernel or in multipathd.
func TestSANLeavesDevices(t *testing.T) {
	l := newLab(t, 32*mib)
	vol, err := l.FACli.CreateVolume(ctx, "lab-stale", 64*mib)
	must(t, err)
	_, err = l.FACli.Connect(ctx, vol.Name, pure.Target{Host: "lab"})
	must(t, err)
	time.Sleep(2 * time.Second)
	if p := cluster.ScsiPaths(vol.Serial); len(p) != 0 {
		t.Fatalf("the new LUN appeared without a rescan: %v", p)
	}
	dev, err := l.Attach(vol.Serial)
	must(t, err)
	must(t, l.FACli.Disconnect(ctx, vol.Name, pure.Target{Host: "lab"}))
	time.Sleep(2 * time.Second)
	paths := cluster.ScsiPaths(vol.Serial)
	if len(paths) != 2 || cluster.MultipathMap(vol.Serial) == "" {
		t.Fatalf("after the unmap: paths %v, map %q: the fabric removed them itself", paths, cluster.MultipathMap(vol.Serial))
	}
	h := restore.Host{Sys: "/sys", Dev: "/dev", Run: &runner.Exec{Timeout: time.Minute}, Settle: 5 * time.Second}
	var log []string
	must(t, h.Gone(ctx, vol.Serial, 10*time.Second, func(f string, a ...any) { log = append(log, fmt.Sprintf(f, a...)) }))
	if p := cluster.ScsiPaths(vol.Serial); len(p) != 0 || cluster.MultipathMap(vol.Serial) != "" {
		t.Fatalf("after Gone: paths %v, map %q\n%s", p, cluster.MultipathMap(vol.Serial), strings.Join(log, "\n"))
	}
	for _, w := range l.MultipathdMaps() {
		if w == "3"+pure.NAA(vol.Serial) {
			t.Fatalf("multipathd still watches %s", w)
		}
	}
	t.Logf("%s: %s", dev, strings.Join(log, "; "))
	must(t, l.FACli.DestroyVolume(ctx, vol.Name))
	must(t, l.FACli.EradicateVolume(ctx, vol.Name))
	l.noLeftovers(false)
	if !t.Failed() {
		fmt.Printf("RESULT san_leaves_devices stale_paths=%d removed=1\n", len(paths))
	}
}
