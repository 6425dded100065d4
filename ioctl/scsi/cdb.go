// Package scsi issues SCSI commands through SG_IO: INQUIRY and VPD pages, READ CAPACITY(16),
// RECEIVE COPY OPERATING PARAMETERS, EXTENDED COPY (LID1), SYNCHRONIZE CACHE(16) and LOG
// SENSE (informational exceptions), with
// sense data decoded and errors that say "not supported" apart from "failed".
//
// Layouts follow SPC-4/SBC-3 (and what sg3_utils and LIO do with them). Multi-byte fields are
// big-endian.
package scsi

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/pvesnap/pvesnap/ioctl"
)

// Operation codes and service actions.
const (
	OpInquiry           = 0x12
	OpThirdPartyCopyOut = 0x83 // EXTENDED COPY (LID1) is service action 0x00
	OpThirdPartyCopyIn  = 0x84 // RECEIVE COPY OPERATING PARAMETERS is service action 0x03
	OpServiceActionIn16 = 0x9E // READ CAPACITY(16) is service action 0x10
	OpSyncCache10       = 0x35
	OpSyncCache16       = 0x91
	OpLogSense          = 0x4D
	OpATAPassThrough16  = 0x85

	saExtendedCopyLID1 = 0x00
	saReceiveCopyOpPar = 0x03
	saReadCapacity16   = 0x10
)

// InquiryCDB is INQUIRY (6): EVPD and page code, allocation length.
func InquiryCDB(evpd bool, page byte, alloc uint16) []byte {
	c := make([]byte, 6)
	c[0] = OpInquiry
	if evpd {
		c[1] = 0x01
		c[2] = page
	}
	binary.BigEndian.PutUint16(c[3:], alloc)
	return c
}

// ReadCapacity16CDB is READ CAPACITY (16).
func ReadCapacity16CDB(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpServiceActionIn16
	c[1] = saReadCapacity16
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

// ReceiveCopyOperatingParametersCDB is RECEIVE COPY RESULTS with service action 03h (LID1).
// LIO requires list identifier 0 and an allocation length of at least 54.
func ReceiveCopyOperatingParametersCDB(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpThirdPartyCopyIn
	c[1] = saReceiveCopyOpPar
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

// ExtendedCopyCDB is EXTENDED COPY (LID1) with the parameter list length.
func ExtendedCopyCDB(paramLen uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpThirdPartyCopyOut
	c[1] = saExtendedCopyLID1
	binary.BigEndian.PutUint32(c[10:], paramLen)
	return c
}

// SyncCache10CDB is SYNCHRONIZE CACHE (10) (IMMED 0: the command completes when the cache is
// written); 0 blocks means to the end of the medium.
func SyncCache10CDB(lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = OpSyncCache10
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

// SyncCache16CDB is SYNCHRONIZE CACHE (16); 0 blocks means to the end of the medium.
func SyncCache16CDB(lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = OpSyncCache16
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// LogSenseCDB is LOG SENSE for page (and subpage), cumulative values (PC 01b), from the
// first parameter.
func LogSenseCDB(page, subpage byte, alloc uint16) []byte {
	c := make([]byte, 10)
	c[0] = OpLogSense
	c[2] = 0x40 | page&0x3f
	c[3] = subpage
	binary.BigEndian.PutUint16(c[7:], alloc)
	return c
}

// opName names an operation for messages.
func opName(cdb []byte) string {
	if len(cdb) == 0 {
		return "SCSI command"
	}
	switch cdb[0] {
	case OpInquiry:
		if cdb[1]&1 != 0 {
			return "INQUIRY (VPD)"
		}
		return "INQUIRY"
	case OpThirdPartyCopyOut:
		return "EXTENDED COPY"
	case OpThirdPartyCopyIn:
		return "RECEIVE COPY OPERATING PARAMETERS"
	case OpServiceActionIn16:
		return "READ CAPACITY(16)"
	case OpSyncCache10:
		return "SYNCHRONIZE CACHE(10)"
	case OpSyncCache16:
		return "SYNCHRONIZE CACHE(16)"
	case OpLogSense:
		return "LOG SENSE"
	case OpATAPassThrough16:
		return "ATA PASS-THROUGH(16)"
	}
	return "SCSI command"
}

// Time one command may take before the kernel aborts it. EXTENDED COPY moves a whole segment
// list inside the array (sg3_utils allows 600 s for third-party copy out); SYNCHRONIZE
// CACHE may write back a whole cache (the sd driver allows twice its 30 s command timeout);
// anything else 60 s, the kernel's SG_IO default.
const (
	xcopyTimeout     = 600 * time.Second
	syncCacheTimeout = 120 * time.Second
	commandTimeout   = 60 * time.Second
)

// Timeout is the SG_IO timeout in milliseconds for cdb: its own time (ioctl.Timeout).
func Timeout(ctx context.Context, cdb []byte) (uint32, error) {
	own := commandTimeout
	if len(cdb) > 0 {
		switch cdb[0] {
		case OpThirdPartyCopyOut:
			own = xcopyTimeout
		case OpSyncCache10, OpSyncCache16:
			own = syncCacheTimeout
		}
	}
	return ioctl.Timeout(ctx, own)
}
