package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/sim/fakecli"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// addStorage adds LVM storage sid (VG vg) on a device dev of this node whose wwid carries
// serial.
func (f *fixture) addStorage(sid, vg, dev, serial string) {
	f.t.Helper()
	cfg, err := os.ReadFile(filepath.Join(f.pve, "storage.cfg"))
	must(f.t, err)
	cfg = append(cfg, []byte("\nlvm: "+sid+"\n\tvgname "+vg+"\n\tcontent images\n\tshared 1\n")...)
	must(f.t, os.WriteFile(filepath.Join(f.pve, "storage.cfg"), cfg, 0o644))
	os.WriteFile(filepath.Join(f.inv.Roots.Dev, dev), nil, 0o644)
	d := filepath.Join(f.inv.Roots.Sys, "class", "block", dev, "device")
	must(f.t, os.MkdirAll(d, 0o755))
	must(f.t, os.WriteFile(filepath.Join(d, "wwid"), []byte("naa."+pure.NAA(serial)+"\n"), 0o644))
	f.vgDir[vg] = filepath.Join(f.t.TempDir(), vg)
	f.lvm.VGs[vg] = fakecli.VG{Store: volstore.Store{Dir: f.vgDir[vg]}, PVs: []string{"/dev/" + dev}}
}

func (f *fixture) storageMap(sid string) StorageMap {
	f.t.Helper()
	maps, err := f.inv.Map(ctx)
	must(f.t, err)
	for _, m := range maps {
		if m.Storage == sid {
			return m
		}
	}
	f.t.Fatalf("storage %s not mapped at all", sid)
	return StorageMap{}
}

// A VM whose disks are on volumes of a pod, one of them in a volume group, protected by the
// pod's protection group: one complete restore point, named by the pod's group snapshot, and
// the storages' mapping names the pod.
func TestPodProtectionGroupPoints(t *testing.T) {
	f := newFixture(t)
	must(t, f.fa.CreatePod("pod1"))
	must(t, f.fa.CreateVolumeGroup("pod1::vms"))
	s1, err := f.fa.CreateVolume("pod1::pve-lun1", 1<<40)
	must(t, err)
	s2, err := f.fa.CreateVolume("pod1::vms/pve-lun2", 1<<40)
	must(t, err)
	f.addStorage("pod-a", "vgpoda", "sdf", s1)
	f.addStorage("pod-b", "vgpodb", "sdg", s2)
	f.clock = at(0)
	f.lv("vgpoda", "vm-700-disk-0", at(0))
	f.lv("vgpodb", "vm-700-disk-1", at(0))
	f.vm(700, "in-a-pod", at(0), map[string]string{"scsi0": "pod-a:vm-700-disk-0", "scsi1": "pod-b:vm-700-disk-1"})
	must(t, f.fa.CreateProtectionGroup("pod1::pg", "pod1::pve-lun1", "pod1::vms/pve-lun2"))
	f.clock = at(1)
	_, err = f.fa.SnapshotProtectionGroup("pod1::pg", "daily-1")
	must(t, err)
	f.refresh()
	if m := f.storageMap("pod-b"); m.Volume != "pod1::vms/pve-lun2" || m.Pod != "pod1" || m.State != Mapped {
		t.Errorf("mapping of a pod's volume group volume: %+v", m)
	}
	d := f.detail(700, time.Time{})
	if len(d.Points) != 1 || d.Points[0].ID != "fa1:pod1::pg.daily-1" || len(d.Points[0].Snapshots) != 2 || len(d.Points[0].Missing) != 0 {
		t.Fatalf("points %+v", d.Points)
	}
	if d.Points[0].Snapshots["scsi1"] != "pod1::pg.daily-1.vms/pve-lun2" {
		t.Fatalf("member snapshots %v", d.Points[0].Snapshots)
	}
	_, src, err := f.inv.Sources(ctx, 700, 0, "fa1:pod1::pg.daily-1", nil)
	must(t, err)
	if len(src) != 2 {
		t.Fatalf("sources %+v", src)
	}
}

// activeCluster: fa1 (the fixture's array) and fb, paired, with pod1 stretched over them; the
// storage "ac" is on pod1::pve-ac, seen by this node with its one serial. The node's host is
// pve1 on fa1, connected to the volume.
func activeCluster(t *testing.T, f *fixture) (fb *flasharray.Array) {
	fb = flasharray.New("fa-b", nil)
	fb.Now = f.fa.Now
	must(t, flasharray.Pair(f.fa, fb))
	srv, err := flasharray.Listen(fb, "127.0.0.1:0", filepath.Join(t.TempDir(), "fb"))
	must(t, err)
	t.Cleanup(func() { srv.Close() })
	tok, _ := os.ReadFile(srv.TokenFile)
	must(t, f.inv.Arrays.Add(arrays.Array{ID: "fb", Type: arrays.TypeFlashArray, Endpoint: srv.URL, CA: srv.CAFile}, strings.TrimSpace(string(tok))))
	must(t, f.fa.CreatePod("pod1"))
	serial, err := f.fa.CreateVolume("pod1::pve-ac", 1<<40)
	must(t, err)
	must(t, f.fa.StretchPod("pod1", fb))
	f.addStorage("ac", "vgac", "sdh", serial)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "initiatorname.iscsi"), []byte("InitiatorName=iqn.1993-08.org.debian:01:pve1\n"), 0o644)
	f.inv.NodePaths = arrays.NodePaths{ISCSI: dir, NVMe: dir, Sys: dir}
	must(t, f.fa.CreateHost("pve1", []string{"iqn.1993-08.org.debian:01:pve1"}, nil, nil))
	c, err := f.inv.Client(mustArray(t, f))
	must(t, err)
	_, err = c.Connect(ctx, "pod1::pve-ac", pure.Target{Host: "pve1"})
	must(t, err)
	return fb
}

// ActiveCluster: the array chosen for a stretched pod's volume is the one the node has a
// path through, and the mapping says why; with paths through both, the host's preferred
// array decides; without that, or without any path, pvesnap refuses to guess.
func TestActiveClusterMapping(t *testing.T) {
	f := newFixture(t)
	fb := activeCluster(t, f)
	m := f.storageMap("ac")
	if m.State != Mapped || m.Array != "fa1" || m.Volume != "pod1::pve-ac" || !strings.Contains(m.Choice, "fa1 chosen, the only one with a path to this node") ||
		!strings.Contains(m.Choice, "fb has no host with this node's initiators") || !strings.Contains(m.Choice, "pod pod1 stretched over them") {
		t.Fatalf("host on fa1 only: %+v", m)
	}
	// The node is connected through fb as well (uniform access): ambiguous.
	must(t, fb.CreateHost("pve1", []string{"iqn.1993-08.org.debian:01:pve1"}, nil, nil))
	cb, err := f.inv.Client(mustArrayID(t, f, "fb"))
	must(t, err)
	m = f.storageMap("ac")
	if m.State != Mapped || m.Array != "fa1" || !strings.Contains(m.Choice, "fb: pod1::pve-ac is not connected to this node's host pve1") {
		t.Fatalf("host on fb without a connection: %+v", m)
	}
	_, err = cb.Connect(ctx, "pod1::pve-ac", pure.Target{Host: "pve1"})
	must(t, err)
	m = f.storageMap("ac")
	if m.State != Ambiguous || m.Array != "" || !strings.Contains(m.Reason, "more than one of them") || !strings.Contains(m.Reason, "preferred array") {
		t.Fatalf("paths through both: %+v", m)
	}
	// The host prefers fa-b on fb: fb is chosen.
	must(t, fb.SetPreferredArrays("pve1", "fa-b"))
	m = f.storageMap("ac")
	if m.State != Mapped || m.Array != "fb" || !strings.Contains(m.Choice, "fb chosen, the preferred array of this node's host") {
		t.Fatalf("preferred fa-b: %+v", m)
	}
	// No path at all: refused.
	must(t, cb.Disconnect(ctx, "pod1::pve-ac", pure.Target{Host: "pve1"}))
	ca, err := f.inv.Client(mustArray(t, f))
	must(t, err)
	must(t, ca.Disconnect(ctx, "pod1::pve-ac", pure.Target{Host: "pve1"}))
	m = f.storageMap("ac")
	if m.State != Ambiguous || !strings.Contains(m.Reason, "none of them connects it to a host of this node") {
		t.Fatalf("no path: %+v", m)
	}
}

// Disabling an array stops its use at once, a cached client included.
func TestDisabledArrayStopsAtOnce(t *testing.T) {
	f := newFixture(t)
	if m := f.storageMap("san1"); m.State != Mapped {
		t.Fatalf("san1 before: %+v", m)
	}
	before := f.fa.Requests()
	must(t, f.inv.Arrays.Update("fa1", "", func(a *Array) { a.Disable = true }, ""))
	if _, err := f.inv.Client(mustArray(t, f)); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("client of a disabled array: %v", err)
	}
	m := f.storageMap("san1")
	if m.State == Mapped || !strings.Contains(m.Reason, "fa1 is disabled") {
		t.Fatalf("san1 with its array disabled: %+v", m)
	}
	if n := f.fa.Requests() - before; n != 0 {
		t.Fatalf("%d requests to a disabled array", n)
	}
}

func mustArrayID(t *testing.T, f *fixture, id string) arrays.Array {
	a, err := f.inv.Arrays.Get(id)
	must(t, err)
	return a
}

// A configured host group is checked to contain this node's host before anything is
// connected, and copies are connected to that host only, never to the group.
func TestHostGroupChecked(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "initiatorname.iscsi"), []byte("InitiatorName=iqn.1993-08.org.debian:01:pve1\n"), 0o644)
	node := arrays.NodePaths{ISCSI: dir, NVMe: dir, Sys: dir}
	must(t, f.fa.CreateHost("pve1", []string{"iqn.1993-08.org.debian:01:pve1"}, nil, nil))
	must(t, f.fa.CreateHost("pve2", []string{"iqn.1993-08.org.debian:01:pve2"}, nil, nil))
	a := mustArray(t, f)
	a.HostGroup = "pve-cluster"
	c, err := f.inv.Client(a)
	must(t, err)
	if _, err := arrays.Target(ctx, c, a, node); err == nil || !strings.Contains(err.Error(), "Host group does not exist.") {
		t.Fatalf("a host group the array lacks: %v", err)
	}
	must(t, f.fa.CreateHostGroup("pve-cluster", "pve2"))
	_, err = arrays.Target(ctx, c, a, node)
	if err == nil || !strings.Contains(err.Error(), "host group pve-cluster does not contain this node's host pve1 (in no host group)") {
		t.Fatalf("the node's host outside the group: %v", err)
	}
	must(t, f.fa.CreateHostGroup("pve-other", "pve1"))
	_, err = arrays.Target(ctx, c, a, node)
	if err == nil || !strings.Contains(err.Error(), "pve1 (in host group pve-other)") {
		t.Fatalf("the node's host in another group: %v", err)
	}
	b := flasharray.New("fa-hg", nil)
	must(t, b.CreateHost("pve1", []string{"iqn.1993-08.org.debian:01:pve1"}, nil, nil))
	must(t, b.CreateHost("pve2", []string{"iqn.1993-08.org.debian:01:pve2"}, nil, nil))
	must(t, b.CreateHostGroup("pve-cluster", "pve1", "pve2"))
	srv, err := flasharray.Listen(b, "127.0.0.1:0", filepath.Join(t.TempDir(), "hg"))
	must(t, err)
	defer srv.Close()
	tok, _ := os.ReadFile(srv.TokenFile)
	cb, err := pure.New(srv.URL, strings.TrimSpace(string(tok)), pure.Options{CAFile: srv.CAFile})
	must(t, err)
	tg, err := arrays.Target(ctx, cb, arrays.Array{ID: "fb", HostGroup: "pve-cluster"}, node)
	if err != nil || tg.Host != "pve1" || tg.HostGroup != "" {
		t.Fatalf("the node's host in the group: %+v %v", tg, err)
	}
}
