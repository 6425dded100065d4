package scsi

import (
	"context"
	"encoding/binary"
	"fmt"
)

// PageInformationalExceptions is the Informational Exceptions log page (2Fh): the condition
// the LU reports about itself, what smartctl calls a SCSI disk's health.
const PageInformationalExceptions = 0x2F

// InformationalExceptions is the first parameter (0000h) of log page 2Fh (SPC-4): the
// additional sense code of the most recent informational exception, 0 when there is none.
type InformationalExceptions struct {
	ASC, ASCQ byte
	// Temperature is the most recent reading in °C, -1 when the LU does not report one.
	Temperature int
}

// Failing reports a failure prediction (ASC 5Dh): the LU expects to fail. 5Dh/FFh is the
// same condition raised on purpose (TEST bit in the Informational Exceptions mode page).
func (ie InformationalExceptions) Failing() bool { return ie.ASC == 0x5D && ie.ASCQ != 0xFF }

// Warning reports a warning (ASC 0Bh: temperature, enclosure degraded, a background scan's
// medium error) or a test failure prediction.
func (ie InformationalExceptions) Warning() bool {
	return ie.ASC == 0x0B || (ie.ASC == 0x5D && ie.ASCQ == 0xFF)
}

// Condition names the reported exception in SPC's words ("" when there is none).
func (ie InformationalExceptions) Condition() string {
	if ie.ASC == 0 && ie.ASCQ == 0 {
		return ""
	}
	name := ASCName(ie.ASC, ie.ASCQ)
	switch {
	case name != "":
	case ie.ASC == 0x5D:
		name = "failure prediction threshold exceeded"
	case ie.ASC == 0x0B:
		name = "warning"
	default:
		name = "informational exception"
	}
	return fmt.Sprintf("%s (ASC/ASCQ 0x%02X/0x%02X)", name, ie.ASC, ie.ASCQ)
}

// ParseInformationalExceptions decodes log page 2Fh.
func ParseInformationalExceptions(b []byte) (InformationalExceptions, error) {
	if len(b) < 4 {
		return InformationalExceptions{}, fmt.Errorf("log page 2Fh: %w (%d bytes)", errShort, len(b))
	}
	if b[0]&0x3f != PageInformationalExceptions {
		return InformationalExceptions{}, fmt.Errorf("log page 2Fh: device returned page %#02x", b[0]&0x3f)
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	p := b[4:]
	if n < len(p) {
		p = p[:n]
	}
	for len(p) >= 4 {
		code, l := binary.BigEndian.Uint16(p), int(p[3])
		if 4+l > len(p) {
			break
		}
		if code == 0 {
			if l < 2 {
				return InformationalExceptions{}, fmt.Errorf("log page 2Fh: parameter 0 of %d bytes", l)
			}
			ie := InformationalExceptions{ASC: p[4], ASCQ: p[5], Temperature: -1}
			if l >= 3 && p[6] != 0xFF {
				ie.Temperature = int(p[6])
			}
			return ie, nil
		}
		p = p[4+l:]
	}
	return InformationalExceptions{}, fmt.Errorf("log page 2Fh: no parameter 0")
}

// ReadInformationalExceptions reads log page 2Fh. A device without it answers ILLEGAL REQUEST
// (errors.Is ErrNotSupported); LIO does for every LU.
func ReadInformationalExceptions(ctx context.Context, x Executor) (InformationalExceptions, error) {
	b := make([]byte, 252)
	resid, err := exec(ctx, x, LogSenseCDB(PageInformationalExceptions, 0, uint16(len(b))), DirFromDevice, b)
	if err != nil {
		return InformationalExceptions{}, err
	}
	return ParseInformationalExceptions(b[:len(b)-resid])
}
