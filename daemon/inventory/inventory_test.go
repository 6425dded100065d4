package inventory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/sim/fakecli"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

var ctx = context.Background()

// t0 is the fixture's epoch; every time in a test is an offset from it.
var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func at(h float64) time.Time { return t0.Add(time.Duration(h * float64(time.Hour))) }

// fixture: a node with LVM storages on simulated FlashArray volumes, seen through a fake
// /dev and /sys, and a cluster filesystem with VM configs written by the test.
type fixture struct {
	t     *testing.T
	inv   *Inventory
	fa    *flasharray.Array
	lvm   *fakecli.LVM
	clock time.Time
	pve   string
	vgDir map[string]string
}

const storageCfg = `dir: local
	path /var/lib/vz
	content iso,backup

lvm: san1
	vgname vgsan1
	content images
	shared 1

lvm: san2
	vgname vgsan2
	content images
	shared 1

lvm: multi
	vgname vgmulti
	content images
	shared 1

lvm: local-sas
	vgname vglocal
	content images

lvmthin: local-lvm
	vgname pve
	thinpool data
	content images
`

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{t: t, clock: t0, pve: filepath.Join(root, "pve"), vgDir: map[string]string{}}
	f.fa = flasharray.New("fa-lab", nil)
	f.fa.Now = func() time.Time { return f.clock }
	srv, err := flasharray.Listen(f.fa, "127.0.0.1:0", filepath.Join(root, "fa"))
	must(t, err)
	t.Cleanup(func() { srv.Close() })
	tok, _ := os.ReadFile(srv.TokenFile)
	ac := &arrays.Config{PVE: f.pve}
	must(t, ac.Add(arrays.Array{ID: "fa1", Type: arrays.TypeFlashArray, Endpoint: srv.URL, CA: srv.CAFile}, strings.TrimSpace(string(tok))))
	os.WriteFile(filepath.Join(f.pve, "storage.cfg"), []byte(storageCfg), 0o644)

	roots := Roots{Dev: filepath.Join(root, "dev"), Sys: filepath.Join(root, "sys")}
	os.MkdirAll(roots.Dev, 0o755)
	f.lvm = &fakecli.LVM{VGs: map[string]fakecli.VG{}}
	// san1, san2: one PV each on an array volume; multi: two PVs; local-sas: a plain disk.
	for vg, pvs := range map[string][]string{"vgsan1": {"sdb"}, "vgsan2": {"sdc"}, "vgmulti": {"sdd", "sde"}, "vglocal": {"sda"}} {
		dir := filepath.Join(root, "vg", vg)
		f.vgDir[vg] = dir
		var paths []string
		for _, dev := range pvs {
			paths = append(paths, "/dev/"+dev)
			os.WriteFile(filepath.Join(roots.Dev, dev), nil, 0o644)
			wwid := "t10.ATA     QEMU HARDDISK   QM00001"
			if vg != "vglocal" {
				serial, err := f.fa.CreateVolume("pve-"+vg+"-"+dev, 1<<40)
				must(t, err)
				wwid = "naa." + pure.NAA(serial)
			}
			os.MkdirAll(filepath.Join(roots.Sys, "class", "block", dev, "device"), 0o755)
			os.WriteFile(filepath.Join(roots.Sys, "class", "block", dev, "device", "wwid"), []byte(wwid+"\n"), 0o644)
		}
		f.lvm.VGs[vg] = fakecli.VG{Store: volstore.Store{Dir: dir}, PVs: paths}
	}
	db, err := store.Open(filepath.Join(root, "state", "pvesnap.db"))
	must(t, err)
	t.Cleanup(func() { db.Close() })
	f.inv = &Inventory{Node: "pve1", PVE: f.pve, Storage: pve.NewStorageConfig(f.pve), Arrays: ac, LVM: &lvm.LVM{Run: runner.Emulator(f.lvm.Command)},
		Roots: roots, DB: db, Now: func() time.Time { return f.clock }}
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// vm writes a VM config (created at ctime) with disks on storages: key -> "storage:volname".
func (f *fixture) vm(vmid int64, name string, ctime time.Time, disks map[string]string) {
	f.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nmemory: 2048\nmeta: creation-qemu=9.2.0,ctime=%d\n", name, ctime.Unix())
	for _, k := range slices.Sorted(maps.Keys(disks)) {
		fmt.Fprintf(&b, "%s: %s,size=4G\n", k, disks[k])
	}
	dir := filepath.Join(f.pve, "nodes", "pve1", "qemu-server")
	os.MkdirAll(dir, 0o755)
	p := filepath.Join(dir, fmt.Sprintf("%d.conf", vmid))
	must(f.t, os.WriteFile(p, []byte(b.String()), 0o640))
	st, _ := os.Stat(p)
	os.Chtimes(p, st.ModTime(), f.clock) // a new mtime for each write, as pmxcfs gives
}

func (f *fixture) destroyVM(vmid int64) {
	os.Remove(filepath.Join(f.pve, "nodes", "pve1", "qemu-server", fmt.Sprintf("%d.conf", vmid)))
}

// lv creates an LV in vg at time t with a fresh UUID.
func (f *fixture) lv(vg, name string, t time.Time) {
	s := volstore.Store{Dir: f.vgDir[vg]}
	must(f.t, s.Create(name, 4<<30, volstore.Meta{Created: t.Unix(), UUID: fmt.Sprintf("uuid-%s-%d", name, t.Unix())}))
}

func (f *fixture) rmLV(vg, name string) {
	must(f.t, volstore.Store{Dir: f.vgDir[vg]}.Destroy(name, false))
}

func (f *fixture) snapshot(suffix string, vols ...string) {
	f.t.Helper()
	_, err := f.fa.SnapshotVolumes(suffix, vols...)
	must(f.t, err)
}

func (f *fixture) refresh() {
	f.t.Helper()
	res, err := f.inv.Refresh(ctx)
	must(f.t, err)
	if len(res.Errors) > 0 {
		f.t.Fatalf("refresh errors: %v", res.Errors)
	}
}

func (f *fixture) detail(vmid int64, ctime time.Time) *VMDetail {
	f.t.Helper()
	var ct int64
	if !ctime.IsZero() {
		ct = ctime.Unix()
	}
	d, err := f.inv.Detail(ctx, vmid, ct)
	must(f.t, err)
	return d
}

func pointIDs(d *VMDetail) []string {
	var out []string
	for _, p := range d.Points {
		s := p.Point
		if len(p.PredatesDisk) > 0 {
			s += "(predates " + strings.Join(p.PredatesDisk, ",") + ")"
		}
		out = append(out, s)
	}
	return out
}

const san1 = "pve-vgsan1-sdb"

// TestMapping: single-PV VGs on array volumes map; a VG with two PVs and a VG on a plain disk
// say why they do not.
func TestMapping(t *testing.T) {
	f := newFixture(t)
	maps, err := f.inv.Map(ctx)
	must(t, err)
	got := map[string]StorageMap{}
	for _, m := range maps {
		got[m.Storage] = m
	}
	if m := got["san1"]; m.State != Mapped || m.Array != "fa1" || m.Volume != san1 || !strings.HasPrefix(m.Identity, "SCSI naa.624a9370") {
		t.Errorf("san1: %+v", m)
	}
	if m := got["multi"]; m.State != SeveralPVs || !strings.Contains(m.Reason, "2 physical volumes (/dev/sdd, /dev/sde)") {
		t.Errorf("multi: %+v", m)
	}
	if m := got["local-sas"]; m.State != NoArrayVolume || !strings.Contains(m.Reason, "not a FlashArray volume") {
		t.Errorf("local-sas: %+v", m)
	}
	if _, ok := got["local-lvm"]; ok {
		t.Error("an lvmthin storage was mapped")
	}
	// Without any array configured the serial cannot be looked up, and the reason says so.
	maps2, err := (&Inventory{Node: "pve1", PVE: f.pve, Storage: f.inv.Storage, Arrays: &arrays.Config{PVE: t.TempDir()},
		LVM: f.inv.LVM, Roots: f.inv.Roots, DB: f.inv.DB}).Map(ctx)
	must(t, err)
	for _, m := range maps2 {
		if m.Storage == "san1" && (m.State != NoArrayVolume || !strings.Contains(m.Reason, "no array is configured")) {
			t.Errorf("without arrays: %+v", m)
		}
	}
}

// An unreachable array is reported as such, not as a missing volume.
func TestMappingArrayUnreachable(t *testing.T) {
	f := newFixture(t)
	must(t, f.inv.Arrays.Update("fa1", "", func(x *Array) { x.Endpoint = "https://127.0.0.1:1" }, ""))
	maps, err := f.inv.Map(ctx)
	must(t, err)
	for _, m := range maps {
		if m.Storage == "san1" && (m.State != ArrayUnreachable || !strings.Contains(m.Reason, "fa1:")) {
			t.Errorf("san1 with the array down: %+v", m)
		}
	}
}

// Array is arrays.Array (short for the tests).
type Array = arrays.Array

// VMID reuse: the snapshot of the first VM 100 is refused for the second (409 naming both
// times) and still offered for the deleted first one; the second one's snapshot is not
// offered for the first.
func TestVMIDReuse(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-100-disk-0", at(0))
	f.vm(100, "web-old", at(0), map[string]string{"scsi0": "san1:vm-100-disk-0"})
	f.refresh()
	f.clock = at(1)
	f.snapshot("first", san1)
	f.clock = at(2)
	f.destroyVM(100)
	f.rmLV("vgsan1", "vm-100-disk-0")
	f.refresh()
	f.clock = at(3)
	f.lv("vgsan1", "vm-100-disk-0", at(3))
	f.vm(100, "web-new", at(3), map[string]string{"scsi0": "san1:vm-100-disk-0"})
	f.clock = at(4)
	f.snapshot("second", san1)
	f.refresh()

	live := f.detail(100, time.Time{})
	if live.State != Live || live.Name != "web-new" || strings.Join(pointIDs(live), " ") != "second first(predates scsi0)" {
		t.Fatalf("live VM 100: %s %s %v", live.State, live.Name, pointIDs(live))
	}
	if live.Restorable != 1 {
		t.Errorf("live VM 100 counts %d usable points", live.Restorable)
	}
	_, _, err := f.inv.Sources(ctx, 100, 0, "fa1:first", nil)
	if !errors.Is(err, ErrPredatesDisk) {
		t.Fatalf("restoring the old VM's snapshot into the new VM: %v", err)
	}
	for _, want := range []string{san1 + ".first", "2026-03-01 09:00:00 UTC", "scsi0 (san1:vm-100-disk-0)", "2026-03-01 11:00:00 UTC"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("409 message %q lacks %q", err, want)
		}
	}
	if _, src, err := f.inv.Sources(ctx, 100, 0, "fa1:second", nil); err != nil || len(src) != 1 || src[0].Snapshot != san1+".second" {
		t.Fatalf("the new VM's own snapshot: %v %+v", err, src)
	}

	old := f.detail(100, at(0))
	if old.State != Deleted || old.Name != "web-old" || strings.Join(pointIDs(old), " ") != "first" {
		t.Fatalf("deleted VM 100: %s %s %v", old.State, old.Name, pointIDs(old))
	}
	if _, src, err := f.inv.Sources(ctx, 100, at(0).Unix(), "fa1:first", nil); err != nil || src[0].Snapshot != san1+".first" {
		t.Fatalf("restoring the deleted VM from its snapshot: %v", err)
	}
	if _, _, err := f.inv.Sources(ctx, 100, at(0).Unix(), "fa1:second", nil); !errors.Is(err, ErrUnknown) {
		t.Fatalf("the new VM's snapshot offered for the deleted one: %v", err)
	}
	tree, err := f.inv.Tree(ctx, nil)
	must(t, err)
	if len(tree) != 2 || tree[0].CTime != at(0).Unix() || tree[0].State != Deleted || tree[0].Restorable != 1 || tree[1].Restorable != 1 {
		t.Fatalf("tree: %+v", tree)
	}
}

// A VMID deleted twice: both incarnations stay listed, each with its own snapshots, until no
// snapshot holds them.
func TestDeletedVMWithTwoIncarnations(t *testing.T) {
	f := newFixture(t)
	for i, name := range []string{"db-a", "db-b"} {
		base := float64(10 * i)
		f.clock = at(base)
		f.lv("vgsan2", "vm-200-disk-0", at(base))
		f.vm(200, name, at(base), map[string]string{"virtio0": "san2:vm-200-disk-0"})
		f.refresh()
		f.clock = at(base + 1)
		f.snapshot(fmt.Sprintf("s%d", i), "pve-vgsan2-sdc")
		f.clock = at(base + 2)
		f.destroyVM(200)
		f.rmLV("vgsan2", "vm-200-disk-0")
		f.refresh()
	}
	a, b := f.detail(200, at(0)), f.detail(200, at(10))
	if a.State != Deleted || b.State != Deleted || strings.Join(pointIDs(a), " ") != "s0" || strings.Join(pointIDs(b), " ") != "s1 s0(predates virtio0)" {
		t.Fatalf("incarnations: a %s %v, b %s %v", a.State, pointIDs(a), b.State, pointIDs(b))
	}
	if d := f.detail(200, time.Time{}); d.CTime != at(10).Unix() {
		t.Fatalf("default incarnation of a deleted VMID: the newest, got ctime %d", d.CTime)
	}
	// The first incarnation's only snapshot goes: it is forgotten; the second stays.
	c, err := f.inv.Client(arrays.Array{ID: "fa1", Endpoint: mustArray(t, f).Endpoint, CA: mustArray(t, f).CA})
	must(t, err)
	must(t, c.DestroyVolumeSnapshot(ctx, "pve-vgsan2-sdc.s0"))
	f.refresh()
	incs, err := f.inv.Incarnations(ctx, 200)
	must(t, err)
	if len(incs) != 1 || incs[0].CTime != at(10).Unix() {
		t.Fatalf("after the snapshot went: %+v", incs)
	}
}

func mustArray(t *testing.T, f *fixture) arrays.Array {
	a, err := f.inv.Arrays.Get("fa1")
	must(t, err)
	return a
}

// A disk added after a snapshot: the snapshot restores the old disk, is refused for the new.
func TestDiskAddedLater(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-300-disk-0", at(0))
	f.vm(300, "app", at(0), map[string]string{"scsi0": "san1:vm-300-disk-0"})
	f.clock = at(1)
	f.snapshot("before-add", san1)
	f.clock = at(2)
	f.lv("vgsan1", "vm-300-disk-1", at(2))
	f.vm(300, "app", at(0), map[string]string{"scsi0": "san1:vm-300-disk-0", "scsi1": "san1:vm-300-disk-1"})
	f.clock = at(3)
	f.snapshot("after-add", san1)
	f.refresh()
	d := f.detail(300, time.Time{})
	if strings.Join(pointIDs(d), " ") != "after-add before-add(predates scsi1)" || d.Restorable != 2 {
		t.Fatalf("points %v (%d usable)", pointIDs(d), d.Restorable)
	}
	if _, src, err := f.inv.Sources(ctx, 300, 0, "fa1:before-add", []string{"scsi0"}); err != nil || len(src) != 1 {
		t.Fatalf("the old disk from the old snapshot: %v", err)
	}
	_, _, err := f.inv.Sources(ctx, 300, 0, "fa1:before-add", nil)
	if !errors.Is(err, ErrPredatesDisk) || !strings.Contains(err.Error(), "scsi1") {
		t.Fatalf("the whole VM from the old snapshot: %v", err)
	}
}

// While an in-place restore runs, the LV it swapped in (tagged with its job, no lineage yet)
// must not become the disk's identity: if the restore is then rolled back, the snapshots the
// disk had would otherwise be refused as older than the disk. A finished restore's new LV
// (a new VM's disk) is recorded as usual.
func TestDiskIdentityDuringRestore(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-100-disk-0", at(0))
	f.vm(100, "web", at(0), map[string]string{"scsi0": "san1:vm-100-disk-0"})
	f.clock = at(1)
	f.snapshot("before", san1)
	f.refresh()
	f.clock = at(2)
	if _, err := f.inv.DB.ExecContext(ctx, `INSERT INTO jobs (id, kind, state, spec, target, created, updated) VALUES ('abc', 'restore', ?, '{}', 'vm:100', 0, 0)`, store.JobRunning); err != nil {
		t.Fatal(err)
	}
	// The restore's LV takes the disk's name (the original is set aside).
	f.rmLV("vgsan1", "vm-100-disk-0")
	s := volstore.Store{Dir: f.vgDir["vgsan1"]}
	must(t, s.Create("vm-100-disk-0", 4<<30, volstore.Meta{Created: at(2).Unix(), UUID: "uuid-restore-abc", Tags: []string{"pve-vm-100", "pvesnap-abc"}}))
	f.refresh()
	if d := f.detail(100, time.Time{}); strings.Join(pointIDs(d), " ") != "before" {
		t.Fatalf("during the restore, points %v: the in-flight LV was taken as the disk", pointIDs(d))
	}
	// Once the job is over without a lineage (as for a new VM's disk), the LV is the disk.
	if _, err := f.inv.DB.ExecContext(ctx, `UPDATE jobs SET state = 'done' WHERE id = 'abc'`); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	if d := f.detail(100, time.Time{}); strings.Join(pointIDs(d), " ") != "before(predates scsi0)" {
		t.Fatalf("after the job, points %v", pointIDs(d))
	}
}

// Disks on a two-PV VG are listed with the reason; the VM's other disks still restore.
func TestVGWithTwoPVs(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-400-disk-0", at(0))
	f.lv("vgmulti", "vm-400-disk-1", at(0))
	f.vm(400, "split", at(0), map[string]string{"scsi0": "san1:vm-400-disk-0", "scsi1": "multi:vm-400-disk-1", "ide2": "local:iso/x.iso,media=cdrom"})
	f.clock = at(1)
	f.snapshot("p1", san1)
	f.refresh()
	d := f.detail(400, time.Time{})
	if d.Disks != 2 || d.MappedDisks != 1 || len(d.Problems) != 1 || !strings.Contains(d.Problems[0], "scsi1 (multi:vm-400-disk-1): volume group vgmulti has 2 physical volumes") {
		t.Fatalf("VM 400: %+v", d.VMView)
	}
	if _, src, err := f.inv.Sources(ctx, 400, 0, "fa1:p1", nil); err != nil || len(src) != 1 || src[0].Disk.Key != "scsi0" {
		t.Fatalf("restoring what can be: %v %+v", err, src)
	}
	if _, _, err := f.inv.Sources(ctx, 400, 0, "fa1:p1", []string{"scsi1"}); err == nil || !strings.Contains(err.Error(), "2 physical volumes") {
		t.Fatalf("the two-PV disk: %v", err)
	}
}

// Protection-group snapshots are restore points of their own, named PG.SUFFIX.
func TestProtectionGroupPoints(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-500-disk-0", at(0))
	f.lv("vgsan2", "vm-500-disk-1", at(0))
	f.vm(500, "two-luns", at(0), map[string]string{"scsi0": "san1:vm-500-disk-0", "scsi1": "san2:vm-500-disk-1"})
	must(t, f.fa.CreateProtectionGroup("pg-pve", san1, "pve-vgsan2-sdc"))
	f.clock = at(1)
	_, err := f.fa.SnapshotProtectionGroup("pg-pve", "daily-1")
	must(t, err)
	f.refresh()
	d := f.detail(500, time.Time{})
	if len(d.Points) != 1 || d.Points[0].ID != "fa1:pg-pve.daily-1" || d.Points[0].PGroup != "pg-pve" || len(d.Points[0].Snapshots) != 2 {
		t.Fatalf("points %+v", d.Points)
	}
	if d.Points[0].Snapshots["scsi1"] != "pg-pve.daily-1.pve-vgsan2-sdc" {
		t.Fatalf("member snapshot %v", d.Points[0].Snapshots)
	}
}

// A node whose initiators are on no array host gets a diagnostic naming them.
func TestNodeMatchesNoArrayHost(t *testing.T) {
	f := newFixture(t)
	must(t, f.fa.CreateHost("other-node", []string{"iqn.1993-08.org.debian:01:other"}, nil, nil))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "initiatorname.iscsi"), []byte("InitiatorName=iqn.1993-08.org.debian:01:pve1\n"), 0o644)
	a := mustArray(t, f)
	c, err := f.inv.Client(a)
	must(t, err)
	_, err = arrays.Target(ctx, c, a, arrays.NodePaths{ISCSI: dir, NVMe: dir, Sys: dir})
	if err == nil || !strings.Contains(err.Error(), "no host with this node's initiators (IQN iqn.1993-08.org.debian:01:pve1)") {
		t.Fatalf("%v", err)
	}
	must(t, f.fa.CreateHost("pve1", []string{"iqn.1993-08.org.debian:01:pve1"}, nil, nil))
	if tg, err := arrays.Target(ctx, c, a, arrays.NodePaths{ISCSI: dir, NVMe: dir, Sys: dir}); err != nil || tg.Host != "pve1" {
		t.Fatalf("after adding the host: %v %v", tg, err)
	}
}

// An on-demand snapshot covers every array volume of the VM in one call with one suffix, the
// guest frozen around it and thawed even when the array refuses.
func TestSnapshotVM(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-600-disk-0", at(0))
	f.lv("vgsan1", "vm-600-disk-1", at(0))
	f.lv("vgsan2", "vm-600-disk-2", at(0))
	f.vm(600, "frozen", at(0), map[string]string{"scsi0": "san1:vm-600-disk-0", "scsi1": "san1:vm-600-disk-1",
		"scsi2": "san2:vm-600-disk-2", "efidisk0": "local-lvm:vm-600-disk-3"})
	f.refresh()
	f.clock = at(1)
	script := runner.NewScript(t.Errorf,
		runner.Step{Argv: []string{"qm", "guest", "cmd", "600", "ping"}},
		runner.Step{Argv: []string{"qm", "guest", "cmd", "600", "fsfreeze-freeze"}, Stdout: "2\n"},
		runner.Step{Argv: []string{"qm", "guest", "cmd", "600", "fsfreeze-thaw"}, Stdout: "2\n"})
	f.inv.Run = script
	var log strings.Builder
	task := tasks.NewTask(tasks.UPID{}, tasks.Job{}, &log)
	must(t, f.inv.SnapshotVM(ctx, task, SnapshotSpec{VMID: 600, Suffix: "manual-1", Freeze: true}))
	must(t, script.Done())
	d := f.detail(600, time.Time{})
	if len(d.Points) != 1 || d.Points[0].ID != "fa1:manual-1" || len(d.Points[0].Snapshots) != 3 {
		t.Fatalf("points right after the snapshot (no refresh): %+v\n%s", d.Points, log.String())
	}
	for _, want := range []string{"guest filesystems frozen", "array fa1: snapshot of [pve-vgsan1-sdb pve-vgsan2-sdc] with suffix manual-1",
		"guest filesystems thawed", "efidisk0 (local-lvm:vm-600-disk-3) is not on an array volume"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("task log lacks %q:\n%s", want, log.String())
		}
	}
	// The suffix is taken now: the array refuses, and the guest is thawed all the same.
	script = runner.NewScript(t.Errorf,
		runner.Step{Argv: []string{"qm", "guest", "cmd", "600", "ping"}},
		runner.Step{Argv: []string{"qm", "guest", "cmd", "600", "fsfreeze-freeze"}, Stdout: "2"},
		runner.Step{Argv: []string{"qm", "guest", "cmd", "600", "fsfreeze-thaw"}, Stdout: "2"})
	f.inv.Run = script
	err := f.inv.SnapshotVM(ctx, tasks.NewTask(tasks.UPID{}, tasks.Job{}, &log), SnapshotSpec{VMID: 600, Suffix: "manual-1", Freeze: true})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a taken suffix: %v", err)
	}
	must(t, script.Done())
	// No agent: a crash-consistent snapshot, said so.
	f.inv.Run = runner.NewScript(t.Errorf, runner.Step{Argv: []string{"qm", "guest", "cmd", "600", "ping"}, Err: errors.New("QEMU guest agent is not running")})
	log.Reset()
	task = tasks.NewTask(tasks.UPID{}, tasks.Job{}, &log)
	must(t, f.inv.SnapshotVM(ctx, task, SnapshotSpec{VMID: 600, Suffix: "manual-2", Freeze: true}))
	if task.Warnings() != 1 || !strings.Contains(log.String(), "crash-consistent") {
		t.Fatalf("without agent: %d warnings\n%s", task.Warnings(), log.String())
	}
	if err := CheckSuffix("-bad"); err == nil {
		t.Fatal("suffix -bad accepted")
	}
}

// The tree counts a VM's points once per set of snapshot ranges and reuses the count for
// VMs with the same ranges: VMs on the same two volumes whose disks were made at different
// times, and so see different snapshots, must not share a count; each matches its detail.
func TestTreeCountsPerVMOnSharedVolumes(t *testing.T) {
	f := newFixture(t)
	vm := func(vmid int64, made time.Time) {
		d0, d1 := fmt.Sprintf("vm-%d-disk-0", vmid), fmt.Sprintf("vm-%d-disk-1", vmid)
		f.lv("vgsan1", d0, made)
		f.lv("vgsan2", d1, made)
		f.vm(vmid, fmt.Sprintf("vm%d", vmid), made, map[string]string{"scsi0": "san1:" + d0, "scsi1": "san2:" + d1})
	}
	f.clock = at(0)
	vm(700, at(0))
	vm(701, at(0))
	f.clock = at(1)
	f.snapshot("p1", san1, "pve-vgsan2-sdc")
	f.clock = at(2)
	vm(702, at(2)) // sees p2 and p3 only
	f.snapshot("p2", san1, "pve-vgsan2-sdc")
	f.clock = at(3)
	vm(703, at(3)) // sees p3 only
	f.snapshot("p3", san1, "pve-vgsan2-sdc")
	f.refresh()
	tree, err := f.inv.Tree(ctx, nil)
	must(t, err)
	want := map[int64]int{700: 3, 701: 3, 702: 2, 703: 1}
	for _, v := range tree {
		w, ok := want[v.VMID]
		if !ok {
			continue
		}
		if v.Restorable != w || v.Restorable != f.detail(v.VMID, time.Time{}).Restorable {
			t.Errorf("VM %d: %d points in the tree, want %d (detail: %d)", v.VMID, v.Restorable, w, f.detail(v.VMID, time.Time{}).Restorable)
		}
		delete(want, v.VMID)
	}
	if len(want) > 0 {
		t.Errorf("not in the tree: %v", want)
	}
}
