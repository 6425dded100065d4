package engine

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// multipathLU: the source LV on LU B (sdb); the destination LV (253:2) on a multipath map
// (253:0, "mpathc") over two paths to LU C: sdc and sdd.
func multipathLU(t *testing.T, n int64, features string) (*world, *fakeLU, *fakeLU) {
	w := newWorld(t)
	w.lu("sdb", sdb, naaB, 512, lioParams())
	pc := w.lu("sdc", sdc, naaC, 512, lioParams())
	pd := w.lu("sdd", sdd, naaC, 512, lioParams())
	w.dmdev("mpathc", dm0, "mpath-3"+naaC, []dm.Target{{Start: 0, Length: 1 << 21, Type: "multipath",
		Params: features + " 0 1 1 round-robin 0 2 1 8:32 1 8:48 1"}}, "sdc", "sdd")
	w.setStatus(dm0, "2 0 0 0 1 1 A 0 2 0 8:32 A 0 8:48 A 0")
	w.dmdev("dm-1", dm1, "", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "8:16 2048"}}, "sdb")
	w.dmdev("dm-2", dm2, "", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "253:0 8192"}}, "mpathc")
	return w, pc, pd
}

func pathsUsed(f ...*fakeLU) map[string]int {
	out := map[string]int{}
	for _, l := range f {
		for _, x := range l.copies() {
			out[x.path]++
		}
	}
	return out
}

// A path that fails (the transport lost the command, the port is in ALUA standby): the
// command goes again through the other path, the copy stays offloaded, the cache is flushed
// through a working path, and every path's page cache is dropped afterwards.
func TestPathFailureMovesToAnotherPath(t *testing.T) {
	for name, fail := range map[string]error{
		"DID_NO_CONNECT": &scsi.CommandError{Op: "EXTENDED COPY", HostStatus: 0x01},
		"ALUA standby":   &scsi.CommandError{Op: "EXTENDED COPY", Status: scsi.StatusCheckCondition, Sense: &scsi.Sense{ResponseCode: 0x70, Key: scsi.KeyNotReady, ASC: 0x04, ASCQ: 0x0B}},
	} {
		n := int64(4 << 20)
		w, pc, pd := multipathLU(t, n, "1 queue_if_no_path")
		pc.xcopy = func(int, xcall) error { return fail }
		pc.sync = func(int, string) error { return fail }
		s, d, _ := w.endpoints(dm1, dm2, n, 512)
		c := w.copier(s, d, Options{})
		if err := c.copy(context.Background(), 0, 0, n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		used := pathsUsed(pc, pd)
		if c.res.Offloaded != n || used["sdd"] != 4 || used["sdc"] != 1 || len(c.res.Fallbacks) != 0 {
			t.Fatalf("%s: offloaded %d over paths %v, fallbacks %v", name, c.res.Offloaded, used, c.res.Fallbacks)
		}
		if pd.syncs != 1 {
			t.Errorf("%s: the cache was flushed %d times through the working path", name, pd.syncs)
		}
		for _, want := range []string{"sdc", "sdd", "mpathc", "dm-2", "dst-lv"} {
			if !slices.Contains(w.dropped, want) {
				t.Errorf("%s: page cache of %s not dropped (dropped %v)", name, want, w.dropped)
			}
		}
	}
}

// The path dm-multipath reports failed, or in a group it does not use, is passed over.
func TestActivePathChosen(t *testing.T) {
	n := int64(2 << 20)
	w, pc, pd := multipathLU(t, n, "0")
	w.setStatus(dm0, "2 0 0 0 2 2 E 0 1 0 8:32 A 0 A 0 1 0 8:48 A 0") // sdd's group is the one in use
	s, d, _ := w.endpoints(dm1, dm2, n, 512)
	c := w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	if used := pathsUsed(pc, pd); used["sdd"] != 2 || used["sdc"] != 0 {
		t.Fatalf("paths %v: the active group's path must be used", used)
	}
	w, pc, pd = multipathLU(t, n, "0")
	w.setStatus(dm0, "2 0 0 0 1 1 A 0 2 0 8:32 F 2 8:48 A 0")
	s, d, _ = w.endpoints(dm1, dm2, n, 512)
	c = w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	if used := pathsUsed(pc, pd); used["sdc"] != 0 {
		t.Fatalf("paths %v: a failed path was used", used)
	}
}

// With every path down, the copy waits for one as long as dm-multipath queues I/O
// (queue_if_no_path); without queueing the pieces go through the host.
func TestNoPathWaitsLikeDMMultipath(t *testing.T) {
	n := int64(2 << 20)
	w, pc, pd := multipathLU(t, n, "1 queue_if_no_path")
	w.setStatus(dm0, "2 0 0 0 1 1 A 0 2 0 8:32 F 1 8:48 F 1")
	w.onPause = func(i int) {
		if i == 5 {
			w.setStatus(dm0, "2 0 0 0 1 1 A 0 2 0 8:32 F 1 8:48 A 1")
		}
	}
	s, d, _ := w.endpoints(dm1, dm2, n, 512)
	c := w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	if c.res.Offloaded != n || w.pauses < 5 || pathsUsed(pc, pd)["sdd"] != 2 {
		t.Fatalf("offloaded %d after %d pauses over %v", c.res.Offloaded, w.pauses, pathsUsed(pc, pd))
	}

	w, pc, pd = multipathLU(t, n, "0")
	w.setStatus(dm0, "2 0 0 0 1 1 A 0 2 0 8:32 F 1 8:48 F 1")
	s, d, data := w.endpoints(dm1, dm2, n, 512)
	c = w.copier(s, d, Options{})
	// (On a real node the host copy goes through the map too, and fails with it.)
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	if c.res.Offloaded != 0 || len(pathsUsed(pc, pd)) != 0 || !strings.Contains(joined(c.res.Fallbacks), "no usable path") {
		t.Fatalf("offloaded %d over %v: %v", c.res.Offloaded, pathsUsed(pc, pd), c.res.Fallbacks)
	}
	sameBytes(t, "pieces copied by the host", w.dstContent(d), data)
}
