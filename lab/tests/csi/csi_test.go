//go:build lab

// In-guest tests of the copies proxmox-csi-plugin gets through pvesnap, on a real ZFS pool
// (rpool/data, local-zfs) and a real LVM thin pool (pve/data, local-lvm), as on a stock PVE
// node: the plugin's call sequence through the real daemon, every copy verified by content,
// and dependency chains — a clone of a clone, the origin deleted first — without data loss.
// The simulated pveproxy lists, allocates and deletes on the same real pools
// (cluster.RealVolumes), as PVE's ZFSPoolPlugin and LvmThinPlugin do.
package csi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

const (
	mib  = int64(1) << 20
	size = 64 * mib
	work = "/tmp/lab-csi"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := guest.Run(name, args...); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// storage is one storage under test: how its volumes are found on the guest.
type storage struct {
	sid  string
	path func(t *testing.T, vol string) string
	api  *simpve.Client
}

type contentItem struct {
	Volid string `json:"volid"`
	Size  int64  `json:"size"`
	VMID  int64  `json:"vmid"`
}

func (s storage) content(t *testing.T) map[string]contentItem {
	t.Helper()
	d, err := s.api.Must("GET", "/nodes/pve1/storage/"+s.sid+"/content", nil)
	must(t, err)
	var l []contentItem
	must(t, json.Unmarshal(d, &l))
	out := map[string]contentItem{}
	for _, it := range l {
		out[strings.TrimPrefix(it.Volid, s.sid+":")] = it
	}
	return out
}

// poll is the plugin's first status poll right after the call, then one per second.
func (s storage) poll(t *testing.T, upid string) {
	t.Helper()
	for i := 0; i < 30; i++ {
		d, err := s.api.Must("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/status", nil)
		must(t, err)
		var st struct{ Status, Exitstatus string }
		json.Unmarshal(d, &st)
		if st.Status == "stopped" {
			if st.Exitstatus != "OK" {
				t.Fatalf("task %s: %s", upid, st.Exitstatus)
			}
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("task %s still running after 30 s", upid)
}

// copy is the plugin's CreateSnapshot (or a clone): POST …/content/{source} target=…; a
// copy pvesnap makes instantly is finished at the first poll.
func (s storage) copy(t *testing.T, source, target string) {
	t.Helper()
	start := time.Now()
	d, err := s.api.Must("POST", "/nodes/pve1/storage/"+s.sid+"/content/"+source, url.Values{"target": {target}})
	must(t, err)
	upid := simpve.UPIDOf(d)
	if !strings.Contains(upid, ":imgcopy::") {
		t.Fatalf("copy answered %s, not an imgcopy UPID", d)
	}
	dd, err := s.api.Must("GET", "/nodes/pve1/tasks/"+url.PathEscape(upid)+"/status", nil)
	must(t, err)
	var st struct{ Status, Exitstatus string }
	json.Unmarshal(dd, &st)
	if st.Status != "stopped" || st.Exitstatus != "OK" {
		t.Fatalf("copy %s -> %s: first poll %s/%s (an instant copy is done when its UPID is returned)", source, target, st.Status, st.Exitstatus)
	}
	t.Logf("copy %s:%s -> %s: task OK at the first poll, %s after the call", s.sid, source, target, time.Since(start).Round(time.Millisecond))
}

func (s storage) delete(t *testing.T, vol string) {
	t.Helper()
	d, err := s.api.Must("DELETE", "/nodes/pve1/storage/"+s.sid+"/content/"+vol, nil)
	must(t, err)
	s.poll(t, simpve.UPIDOf(d))
	if _, still := s.content(t)[vol]; still {
		t.Fatalf("%s still listed after its delete task", vol)
	}
}

func (s storage) hash(t *testing.T, vol string) string {
	t.Helper()
	h, err := guest.Hash(s.path(t, vol), 0, size)
	must(t, err)
	return h
}

// sequence runs the plugin's calls and the chains on storage s, and leaves no volume.
func sequence(t *testing.T, s storage, vmid int) {
	src := fmt.Sprintf("vm-%d-disk-0", vmid)
	snapA := fmt.Sprintf("vm-9999-snapshot-%d-a", vmid)
	cloneB := fmt.Sprintf("vm-9998-clone-%d-b", vmid)
	// The plugin's lookups, through pvesnap to pveproxy.
	for _, p := range []string{"/storage/" + s.sid, "/nodes", "/nodes/pve1/storage/" + s.sid + "/status"} {
		if _, err := s.api.Must("GET", p, nil); err != nil {
			t.Fatalf("lookup %s: %v", p, err)
		}
	}
	// The source volume, allocated through the API like a PVC's volume.
	_, err := s.api.Must("POST", "/nodes/pve1/storage/"+s.sid+"/content",
		url.Values{"filename": {src}, "size": {fmt.Sprintf("%dM", size/mib)}, "vmid": {fmt.Sprint(vmid)}})
	must(t, err)
	must(t, guest.WritePattern(s.path(t, src), uint64(vmid), 0, size))
	h0 := s.hash(t, src)

	s.copy(t, src, snapA)
	if it, ok := s.content(t)[snapA]; !ok || it.Size != size || it.VMID != 9999 {
		t.Fatalf("content list: %s is %+v; the plugin reads ReadyToUse from its size %d", snapA, it, size)
	}
	if h := s.hash(t, snapA); h != h0 {
		t.Fatal("the copy does not hold the source's data")
	}
	// The copy is the source at the time of the call: later writes to the source stay there.
	must(t, guest.WritePattern(s.path(t, src), uint64(vmid)+1, size/2, 8*mib))
	if h := s.hash(t, snapA); h != h0 {
		t.Fatal("a write to the source changed the copy")
	}

	// A clone of the copy (a PVC from a VolumeSnapshot).
	s.copy(t, snapA, cloneB)
	if h := s.hash(t, cloneB); h != h0 {
		t.Fatal("the clone of the copy does not hold the copy's data")
	}
	must(t, guest.WritePattern(s.path(t, cloneB), uint64(vmid)+2, 0, 8*mib))
	hB := s.hash(t, cloneB)

	// The origin first: its copies keep their data.
	s.delete(t, src)
	if h := s.hash(t, snapA); h != h0 {
		t.Fatal("deleting the origin changed its copy")
	}
	if h := s.hash(t, cloneB); h != hB {
		t.Fatal("deleting the origin changed the clone of its copy")
	}
	s.delete(t, snapA)
	if h := s.hash(t, cloneB); h != hB {
		t.Fatal("deleting the copy changed its clone")
	}
	s.delete(t, cloneB)
	if left := s.content(t); len(left) != 0 {
		t.Fatalf("volumes left on %s: %v", s.sid, left)
	}
}

func TestCSIOnRealZFSAndLVMThin(t *testing.T) {
	// local-zfs: pool rpool, dataset rpool/data, on a partition of vda (no udev: zpool would
	// wait for it after labelling a whole disk).
	zfs := true
	if out, err := guest.Run("modprobe", "zfs"); err != nil {
		zfs = false
		t.Logf("SKIP the zfspool half: no ZFS module for this kernel (%v %s)", err, strings.TrimSpace(out))
	} else {
		parts, err := guest.Partition("/dev/vda", 1)
		must(t, err)
		run(t, "zpool", "create", "-f", "-O", "compression=off", "rpool", parts[0])
		t.Cleanup(func() { guest.Run("zpool", "destroy", "-f", "rpool") })
		run(t, "zfs", "create", "rpool/data")
	}
	// local-lvm: VG pve with thin pool data, on vdb.
	run(t, "pvcreate", "-ff", "-y", "/dev/vdb")
	run(t, "vgcreate", "pve", "/dev/vdb")
	t.Cleanup(func() {
		guest.Run("vgremove", "-ff", "-y", "pve")
		guest.Run("pvremove", "-ff", "-y", "/dev/vdb")
	})
	run(t, "lvcreate", "--yes", "--type", "thin-pool", "-L", "1G", "-n", "data", "pve")

	n, err := cluster.Start(cluster.Options{Work: work, Sim: simpve.Options{Volumes: cluster.RealVolumes}})
	if n != nil {
		t.Cleanup(n.Close)
	}
	must(t, err)

	t.Run("zfspool-token-json", func(t *testing.T) {
		if !zfs {
			t.Skip("SKIP: no ZFS module for this kernel")
		}
		// proxmox-csi-plugin's own way: an API token, JSON bodies.
		must(t, n.Sim.AddUser("kubernetes-csi@pve", "csi-secret"))
		must(t, n.Sim.AddACL("/", "kubernetes-csi@pve", "PVEAuditor", true))
		must(t, n.Sim.AddACL("/storage", "kubernetes-csi@pve", "PVEDatastoreAdmin", true))
		id, secret, err := n.Sim.AddToken("kubernetes-csi@pve", "csi", false)
		must(t, err)
		c, err := simpve.NewClient(n.URL, n.Sim.CAFile())
		must(t, err)
		c.Token, c.JSON = id+"="+secret, true
		s := storage{sid: "local-zfs", api: c, path: func(t *testing.T, vol string) string {
			d, err := cluster.ZvolDevice("rpool/data/"+vol, 20*time.Second)
			must(t, err)
			return d
		}}
		sequence(t, s, 100)
		// The copies went through /dev/zfs, not the zfs command: the pool's history has
		// pvesnap's own lines (the command would have logged "zfs snapshot …").
		if out, err := guest.Output("zpool", "history", "rpool"); err != nil || !strings.Contains(out, "pvesnap: zfs snapshot rpool/data/vm-100-disk-0@pvesnap-") ||
			!strings.Contains(out, "pvesnap: zfs clone rpool/data/vm-100-disk-0@pvesnap-") {
			t.Fatalf("zpool history does not show pvesnap's snapshot and clone ioctls (%v):\n%s", err, out)
		}
		// pvesnap's snapshots went with the volumes that needed them.
		if out, _ := guest.Output("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", "rpool"); strings.TrimSpace(out) != "" {
			t.Fatalf("snapshots left on the pool:\n%s", out)
		}

		// A clone pvesnap did not make: the delete is refused and nothing is touched.
		_, err = c.Must("POST", "/nodes/pve1/storage/local-zfs/content", url.Values{"filename": {"vm-101-disk-0"}, "size": {"64M"}, "vmid": {"101"}})
		must(t, err)
		run(t, "zfs", "snapshot", "rpool/data/vm-101-disk-0@admin")
		run(t, "zfs", "clone", "rpool/data/vm-101-disk-0@admin", "rpool/data/vm-102-disk-0")
		d, err := c.Must("DELETE", "/nodes/pve1/storage/local-zfs/content/vm-101-disk-0", nil)
		must(t, err)
		st, err := c.WaitTask(simpve.UPIDOf(d), time.Minute)
		must(t, err)
		if !strings.Contains(st, "dependent clones not made by pvesnap (rpool/data/vm-102-disk-0)") {
			t.Fatalf("delete of a volume with a foreign clone ended %q", st)
		}
		for _, ds := range []string{"rpool/data/vm-101-disk-0", "rpool/data/vm-101-disk-0@admin", "rpool/data/vm-102-disk-0"} {
			run(t, "zfs", "list", "-H", ds)
		}
	})

	t.Run("lvmthin-ticket-form", func(t *testing.T) {
		// A password ticket with its CSRF token, form bodies.
		must(t, n.Sim.AddUser("csi-ticket@pve", "csi-ticket-pw"))
		must(t, n.Sim.AddACL("/", "csi-ticket@pve", "PVEAuditor", true))
		must(t, n.Sim.AddACL("/storage/local-lvm", "csi-ticket@pve", "PVEDatastoreAdmin", true))
		c, err := simpve.NewClient(n.URL, n.Sim.CAFile())
		must(t, err)
		must(t, c.Login("csi-ticket@pve", "csi-ticket-pw"))
		s := storage{sid: "local-lvm", api: c, path: func(t *testing.T, vol string) string { return "/dev/pve/" + vol }}
		sequence(t, s, 200)
		// The thin snapshots are thin volumes of the pool, not thick LVs beside it.
		if out, err := guest.Output("lvs", "--noheadings", "-o", "lv_name", "pve"); err != nil || strings.TrimSpace(out) != "data" {
			t.Fatalf("LVs left in VG pve: %q %v", out, err)
		}
	})
}
