package nvme

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// A Copy on namespaces formatted with protection information type 1 must let the controller
// check the source's tags and write new ones for the destination LBAs: PRACT with guard and
// reference checks on both sides, the initial reference tag = the destination LBA, each
// range's expected tag = its source LBA. Without this the destination keeps the source's
// reference tags and every later read of it fails the kernel's reference tag check.
func TestCopyWithProtectionInformationGolden(t *testing.T) {
	c := Copy{NSID: 4, SDLBA: 0x1_0000_2000, Format: Format0,
		Ranges:  []CopyRange{{SLBA: 0x800, NLB: 16, EILBRT: 0x800}, {SLBA: 0x1_0000_0010, NLB: 1, EILBRT: 0x10, ELBAT: 0x1234, ELBATM: 0xffff}},
		PRINFOR: PRACT | PRCHKGuard | PRCHKRef, PRINFOW: PRACT | PRCHKGuard | PRCHKRef, ILBRT: 0x2000}
	cmd := c.Command()
	got := cmd.marshal(passthru64Len, 0, 64)
	want := hx(t, `
		19 00 0000 04000000 00000000 00000000 0000000000000000 0000000000000000
		00000000 40000000    # metadata_len 0, data_len 64 (2 ranges of 32 bytes)
		00200000 01000000    # SDLBA 0x100002000
		01D00034             # cdw12 0x3400D001: NR 1, DESFMT 0, PRINFOR 0xD (QEMU: byte 1 >> 4), PRINFOW 0xD (byte 3 >> 2)
		00000000             # cdw13
		00200000             # cdw14: ILBRT 0x2000 = the destination LBA's low 32 bits
		00000000             # cdw15: LBAT, LBATM 0
		00000000 00000000 0000000000000000`)
	if string(got) != string(want) {
		t.Fatalf("command:\n got  % x\n want % x", got, want)
	}
	if cmd.CDW12>>12&0xf != 0xD || cmd.CDW12>>26&0xf != 0xD {
		t.Fatalf("PRINFOR %x PRINFOW %x", cmd.CDW12>>12&0xf, cmd.CDW12>>26&0xf)
	}
	desc, err := EncodeCopyRanges(Format0, c.Ranges)
	if err != nil {
		t.Fatal(err)
	}
	wantDesc := hx(t, `
		0000000000000000 0008000000000000 0F00 000000000000 00080000 0000 0000
		0000000000000000 1000000001000000 0000 000000000000 10000000 3412 FFFF`)
	if string(desc) != string(wantDesc) {
		t.Fatalf("ranges:\n got  % x\n want % x", desc, wantDesc)
	}
	// Format 2h keeps the same tag fields after the source namespace.
	d2, _ := EncodeCopyRanges(Format2, []CopyRange{{SNSID: 3, SLBA: 7, NLB: 1, EILBRT: 7}})
	if binary.LittleEndian.Uint32(d2[0:]) != 3 || binary.LittleEndian.Uint32(d2[24:]) != 7 {
		t.Fatalf("format 2h tags: % x", d2)
	}
	// 32/64-bit guard formats put a storage tag and a longer reference tag elsewhere: refused.
	if _, err := EncodeCopyRanges(Format1, []CopyRange{{SLBA: 1, NLB: 1, EILBRT: 1}}); err == nil {
		t.Error("format 1h reference tags must not be encoded as 16-bit guard fields")
	}
	// Without protection information nothing changes from the plain command.
	plain := Copy{NSID: 2, SDLBA: 0x1_0000_0400, Format: Format2, Ranges: make([]CopyRange, 3)}.Command()
	if plain != CopyCommand(2, 0x1_0000_0400, Format2, 3) {
		t.Errorf("plain copy %+v", plain)
	}
}

func TestIdentifyCacheRetryAndProtectionFields(t *testing.T) {
	b := identifyController(0x75d, 0xf)
	b[525] = 0x07                             // VWC present (plus broadcast flush bits)
	binary.LittleEndian.PutUint16(b[128:], 5) // CRDT1 500 ms
	binary.LittleEndian.PutUint16(b[130:], 20)
	binary.LittleEndian.PutUint16(b[132:], 0)
	c, err := ParseController(b)
	if err != nil {
		t.Fatal(err)
	}
	if !c.VolatileWriteCache() || c.Crdt1 != 5 || c.Crdt2 != 20 || c.Crdt3 != 0 {
		t.Fatalf("%+v", c)
	}
	if d := c.RetryDelay(Status(0x0370 | 1<<11)); d != 500*time.Millisecond { // CRD 1
		t.Errorf("CRD 1: %s", d)
	}
	if d := c.RetryDelay(Status(0x0370 | 2<<11)); d != 2*time.Second {
		t.Errorf("CRD 2: %s", d)
	}
	if d := c.RetryDelay(Status(0x0370)); d != 0 {
		t.Errorf("CRD 0: %s", d)
	}
	ns := make([]byte, 4096)
	ns[29] = 0x09 // DPS: type 1, PI in the first 8 bytes of metadata
	ns[25] = 0
	ns[0] = 1   // NSZE
	ns[128] = 8 // MS 8
	ns[130] = 9
	n, err := ParseNamespace(ns)
	if err != nil || n.PIType() != 1 || n.MetadataSize() != 8 {
		t.Fatalf("%+v %v", n, err)
	}
	nvm := make([]byte, 4096)
	binary.LittleEndian.PutUint32(nvm[12:], 2<<7|16) // format 0: 64-bit guard, 16-bit storage tag
	m, _ := ParseNVMNamespace(nvm)
	if m.PIF(0) != 2 || m.STS(0) != 16 || m.STS(5) != 0 {
		t.Errorf("PIF %d STS %d", m.PIF(0), m.STS(0))
	}
}

func TestPathStatusesAreRetryable(t *testing.T) {
	for raw, want := range map[uint16][2]bool{ // path, retryable
		0x0370: {true, true},   // host pathing error
		0x0303: {true, true},   // ANA transition
		0x0302: {true, true},   // ANA inaccessible
		0x4301: {true, false},  // persistent loss, DNR
		0x0006: {false, true},  // internal error, may be retried
		0x4183: {false, false}, // size limit, DNR
	} {
		e := &StatusError{Op: "Copy", Status: Status(raw)}
		if errors.Is(e, ErrPath) != want[0] || e.Retryable() != want[1] {
			t.Errorf("%#04x: path %v retryable %v, want %v", raw, errors.Is(e, ErrPath), e.Retryable(), want)
		}
	}
	far, cancel := context.WithTimeout(context.Background(), 60*24*time.Hour)
	defer cancel()
	if ms, err := Timeout(far, CopyCommand(1, 0, Format0, 1)); err != nil || ms != 600_000 {
		t.Errorf("Copy with a 60-day deadline: %d ms %v", ms, err)
	}
	if ms, _ := Timeout(far, FlushCommand(1)); ms != 60_000 {
		t.Errorf("Flush: %d ms", ms)
	}
}
