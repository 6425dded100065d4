package scsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Executor sends one command (a *Device, or a fake in tests).
type Executor interface {
	Exec(ctx context.Context, cdb []byte, dir Direction, data []byte) (int, error)
}

// retries bounds how often a transient condition (UNIT ATTENTION after a LUN was added,
// BUSY, becoming ready) is retried before it is reported.
const retries = 5

// exec sends a command, retrying transient conditions with a short backoff. Every command
// pvesnap sends is idempotent while the data is quiesced, EXTENDED COPY included.
func exec(ctx context.Context, x Executor, cdb []byte, dir Direction, data []byte) (int, error) {
	for attempt := 1; ; attempt++ {
		n, err := x.Exec(ctx, cdb, dir, data)
		var ce *CommandError
		if err == nil || !errors.As(err, &ce) || !ce.Transient() || attempt >= retries {
			return n, err
		}
		select {
		case <-ctx.Done():
			return n, err
		case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
		}
	}
}

// Inquiry reads the standard INQUIRY data.
func Inquiry(ctx context.Context, x Executor) (StandardInquiry, error) {
	b := make([]byte, 96)
	resid, err := exec(ctx, x, InquiryCDB(false, 0, uint16(len(b))), DirFromDevice, b)
	if err != nil {
		return StandardInquiry{}, err
	}
	return ParseStandardInquiry(b[:len(b)-resid])
}

// VPD reads a whole VPD page: first its length, then the page.
func VPD(ctx context.Context, x Executor, page byte) ([]byte, error) {
	head := make([]byte, 4)
	if _, err := exec(ctx, x, InquiryCDB(true, page, 4), DirFromDevice, head); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(head[2:])) + 4
	if n > 65535 {
		n = 65535
	}
	b := make([]byte, n)
	resid, err := exec(ctx, x, InquiryCDB(true, page, uint16(n)), DirFromDevice, b)
	if err != nil {
		return nil, err
	}
	return b[:n-resid], nil
}

// ReadCapacity reads READ CAPACITY(16).
func ReadCapacity(ctx context.Context, x Executor) (Capacity, error) {
	b := make([]byte, 32)
	if _, err := exec(ctx, x, ReadCapacity16CDB(32), DirFromDevice, b); err != nil {
		return Capacity{}, err
	}
	return ParseReadCapacity16(b)
}

// ReceiveCopyParams reads RECEIVE COPY OPERATING PARAMETERS (256-byte allocation, like sg3_utils).
func ReceiveCopyParams(ctx context.Context, x Executor) (CopyParams, error) {
	b := make([]byte, 256)
	resid, err := exec(ctx, x, ReceiveCopyOperatingParametersCDB(uint32(len(b))), DirFromDevice, b)
	if err != nil {
		return CopyParams{}, err
	}
	return ParseCopyParams(b[:len(b)-resid])
}

// XCopyTimeout is the time one EXTENDED COPY may take (sg3_utils uses 600 s).
const XCopyTimeout = 600 * time.Second

// ExtendedCopy sends EXTENDED COPY (LID1) with a parameter list from ExtendedCopyParams.
func ExtendedCopy(ctx context.Context, x Executor, params []byte) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, XCopyTimeout)
		defer cancel()
	}
	_, err := exec(ctx, x, ExtendedCopyCDB(uint32(len(params))), DirToDevice, params)
	return err
}

// SyncCache flushes the device's write cache for the whole medium.
func SyncCache(ctx context.Context, x Executor) error {
	_, err := exec(ctx, x, SyncCache16CDB(0, 0), DirNone, nil)
	return err
}

// Identity is what pvesnap needs to know about a SCSI LU to offload copies.
type Identity struct {
	Inquiry   StandardInquiry
	Serial    string
	NAA       Designator
	HasNAA    bool
	Capacity  Capacity
	Copy      *CopyParams // nil when RECEIVE COPY OPERATING PARAMETERS is not supported
	CopyError error
}

// Identify reads INQUIRY, VPD 0x80 and 0x83, READ CAPACITY(16) and, when 3PC is set, the copy
// operating parameters.
func Identify(ctx context.Context, x Executor) (*Identity, error) {
	inq, err := Inquiry(ctx, x)
	if err != nil {
		return nil, err
	}
	id := &Identity{Inquiry: inq}
	if b, err := VPD(ctx, x, 0x80); err == nil {
		id.Serial, _ = ParseUnitSerial(b)
	}
	if b, err := VPD(ctx, x, 0x83); err == nil {
		if ds, err := ParseDeviceIdentification(b); err == nil {
			id.NAA, id.HasNAA = LogicalUnitNAA(ds)
		}
	}
	if id.Capacity, err = ReadCapacity(ctx, x); err != nil {
		return nil, fmt.Errorf("READ CAPACITY(16): %w", err)
	}
	if inq.ThirdPartyCopy {
		p, err := ReceiveCopyParams(ctx, x)
		if err != nil {
			id.CopyError = err
		} else {
			id.Copy = &p
		}
	}
	return id, nil
}
