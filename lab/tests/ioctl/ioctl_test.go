//go:build lab

// In-guest tests of the device command layer against LIO (tcm_loop + fileio) and QEMU's
// emulated NVMe, each verified by content.
package ioctl_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/ioctl/blk"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
	"github.com/pvesnap/pvesnap/lab/guest"
)

var ctx = context.Background()

const mib = 1 << 20

func lunSerial(i int) string { return fmt.Sprintf("6C1B16CE1C034D1C%08X", 0xA000+i) }

// capture saves a raw response for the host's golden parser tests.
func capture(t *testing.T, name string, b []byte) {
	dir := "/mnt/host/captures"
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, name), b, 0o644)
}

func TestSCSIAgainstLIO(t *testing.T) {
	lio, err := guest.SetupLIO()
	if err != nil {
		t.Fatal(err)
	}
	arrayA, err := lio.CreateTarget(1)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := lio.CreateLUN("src", "/tmp/src.img", 64*mib, lunSerial(1))
	dst, _ := lio.CreateLUN("dst", "/tmp/dst.img", 64*mib, lunSerial(2))
	srcDev, err := arrayA.Map(src, 0)
	if err != nil {
		t.Fatal(err)
	}
	dstDev, err := arrayA.Map(dst, 1)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := scsi.Open(srcDev)
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	dd, _ := scsi.Open(dstDev)
	defer dd.Close()

	id, err := scsi.Identify(ctx, sd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s %s serial %s NAA %s 3PC=%v capacity %d blocks of %d, copy: %v",
		srcDev, id.Inquiry.Vendor, id.Inquiry.Product, id.Serial, id.NAA.NAAHex(), id.Inquiry.ThirdPartyCopy, id.Capacity.Blocks(), id.Capacity.BlockSize, id.Copy)
	if !id.HasNAA || id.NAA.NAAHex() != src.NAA {
		t.Fatalf("NAA %s, want the FlashArray form %s", id.NAA.NAAHex(), src.NAA)
	}
	if id.Serial != src.Serial || id.Capacity.Bytes() != 64*mib || !id.Inquiry.ThirdPartyCopy {
		t.Fatalf("identity %+v", id)
	}
	if id.Copy == nil || !id.Copy.SNLID || !id.Copy.Implements(scsi.SegBlockToBlock) || !id.Copy.Implements(scsi.TargetIdentificationE4) {
		t.Fatalf("copy parameters %v (%v)", id.Copy, id.CopyError)
	}
	for page, name := range map[byte]string{0x00: "lio-vpd00.bin", 0x80: "lio-vpd80.bin", 0x83: "lio-vpd83.bin", 0xB0: "lio-vpdb0.bin"} {
		if b, err := scsi.VPD(ctx, sd, page); err == nil {
			capture(t, name, b)
		}
	}
	rcop := make([]byte, 256)
	resid, _ := sd.Exec(ctx, scsi.ReceiveCopyOperatingParametersCDB(256), scsi.DirFromDevice, rcop)
	capture(t, "lio-rcop.bin", rcop[:256-resid])
	if out, err := guest.Run("sg_copy_results", "--params", srcDev); err == nil {
		t.Logf("cross-check sg_copy_results --params:\n%s", out)
	}

	// EXTENDED COPY: 8 MiB from LBA 0 of src to LBA 40960 of dst, one segment per command.
	if err := guest.WritePattern(srcDev, 7, 0, 8*mib); err != nil {
		t.Fatal(err)
	}
	dstID, _ := scsi.Identify(ctx, dd)
	td0, _ := scsi.TargetDescriptor(id.NAA, 512)
	td1, _ := scsi.TargetDescriptor(dstID.NAA, 512)
	before := guest.SnapStats(srcDev, dstDev)
	for off := uint64(0); off < 8*mib/512; off += 4096 {
		p, err := scsi.ExtendedCopyParams(0, scsi.ListIDNone, 1, [][]byte{td0, td1},
			[]scsi.Segment{{Source: 0, Destination: 1, Blocks: 4096, SourceLBA: off, DestinationLBA: 40960 + off}})
		if err != nil {
			t.Fatal(err)
		}
		if err := scsi.ExtendedCopy(ctx, dd, p); err != nil {
			t.Fatalf("EXTENDED COPY at %d: %v", off, err)
		}
	}
	host := guest.HostBytes(before, guest.SnapStats(srcDev, dstDev))
	if err := scsi.SyncCache(ctx, dd); err != nil {
		t.Fatal(err)
	}
	if f, err := os.Open(dstDev); err == nil {
		blk.FlushBuffers(f)
		f.Close()
	}
	if err := guest.CheckPattern(dstDev, 40960*512, 8*mib, 7, 0); err != nil {
		t.Fatalf("XCOPY result: %v", err)
	}
	t.Logf("XCOPY 8 MiB verified; host I/O on the initiator devices during the copy: %d bytes", host)
	if host > 8*mib/100 {
		t.Errorf("XCOPY moved %d bytes through the host", host)
	}

	// A LUN behind another target stands for another array: XCOPY cannot reach it.
	arrayB, _ := lio.CreateTarget(2)
	foreign, _ := lio.CreateLUN("foreign", "/tmp/foreign.img", 64*mib, lunSerial(3))
	foreignDev, err := arrayB.Map(foreign, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd, _ := scsi.Open(foreignDev)
	defer fd.Close()
	fid, _ := scsi.Identify(ctx, fd)
	tdF, _ := scsi.TargetDescriptor(fid.NAA, 512)
	p, _ := scsi.ExtendedCopyParams(0, scsi.ListIDNone, 1, [][]byte{td0, tdF}, []scsi.Segment{{Source: 0, Destination: 1, Blocks: 8}})
	err = scsi.ExtendedCopy(ctx, fd, p)
	if !errors.Is(err, scsi.ErrUnreachable) {
		t.Fatalf("cross-array XCOPY: %v, want copy target device not reachable", err)
	}
	t.Logf("cross-array XCOPY refused as expected: %v", err)

	// A LUN without third-party copy: RCOP is not supported.
	nope, _ := lio.CreateLUN("no3pc", "/tmp/no3pc.img", 16*mib, lunSerial(4))
	os.WriteFile("/sys/kernel/config/target/core/fileio_0/no3pc/attrib/emulate_3pc", []byte("0\n"), 0o644)
	nopeDev, err := arrayA.Map(nope, 2)
	if err != nil {
		t.Fatal(err)
	}
	nd, _ := scsi.Open(nopeDev)
	defer nd.Close()
	nid, err := scsi.Identify(ctx, nd)
	if err != nil || nid.Inquiry.ThirdPartyCopy || nid.Copy != nil {
		t.Fatalf("emulate_3pc=0: %+v %v", nid, err)
	}
	if _, err := scsi.ReceiveCopyParams(ctx, nd); !errors.Is(err, scsi.ErrNotSupported) {
		t.Fatalf("RCOP on a LUN without 3PC: %v", err)
	}

	// Connections come and go: unmapping removes the device, mapping brings it back.
	if err := arrayA.Unmap(nope); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if d := guest.FindByNAA(nope.NAA); d != "" {
		t.Fatalf("%s still present after unmapping", d)
	}
	if _, err := arrayA.Map(nope, 2); err != nil {
		t.Fatalf("remap: %v", err)
	}
}

func TestNVMeAgainstQEMU(t *testing.T) {
	ns, err := guest.NVMeNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := nvme.Open("/dev/nvme0")
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	c, err := ctrl.IdentifyController(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("controller %s %s fw %s ONCS %#x OCFS %#x MDTS %d subnqn %s", c.ModelNumber(), c.SerialNumber(), c.FirmwareRev(), c.Oncs, c.Ocfs, c.Mdts, c.SubNQN())
	if !c.SupportsCopy() || !c.SupportsCopyFormat(0) || !c.SupportsCopyFormat(2) {
		t.Fatalf("QEMU 10 offers Copy formats 0h-3h: ONCS %#x OCFS %#x", c.Oncs, c.Ocfs)
	}
	d1, err := nvme.Open(ns[1])
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Close()
	d2, _ := nvme.Open(ns[2])
	defer d2.Close()
	if id, err := d2.NSID(); err != nil || id != 2 {
		t.Fatalf("NVME_IOCTL_ID on %s: %d %v", ns[2], id, err)
	}
	n1, err := ctrl.IdentifyNamespace(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ns1: %d blocks of %d, MSSRL %d MCL %d MSRC %d NGUID %s", n1.Nsze, n1.BlockSize(), n1.Mssrl, n1.Mcl, n1.Msrc, n1.NGUIDHex())
	if n1.Mssrl != 65535 || n1.Mcl != 1048576 || n1.Msrc != 127 || n1.BlockSize() != 512 {
		t.Fatalf("copy limits %+v", n1)
	}
	lbs := int64(n1.BlockSize())

	// Format 0h: within namespace 1, 1 MiB from LBA 0 to LBA 65536.
	if err := guest.WritePattern(ns[1], 11, 0, mib); err != nil {
		t.Fatal(err)
	}
	if err := d1.Copy(ctx, nvme.Copy{NSID: 1, SDLBA: 65536, Format: nvme.Format0, Ranges: []nvme.CopyRange{{SLBA: 0, NLB: uint32(mib / lbs)}}}); err != nil {
		t.Fatalf("Copy format 0h: %v", err)
	}
	if err := d1.Flush(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := guest.CheckPattern(ns[1], 65536*lbs, mib, 11, 0); err != nil {
		t.Fatalf("format 0h result: %v", err)
	}
	// Over MSRC+1 ranges: Command Size Limit Exceeded.
	many := make([]nvme.CopyRange, 129)
	for i := range many {
		many[i] = nvme.CopyRange{SLBA: uint64(i), NLB: 1}
	}
	var se *nvme.StatusError
	if err := d1.Copy(ctx, nvme.Copy{NSID: 1, SDLBA: 100000, Format: nvme.Format0, Ranges: many}); !errors.As(err, &se) || se.Status.Code() != 0x183 {
		t.Fatalf("129 ranges: %v, want Command Size Limit Exceeded", err)
	}

	hb, err := ctrl.HostBehavior(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host behavior: acre %d lbafee %d cdfe %#x", hb.ACRE, hb.LBAFEE, hb.CDFE)
	// Before CDFE is enabled, cross-namespace copy is refused (Invalid Field, DNR).
	if hb.CDFE&(1<<2) == 0 {
		err := d2.Copy(ctx, nvme.Copy{NSID: 2, SDLBA: 0, Format: nvme.Format2, Ranges: []nvme.CopyRange{{SNSID: 1, SLBA: 0, NLB: 8}}})
		if !errors.Is(err, nvme.ErrNotSupported) {
			t.Fatalf("format 2h without CDFE: %v", err)
		}
	}
	err = ctrl.EnableCopyFormats(ctx, nvme.Format2, nvme.Format3)
	if guest.KernelAtLeast(6, 12, 110) {
		// "nvme: reject passthrough of driver-managed Set Features" (6.12.110): EACCES.
		if !errors.Is(err, nvme.ErrKernelRefuses) {
			t.Fatalf("kernel %s: Set Features 0x16 gave %v, want the kernel's refusal", release(), err)
		}
		t.Logf("kernel refuses to enable CDFE from user space, as expected: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("enabling CDFE: %v", err)
	}
	hb2, _ := ctrl.HostBehavior(ctx)
	if hb2.CDFE&0xc != 0xc || hb2.LBAFEE != hb.LBAFEE {
		t.Fatalf("after read-modify-write: %+v (before %+v)", hb2, hb)
	}
	// Format 2h: ranges from namespaces 1 and 3 into namespace 2. (QEMU 10.0.2 reads a range
	// naming the destination namespace itself from the previous range's namespace when the
	// two are mixed in one command; pvesnap copies from one source namespace per command.)
	if err := guest.WritePattern(ns[3], 12, 0, mib); err != nil {
		t.Fatal(err)
	}
	half := uint32(mib / lbs / 2)
	err = d2.Copy(ctx, nvme.Copy{NSID: 2, SDLBA: 8192, Format: nvme.Format2, Ranges: []nvme.CopyRange{{SNSID: 1, SLBA: 0, NLB: half}, {SNSID: 3, SLBA: 0, NLB: half}}})
	if err != nil {
		t.Fatalf("Copy format 2h: %v", err)
	}
	d2.Flush(ctx, 2)
	if err := guest.CheckPattern(ns[2], 8192*lbs, mib/2, 11, 0); err != nil {
		t.Fatalf("format 2h, range from namespace 1: %v", err)
	}
	if err := guest.CheckPattern(ns[2], 8192*lbs+mib/2, mib/2, 12, 0); err != nil {
		t.Fatalf("format 2h, range from namespace 3: %v", err)
	}
	// Format 3h on a namespace without 64-bit guard PI: Invalid Format.
	if err := d2.Copy(ctx, nvme.Copy{NSID: 2, SDLBA: 0, Format: nvme.Format3, Ranges: []nvme.CopyRange{{SNSID: 1, SLBA: 0, NLB: 8}}}); !errors.Is(err, nvme.ErrNotSupported) {
		t.Fatalf("format 3h on a pif=0 namespace: %v", err)
	}
	// An unknown source namespace is refused.
	if err := d2.Copy(ctx, nvme.Copy{NSID: 2, SDLBA: 0, Format: nvme.Format2, Ranges: []nvme.CopyRange{{SNSID: 9, SLBA: 0, NLB: 8}}}); err == nil {
		t.Fatal("copy from namespace 9 accepted")
	}
	t.Log("format 2h cross-namespace copy verified")
}

func release() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// TestDMResolutionMultipathPartitionLV builds an LV on a partition of a dm-multipath map over
// two paths to one LIO LUN, resolves it with DM_TABLE_STATUS and checks by content that the
// physical LBAs are right.
func TestDMResolutionMultipathPartitionLV(t *testing.T) {
	lio, err := guest.SetupLIO()
	if err != nil {
		t.Fatal(err)
	}
	pathA, _ := lio.CreateTarget(11)
	pathB, _ := lio.CreateTarget(12)
	lun, _ := lio.CreateLUN("mp", "/tmp/mp.img", 128*mib, lunSerial(11))
	devA, err := pathA.Map(lun, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The second path: the same backstore through another target.
	if err := os.MkdirAll(filepath.Join("/sys/kernel/config/target/loopback", pathB.WWN, "tpgt_1/lun/lun_0"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Symlink("/sys/kernel/config/target/core/fileio_0/mp", filepath.Join("/sys/kernel/config/target/loopback", pathB.WWN, "tpgt_1/lun/lun_0/port"))
	time.Sleep(300 * time.Millisecond)
	var paths []string
	ms, _ := filepath.Glob("/sys/block/sd*/device/wwid")
	for _, m := range ms {
		if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) == "naa."+lun.NAA {
			paths = append(paths, filepath.Base(filepath.Dir(filepath.Dir(m))))
		}
	}
	if len(paths) != 2 {
		t.Fatalf("want two paths to the LUN, got %v (A: %s)", paths, devA)
	}
	devNum := func(name string) string {
		b, _ := os.ReadFile("/sys/block/" + name + "/dev")
		return strings.TrimSpace(string(b))
	}
	sectors := int64(128 * mib / 512)
	mp := fmt.Sprintf("0 %d multipath 0 0 1 1 round-robin 0 2 1 %s 1 %s 1", sectors, devNum(paths[0]), devNum(paths[1]))
	if out, err := guest.Run("dmsetup", "create", "mpathlab", "--table", mp); err != nil {
		t.Fatalf("dmsetup create multipath: %v %s", err, out)
	}
	mpDev := strings.TrimSpace(mustOut(t, "dmsetup", "info", "-c", "--noheadings", "-o", "major,minor", "--separator", ":", "mpathlab"))
	part := fmt.Sprintf("0 %d linear %s 2048", sectors-4096, mpDev)
	if out, err := guest.Run("dmsetup", "create", "mpathlab-part1", "--table", part); err != nil {
		t.Fatalf("dmsetup create partition: %v %s", err, out)
	}
	guest.Run("dmsetup", "mknodes")
	mustRun(t, "pvcreate", "-y", "/dev/mapper/mpathlab-part1")
	mustRun(t, "vgcreate", "vgmp", "/dev/mapper/mpathlab-part1")
	mustRun(t, "lvcreate", "-y", "-L", "8M", "-n", "a", "vgmp")
	mustRun(t, "lvcreate", "-y", "-L", "8M", "-n", "b", "vgmp")
	mustRun(t, "lvextend", "-L", "16M", "vgmp/a") // now two segments with a gap between them
	defer func() {
		guest.Run("vgremove", "-y", "vgmp")
		guest.Run("dmsetup", "remove", "mpathlab-part1")
		guest.Run("dmsetup", "remove", "mpathlab")
		// The nodes mknodes made stay without udev, and would name the next maps to take
		// their numbers (the restore suites' multipath map, later in the boot).
		guest.Run("dmsetup", "mknodes")
	}()
	lvDevNum := strings.TrimSpace(mustOut(t, "lvs", "--noheadings", "-o", "lv_kernel_major,lv_kernel_minor", "--separator", ":", "vgmp/a"))
	lvDev, err := dm.ParseDev(strings.ReplaceAll(lvDevNum, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := dm.OpenControl("")
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	r := &dm.Resolver{Tables: ctl, Sys: "/sys"}
	ext, err := r.ResolveAll(lvDev)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("LV vgmp/a resolves to %+v", ext)
	if len(ext) != 2 || len(ext[0].Paths) != 2 {
		t.Fatalf("want two extents over two paths, got %+v", ext)
	}
	// Write through the LV, read the physical device at the resolved sectors.
	if err := guest.WritePattern("/dev/vgmp/a", 21, 0, 16*mib); err != nil {
		t.Fatal(err)
	}
	for _, x := range ext {
		phys := "/dev/" + filepath.Base(devPathOf(x.Dev))
		if err := guest.CheckPattern(phys, int64(x.DevStart)*512, int64(x.Length)*512, 21, int64(x.Start)*512); err != nil {
			t.Fatalf("extent %+v: %v", x, err)
		}
	}
	t.Log("LV -> partition -> multipath -> sd resolution verified by content")
}

func devPathOf(d dm.Dev) string {
	link, _ := filepath.EvalSymlinks("/sys/dev/block/" + d.String())
	return link
}

func mustOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := guest.Output(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := guest.Run(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}
