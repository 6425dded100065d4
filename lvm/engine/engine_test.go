package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/ioctl/dm"
)

func dev(ma, mi uint32) dm.Dev { return dm.Dev{Major: ma, Minor: mi} }

func TestIntersect(t *testing.T) {
	// Source LV: two segments on sda; destination LV: three segments on sdb and sdc.
	sx := []dm.Extent{{Start: 0, Length: 100, Dev: dev(8, 0), DevStart: 1000}, {Start: 100, Length: 50, Dev: dev(8, 0), DevStart: 5000}}
	dx := []dm.Extent{{Start: 0, Length: 30, Dev: dev(8, 16), DevStart: 2048}, {Start: 30, Length: 100, Dev: dev(8, 32), DevStart: 0},
		{Start: 130, Length: 20, Dev: dev(8, 16), DevStart: 9000}}
	got := intersect(sx, dx, 0, 0)
	type run struct {
		src, dst                                dm.Dev
		srcSec, dstSec, logSrc, logDst, sectors uint64
	}
	want := []run{
		{dev(8, 0), dev(8, 16), 1000, 2048, 0, 0, 30},
		{dev(8, 0), dev(8, 32), 1030, 0, 30, 30, 70},
		{dev(8, 0), dev(8, 32), 5000, 70, 100, 100, 30},
		{dev(8, 0), dev(8, 16), 5030, 9000, 130, 130, 20},
	}
	if len(got) != len(want) {
		t.Fatalf("%+v", got)
	}
	var total uint64
	for i := range want {
		g := run{got[i].src.Dev, got[i].dst.Dev, got[i].srcSec, got[i].dstSec, got[i].logSrc, got[i].logDst, got[i].sectors}
		if g != want[i] {
			t.Errorf("run %d: %+v, want %+v", i, g, want[i])
		}
		total += got[i].sectors
	}
	if total != 150 {
		t.Fatalf("runs cover %d sectors of 150", total)
	}
	// With base offsets (a range inside the devices).
	got = intersect([]dm.Extent{{Start: 10, Length: 20, Dev: dev(1, 1), DevStart: 110}}, []dm.Extent{{Start: 50, Length: 20, Dev: dev(2, 2), DevStart: 7}}, 10, 50)
	if len(got) != 1 || got[0].srcSec != 110 || got[0].dstSec != 7 || got[0].logSrc != 10 || got[0].logDst != 50 || got[0].sectors != 20 {
		t.Fatalf("%+v", got)
	}
}

func TestSplitRespectsLimits(t *testing.T) {
	w := newWorld(t)
	c := w.copier(&file{}, &file{}, Options{})
	p := &pair{method: "xcopy", segBlocks: 65535, segsPerCmd: 1, maxBlocks: 65535, granBlocks: 1, bs: 512, src: &Device{}, dst: &Device{}}
	r := mappedRun{dst: dm.Extent{Dev: dev(8, 16)}, srcSec: 0, dstSec: 2048, logSrc: 0, logDst: 0, sectors: 200000}
	chunks := p.split(context.Background(), c, r)
	var total int64
	for i, c := range chunks {
		if c.length > 65535*512 {
			t.Fatalf("chunk %d of %d bytes exceeds one segment", i, c.length)
		}
		if c.dstLBA != uint64(2048+c.dstOff/512) || c.srcLBA != uint64(c.srcOff/512) {
			t.Fatalf("chunk %d LBAs %d/%d for offsets %d/%d", i, c.srcLBA, c.dstLBA, c.srcOff, c.dstOff)
		}
		total += c.length
	}
	if total != 200000*512 || len(chunks) != 4 {
		t.Fatalf("%d chunks, %d bytes", len(chunks), total)
	}
	// 4 KiB blocks: LBAs count device blocks, not sectors.
	p4 := &pair{method: "nvme", segBlocks: 256, segsPerCmd: 4, maxBlocks: 1024, granBlocks: 1, bs: 4096, src: &Device{}, dst: &Device{}}
	c4 := p4.split(context.Background(), c, mappedRun{dst: dm.Extent{Dev: dev(8, 16)}, srcSec: 800, dstSec: 8, sectors: 8 * 2048})
	if len(c4) != 2 || c4[0].srcLBA != 100 || c4[0].dstLBA != 1 || c4[1].srcLBA != 1124 || c4[0].length != 1024*4096 {
		t.Fatalf("%+v", c4)
	}
}

func TestHostCopyOfFiles(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := make([]byte, 20<<20+4096)
	rand.Read(data[:8<<20])
	rand.Read(data[16<<20:]) // a zero hole in the middle
	os.WriteFile(src, data, 0o644)
	f, _ := os.Create(dst)
	f.Truncate(int64(len(data)) + 1<<20)
	f.Close()
	var lines []string
	res, err := Copy(context.Background(), src, dst, Options{Verify: true, HostChunk: 1 << 20, HostInFlight: 3,
		Log: func(format string, args ...any) { lines = append(lines, format) }})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got[:len(data)], data) || res.HostCopied != int64(len(data)) || res.Offloaded != 0 {
		t.Fatalf("copy result %+v", res)
	}
	if !strings.Contains(strings.Join(res.Methods, "\n"), "not block devices") {
		t.Errorf("the method line must say why: %v", res.Methods)
	}
	// A destination smaller than the source is refused before anything is written.
	small := filepath.Join(dir, "small")
	os.WriteFile(small, make([]byte, 4096), 0o644)
	if _, err := Copy(context.Background(), src, small, Options{}); err == nil || !strings.Contains(err.Error(), "smaller than the source") {
		t.Fatalf("small destination: %v", err)
	}
}
