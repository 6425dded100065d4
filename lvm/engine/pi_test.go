package engine

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	smart "github.com/anatol/smart.go"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
)

// ns adds an NVMe namespace of one subsystem (QEMU's Copy limits) formatted with block size
// bs, ms bytes of metadata, data protection settings dps and protection information format pif.
func (w *world) ns(name string, d dm.Dev, nsid uint32, bs, ms int, dps, pif uint8) *fakeNS {
	w.disk(name, d, 1<<21, map[string]string{"wwid": "eui.00" + name})
	lbads := uint8(9)
	if bs == 4096 {
		lbads = 12
	}
	ns := &nvme.Namespace{}
	ns.Nsze, ns.Dps, ns.Mssrl, ns.Mcl, ns.Msrc = 1<<20, dps, 256, 1024, 15
	ns.Lbaf[0] = smart.NvmeLBAF{Ms: uint16(ms), Ds: lbads}
	ctrl := &nvme.Controller{}
	ctrl.Oncs, ctrl.Ocfs, ctrl.Vwc = nvme.ONCSCopy, 0xf, 1
	copy(ctrl.SubnqnRaw[:], "nqn.2026-01.lab.pvesnap:subsys0")
	w.ids[d] = &Device{Dev: d, Name: name, Path: filepath.Join(w.devDir, name), Kind: KindNVMe, BlockSize: bs, NSID: nsid,
		SubNQN: ctrl.SubNQN(), Ctrl: ctrl, NS: ns, PIF: pif, WWID: "eui.00" + name}
	f := &fakeNS{w: w, name: name}
	w.nss[filepath.Join(w.devDir, name)] = f
	return f
}

// Two LVs on one namespace formatted with protection information type 1: the Copy must have
// the controller check the source's guard and reference tags (the source LBAs) and write
// fresh ones for the destination LBAs (PRACT), or the destination keeps the source's
// reference tags and every read of it fails.
func TestNVMeCopyWithProtectionInformation(t *testing.T) {
	w := newWorld(t)
	nvme0n4 := dm.Dev{Major: 259, Minor: 4}
	ns := w.ns("nvme0n4", nvme0n4, 4, 512, 8, 0x01, 0)
	n := int64(1 << 20)
	w.dmdev("dm-1", dm1, "", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "259:4 2048"}}, "nvme0n4")
	w.dmdev("dm-2", dm2, "", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "259:4 1050624"}}, "nvme0n4")
	s, d, _ := w.endpoints(dm1, dm2, n, 512)
	c := w.copier(s, d, Options{})
	if err := c.copy(context.Background(), 0, 0, n); err != nil {
		t.Fatal(err)
	}
	if c.res.Offloaded != n || len(ns.copies) == 0 {
		t.Fatalf("not offloaded: %+v", c.res)
	}
	const want = nvme.PRACT | nvme.PRCHKGuard | nvme.PRCHKRef
	for _, cp := range ns.copies {
		if cp.Format != nvme.Format0 || cp.PRINFOR != want || cp.PRINFOW != want || cp.ILBRT != uint32(cp.SDLBA) {
			t.Fatalf("Copy to %d: format %d PRINFOR %#x PRINFOW %#x ILBRT %d; want format 0, %#x, %#x, the destination LBA",
				cp.SDLBA, cp.Format, cp.PRINFOR, cp.PRINFOW, cp.ILBRT, want, want)
		}
		for _, r := range cp.Ranges {
			if r.EILBRT != uint32(r.SLBA) {
				t.Fatalf("range at %d expects reference tag %d", r.SLBA, r.EILBRT)
			}
		}
	}
	if !strings.Contains(joined(c.res.Methods), "protection information type 1") {
		t.Errorf("the method line must say how PI is handled: %v", c.res.Methods)
	}
}

// Protection information the engine cannot encode is copied by the host, with the reason.
func TestProtectionInformationRefusals(t *testing.T) {
	// NVMe: a 64-bit guard (PIF 2) puts storage and reference tags in 48-bit fields.
	w := newWorld(t)
	a, b := dm.Dev{Major: 259, Minor: 1}, dm.Dev{Major: 259, Minor: 2}
	w.ns("nvme0n1", a, 1, 4096, 16, 0x01, 2)
	w.ns("nvme0n2", b, 2, 4096, 16, 0x01, 2)
	p := &pair{src: w.ids[a], dst: w.ids[b]}
	c := w.copier(&file{}, &file{}, Options{})
	why := p.classify(context.Background(), c, 4)
	if p.method != "" || !strings.Contains(why, "64-bit guard") {
		t.Fatalf("PIF 2: method %q (%s)", p.method, why)
	}
	// NVMe: PI on one side only.
	w.ns("nvme0n3", dm.Dev{Major: 259, Minor: 3}, 3, 512, 8, 0x01, 0)
	w.ns("nvme0n5", dm.Dev{Major: 259, Minor: 5}, 5, 512, 8, 0x00, 0)
	p = &pair{src: w.ids[dm.Dev{Major: 259, Minor: 3}], dst: w.ids[dm.Dev{Major: 259, Minor: 5}]}
	if why := p.classify(context.Background(), c, 4); p.method != "" || !strings.Contains(why, "different protection information settings") {
		t.Fatalf("PI on one side: method %q (%s)", p.method, why)
	}
	// SCSI: PROT_EN in READ CAPACITY(16): EXTENDED COPY has no PROTECT field.
	w2, _, _ := twoLUs(t, 1<<20, lioParams())
	w2.ids[sdc].SCSI.Capacity.ProtectionEnabled, w2.ids[sdc].SCSI.Capacity.ProtectionType = true, 1
	p = &pair{src: w2.ids[sdb], dst: w2.ids[sdc]}
	if why := p.classify(context.Background(), c, 4); p.method != "" || !strings.Contains(why, "PROTECT") {
		t.Fatalf("SCSI LU with PI: method %q (%s)", p.method, why)
	}
}
