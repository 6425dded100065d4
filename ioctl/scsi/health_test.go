package scsi

import (
	"context"
	"errors"
	"testing"
)

func TestLogSenseCDBGolden(t *testing.T) {
	// SPC-4 6.8: PC 01b (cumulative) in bits 7:6 of byte 2 with the page code.
	eq(t, "LOG SENSE 2Fh alloc 252", LogSenseCDB(0x2F, 0, 252), hx(t, "4D 00 6F 00 00 0000 00FC 00"))
}

func TestInformationalExceptions(t *testing.T) {
	// Log page 2Fh of a disk predicting its failure (SPC-4 7.3.8): one parameter 0000h with
	// ASC 5Dh, ASCQ 00h and 38 °C, then a vendor parameter.
	page := hx(t, `2F 00 0010
		0000 03 04  5D 00 26 00   # parameter 0: IE ASC, ASCQ, most recent temperature
		8000 03 04  01 02 03 04   # vendor specific`)
	ie, err := ParseInformationalExceptions(page)
	if err != nil || !ie.Failing() || ie.Warning() || ie.Temperature != 38 ||
		ie.Condition() != "failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00)" {
		t.Fatalf("%+v %v %q", ie, err, ie.Condition())
	}
	ok, _ := ParseInformationalExceptions(hx(t, "2F 00 0007 0000 03 03 00 00 FF"))
	if ok.Failing() || ok.Warning() || ok.Condition() != "" || ok.Temperature != -1 {
		t.Fatalf("no exception: %+v", ok)
	}
	test, _ := ParseInformationalExceptions(hx(t, "2F 00 0007 0000 03 03 5D FF 20"))
	if test.Failing() || !test.Warning() {
		t.Errorf("the test exception (5Dh/FFh) is a warning: %+v", test)
	}
	hot, _ := ParseInformationalExceptions(hx(t, "2F 00 0007 0000 03 03 0B 01 46"))
	if !hot.Warning() || hot.Condition() != "warning - specified temperature exceeded (ASC/ASCQ 0x0B/0x01)" {
		t.Errorf("%q", hot.Condition())
	}
	for _, bad := range [][]byte{nil, hx(t, "0D 00 0000"), hx(t, "2F 00 0008 8000 03 04 01 02 03 04"), hx(t, "2F 00 0005 0000 03 01 5D")} {
		if _, err := ParseInformationalExceptions(bad); err == nil {
			t.Errorf("page % x accepted", bad)
		}
	}
}

// What LIO answers to LOG SENSE: invalid operation code; the LU simply has no such page.
func TestInformationalExceptionsNotSupported(t *testing.T) {
	f := &fakeDev{answers: map[byte][]byte{}} // answers ILLEGAL REQUEST to anything
	if _, err := ReadInformationalExceptions(context.Background(), f); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("%v", err)
	}
	f.answers[OpLogSense] = hx(t, "2F 00 0007 0000 03 03 5D 10 FF")
	ie, err := ReadInformationalExceptions(context.Background(), f)
	if err != nil || !ie.Failing() || f.sent[1][2] != 0x6F {
		t.Fatalf("%+v %v, CDB % x", ie, err, f.sent[1])
	}
}

// SMART RETURN STATUS comes back as sense data with the ATA registers: in an ATA Status
// Return descriptor (libata's default) or, without D_SENSE on newer kernels, in the fixed
// format's information and command-specific fields (SAT-4 12.2.2.7, 12.2.2.6).
func TestATARegistersInSense(t *testing.T) {
	desc := hx(t, `72 01 00 1D 000000 0E
		09 0C 00 00 00 00 00 00 00 F4 00 2C A0 50   # status return: LBA mid F4h, high 2Ch, status 50h`)
	s, err := ParseSense(desc)
	if err != nil || s.ATA == nil || s.ATA.LBAMid() != 0xF4 || s.ATA.LBAHigh() != 0x2C || s.ATA.Status != 0x50 || s.ATA.Device != 0xA0 {
		t.Fatalf("descriptor: %+v %+v %v", s, s.ATA, err)
	}
	fixed := hx(t, "F0 00 01 00 50 A0 00 00 00 00 4F C2 00 1D 00 00 00 00")
	s, err = ParseSense(fixed)
	if err != nil || s.ATA == nil || s.ATA.LBAMid() != 0x4F || s.ATA.LBAHigh() != 0xC2 || s.ATA.Status != 0x50 {
		t.Fatalf("fixed: %+v %+v %v", s, s.ATA, err)
	}
	// Other fixed-format sense carries no registers.
	s, _ = ParseSense(hx(t, "70 00 05 00000000 0A 00000000 24 00 00 000000"))
	if s.ATA != nil {
		t.Errorf("registers read from ILLEGAL REQUEST: %+v", s.ATA)
	}
}
