package inventory

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The snapshot names a FlashArray gives, and what each says about its point.
func TestPointKey(t *testing.T) {
	for _, c := range []struct{ name, pgroup, point string }{
		{"pve-san1.daily", "", "daily"},
		{"pve-san1.17", "", "17"}, // Purity's per-volume counter
		{"pod1::pve-san1.3", "", "3"},
		{"vg1/pve-san1.nightly", "", "nightly"},
		{"pg-pve.daily-1.pve-san1", "pg-pve", "pg-pve.daily-1"},
		{"pod1::pg-pve.5.pve-san1", "pod1::pg-pve", "pod1::pg-pve.5"}, // the pod is not repeated in the volume part
		{"pg-pve.5.vg1/pve-san1", "pg-pve", "pg-pve.5"},
		{"fa2:pg-pve.5.pve-san1", "fa2:pg-pve", "fa2:pg-pve.5"}, // replicated from array fa2
		{"fa2:pod1::pg-pve.5.pve-san1", "fa2:pod1::pg-pve", "fa2:pod1::pg-pve.5"},
		{"odd..name", "", "odd..name"}, // no known form: a point of its own
	} {
		pg, point := pointKey(c.name)
		if pg != c.pgroup || point != c.point {
			t.Errorf("%s: pgroup %q point %q, want %q %q", c.name, pg, point, c.pgroup, c.point)
		}
	}
}

// Snapshots of a VM's two volumes merge into one restore point only when the array took them
// together: one protection-group snapshot, or one suffix at one time. Purity's default
// counters give volA.1 and volB.1 a day apart: two points, each holding its own volume's
// disks, and the whole VM cannot be restored from either.
func TestPointsNeverMixTimes(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-700-disk-0", at(0))
	f.lv("vgsan2", "vm-700-disk-1", at(0))
	f.vm(700, "two-luns", at(0), map[string]string{"scsi0": "san1:vm-700-disk-0", "scsi1": "san2:vm-700-disk-1"})
	const san2 = "pve-vgsan2-sdc"
	f.clock = at(1)
	f.snapshot("", san1) // pve-vgsan1-sdb.1
	f.clock = at(25)
	f.snapshot("", san2) // pve-vgsan2-sdc.1, a day later
	f.clock = at(30)
	f.snapshot("together", san1, san2)
	f.clock = at(31)
	f.snapshot("again", san1)
	f.clock = at(31).Add(3 * time.Second)
	f.snapshot("again", san2) // the same suffix seconds later: taken separately, but inside the window
	f.refresh()
	d := f.detail(700, time.Time{})
	got := map[string]Point{}
	for _, p := range d.Points {
		got[p.ID] = p
	}
	want := map[string][2]string{ // id -> snapshots of scsi0, scsi1
		"fa1:pve-vgsan1-sdb.1": {san1 + ".1", ""},
		"fa1:pve-vgsan2-sdc.1": {"", san2 + ".1"},
		"fa1:together":         {san1 + ".together", san2 + ".together"},
		"fa1:again":            {san1 + ".again", san2 + ".again"},
	}
	if len(got) != len(want) {
		t.Fatalf("points %v, want %v", pointsOf(d), want)
	}
	for id, w := range want {
		p, ok := got[id]
		if !ok || p.Snapshots["scsi0"] != w[0] || p.Snapshots["scsi1"] != w[1] {
			t.Errorf("point %s: %+v, want %v", id, p, w)
		}
	}
	if m := got["fa1:pve-vgsan1-sdb.1"].Missing; len(m) != 1 || m[0] != "scsi1" {
		t.Errorf("the counter point of volume A must say it lacks scsi1: %v", m)
	}
	// The tree counts what the detail lists.
	views, err := f.inv.Tree(ctx, nil)
	must(t, err)
	if len(views) != 1 || views[0].Restorable != 4 || views[0].Restorable != d.Restorable {
		t.Fatalf("tree %+v, detail %d points", views, d.Restorable)
	}
	// The whole VM from one counter point: refused, naming what is missing.
	if _, _, err := f.inv.Sources(ctx, 700, 0, "fa1:pve-vgsan1-sdb.1", nil); err == nil || !strings.Contains(err.Error(), "has no snapshot of array volume "+san2) {
		t.Fatalf("whole VM from a one-volume point: %v", err)
	}
	// One disk from it: fine, from volume A's snapshot.
	_, src, err := f.inv.Sources(ctx, 700, 0, "fa1:pve-vgsan1-sdb.1", []string{"scsi0"})
	if err != nil || len(src) != 1 || src[0].Snapshot != san1+".1" {
		t.Fatalf("scsi0 from the counter point: %+v %v", src, err)
	}
	// A later snapshot with a counter suffix that another of the VM's points has: the old
	// "fa1:1"-style ID never comes back to mean something else.
	if _, _, err := f.inv.Sources(ctx, 700, 0, "fa1:1", nil); !errors.Is(err, ErrUnknown) {
		t.Fatalf("an ambiguous suffix as point: %v", err)
	}
}

func pointsOf(d *VMDetail) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, p := range d.Points {
		out[p.ID] = p.Snapshots
	}
	return out
}

// A qcow2 volume chain (PVE 9 snapshot-as-volume-chain on LVM) is never restored as a raw
// copy of one layer: a restore that would include it is refused with the reason. unusedN
// disks are restored only when asked for.
func TestVolumeChainAndUnusedDisks(t *testing.T) {
	f := newFixture(t)
	f.clock = at(0)
	f.lv("vgsan1", "vm-710-disk-0", at(0))
	f.lv("vgsan1", "vm-710-disk-1.qcow2", at(0))
	f.lv("vgsan1", "vm-710-disk-2", at(0))
	f.vm(710, "chain", at(0), map[string]string{"scsi0": "san1:vm-710-disk-0", "scsi1": "san1:vm-710-disk-1.qcow2", "unused0": "san1:vm-710-disk-2"})
	f.clock = at(1)
	f.snapshot("p1", san1)
	f.refresh()
	if _, _, err := f.inv.Sources(ctx, 710, 0, "fa1:p1", nil); err == nil || !strings.Contains(err.Error(), "qcow2 volume chain") {
		t.Fatalf("whole VM with a volume chain disk: %v", err)
	}
	_, src, err := f.inv.Sources(ctx, 710, 0, "fa1:p1", []string{"scsi0"})
	if err != nil || len(src) != 1 {
		t.Fatalf("scsi0 alone: %v %v", src, err)
	}
	_, src, err = f.inv.Sources(ctx, 710, 0, "fa1:p1", []string{"scsi0", "unused0"})
	if err != nil || len(src) != 2 || src[1].Disk.Key != "unused0" {
		t.Fatalf("unused0 asked for: %+v %v", src, err)
	}
	f.vm(710, "chain", at(0), map[string]string{"scsi0": "san1:vm-710-disk-0", "unused0": "san1:vm-710-disk-2"})
	f.refresh()
	_, src, err = f.inv.Sources(ctx, 710, 0, "fa1:p1", nil)
	if err != nil || len(src) != 1 || src[0].Disk.Key != "scsi0" {
		t.Fatalf("default disks must leave unused0 out: %+v %v", src, err)
	}
}
