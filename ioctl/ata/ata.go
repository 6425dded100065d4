// Package ata reads what a SATA disk (behind libata's SCSI translation, an sd device whose
// vendor is "ATA") says about itself: IDENTIFY DEVICE and the SMART attributes with their
// thresholds through github.com/anatol/smart.go, which names the attributes from
// smartmontools' drive database, and SMART RETURN STATUS, the drive's own pass/fail verdict,
// which the library does not send.
package ata

import (
	"context"
	"errors"
	"fmt"
	"sort"

	smart "github.com/anatol/smart.go"

	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// Disk is an open SATA disk (a *smart.SataDevice, or a fake in tests).
type Disk interface {
	Identify() (*smart.AtaIdentifyDevice, error)
	ReadSMARTData() (*smart.AtaSmartPage, error)
	ReadSMARTThresholds() (*smart.AtaSmartThresholdsPage, error)
	Close() error
}

// Open opens a SATA disk through the library (read-only; it sends INQUIRY and IDENTIFY DEVICE
// and looks the model up in the drive database). Only for devices libata presents, vendor
// "ATA": on any other disk the library sends an ATA IDENTIFY through ATA PASS-THROUGH to find
// out, which a SAS disk or an array LU has no business receiving.
func Open(path string) (Disk, error) {
	d, err := smart.OpenSata(path)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Identity is what IDENTIFY DEVICE says about the disk.
type Identity struct {
	Model, Serial, Firmware string
	WWN                     uint64 // 0 when the disk reports none
	Sectors                 uint64 // logical sectors
	LogicalSectorSize       uint64
	PhysicalSectorSize      uint64
	RotationRate            uint16 // 1: solid state; 0401h-FFFEh: rpm; 0: not reported
	SMARTSupported          bool   // word 82 bit 0
	SMARTEnabled            bool   // word 85 bit 0
}

// IdentityOf decodes the library's IDENTIFY DEVICE structure.
func IdentityOf(id *smart.AtaIdentifyDevice) Identity {
	sectors, _, lss, pss, _ := id.Capacity()
	return Identity{Model: id.ModelNumber(), Serial: id.SerialNumber(), Firmware: id.FirmwareRevision(), WWN: id.WWN(),
		Sectors: sectors, LogicalSectorSize: lss, PhysicalSectorSize: pss, RotationRate: id.RotationRate,
		SMARTSupported: id.CommandsSupported1&0x0001 != 0, SMARTEnabled: id.CommandsEnabled1&0x0001 != 0}
}

// Attribute is one SMART attribute with its threshold.
type Attribute struct {
	ID        uint8  `json:"id"`
	Name      string `json:"name,omitempty"` // from the library's drive database
	Value     uint8  `json:"value"`          // normalized, current
	Worst     uint8  `json:"worst"`
	Threshold uint8  `json:"threshold"`
	Raw       uint64 `json:"raw"`
	PreFail   bool   `json:"prefail"` // a value at or below the threshold predicts failure (else: old age)
}

// FailingNow reports a value at or below its threshold: smartctl's FAILING_NOW. Threshold 0
// never fails; values outside 1..FDh are not normalized values.
func (a Attribute) FailingNow() bool {
	return a.Threshold != 0 && a.Value >= 1 && a.Value <= 0xFD && a.Value <= a.Threshold
}

func (a Attribute) String() string {
	kind := "old-age"
	if a.PreFail {
		kind = "pre-fail"
	}
	name := a.Name
	if name == "" {
		name = "attribute"
	}
	return fmt.Sprintf("%s (%d, %s): value %d, threshold %d, raw %d", name, a.ID, kind, a.Value, a.Threshold, a.Raw)
}

// Attributes joins the library's attribute page with its thresholds, in id order.
func Attributes(page *smart.AtaSmartPage, th *smart.AtaSmartThresholdsPage) []Attribute {
	var out []Attribute
	for id, a := range page.Attrs {
		x := Attribute{ID: id, Name: a.Name, Value: a.Current, Worst: a.Worst, Raw: a.ValueRaw,
			PreFail: a.Flags&smart.AtaAttributeFlagPrefailure != 0}
		if th != nil {
			x.Threshold = th.Thresholds[id]
		}
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Temperature reads the drive's temperature attribute (194, else 190) through the library's
// decoding of its raw format; ok is false without one.
func Temperature(page *smart.AtaSmartPage) (int, bool) {
	for _, id := range []uint8{194, 190} {
		if a, found := page.Attrs[id]; found && a.Type != 0 {
			if t, _, _, _, err := a.ParseAsTemperature(); err == nil {
				return t, true
			}
		}
	}
	return 0, false
}

// SMART RETURN STATUS (ATA8-ACS: SMART B0h, feature DAh): the drive answers in LBA mid/high,
// 4Fh/C2h while every threshold holds, F4h/2Ch once one is exceeded.
const (
	cmdSMART          = 0xB0
	smartReturnStatus = 0xDA
	sigMid, sigHigh   = 0x4F, 0xC2
	failMid, failHigh = 0xF4, 0x2C
	protocolNonData   = 3 << 1
	// CK_COND returns the registers even on success; T_DIR and BYT_BLOK mean nothing with
	// T_LENGTH 0 and are set as smartctl sets them.
	checkCondition = 0x20 | 0x08 | 0x04
)

// ReturnStatusCDB is ATA PASS-THROUGH(16) carrying SMART RETURN STATUS, non-data, with
// CK_COND so that the drive's registers come back as sense data.
func ReturnStatusCDB() []byte {
	c := make([]byte, 16)
	c[0] = scsi.OpATAPassThrough16
	c[1] = protocolNonData
	c[2] = checkCondition
	c[4] = smartReturnStatus
	c[10] = sigMid
	c[12] = sigHigh
	c[14] = cmdSMART
	return c
}

// ErrNoVerdict: the answer carried no SMART signature (SMART disabled, or a translation that
// returns no registers).
var ErrNoVerdict = errors.New("no SMART verdict in the answer")

// ReturnStatus asks the drive whether a threshold is exceeded (true: the drive predicts its
// own failure).
func ReturnStatus(ctx context.Context, x scsi.Executor) (bool, error) {
	_, err := scsi.Send(ctx, x, ReturnStatusCDB(), scsi.DirNone, nil)
	var ce *scsi.CommandError
	if err == nil || !errors.As(err, &ce) || ce.Sense == nil || ce.Sense.ATA == nil {
		if err == nil {
			err = ErrNoVerdict // GOOD without sense: the registers never came back
		}
		return false, fmt.Errorf("SMART RETURN STATUS: %w", err)
	}
	return Verdict(*ce.Sense.ATA)
}

// Verdict reads SMART RETURN STATUS's registers.
func Verdict(r scsi.ATARegisters) (bool, error) {
	switch {
	case r.Status&0x01 != 0: // ERR: the command was aborted (SMART disabled)
		return false, fmt.Errorf("SMART RETURN STATUS aborted (status %#02x, error %#02x): %w", r.Status, r.Error, ErrNoVerdict)
	case r.LBAMid() == sigMid && r.LBAHigh() == sigHigh:
		return false, nil
	case r.LBAMid() == failMid && r.LBAHigh() == failHigh:
		return true, nil
	}
	return false, fmt.Errorf("SMART RETURN STATUS: LBA mid/high %#02x/%#02x: %w", r.LBAMid(), r.LBAHigh(), ErrNoVerdict)
}
