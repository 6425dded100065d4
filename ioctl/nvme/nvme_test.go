package nvme

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func hx(t testing.TB, s string) []byte {
	t.Helper()
	var clean []string
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		clean = append(clean, strings.Fields(line)...)
	}
	b, err := hex.DecodeString(strings.Join(clean, ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// struct nvme_passthru_cmd64, field by field from linux/nvme_ioctl.h.
func TestPassthruLayoutGolden(t *testing.T) {
	c := CopyCommand(2, 0x1_0000_0400, Format2, 3)
	c.TimeoutMs = 30000
	got := c.marshal(passthru64Len, 0x7f0011223000, 96)
	want := hx(t, `
		19 00 0000           # opcode Copy, flags 0, rsvd1
		02000000             # nsid 2 (the destination namespace)
		00000000 00000000    # cdw2, cdw3
		0000000000000000     # metadata
		003022110 07f0000    # addr (little-endian 0x7f0011223000)
		00000000 60000000    # metadata_len, data_len 96 (3 ranges of 32 bytes)
		00040000 01000000    # cdw10/11: SDLBA 0x100000400
		02020000             # cdw12: NR 2 (0-based), DESFMT 2
		00000000 00000000 00000000 # cdw13-15
		30750000             # timeout_ms 30000
		00000000             # rsvd2
		0000000000000000     # result`)
	if !bytes.Equal(got, want) {
		t.Fatalf("cmd64:\n got  % x\n want % x", got, want)
	}
	short := c.marshal(passthruLen, 0, 0)
	if len(short) != 72 || short[0] != IOCopy {
		t.Fatal("32-bit variant layout")
	}
	binary.LittleEndian.PutUint32(short[68:], 7)
	if result(short) != 7 {
		t.Fatal("32-bit result offset")
	}
}

func TestCopyRangeFormatsGolden(t *testing.T) {
	f0, err := EncodeCopyRanges(Format0, []CopyRange{{SLBA: 768, NLB: 256}})
	if err != nil {
		t.Fatal(err)
	}
	want0 := hx(t, `0000000000000000 0003000000000000 FF00 000000000000 00000000 0000 0000`)
	if !bytes.Equal(f0, want0) {
		t.Errorf("format 0h:\n got  % x\n want % x", f0, want0)
	}
	f2, _ := EncodeCopyRanges(Format2, []CopyRange{{SNSID: 1, SLBA: 0, NLB: 256}, {SNSID: 2, SLBA: 0x10, NLB: 65536}})
	want2 := hx(t, `
		01000000 00000000 0000000000000000 FF00 00000000 0000 00000000 0000 0000   # SNSID 1, SLBA 0, NLB 255
		02000000 00000000 1000000000000000 FFFF 00000000 0000 00000000 0000 0000   # SNSID 2, NLB 65535 (0-based)`)
	if !bytes.Equal(f2, want2) {
		t.Errorf("format 2h:\n got  % x\n want % x", f2, want2)
	}
	f3, _ := EncodeCopyRanges(Format3, []CopyRange{{SNSID: 9, SLBA: 1, NLB: 1}})
	if len(f3) != 40 || binary.LittleEndian.Uint32(f3) != 9 {
		t.Errorf("format 3h: % x", f3)
	}
	for _, bad := range []struct {
		f int
		r []CopyRange
	}{
		{Format0, []CopyRange{{SNSID: 1, NLB: 1}}}, // no SNSID in same-namespace formats
		{Format2, []CopyRange{{NLB: 1}}},           // cross-namespace needs one
		{Format0, []CopyRange{{NLB: 0}}},
		{Format0, []CopyRange{{NLB: 65537}}},
		{7, []CopyRange{{NLB: 1}}},
	} {
		if _, err := EncodeCopyRanges(bad.f, bad.r); err == nil {
			t.Errorf("format %d ranges %+v accepted", bad.f, bad.r)
		}
	}
}

func TestStatusDecoding(t *testing.T) {
	cases := []struct {
		raw                   uint16
		name                  string
		notSupp, incomp, perm bool
	}{
		{0x4002, "Invalid Field in Command (0x4002, DNR)", true, false, true},
		{0x4185, "Incompatible Namespace or Format (0x4185, DNR)", false, true, true},
		{0x4183, "Command Size Limit Exceeded (0x4183, DNR)", false, false, true},
		{0x410A, "Invalid Format (0x410a, DNR)", true, false, true},
		{0x0370, "Host Pathing Error (0x0370)", false, false, false},
	}
	for _, c := range cases {
		e := &StatusError{Op: "Copy", Status: Status(c.raw)}
		if e.Status.String() != c.name || errors.Is(e, ErrNotSupported) != c.notSupp || errors.Is(e, ErrIncompatible) != c.incomp || e.Permanent() != c.perm {
			t.Errorf("%#04x: %q notsupp=%v incomp=%v perm=%v", c.raw, e.Status, errors.Is(e, ErrNotSupported), errors.Is(e, ErrIncompatible), e.Permanent())
		}
	}
	if s := Status(0x4183); s.SCT() != 1 || s.SC() != 0x83 || !s.DNR() {
		t.Error("field extraction")
	}
}

func identifyController(oncs, ocfs uint16) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint16(b[0:], 0x1b36) // QEMU's vendor id
	copy(b[4:], "PVESNAPLAB01        ")
	copy(b[24:], "QEMU NVMe Ctrl                          ")
	copy(b[64:], "10.0.2  ")
	b[77] = 9
	binary.LittleEndian.PutUint32(b[516:], 3)
	binary.LittleEndian.PutUint16(b[520:], oncs)
	binary.LittleEndian.PutUint16(b[534:], ocfs)
	copy(b[768:], "nqn.2026-01.lab.pvesnap:subsys0")
	return b
}

// The library's structures read the fields where the specification puts them: each value is
// written at its offset by hand here (NVMe base 2.0 figure 275, NVM command set figure 97).
func TestIdentifyParsers(t *testing.T) {
	c, err := ParseController(identifyController(0x75d, 0xf))
	if err != nil {
		t.Fatal(err)
	}
	if !c.SupportsCopy() || !c.SupportsCopyFormat(2) || c.SupportsCopyFormat(4) || c.SerialNumber() != "PVESNAPLAB01" ||
		c.ModelNumber() != "QEMU NVMe Ctrl" || c.FirmwareRev() != "10.0.2" || c.Mdts != 9 || c.Nn != 3 ||
		c.SubNQN() != "nqn.2026-01.lab.pvesnap:subsys0" || c.VendorID != 0x1b36 {
		t.Fatalf("%+v", c)
	}
	if f := c.CopyFormats(); len(f) != 4 || f[3] != 3 {
		t.Errorf("copy formats %v", f)
	}
	ns := make([]byte, 4096)
	binary.LittleEndian.PutUint64(ns[0:], 4194304)
	ns[25] = 1    // two LBA formats
	ns[26] = 0x01 // format 1 in use
	binary.LittleEndian.PutUint16(ns[74:], 65535)
	binary.LittleEndian.PutUint32(ns[76:], 1048576)
	ns[80] = 127
	ns[99] = 0x01 // NSATTR: write protected
	copy(ns[104:], hx(t, "006c1b16ce1c034d24a9371c000b9fac"))
	copy(ns[120:], hx(t, "24a9371c000b9fac"))
	ns[128+2] = 9  // format 0: 512
	ns[132+2] = 12 // format 1: 4096
	n, err := ParseNamespace(ns)
	if err != nil {
		t.Fatal(err)
	}
	if n.Nsze != 4194304 || n.BlockSize() != 4096 || n.Mssrl != 65535 || n.Mcl != 1048576 || n.Msrc != 127 ||
		n.NGUIDHex() != "006c1b16ce1c034d24a9371c000b9fac" || n.EUI64Hex() != "24a9371c000b9fac" || !n.WriteProtected() {
		t.Fatalf("%+v", n)
	}
	l := Limits(n, n)
	if l.MaxRanges != 128 || l.MaxRangeBlocks != 65535 || l.MaxCommandBlocks != 1048576 {
		t.Fatalf("limits %+v", l)
	}
	ns[26] = 0x05 // format 5 does not exist
	if _, err := ParseNamespace(ns); err == nil {
		t.Error("a format index beyond NLBAF accepted")
	}
	// FLBAS bits 6:5 extend the index above 16 formats (the library's LbaSize ignores them).
	ns[25] = 17
	ns[26] = 0x21 // format 0x11
	ns[128+4*17+2] = 12
	if n, err := ParseNamespace(ns); err != nil || n.FormatIndex() != 17 || n.BlockSize() != 4096 {
		t.Fatalf("format 17: %v", err)
	}
	ns[26] = 0x01
	binary.LittleEndian.PutUint64(ns[0:], 0) // an inactive namespace reads as zeros
	if _, err := ParseNamespace(ns); err == nil {
		t.Error("an inactive namespace accepted")
	}
	if _, err := ParseController(make([]byte, 4095)); err == nil {
		t.Error("a short Identify Controller accepted")
	}
}

func TestHostBehaviorReadModifyWrite(t *testing.T) {
	raw := make([]byte, 512)
	raw[2] = 1     // LBAFEE set by the kernel
	raw[100] = 0xA // reserved bytes must survive
	h, err := ParseHostBehavior(raw)
	if err != nil {
		t.Fatal(err)
	}
	h.CDFE |= 1<<2 | 1<<3
	out := h.Marshal()
	if out[2] != 1 || out[100] != 0xA || out[4] != 0x0C || out[5] != 0 {
		t.Fatalf("% x", out[:8])
	}
}

func FuzzIdentify(f *testing.F) {
	f.Add(identifyController(0x100, 0x5))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseController(b)
		ParseNamespace(b)
		ParseNVMNamespace(b)
		ParseHostBehavior(b)
	})
}
