package engine

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

func scsiPair(t *testing.T, srcNAA, dstNAA string, cp scsi.CopyParams) (*pair, string) {
	w := newWorld(t)
	w.lu("sdb", sdb, srcNAA, 512, cp)
	w.lu("sdc", sdc, dstNAA, 512, cp)
	p := &pair{src: w.ids[sdb], dst: w.ids[sdc]}
	why := p.classify(context.Background(), w.copier(&file{}, &file{}, Options{}), 4)
	return p, why
}

func TestClassifySCSI(t *testing.T) {
	lio := lioParams()
	lio.MaxSegmentLength = 256 << 20
	with := func(f func(*scsi.CopyParams)) scsi.CopyParams { cp := lio; f(&cp); return cp }
	cases := []struct {
		name     string
		src, dst string
		cp       scsi.CopyParams
		method   string
		reason   string
		targets  int
	}{
		{"LIO, two LUs", naaB, naaC, lio, "xcopy", "company id 24a937", 2},
		// Array identity comes from the NAA's company id, not INQUIRY strings.
		{"another vendor's array", naaB, "6001405abea000010000000000000000", lio, "", "different arrays (NAA company id 24a937 and 001405)", 0},
		{"locally assigned NAA", naaB, "3000000000000001", lio, "", "names no company", 0},
		{"one CSCD, two LUs", naaB, naaC, with(func(c *scsi.CopyParams) { c.MaxTargetDescriptors = 1 }), "", "takes 1 CSCD", 0},
		{"one CSCD, one LU", naaB, naaB, with(func(c *scsi.CopyParams) { c.MaxTargetDescriptors = 1 }), "xcopy", "", 1},
		{"descriptor list too short", naaB, naaC, with(func(c *scsi.CopyParams) { c.MaxDescriptorListLen = 64 }), "", "cannot hold 2 CSCD descriptor(s) and one segment", 0},
		{"no segment descriptors", naaB, naaC, with(func(c *scsi.CopyParams) { c.MaxSegmentDescriptors = 0 }), "", "MAXIMUM SEGMENT DESCRIPTOR COUNT 0", 0},
		{"segment shorter than a block", naaB, naaC, with(func(c *scsi.CopyParams) { c.MaxSegmentLength = 256 }), "", "holds no whole segment", 0},
	}
	for _, c := range cases {
		p, why := scsiPair(t, c.src, c.dst, c.cp)
		if p.method != c.method || !strings.Contains(why, c.reason) || len(p.targets) != c.targets {
			t.Errorf("%s: method %q, %d target descriptor(s) (%s)", c.name, p.method, len(p.targets), why)
		}
	}
	// Same company, other product strings: still one array as far as the NAA says.
	w := newWorld(t)
	w.lu("sdb", sdb, naaB, 512, lio)
	w.lu("sdc", sdc, naaC, 512, lio)
	w.ids[sdc].SCSI.Inquiry.Product = "FlashArray//X"
	p := &pair{src: w.ids[sdb], dst: w.ids[sdc]}
	if why := p.classify(context.Background(), w.copier(&file{}, &file{}, Options{}), 4); p.method != "xcopy" {
		t.Errorf("other product string: %s", why)
	}
	// The same LU as source and destination: one CSCD serves both (stdi = dtdi).
	p, _ = scsiPair(t, naaB, naaB, lio)
	if len(p.targets) != 1 || p.dstTarget != 0 {
		t.Errorf("same LU: %d targets, destination index %d", len(p.targets), p.dstTarget)
	}
	v, _ := hex.DecodeString(naaB)
	if got := p.targets[0][8:24]; string(got) != string(v) {
		t.Errorf("target descriptor designator % x", got)
	}
}

// A segment's byte length must be a multiple of DATA SEGMENT GRANULARITY, the last one of a
// run included: the tail that cannot be goes through the host.
func TestSegmentGranularityForTheLastSegment(t *testing.T) {
	cp := lioParams()
	cp.DataSegmentGranLog2 = 12 // 4 KiB
	cp.MaxSegmentLength = 1 << 20
	p, why := scsiPair(t, naaB, naaC, cp)
	if p.method != "xcopy" || p.granBlocks != 8 {
		t.Fatalf("granularity 4096 on 512-byte blocks: %s (granBlocks %d)", why, p.granBlocks)
	}
	w := newWorld(t)
	c := w.copier(&file{}, &file{}, Options{})
	chunks := p.split(context.Background(), c, mappedRun{dst: dm.Extent{Dev: sdc}, srcSec: 2048, dstSec: 4096, sectors: 4096 + 1001})
	var off, host int64
	for _, ch := range chunks {
		if ch.pair == nil {
			host += ch.length
			continue
		}
		off += ch.length
		if ch.length%4096 != 0 {
			t.Fatalf("offloaded piece of %d bytes: not a multiple of the 4096-byte granularity", ch.length)
		}
	}
	if off != (4096+1000)*512 || host != 512 {
		t.Fatalf("offloaded %d, host %d of %d bytes", off, host, (4096+1001)*512)
	}
}
