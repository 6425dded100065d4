package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// A host copy onto a block device ends with fsync (the device's cache flush), after the last
// write; BLKFLSBUF alone leaves the copy in a volatile cache. A failed flush fails the copy.
func TestHostCopyIsFlushedToStableMedia(t *testing.T) {
	w, _, _ := twoLUs(t, 8<<20, lioParams())
	s, d, data := w.endpoints(dm1, dm2, 8<<20, 512)
	c := w.copier(s, d, Options{ForceHost: true})
	if err := c.copy(context.Background(), 0, 0, 8<<20); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "host copy", w.dstContent(d), data)
	ev := w.eventList()
	if len(ev) != 1 || ev[0] != "fsync dst-lv" {
		t.Fatalf("after the host copy: %q, want one fsync of the destination", ev)
	}

	w2, _, _ := twoLUs(t, 8<<20, lioParams())
	s, d, _ = w2.endpoints(dm1, dm2, 8<<20, 512)
	w2.fsyncErr = errors.New("EIO")
	c = w2.copier(s, d, Options{ForceHost: true})
	err := c.copy(context.Background(), 0, 0, 8<<20)
	if !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("failed flush: %v", err)
	}
}

// After offload commands the LU's cache is flushed with SYNCHRONIZE CACHE, after the last
// EXTENDED COPY; a failed flush fails the copy instead of being logged.
func TestOffloadFlushFailureFailsTheCopy(t *testing.T) {
	w, _, dst := twoLUs(t, 4<<20, lioParams())
	s, d, _ := w.endpoints(dm1, dm2, 4<<20, 512)
	c := w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, 4<<20); err != nil {
		t.Fatal(err)
	}
	ev := w.eventList()
	last := -1
	for i, e := range ev {
		if strings.HasPrefix(e, "xcopy") {
			last = i
		}
	}
	if last < 0 || len(ev) < last+3 || ev[last+1] != "sync sdc sdc" || ev[last+2] != "fsync dst-lv" {
		t.Fatalf("commands %q: want every EXTENDED COPY, then SYNCHRONIZE CACHE on the destination LU, then fsync", ev)
	}
	if c.res.Offloaded != 4<<20 || len(dst.copies()) != 4 {
		t.Fatalf("offloaded %d in %d commands", c.res.Offloaded, len(dst.copies()))
	}

	w, _, dst = twoLUs(t, 4<<20, lioParams())
	s, d, _ = w.endpoints(dm1, dm2, 4<<20, 512)
	dst.sync = func(int, string) error {
		return &scsi.CommandError{Op: "SYNCHRONIZE CACHE(10)", Status: scsi.StatusCheckCondition,
			Sense: &scsi.Sense{ResponseCode: 0x70, Key: scsi.KeyMediumError, ASC: 0x0C, ASCQ: 0x00}}
	}
	c = w.copier(s, d, Options{})
	err := c.copy(context.Background(), 0, 0, 4<<20)
	if !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "MEDIUM ERROR") {
		t.Fatalf("SYNCHRONIZE CACHE failed, the copy reported: %v", err)
	}
}

// Every LBA counts blocks of the device it addresses. In a VG mixing 512- and 4096-byte PVs
// the LV has 4096-byte blocks while a pair of 512-byte LUs under it takes LBAs in 512-byte
// blocks (and the reverse for 4096-byte LUs).
func TestLBAsComeFromTheDeviceNotTheLV(t *testing.T) {
	for _, bs := range []int{512, 4096} {
		w := newWorld(t)
		cp := lioParams()
		cp.MaxSegmentLength = 16 << 20
		w.lu("sdb", sdb, naaB, bs, cp)
		dst := w.lu("sdc", sdc, naaC, bs, cp)
		n := int64(8 << 20)
		w.dmdev("dm-1", dm1, "", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "8:16 24576"}}, "sdb")
		w.dmdev("dm-2", dm2, "", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "8:32 40960"}}, "sdc")
		s, d, _ := w.endpoints(dm1, dm2, n, 4096) // the LV: 4096-byte blocks
		c := w.copier(s, d, Options{})
		if err := c.copy(context.Background(), 0, 0, n); err != nil {
			t.Fatal(err)
		}
		per := uint64(bs / 512)
		var next, blocks uint64
		next = 40960 / per
		for _, x := range dst.copies() {
			for _, sg := range x.segs {
				if sg.dstLBA != next || sg.srcLBA != 24576/per+(next-40960/per) {
					t.Fatalf("%d-byte LUs: segment at source LBA %d, destination LBA %d; want %d, %d",
						bs, sg.srcLBA, sg.dstLBA, 24576/per+(next-40960/per), next)
				}
				next += uint64(sg.blocks)
				blocks += uint64(sg.blocks)
			}
			if x.srcLU != naaB || x.dstLU != naaC {
				t.Fatalf("CSCDs %s -> %s", x.srcLU, x.dstLU)
			}
		}
		if blocks*uint64(bs) != uint64(n) {
			t.Fatalf("%d-byte LUs: %d blocks copied for %d bytes", bs, blocks, n)
		}
	}
}
