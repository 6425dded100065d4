package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// StandardInquiry is the standard INQUIRY data.
type StandardInquiry struct {
	PeripheralQualifier byte
	DeviceType          byte // 0 = direct access block device
	Version             byte
	ThirdPartyCopy      bool // 3PC: the device supports third-party copy commands
	Vendor              string
	Product             string
	Revision            string
}

var errShort = errors.New("response too short")

// ParseStandardInquiry decodes standard INQUIRY data (at least 36 bytes).
func ParseStandardInquiry(b []byte) (StandardInquiry, error) {
	if len(b) < 36 {
		return StandardInquiry{}, fmt.Errorf("standard INQUIRY: %w (%d bytes)", errShort, len(b))
	}
	return StandardInquiry{
		PeripheralQualifier: b[0] >> 5,
		DeviceType:          b[0] & 0x1f,
		Version:             b[2],
		ThirdPartyCopy:      b[5]&0x08 != 0,
		Vendor:              strings.TrimSpace(string(b[8:16])),
		Product:             strings.TrimSpace(string(b[16:32])),
		Revision:            strings.TrimSpace(string(b[32:36])),
	}, nil
}

// vpdPage checks a VPD page header and returns its payload.
func vpdPage(b []byte, page byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("VPD page %#02x: %w", page, errShort)
	}
	if b[1] != page {
		return nil, fmt.Errorf("VPD page %#02x: device returned page %#02x", page, b[1])
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if len(b) < 4+n {
		return nil, fmt.Errorf("VPD page %#02x: length %d but %d bytes: %w", page, n, len(b)-4, errShort)
	}
	return b[4 : 4+n], nil
}

// ParseSupportedPages decodes VPD 0x00.
func ParseSupportedPages(b []byte) ([]byte, error) {
	p, err := vpdPage(b, 0x00)
	return append([]byte(nil), p...), err
}

// ParseUnitSerial decodes VPD 0x80 (unit serial number).
func ParseUnitSerial(b []byte) (string, error) {
	p, err := vpdPage(b, 0x80)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.TrimRight(string(p), "\x00")), nil
}

// Designator association and types (VPD 0x83).
const (
	AssocLogicalUnit = 0
	AssocTargetPort  = 1
	AssocTarget      = 2

	DesigVendor  = 0
	DesigT10     = 1
	DesigEUI64   = 2
	DesigNAA     = 3
	DesigRelPort = 4
	DesigName    = 8
)

// Designator is one designation descriptor of VPD 0x83.
type Designator struct {
	ProtocolID  byte
	CodeSet     byte // 1 binary, 2 ASCII, 3 UTF-8
	PIV         bool
	Association byte
	Type        byte
	Value       []byte
	// Raw is the whole descriptor: the 4-byte header and the designator.
	Raw []byte
}

// NAAHex returns the designator as lower-case hex ("624a9370…" for a Pure LUN).
func (d Designator) NAAHex() string { return fmt.Sprintf("%x", d.Value) }

// CompanyID is the IEEE company identifier (OUI) in an NAA designator: the vendor whose
// storage system assigned the name (24a937 on a Pure FlashArray, 001405 on LIO). NAA 5 and 6
// (IEEE Registered, Registered Extended) carry it right after the 4-bit NAA field, NAA 2
// (IEEE Extended) after a 12-bit vendor-specific field; NAA 3 (locally assigned) has none.
func (d Designator) CompanyID() (uint32, bool) {
	v := d.Value
	if d.Type != DesigNAA || len(v) < 8 {
		return 0, false
	}
	switch v[0] >> 4 {
	case 5, 6:
		return uint32(v[0]&0x0f)<<20 | uint32(v[1])<<12 | uint32(v[2])<<4 | uint32(v[3])>>4, true
	case 2:
		return uint32(v[2])<<16 | uint32(v[3])<<8 | uint32(v[4]), true
	}
	return 0, false
}

// ParseDeviceIdentification decodes VPD 0x83.
func ParseDeviceIdentification(b []byte) ([]Designator, error) {
	p, err := vpdPage(b, 0x83)
	if err != nil {
		return nil, err
	}
	var out []Designator
	for off := 0; off < len(p); {
		if off+4 > len(p) {
			return out, fmt.Errorf("VPD 0x83: truncated descriptor header at %d", off)
		}
		n := int(p[off+3])
		if off+4+n > len(p) {
			return out, fmt.Errorf("VPD 0x83: descriptor at %d claims %d bytes, %d left", off, n, len(p)-off-4)
		}
		out = append(out, Designator{
			ProtocolID:  p[off] >> 4,
			CodeSet:     p[off] & 0x0f,
			PIV:         p[off+1]&0x80 != 0,
			Association: (p[off+1] >> 4) & 0x03,
			Type:        p[off+1] & 0x0f,
			Value:       append([]byte(nil), p[off+4:off+4+n]...),
			Raw:         append([]byte(nil), p[off:off+4+n]...),
		})
		off += 4 + n
	}
	return out, nil
}

// LogicalUnitNAA returns the logical unit's NAA designator (association 0, type 3): the one
// EXTENDED COPY target descriptors use. Target-port designators are not the LU.
func LogicalUnitNAA(ds []Designator) (Designator, bool) {
	for _, d := range ds {
		if d.Association == AssocLogicalUnit && d.Type == DesigNAA && len(d.Value) <= 20 {
			return d, true
		}
	}
	return Designator{}, false
}

// ThirdPartyCopyDescriptor is one descriptor of VPD 0x8F.
type ThirdPartyCopyDescriptor struct {
	Type uint16
	Data []byte
}

// ParseThirdPartyCopy decodes VPD 0x8F (mainline LIO does not implement it; optional).
func ParseThirdPartyCopy(b []byte) ([]ThirdPartyCopyDescriptor, error) {
	p, err := vpdPage(b, 0x8F)
	if err != nil {
		return nil, err
	}
	var out []ThirdPartyCopyDescriptor
	for off := 0; off < len(p); {
		if off+4 > len(p) {
			return out, fmt.Errorf("VPD 0x8F: truncated descriptor at %d", off)
		}
		typ := binary.BigEndian.Uint16(p[off:])
		n := int(binary.BigEndian.Uint16(p[off+2:]))
		if off+4+n > len(p) {
			return out, fmt.Errorf("VPD 0x8F: descriptor %#04x claims %d bytes, %d left", typ, n, len(p)-off-4)
		}
		out = append(out, ThirdPartyCopyDescriptor{Type: typ, Data: append([]byte(nil), p[off+4:off+4+n]...)})
		off += 4 + n
	}
	return out, nil
}

// BlockLimits is VPD 0xB0.
type BlockLimits struct {
	OptimalTransferGranularity uint16 // blocks
	MaxTransferLength          uint32 // blocks, 0 = not reported
	OptimalTransferLength      uint32
	MaxUnmapLBACount           uint32
	MaxWriteSameLength         uint64
}

// ParseBlockLimits decodes VPD 0xB0 (fields beyond the page's length read as zero).
func ParseBlockLimits(b []byte) (BlockLimits, error) {
	p, err := vpdPage(b, 0xB0)
	if err != nil {
		return BlockLimits{}, err
	}
	full := make([]byte, 60)
	copy(full, p) // payload offset 0 = page byte 4
	return BlockLimits{
		OptimalTransferGranularity: binary.BigEndian.Uint16(full[2:]),
		MaxTransferLength:          binary.BigEndian.Uint32(full[4:]),
		OptimalTransferLength:      binary.BigEndian.Uint32(full[8:]),
		MaxUnmapLBACount:           binary.BigEndian.Uint32(full[16:]),
		MaxWriteSameLength:         binary.BigEndian.Uint64(full[32:]),
	}, nil
}

// Capacity is READ CAPACITY(16) data.
type Capacity struct {
	LastLBA           uint64
	BlockSize         uint32
	ProtectionEnabled bool  // PROT_EN: the LU is formatted with protection information
	ProtectionType    uint8 // 1..3 when ProtectionEnabled (P_TYPE + 1)
	LBPPBE            byte  // logical blocks per physical block exponent
	ThinProvisioned   bool  // LBPME
	ReadsZeroes       bool  // LBPRZ
}

// Blocks is the number of logical blocks.
func (c Capacity) Blocks() uint64 { return c.LastLBA + 1 }

// Bytes is the capacity in bytes.
func (c Capacity) Bytes() uint64 { return c.Blocks() * uint64(c.BlockSize) }

// protectionType reads P_TYPE (bits 3:1) and PROT_EN (bit 0) of READ CAPACITY(16) byte 12:
// type 1 for P_TYPE 000b, 2 for 001b, 3 for 010b; 0 without protection.
func protectionType(b byte) uint8 {
	if b&0x01 == 0 {
		return 0
	}
	return (b>>1)&0x07 + 1
}

// ParseReadCapacity16 decodes READ CAPACITY(16) data (at least 32 bytes).
func ParseReadCapacity16(b []byte) (Capacity, error) {
	if len(b) < 32 {
		return Capacity{}, fmt.Errorf("READ CAPACITY(16): %w (%d bytes)", errShort, len(b))
	}
	return Capacity{
		LastLBA:           binary.BigEndian.Uint64(b[0:]),
		BlockSize:         binary.BigEndian.Uint32(b[8:]),
		ProtectionEnabled: b[12]&0x01 != 0,
		ProtectionType:    protectionType(b[12]),
		LBPPBE:            b[13] & 0x0f,
		ThinProvisioned:   b[14]&0x80 != 0,
		ReadsZeroes:       b[14]&0x40 != 0,
	}, nil
}
