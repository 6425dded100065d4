package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sense keys.
const (
	KeyNoSense        = 0x0
	KeyRecovered      = 0x1
	KeyNotReady       = 0x2
	KeyMediumError    = 0x3
	KeyHardwareError  = 0x4
	KeyIllegalRequest = 0x5
	KeyUnitAttention  = 0x6
	KeyDataProtect    = 0x7
	KeyCopyAborted    = 0xA
	KeyAbortedCommand = 0xB
)

var keyNames = map[byte]string{
	KeyNoSense: "NO SENSE", KeyRecovered: "RECOVERED ERROR", KeyNotReady: "NOT READY", KeyMediumError: "MEDIUM ERROR",
	KeyHardwareError: "HARDWARE ERROR", KeyIllegalRequest: "ILLEGAL REQUEST", KeyUnitAttention: "UNIT ATTENTION",
	KeyDataProtect: "DATA PROTECT", 0x8: "BLANK CHECK", 0x9: "VENDOR SPECIFIC", KeyCopyAborted: "COPY ABORTED",
	KeyAbortedCommand: "ABORTED COMMAND", 0xD: "VOLUME OVERFLOW", 0xE: "MISCOMPARE",
}

// ascNames names the additional sense codes that matter to pvesnap (SPC-4 Annex; the
// third-party copy ones from sg3_utils' table).
var ascNames = map[uint16]string{
	0x0016: "operation in progress",
	0x001D: "ATA pass-through information available",
	0x0401: "logical unit is in process of becoming ready",
	0x0402: "initializing command required",
	0x040A: "asymmetric access state transition",
	0x040B: "target port in standby state",
	0x040C: "target port in unavailable state",
	0x0800: "logical unit communication failure",
	0x0B00: "warning",
	0x0B01: "warning - specified temperature exceeded",
	0x0B02: "warning - enclosure degraded",
	0x0B03: "warning - background self-test failed",
	0x0B04: "warning - background pre-scan detected medium error",
	0x0B05: "warning - background medium scan detected medium error",
	0x0D00: "error detected by third party temporary initiator",
	0x0D01: "third party device failure",
	0x0D02: "copy target device not reachable",
	0x0D03: "incorrect copy target device type",
	0x0D04: "copy target device data underrun",
	0x0D05: "copy target device data overrun",
	0x1A00: "parameter list length error",
	0x2000: "invalid command operation code",
	0x2100: "logical block address out of range",
	0x2400: "invalid field in cdb",
	0x2500: "logical unit not supported",
	0x2600: "invalid field in parameter list",
	0x2601: "parameter not supported",
	0x2602: "parameter value invalid",
	0x2606: "too many target descriptors",
	0x2607: "unsupported target descriptor type code",
	0x2608: "too many segment descriptors",
	0x2609: "unsupported segment descriptor type code",
	0x260A: "unexpected inexact segment",
	0x260B: "inline data length exceeded",
	0x260C: "invalid operation for copy source or destination",
	0x260D: "copy segment granularity violation",
	0x2615: "copy source or copy destination not authorized",
	0x2616: "fast copy not possible",
	0x2700: "write protected",
	0x2800: "not ready to ready change, medium may have changed",
	0x2900: "power on, reset, or bus device reset occurred",
	0x2A06: "asymmetric access state changed",
	0x2A09: "capacity data has changed",
	0x3F0E: "reported luns data has changed",
	0x4B00: "data phase error",
	0x5D00: "failure prediction threshold exceeded",
	0x5DFF: "failure prediction threshold exceeded (false)",
}

// ASCName names an ASC/ASCQ pair ("" when unknown).
func ASCName(asc, ascq byte) string { return ascNames[uint16(asc)<<8|uint16(ascq)] }

// Sense is decoded sense data.
type Sense struct {
	ResponseCode byte
	Key          byte
	ASC, ASCQ    byte
	// Information and CommandSpecific are the fixed-format fields (for COPY ABORTED, the
	// command-specific information holds the number of the segment being processed).
	InfoValid       bool
	Information     uint64
	CommandSpecific uint32
	// ATA holds the registers an ATA PASS-THROUGH command completed with (SAT-4: the ATA
	// Status Return descriptor 09h, or the fixed-format fields under ASC/ASCQ 00h/1Dh).
	ATA *ATARegisters
}

// ATARegisters are an ATA command's completion registers as SAT returns them. LBA holds LBA
// low in bits 7:0, mid in 15:8 and high in 23:16 (and the 48-bit halves above with Extend).
type ATARegisters struct {
	Error, Status, Device byte
	Count                 uint16
	LBA                   uint64
	Extend                bool
}

// LBAMid and LBAHigh are the registers a SMART command signs its answer in.
func (r ATARegisters) LBAMid() byte  { return byte(r.LBA >> 8) }
func (r ATARegisters) LBAHigh() byte { return byte(r.LBA >> 16) }

// ascATAInfo is ASC/ASCQ 00h/1Dh, ATA PASS-THROUGH INFORMATION AVAILABLE.
const ascATAInfo = 0x001D

// Descriptor reports whether the sense data used the descriptor format.
func (s Sense) Descriptor() bool { return s.ResponseCode == 0x72 || s.ResponseCode == 0x73 }

// Deferred reports a deferred error (response code 71h or 73h): the condition belongs to an
// earlier command that already completed with GOOD status (a write the device accepted into
// its cache and then failed to commit), not to the command that carried it back, which the
// device did not perform.
func (s Sense) Deferred() bool { return s.ResponseCode == 0x71 || s.ResponseCode == 0x73 }

func (s Sense) String() string {
	name := ASCName(s.ASC, s.ASCQ)
	if name == "" {
		name = "additional sense code"
	}
	k := keyNames[s.Key]
	if k == "" {
		k = fmt.Sprintf("sense key %#x", s.Key)
	}
	deferred := ""
	if s.Deferred() {
		deferred = "deferred error of an earlier command: "
	}
	return fmt.Sprintf("%s%s, %s (ASC/ASCQ 0x%02X/0x%02X)", deferred, k, name, s.ASC, s.ASCQ)
}

// ParseSense decodes fixed (0x70/0x71) and descriptor (0x72/0x73) format sense data. LIO
// answers in descriptor format for LUs with more than 2^32 blocks.
func ParseSense(b []byte) (Sense, error) {
	if len(b) < 2 {
		return Sense{}, errors.New("sense data too short")
	}
	s := Sense{ResponseCode: b[0] & 0x7f}
	switch s.ResponseCode {
	case 0x70, 0x71:
		if len(b) < 14 {
			return s, fmt.Errorf("fixed-format sense data: %d bytes", len(b))
		}
		s.Key = b[2] & 0x0f
		s.ASC, s.ASCQ = b[12], b[13]
		s.InfoValid = b[0]&0x80 != 0
		s.Information = uint64(binary.BigEndian.Uint32(b[3:7]))
		s.CommandSpecific = binary.BigEndian.Uint32(b[8:12])
		if uint16(s.ASC)<<8|uint16(s.ASCQ) == ascATAInfo {
			// SAT-4 fixed format for ATA PASS-THROUGH: the registers in the information
			// and command-specific fields (what libata writes without D_SENSE).
			s.ATA = &ATARegisters{Error: b[3], Status: b[4], Device: b[5], Count: uint16(b[6]),
				LBA: uint64(b[9]) | uint64(b[10])<<8 | uint64(b[11])<<16, Extend: b[8]&0x80 != 0}
		}
	case 0x72, 0x73:
		if len(b) < 8 {
			return s, fmt.Errorf("descriptor-format sense data: %d bytes", len(b))
		}
		s.Key = b[1] & 0x0f
		s.ASC, s.ASCQ = b[2], b[3]
		n := int(b[7])
		d := b[8:]
		if n < len(d) {
			d = d[:n]
		}
		for len(d) >= 2 {
			l := int(d[1]) + 2
			if l > len(d) {
				break
			}
			switch d[0] {
			case 0x00: // information
				if l >= 12 {
					s.InfoValid = d[2]&0x80 != 0
					s.Information = binary.BigEndian.Uint64(d[4:12])
				}
			case 0x01: // command-specific information
				if l >= 12 {
					s.CommandSpecific = uint32(binary.BigEndian.Uint64(d[4:12]))
				}
			case 0x09: // ATA status return
				if l >= 14 {
					s.ATA = &ATARegisters{Extend: d[2]&0x01 != 0, Error: d[3], Count: uint16(d[4])<<8 | uint16(d[5]),
						LBA:    uint64(d[7]) | uint64(d[9])<<8 | uint64(d[11])<<16 | uint64(d[6])<<24 | uint64(d[8])<<32 | uint64(d[10])<<40,
						Device: d[12], Status: d[13]}
				}
			}
			d = d[l:]
		}
	default:
		return s, fmt.Errorf("unknown sense response code %#02x", s.ResponseCode)
	}
	return s, nil
}

// SAM status codes.
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
)

// ErrNotSupported matches errors meaning the device does not implement the command or the
// descriptor pvesnap used: fall back, do not retry.
var ErrNotSupported = errors.New("not supported by the device")

// ErrUnreachable matches "copy target device not reachable": the other LU is not behind the
// same array or not visible to it.
var ErrUnreachable = errors.New("copy target device not reachable")

// ErrDeferred matches a deferred error: an earlier command the device had completed failed
// afterwards, so what it wrote must be written again.
var ErrDeferred = errors.New("deferred error")

// ErrPath matches failures of the path (the I_T nexus) rather than of the LU: the transport
// lost the command, or the target port is in ALUA standby or unavailable state. The same
// command may succeed through another path to the same LU.
var ErrPath = errors.New("path failure")

// Host status values (DID_* in include/scsi/scsi_status.h).
const (
	didNoConnect          = 0x01
	didBusBusy            = 0x02
	didTimeOut            = 0x03
	didBadTarget          = 0x04
	didAbort              = 0x05
	didParity             = 0x06
	didError              = 0x07
	didReset              = 0x08
	didSoftError          = 0x0b
	didImmRetry           = 0x0c
	didRequeue            = 0x0d
	didTransportDisrupted = 0x0e
	didTransportFailfast  = 0x0f
	didTransportMarginal  = 0x14
)

// CommandError is a command that did not complete with GOOD status.
type CommandError struct {
	Op           string
	Status       byte
	HostStatus   uint16
	DriverStatus uint16
	Sense        *Sense
}

func (e *CommandError) Error() string {
	switch {
	case e.Sense != nil:
		return fmt.Sprintf("%s failed: %s", e.Op, e.Sense)
	case e.HostStatus != 0:
		return fmt.Sprintf("%s failed: host status %#x (transport error)", e.Op, e.HostStatus)
	case e.Status == StatusBusy:
		return fmt.Sprintf("%s failed: device busy", e.Op)
	case e.Status == StatusTaskSetFull:
		return fmt.Sprintf("%s failed: task set full", e.Op)
	case e.Status == StatusReservationConflict:
		return fmt.Sprintf("%s failed: reservation conflict", e.Op)
	}
	return fmt.Sprintf("%s failed: status %#02x driver %#x", e.Op, e.Status, e.DriverStatus)
}

// Is lets errors.Is classify the failure.
func (e *CommandError) Is(target error) bool {
	switch target {
	case ErrNotSupported:
		return e.NotSupported()
	case ErrUnreachable:
		return e.Sense != nil && !e.Sense.Deferred() && e.Sense.ASC == 0x0D && e.Sense.ASCQ == 0x02
	case ErrDeferred:
		return e.Deferred()
	case ErrPath:
		return e.PathFailure()
	}
	return false
}

// Deferred reports that the sense data describes a deferred error.
func (e *CommandError) Deferred() bool { return e.Sense != nil && e.Sense.Deferred() }

// NotSupported: invalid operation code, invalid field in the CDB (unsupported service action),
// or an unsupported descriptor type.
func (e *CommandError) NotSupported() bool {
	if e.Sense == nil || e.Sense.Deferred() || e.Sense.Key != KeyIllegalRequest {
		return false
	}
	switch uint16(e.Sense.ASC)<<8 | uint16(e.Sense.ASCQ) {
	case 0x2000, 0x2400, 0x2607, 0x2609, 0x260C, 0x2616:
		return true
	}
	return false
}

// PathFailure: the command failed on its way (the transport, the target port), not in the
// LU. dm-multipath fails a path for any host status but the four that name the LU or the
// nexus (target failure, nexus failure, allocation failure, medium error: blk_path_error);
// those that ask for a plain retry are Transient instead. ALUA standby (04h/0Bh) and
// unavailable (04h/0Ch) say this port cannot reach the LU now; another port may.
func (e *CommandError) PathFailure() bool {
	switch e.HostStatus {
	case didNoConnect, didTimeOut, didBadTarget, didAbort, didParity, didError, didTransportDisrupted,
		didTransportFailfast, didTransportMarginal:
		return true
	}
	if e.Sense == nil || e.Sense.Deferred() {
		return false
	}
	return e.Sense.Key == KeyNotReady && e.Sense.ASC == 0x04 && (e.Sense.ASCQ == 0x0B || e.Sense.ASCQ == 0x0C)
}

// Transient: worth a retry on the same path (unit attention, busy, becoming ready, an ALUA
// transition, a transport hiccup the host asks to retry). A deferred error is never
// transient: retrying the command that carried it does not redo what failed before.
func (e *CommandError) Transient() bool {
	switch e.HostStatus {
	case didBusBusy, didReset, didSoftError, didImmRetry, didRequeue:
		return true
	}
	if e.HostStatus == 0 && (e.Status == StatusBusy || e.Status == StatusTaskSetFull) {
		return true
	}
	if e.Sense == nil || e.Sense.Deferred() {
		return false
	}
	switch {
	case e.Sense.Key == KeyUnitAttention:
		return true
	case e.Sense.Key == KeyNotReady && e.Sense.ASC == 0x04 && (e.Sense.ASCQ == 0x01 || e.Sense.ASCQ == 0x0A):
		return true
	case e.Sense.Key == KeyAbortedCommand:
		return true
	case e.Sense.Key == KeyIllegalRequest && e.Sense.ASC == 0x00 && e.Sense.ASCQ == 0x16:
		// OPERATION IN PROGRESS: an EXTENDED COPY with this list identifier is still running
		// (another process copying to the same LU picked it too): it ends, and the retry
		// goes through.
		return true
	}
	return false
}
