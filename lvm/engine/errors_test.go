package engine

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

func deferredAborted() error {
	return &scsi.CommandError{Op: "EXTENDED COPY", Status: scsi.StatusCheckCondition,
		Sense: &scsi.Sense{ResponseCode: 0x71, Key: scsi.KeyAbortedCommand, ASC: 0x47, ASCQ: 0x00}}
}

// A deferred error on the third EXTENDED COPY reports that an earlier command failed after
// it completed: the two pieces already counted as copied are copied again, and the third
// (which the LU did not perform) goes through the host. The fake array moves no bytes, so
// the destination is right only where the host wrote.
func TestDeferredErrorRedoesWhatItCovers(t *testing.T) {
	n := int64(6 << 20) // six 1 MiB commands (LIO's parameters with 1 MiB segments)
	w, _, dst := twoLUs(t, n, lioParams())
	dst.xcopy = func(i int, _ xcall) error {
		if i == 2 {
			return deferredAborted()
		}
		return nil
	}
	s, d, data := w.endpoints(dm1, dm2, n, 512)
	c := w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	got := w.dstContent(d)
	sameBytes(t, "the pieces before the deferred error and the one that carried it", got[:3<<20], data[:3<<20])
	if c.res.Redone != 2<<20 || c.res.Offloaded != 3<<20 || c.res.HostCopied != 3<<20 {
		t.Fatalf("redone %d, offloaded %d, host %d", c.res.Redone, c.res.Offloaded, c.res.HostCopied)
	}
	if got := len(dst.copies()); got != 6 {
		t.Errorf("%d EXTENDED COPY commands: offload must go on after a deferred error", got)
	}
	if !strings.Contains(joined(c.res.Fallbacks), "deferred error") {
		t.Errorf("fallbacks %v", c.res.Fallbacks)
	}

	// A deferred error answering the final SYNCHRONIZE CACHE covers everything written.
	w, _, dst = twoLUs(t, n, lioParams())
	dst.sync = func(i int, _ string) error {
		if i == 0 {
			return deferredAborted()
		}
		return nil
	}
	s, d, data = w.endpoints(dm1, dm2, n, 512)
	c = w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "deferred error on the flush", w.dstContent(d), data)
	if c.res.Redone != n || c.res.Offloaded != 0 || dst.syncs != 2 {
		t.Fatalf("redone %d, offloaded %d after %d flushes", c.res.Redone, c.res.Offloaded, dst.syncs)
	}
}

// An LV remapped during the copy (pvmove, any table reload): offload stops, and what was
// offloaded is copied again through the mapping as it is now.
func TestMappingChangeDuringCopy(t *testing.T) {
	n := int64(8 << 20)
	w, _, dst := twoLUs(t, n, lioParams())
	dst.xcopy = func(i int, _ xcall) error {
		if i == 2 {
			// pvmove: the LV's segment now goes through a mirror
			w.setTable(dm2, []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "253:9 0"}})
		}
		return nil
	}
	s, d, data := w.endpoints(dm1, dm2, n, 512)
	c := w.copier(s, d, Options{OffloadInFlight: 1})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "after the mapping changed", w.dstContent(d), data)
	if got := len(dst.copies()); got != 3 {
		t.Errorf("%d EXTENDED COPY commands: none may follow the change", got)
	}
	if c.res.Offloaded != 0 || c.res.Redone != 3<<20 || !strings.Contains(joined(c.res.Fallbacks), "mapping changed") ||
		!strings.Contains(joined(c.res.Fallbacks), "253:9 0") {
		t.Fatalf("result %+v", c.res)
	}
}

// A piece whose command keeps failing goes through the host; the next ones are offloaded
// again (after a recovered error offload does not stop).
func TestOffloadGoesOnAfterAFailedPiece(t *testing.T) {
	n := int64(6 << 20)
	w, _, dst := twoLUs(t, n, lioParams())
	var busy atomic.Int32
	dst.xcopy = func(i int, x xcall) error {
		if x.segs[0].dstLBA == 8192+2048 { // the second piece: BUSY for longer than the retry budget
			busy.Add(1)
			return &scsi.CommandError{Op: "EXTENDED COPY", Status: scsi.StatusBusy}
		}
		return nil
	}
	s, d, data := w.endpoints(dm1, dm2, n, 512)
	c := w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "the piece that failed", w.dstContent(d)[1<<20:2<<20], data[1<<20:2<<20])
	if c.res.Offloaded != 5<<20 || c.res.HostCopied != 1<<20 {
		t.Fatalf("offloaded %d, host %d: %v", c.res.Offloaded, c.res.HostCopied, c.res.Fallbacks)
	}
	if !strings.Contains(joined(c.res.Fallbacks), "offload goes on") || busy.Load() < 10 {
		t.Errorf("fallbacks %v after %d BUSY answers", c.res.Fallbacks, busy.Load())
	}
}

// Two source LUs copied to one destination LU: the LU's limits (TOTAL/MAXIMUM CONCURRENT
// COPIES) bound all commands to it together, and no two in flight share a list identifier.
func TestListIDsAndConcurrencyPerDestinationLU(t *testing.T) {
	w := newWorld(t)
	cp := lioParams()
	cp.SNLID, cp.TotalConcurrentCopies, cp.MaxConcurrentCopies = false, 2, 2
	w.lu("sdb", sdb, naaB, 512, cp)
	w.lu("sdd", sdd, naaD, 512, cp)
	dst := w.lu("sdc", sdc, naaC, 512, cp)
	dst.delay = 2e6 // 2 ms per command, so that commands overlap
	n := int64(16 << 20)
	half := uint64(n / 1024)
	w.dmdev("dm-1", dm1, "", []dm.Target{{Start: 0, Length: half, Type: "linear", Params: "8:16 2048"},
		{Start: half, Length: half, Type: "linear", Params: "8:48 2048"}}, "sdb", "sdd")
	w.dmdev("dm-2", dm2, "", []dm.Target{{Start: 0, Length: 2 * half, Type: "linear", Params: "8:32 2048"}}, "sdc")
	s, d, _ := w.endpoints(dm1, dm2, n, 512)
	c := w.copier(s, d, Options{OffloadInFlight: 8})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	if c.res.Offloaded != n {
		t.Fatalf("%+v", c.res)
	}
	if dst.maxInFlight > 2 || dst.dupIDs != 0 {
		t.Fatalf("destination LU had %d commands in flight (limit 2) and %d duplicate list identifiers", dst.maxInFlight, dst.dupIDs)
	}
	for _, x := range dst.copies() {
		if x.usage != 2 {
			t.Fatalf("list id usage %d without SNLID, want 10b", x.usage)
		}
	}
}

// Source and destination that reach the same blocks through different layers are refused
// after resolution: `pvesnap copy /dev/mapper/mpatha vg/lv-on-mpatha`.
func TestOverlapRefusedAfterResolution(t *testing.T) {
	w := newWorld(t)
	w.lu("sdc", sdc, naaC, 512, lioParams())
	w.lu("sdd", sdd, naaC, 512, lioParams()) // the second path of the same LU
	n := int64(4 << 20)
	w.dmdev("mpatha", dm0, "mpath-3"+naaC, []dm.Target{{Start: 0, Length: 1 << 21, Type: "multipath", Params: "1 queue_if_no_path 0 1 1 round-robin 0 2 1 8:32 1 8:48 1"}}, "sdc", "sdd")
	w.dmdev("dm-2", dm2, "LVM-cccc", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "253:0 8192"}}, "mpatha")
	w.tables[dm2] = dm.Layer{Info: dm.Info{Name: "vgm-lv", UUID: "LVM-cccc", Dev: dm2}, Targets: w.tables[dm2].Targets}
	s, d, _ := w.endpointsSized(dm0, dm2, 4*n, n, 512)
	for _, o := range []Options{{}, {ForceHost: true}} {
		c := w.copier(s, d, o)
		err := c.copy(context.Background(), 4096*512, 0, n)
		if !errors.Is(err, ErrOverlap) || !strings.Contains(err.Error(), "sectors 8192..") {
			t.Fatalf("mpatha onto an LV on mpatha (%+v): %v", o, err)
		}
	}
	// A part of the map the LV does not use is not an overlap.
	c := w.copier(s, d, Options{ForceHost: true})
	if err := c.copy(context.Background(), 8192*512+n, 0, n); err != nil {
		t.Fatalf("disjoint ranges: %v", err)
	}
	// Through a layer that does not resolve (thin), the device stack decides.
	w.dmdev("dm-3", dm3, "LVM-dddd", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "thin", Params: "253:7 1"}}, "mpatha")
	s, d, _ = w.endpoints(dm0, dm3, n, 512)
	c = w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); !errors.Is(err, ErrOverlap) || !strings.Contains(err.Error(), "built on") {
		t.Fatalf("mpatha onto a thin LV on mpatha: %v", err)
	}
}
