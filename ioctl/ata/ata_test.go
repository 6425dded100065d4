package ata

import (
	"bytes"
	"context"
	"errors"
	"testing"

	smart "github.com/anatol/smart.go"

	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// The CDB smartctl -H sends to a SATA disk behind libata (blktrace of smartctl 7.x):
// ATA PASS-THROUGH(16), non-data, CK_COND, SMART (B0h) RETURN STATUS (DAh) with the SMART
// signature 4Fh/C2h in LBA mid/high.
func TestReturnStatusCDBGolden(t *testing.T) {
	want := []byte{0x85, 0x06, 0x2c, 0x00, 0xda, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4f, 0x00, 0xc2, 0x00, 0xb0, 0x00}
	if got := ReturnStatusCDB(); !bytes.Equal(got, want) {
		t.Fatalf("\n got  % x\n want % x", got, want)
	}
}

type answer struct{ sense []byte }

func (a answer) Exec(ctx context.Context, cdb []byte, dir scsi.Direction, data []byte) (int, error) {
	if a.sense == nil {
		return 0, nil
	}
	s, err := scsi.ParseSense(a.sense)
	if err != nil {
		return 0, err
	}
	return 0, &scsi.CommandError{Op: "ATA PASS-THROUGH(16)", Status: scsi.StatusCheckCondition, Sense: &s}
}

func TestReturnStatus(t *testing.T) {
	desc := func(mid, high, status byte) []byte {
		return []byte{0x72, 0x01, 0x00, 0x1D, 0, 0, 0, 14, 0x09, 12, 0, 0, 0, 0, 0, 0, 0, mid, 0, high, 0xA0, status}
	}
	for _, c := range []struct {
		name   string
		sense  []byte
		failed bool
		err    bool
	}{
		{"thresholds hold", desc(0x4F, 0xC2, 0x50), false, false},
		{"threshold exceeded", desc(0xF4, 0x2C, 0x50), true, false},
		{"fixed format", []byte{0xF0, 0, 0x01, 0, 0x50, 0xA0, 0, 0, 0, 0, 0xF4, 0x2C, 0, 0x1D, 0, 0, 0, 0}, true, false},
		{"SMART disabled: aborted", desc(0x4F, 0xC2, 0x51), false, true},
		{"no signature", desc(0, 0, 0x50), false, true},
		{"GOOD without registers", nil, false, true},
	} {
		failed, err := ReturnStatus(context.Background(), answer{c.sense})
		if failed != c.failed || (err != nil) != c.err || (c.err && !errors.Is(err, ErrNoVerdict)) {
			t.Errorf("%s: failed %v err %v", c.name, failed, err)
		}
	}
}

func TestAttributes(t *testing.T) {
	page := &smart.AtaSmartPage{Attrs: map[uint8]smart.AtaSmartAttr{
		5:   {Id: 5, Flags: smart.AtaAttributeFlagPrefailure, Current: 9, Worst: 9, Name: "Reallocated_Sector_Ct", ValueRaw: 812},
		9:   {Id: 9, Flags: 0, Current: 1, Worst: 1, Name: "Power_On_Hours", ValueRaw: 90000},
		194: {Id: 194, Current: 60, Worst: 40, Name: "Temperature_Celsius", Type: smart.AtaDeviceAttributeTypeTempMinMax, ValueRaw: 0x0000_2d00_1400_28},
		12:  {Id: 12, Current: 100, Worst: 100, Name: "Power_Cycle_Count", ValueRaw: 7},
	}}
	th := &smart.AtaSmartThresholdsPage{Thresholds: map[uint8]uint8{5: 10, 9: 0, 194: 0, 12: 0}}
	as := Attributes(page, th)
	if len(as) != 4 || as[0].ID != 5 || as[3].ID != 194 {
		t.Fatalf("%+v", as)
	}
	if !as[0].FailingNow() || !as[0].PreFail || as[1].FailingNow() {
		t.Errorf("failing: %+v", as[:2])
	}
	if as[0].String() != "Reallocated_Sector_Ct (5, pre-fail): value 9, threshold 10, raw 812" {
		t.Errorf("%q", as[0].String())
	}
	if temp, ok := Temperature(page); !ok || temp != 40 {
		t.Errorf("temperature %d %v", temp, ok)
	}
}
