package scsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pvesnap/pvesnap/ioctl"
)

// Executor sends one command (a *Device, or a fake in tests).
type Executor interface {
	Exec(ctx context.Context, cdb []byte, dir Direction, data []byte) (int, error)
}

// RetryBudget is how long a command is retried on the same path while the device reports a
// transient condition. It is the time the kernel's ALUA handler gives a port group in
// transition (scsi_dh_alua's ALUA_FAILOVER_TIMEOUT, 60 s): an array failing over its
// controllers answers BUSY, NOT READY 04h/0Ah or UNIT ATTENTION for about that long.
const RetryBudget = 60 * time.Second

// Backoff is the pause before retry n (1-based): 50 ms, doubling, at most 2 s.
func Backoff(n int) time.Duration {
	d := 50 * time.Millisecond
	for i := 1; i < n && d < 2*time.Second; i++ {
		d *= 2
	}
	return min(d, 2*time.Second)
}

// Pacer is what an Executor may implement to decide how a retry pauses (fakes in tests do
// not sleep); without it the pause is real time.
type Pacer interface {
	Pause(ctx context.Context, d time.Duration) error
}

func pause(ctx context.Context, x Executor, d time.Duration) error {
	if p, ok := x.(Pacer); ok {
		return p.Pause(ctx, d)
	}
	return ioctl.Sleep(ctx, d)
}

// exec sends a command, retrying transient conditions on the same path for RetryBudget (the
// pauses are counted, not the time the commands took). Deferred errors and path failures
// return at once: the caller decides what to redo and which path to take. Every command
// pvesnap sends is idempotent while the data is quiesced, EXTENDED COPY included.
func exec(ctx context.Context, x Executor, cdb []byte, dir Direction, data []byte) (int, error) {
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		n, err := x.Exec(ctx, cdb, dir, data)
		var ce *CommandError
		if err == nil || !errors.As(err, &ce) || !ce.Transient() || waited >= RetryBudget {
			return n, err
		}
		d := Backoff(attempt)
		waited += d
		if perr := pause(ctx, x, d); perr != nil {
			return n, err
		}
	}
}

// Send sends a command the way this package's own are sent: transient conditions retried on
// the same path for RetryBudget. For commands other packages build (ATA PASS-THROUGH).
func Send(ctx context.Context, x Executor, cdb []byte, dir Direction, data []byte) (int, error) {
	return exec(ctx, x, cdb, dir, data)
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

// ExtendedCopy sends EXTENDED COPY (LID1) with a parameter list from ExtendedCopyParams.
func ExtendedCopy(ctx context.Context, x Executor, params []byte) error {
	_, err := exec(ctx, x, ExtendedCopyCDB(uint32(len(params))), DirToDevice, params)
	return err
}

// SyncCache flushes the LU's volatile write cache for the whole medium: SYNCHRONIZE CACHE
// (10) with LBA 0 and 0 blocks (to the end of the medium, whatever its size; what the sd
// driver sends), or (16) where the device does not implement (10).
func SyncCache(ctx context.Context, x Executor) error {
	_, err := exec(ctx, x, SyncCache10CDB(0, 0), DirNone, nil)
	if errors.Is(err, ErrNotSupported) {
		_, err = exec(ctx, x, SyncCache16CDB(0, 0), DirNone, nil)
	}
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
		// The designators before a malformed one stand: LIO writes the length of its T10
		// designator (vendor, product and unit serial) in one byte, so a unit serial longer
		// than about 230 characters wraps it and misaligns what follows, after the NAA.
		ds, _ := ParseDeviceIdentification(b)
		id.NAA, id.HasNAA = LogicalUnitNAA(ds)
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
