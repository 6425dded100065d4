package scsi

import (
	"bytes"
	"context"
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
			line = line[:i] // comments name the fields
		}
		clean = append(clean, strings.Fields(line)...)
	}
	b, err := hex.DecodeString(strings.Join(clean, ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eq(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got  % x\n want % x", what, got, want)
	}
}

// Each expectation is the layout written from SPC-4 / SBC-3, field by field.
func TestCDBGolden(t *testing.T) {
	eq(t, "INQUIRY standard 96", InquiryCDB(false, 0, 96), hx(t, "12 00 00 0060 00"))
	eq(t, "INQUIRY VPD 0x83 alloc 4", InquiryCDB(true, 0x83, 4), hx(t, "12 01 83 0004 00"))
	eq(t, "READ CAPACITY(16) alloc 32", ReadCapacity16CDB(32), hx(t, "9E 10 0000000000000000 00000020 00 00"))
	eq(t, "RECEIVE COPY OPERATING PARAMETERS alloc 256", ReceiveCopyOperatingParametersCDB(256), hx(t, "84 03 00 00000000000000 00000100 00 00"))
	eq(t, "EXTENDED COPY(LID1) 108 bytes", ExtendedCopyCDB(108), hx(t, "83 00 00 00 00 00 00 00 00 00 0000006C 00 00"))
	eq(t, "SYNCHRONIZE CACHE(16) whole medium", SyncCache16CDB(0, 0), hx(t, "91 00 0000000000000000 00000000 00 00"))
}

// naa is LIO's NAA 6 designator for vpd_unit_serial "abea0001…" (company id 001405).
var lioDesignator = Designator{CodeSet: 1, Association: 0, Type: 3,
	Value: []byte{0x60, 0x01, 0x40, 0x5a, 0xbe, 0xa0, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0}}

func TestExtendedCopyParameterListGolden(t *testing.T) {
	src, err := TargetDescriptor(lioDesignator, 512)
	if err != nil {
		t.Fatal(err)
	}
	dstDesig := lioDesignator
	dstDesig.Value = append([]byte(nil), lioDesignator.Value...)
	dstDesig.Value[7] = 0x02
	dst, _ := TargetDescriptor(dstDesig, 512)
	eq(t, "E4 target descriptor", src, hx(t, `
		E4 00 0000                               # type, LU id type/NUL/PDT, relative initiator port
		01 03 00 10                              # code set binary, assoc 0 + NAA, reserved, length 16
		6001405abea00001 0000000000000000 00000000  # designator padded to 20
		00 000200                                # pad flag, disk block length 512`))
	p, err := ExtendedCopyParams(0, ListIDNone, 1, [][]byte{src, dst},
		[]Segment{{Source: 0, Destination: 1, Blocks: 4096, SourceLBA: 0, DestinationLBA: 40960}})
	if err != nil {
		t.Fatal(err)
	}
	want := append(hx(t, `
		00 19 0040 00000000 0000001C 00000000   # list id 0, usage 11b|priority 1, CSCD len 64, segment len 28, no inline`),
		append(append(append([]byte{}, src...), dst...), hx(t, `
		02 00 0018 0000 0001 0000 1000          # block→block, DC=0, len 24, src 0 → dst 1, 4096 blocks
		0000000000000000 000000000000A000       # source LBA 0, destination LBA 40960`)...)...)
	eq(t, "EXTENDED COPY parameter list", p, want)
	if len(p) != 108 {
		t.Fatalf("two CSCDs and one segment make 108 bytes, got %d", len(p))
	}
	if _, err := ExtendedCopyParams(5, ListIDNone, 0, [][]byte{src}, nil); err == nil {
		t.Error("a list id with usage 11b must be refused")
	}
	if _, err := ExtendedCopyParams(0, ListIDDiscard, 0, [][]byte{src}, []Segment{{Source: 0, Destination: 1, Blocks: 1}}); err == nil {
		t.Error("a segment naming a missing target must be refused")
	}
}

func TestSenseFormats(t *testing.T) {
	// Fixed format, COPY ABORTED, copy target device not reachable (what LIO sends when the
	// other LU is not in the session's ACL).
	fixed := hx(t, "70 00 0A 00000000 0A 00000000 0D 02 00 000000")
	s, err := ParseSense(fixed)
	if err != nil || s.Key != KeyCopyAborted || s.ASC != 0x0D || s.ASCQ != 0x02 || s.Descriptor() {
		t.Fatalf("fixed: %+v %v", s, err)
	}
	ce := &CommandError{Op: "EXTENDED COPY", Status: StatusCheckCondition, Sense: &s}
	if !errors.Is(ce, ErrUnreachable) || errors.Is(ce, ErrNotSupported) || ce.Transient() {
		t.Errorf("classification of %v", ce)
	}
	if ce.Error() != "EXTENDED COPY failed: COPY ABORTED, copy target device not reachable (ASC/ASCQ 0x0D/0x02)" {
		t.Errorf("message %q", ce.Error())
	}
	// Descriptor format (LIO for LUs over 2^32 blocks), ILLEGAL REQUEST invalid opcode, with
	// an information descriptor.
	desc := hx(t, "72 05 20 00 000000 0C  00 0A 80 00 00000000000000FF")
	s, err = ParseSense(desc)
	if err != nil || s.Key != KeyIllegalRequest || s.ASC != 0x20 || !s.InfoValid || s.Information != 0xff || !s.Descriptor() {
		t.Fatalf("descriptor: %+v %v", s, err)
	}
	if !errors.Is(&CommandError{Op: "x", Sense: &s}, ErrNotSupported) {
		t.Error("invalid opcode must read as not supported")
	}
	ua := Sense{Key: KeyUnitAttention, ASC: 0x29}
	if !(&CommandError{Sense: &ua}).Transient() {
		t.Error("unit attention must be transient")
	}
	for _, bad := range [][]byte{nil, {0x70}, hx(t, "70 00 05"), hx(t, "7F 00")} {
		if _, err := ParseSense(bad); err == nil {
			t.Errorf("sense % x accepted", bad)
		}
	}
}

func TestVPDParsers(t *testing.T) {
	// VPD 0x83 as LIO builds it: NAA 6 (LU), T10 vendor id, relative port (target port).
	page := hx(t, `00 83 0030
		01 03 00 10 6001405abea000010000000000000000
		02 01 00 10 4c494f2d4f524700 6162656130303031
		61 94 00 04 00000001`)
	ds, err := ParseDeviceIdentification(page)
	if err != nil || len(ds) != 3 {
		t.Fatalf("%+v %v", ds, err)
	}
	naa, ok := LogicalUnitNAA(ds)
	if !ok || naa.NAAHex() != "6001405abea000010000000000000000" || len(naa.Raw) != 20 {
		t.Fatalf("NAA %+v", naa)
	}
	if ds[2].Association != AssocTargetPort || !ds[2].PIV || ds[2].Type != DesigRelPort {
		t.Errorf("relative port descriptor %+v", ds[2])
	}
	if _, err := ParseDeviceIdentification(hx(t, "00 83 0008 01 03 00 10 6001")); err == nil {
		t.Error("truncated designator accepted")
	}
	serial, err := ParseUnitSerial(hx(t, "00 80 000C 414243303132333435363738"))
	if err != nil || serial != "ABC012345678" {
		t.Errorf("serial %q %v", serial, err)
	}
	if _, err := ParseUnitSerial(hx(t, "00 83 0000")); err == nil {
		t.Error("a page of the wrong code accepted")
	}
	bl, err := ParseBlockLimits(hx(t, `00 B0 003C 00 00 0008 00004000 00000800 00000000 00010000 00000000 00000000 00000000 0000000000010000 0000000000000000 0000000000000000 00000000`))
	if err != nil || bl.OptimalTransferGranularity != 8 || bl.MaxTransferLength != 0x4000 || bl.MaxUnmapLBACount != 0x10000 || bl.MaxWriteSameLength != 0x10000 {
		t.Errorf("block limits %+v %v", bl, err)
	}
	inq, err := ParseStandardInquiry(hx(t, `00 00 06 12 5B 08 00 02 4c494f2d4f524720 46494c454f3a2020202020202020202020 34 2e 30 20`))
	if err != nil || !inq.ThirdPartyCopy || inq.Vendor != "LIO-ORG" || inq.Product != "FILEO:" || inq.DeviceType != 0 {
		t.Errorf("inquiry %+v %v", inq, err)
	}
	rc, err := ParseReadCapacity16(hx(t, "00000000 0001FFFF 00000200 00 03 C0 00 0000000000000000 0000000000000000"))
	if err != nil || rc.Blocks() != 0x20000 || rc.BlockSize != 512 || rc.Bytes() != 64<<20 || rc.LBPPBE != 3 || !rc.ThinProvisioned || !rc.ReadsZeroes {
		t.Errorf("capacity %+v %v", rc, err)
	}
}

func TestCopyParamsLIO(t *testing.T) {
	// LIO's target_rcr_operating_parameters: SNLID, 2 CSCDs, 1 segment, 1024 bytes of
	// descriptors, 256 MiB segments, one copy at a time, 512-byte granularities, {02h, E4h}.
	b := hx(t, `0000002A 01 000000 0002 0001 00000400 10000000 00000000 00000000 00000000 0000 0001 01 09 09 09 000000 02 02 E4`)
	p, err := ParseCopyParams(b)
	if err != nil {
		t.Fatal(err)
	}
	want := CopyParams{SNLID: true, MaxTargetDescriptors: 2, MaxSegmentDescriptors: 1, MaxDescriptorListLen: 1024,
		MaxSegmentLength: 256 << 20, TotalConcurrentCopies: 1, MaxConcurrentCopies: 1, DataSegmentGranLog2: 9,
		InlineDataGranLog2: 9, HeldDataGranLog2: 9, Implemented: []byte{0x02, 0xE4}}
	if p.String() != want.String() {
		t.Errorf("got %+v\nwant %+v", p, want)
	}
	if !p.Implements(SegBlockToBlock) || !p.Implements(TargetIdentificationE4) || p.Implements(0x0A) {
		t.Error("implemented descriptor codes")
	}
	if _, err := ParseCopyParams(b[:43]); err == nil {
		t.Error("short data accepted")
	}
}

// fakeDev answers commands from a table (the shape of LIO's answers) and records them.
type fakeDev struct {
	answers map[byte][]byte // first CDB byte (or VPD page for INQUIRY VPD) → data
	sense   []byte
	sent    [][]byte
}

func (f *fakeDev) Exec(ctx context.Context, cdb []byte, dir Direction, data []byte) (int, error) {
	f.sent = append(f.sent, append([]byte(nil), cdb...))
	key := cdb[0]
	if cdb[0] == OpInquiry && cdb[1]&1 != 0 {
		key = cdb[2]
	}
	ans, ok := f.answers[key]
	if !ok {
		s := Sense{Key: KeyIllegalRequest, ASC: 0x24}
		return 0, &CommandError{Op: opName(cdb), Status: StatusCheckCondition, Sense: &s}
	}
	n := copy(data, ans)
	return len(data) - n, nil
}

func TestIdentifyWithoutThirdPartyCopy(t *testing.T) {
	f := &fakeDev{answers: map[byte][]byte{
		OpInquiry:           hx(t, `00 00 06 12 5B 00 00 02 41524241202020204469736b2020202020202020202020202020 31 2e 30 20`),
		0x80:                hx(t, "00 80 0004 53455231"),
		0x83:                hx(t, "00 83 0014 01 03 00 10 624a93706c1b16ce1c034d1c000b9fac"),
		OpServiceActionIn16: hx(t, "00000000 000FFFFF 00000200 00 00 00 00 0000000000000000 00000000"),
	}}
	id, err := Identify(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if id.Serial != "SER1" || !id.HasNAA || id.NAA.NAAHex() != "624a93706c1b16ce1c034d1c000b9fac" || id.Copy != nil || id.CopyError != nil {
		t.Fatalf("%+v", id)
	}
	for _, c := range f.sent {
		if c[0] == OpThirdPartyCopyIn {
			t.Error("RECEIVE COPY OPERATING PARAMETERS sent although the 3PC bit is clear")
		}
	}
}

func FuzzParseSense(f *testing.F) {
	f.Add([]byte{0x70, 0, 0x0A, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x0D, 0x02, 0, 0, 0, 0})
	f.Add([]byte{0x72, 0x05, 0x20, 0, 0, 0, 0, 0x0C, 0, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})
	f.Add([]byte{0x72, 0x01, 0, 0x1D, 0, 0, 0, 0x0E, 9, 0x0C, 0, 0, 0, 0, 0, 0, 0, 0xF4, 0, 0x2C, 0xA0, 0x50})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSense(b)
		if err == nil {
			_ = s.String()
		}
	})
}

func FuzzVPD83(f *testing.F) {
	f.Add([]byte{0, 0x83, 0, 0x14, 1, 3, 0, 0x10, 0x62, 0x4a, 0x93, 0x70, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := ParseDeviceIdentification(b)
		for _, d := range ds {
			if len(d.Raw) != len(d.Value)+4 {
				t.Fatal("raw descriptor length")
			}
		}
		_ = err
		ParseCopyParams(b)
		ParseBlockLimits(b)
		ParseThirdPartyCopy(b)
		ParseStandardInquiry(b)
		ParseReadCapacity16(b)
		ParseInformationalExceptions(b)
	})
}
