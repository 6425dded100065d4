package scsi

import (
	"context"
	"os"
	"strings"
	"testing"
)

// Responses captured from LIO (kernel 6.12.117) in the lab by lab/tests/ioctl, for a fileio
// LUN with company_id 24a937 and unit serial "0" + 6C1B16CE1C034D1C0000A001.
func captured(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsersOnLIOCaptures(t *testing.T) {
	p, err := ParseCopyParams(captured(t, "lio-rcop.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !p.SNLID || p.MaxTargetDescriptors != 2 || p.MaxSegmentDescriptors != 1 || p.MaxDescriptorListLen != 1024 ||
		p.MaxSegmentLength != 256<<20 || p.MaxConcurrentCopies != 1 || p.DataSegmentGranLog2 != 9 ||
		!p.Implements(SegBlockToBlock) || !p.Implements(TargetIdentificationE4) {
		t.Errorf("LIO copy parameters: %v", p)
	}
	ds, err := ParseDeviceIdentification(captured(t, "lio-vpd83.bin"))
	if err != nil {
		t.Fatal(err)
	}
	naa, ok := LogicalUnitNAA(ds)
	if !ok || naa.NAAHex() != "624a93706c1b16ce1c034d1c0000a001" {
		t.Fatalf("LU NAA %q among %d designators", naa.NAAHex(), len(ds))
	}
	var ports int
	for _, d := range ds {
		if d.Association == AssocTargetPort {
			ports++
		}
	}
	if ports == 0 {
		t.Error("LIO reports target-port designators too; they must not be mistaken for the LU")
	}
	serial, err := ParseUnitSerial(captured(t, "lio-vpd80.bin"))
	if err != nil || serial != "06C1B16CE1C034D1C0000A001" {
		t.Errorf("serial %q %v", serial, err)
	}
	pages, err := ParseSupportedPages(captured(t, "lio-vpd00.bin"))
	if err != nil || len(pages) < 4 || pages[0] != 0 {
		t.Errorf("supported pages % x %v", pages, err)
	}
	for _, pg := range pages {
		if pg == 0x8F {
			t.Error("mainline LIO does not implement VPD 0x8F; a capture saying so would change pvesnap's assumptions")
		}
	}
	if _, err := ParseBlockLimits(captured(t, "lio-vpdb0.bin")); err != nil {
		t.Errorf("block limits: %v", err)
	}
}

// LIO (kernel 6.12.118, lab/tests/ioctl) with a 252-character unit serial: VPD 80h is 253
// bytes (the serial and its NUL); VPD 83h's T10 designator ("LIO-ORG FILEIO:" + the serial +
// NUL, 268 bytes) has its length in one byte, wrapped to 12, which misaligns every descriptor
// after it. The NAA comes first and stands.
func TestIdentifyOnLIOLongUnitSerial(t *testing.T) {
	vpd83 := captured(t, "lio-longserial-vpd83.bin")
	if _, err := ParseDeviceIdentification(vpd83); err == nil {
		t.Fatal("the captured page parses whole: it was meant to be LIO's malformed one")
	}
	f := &fakeDev{answers: map[byte][]byte{
		OpInquiry:           hx(t, `00 00 06 12 5B 00 00 02 4c494f2d4f524720 46494c45494f2020202020202020202020 342e3020`),
		0x80:                captured(t, "lio-longserial-vpd80.bin"),
		0x83:                vpd83,
		OpServiceActionIn16: hx(t, "00000000 000FFFFF 00000200 00 00 00 00 0000000000000000 00000000"),
	}}
	id, err := Identify(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	want := "06C1B16CE1C034D1C0000A020" + strings.Repeat("Z", 227)
	if id.Serial != want || !id.HasNAA || id.NAA.NAAHex() != "624a93706c1b16ce1c034d1c0000a020" {
		t.Fatalf("serial %q (%d), NAA %q %v", id.Serial, len(id.Serial), id.NAA.NAAHex(), id.HasNAA)
	}
}
