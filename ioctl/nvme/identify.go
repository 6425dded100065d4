package nvme

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Identify CNS values.
const (
	CNSNamespace    = 0x00
	CNSController   = 0x01
	CNSNVMNamespace = 0x05 // I/O command set specific namespace data (CSI 0: NVM)
)

// ONCS and OCFS bits.
const (
	ONCSCopy = 1 << 8
)

// Controller is Identify Controller data (the fields pvesnap uses).
type Controller struct {
	VID, SSVID uint16
	Serial     string
	Model      string
	Firmware   string
	MDTS       uint8 // max data transfer size, 2^MDTS units of the minimum page size; 0 = no limit
	CNTLID     uint16
	Version    uint32
	CTRATT     uint32
	NN         uint32 // number of namespaces
	ONCS       uint16
	OCFS       uint16 // bit n: copy descriptor format n supported
	VWC        uint8  // bit 0: a volatile write cache is present
	// CRDT are the command retry delay times, in 100 ms units, that a failed command's CRD
	// field (1..3) selects before it may be retried.
	CRDT   [3]uint16
	SubNQN string
}

// VolatileWriteCache reports a volatile write cache (VWC bit 0): writes, Copy's included,
// are on stable media only after a Flush.
func (c Controller) VolatileWriteCache() bool { return c.VWC&0x01 != 0 }

// RetryDelay is how long the controller asks the host to wait before retrying a command
// that failed with status s (its CRD field selects CRDT1..3; 0 means at once).
func (c Controller) RetryDelay(s Status) time.Duration {
	crd := s.CRD()
	if crd == 0 {
		return 0
	}
	return time.Duration(c.CRDT[crd-1]) * 100 * time.Millisecond
}

// SupportsCopy reports the Copy command (ONCS bit 8).
func (c Controller) SupportsCopy() bool { return c.ONCS&ONCSCopy != 0 }

// SupportsCopyFormat reports descriptor format f (OCFS bit f).
func (c Controller) SupportsCopyFormat(f int) bool { return f >= 0 && f < 16 && c.OCFS&(1<<f) != 0 }

func trimASCII(b []byte) string { return strings.TrimSpace(strings.TrimRight(string(b), "\x00")) }

// ParseController decodes the 4096-byte Identify Controller structure.
func ParseController(b []byte) (Controller, error) {
	if len(b) < 4096 {
		return Controller{}, fmt.Errorf("identify controller: %d bytes, want 4096", len(b))
	}
	le := binary.LittleEndian
	return Controller{
		VID: le.Uint16(b[0:]), SSVID: le.Uint16(b[2:]),
		Serial: trimASCII(b[4:24]), Model: trimASCII(b[24:64]), Firmware: trimASCII(b[64:72]),
		MDTS: b[77], CNTLID: le.Uint16(b[78:]), Version: le.Uint32(b[80:]), CTRATT: le.Uint32(b[96:]),
		NN: le.Uint32(b[516:]), ONCS: le.Uint16(b[520:]), OCFS: le.Uint16(b[534:]), VWC: b[525],
		CRDT:   [3]uint16{le.Uint16(b[128:]), le.Uint16(b[130:]), le.Uint16(b[132:])},
		SubNQN: trimASCII(b[768:1024]),
	}, nil
}

// LBAFormat is one LBA format entry.
type LBAFormat struct {
	MetadataSize uint16
	DataSizeLog2 uint8
	RelativePerf uint8
}

// Namespace is Identify Namespace data (the fields pvesnap uses).
type Namespace struct {
	NSZE, NCAP, NUSE uint64 // in logical blocks
	FLBAS            uint8
	DPS              uint8 // data protection settings: PI type in bits 2:0
	NMIC             uint8
	MSSRL            uint16 // max blocks per source range (not 0-based)
	MCL              uint32 // max blocks per copy command (not 0-based)
	MSRC             uint8  // max source ranges, 0-based
	ANAGRPID         uint32
	NGUID            [16]byte
	EUI64            [8]byte
	LBAFormats       []LBAFormat
}

// FormatIndex is the LBA format in use (FLBAS bits 3:0 and 6:5).
func (n Namespace) FormatIndex() int { return int(n.FLBAS&0x0f) | int(n.FLBAS>>5&0x3)<<4 }

// Format is the LBA format in use.
func (n Namespace) Format() LBAFormat {
	i := n.FormatIndex()
	if i < len(n.LBAFormats) {
		return n.LBAFormats[i]
	}
	return LBAFormat{}
}

// PIType is the protection information type the namespace is formatted with (DPS bits 2:0:
// 1, 2 or 3; 0 without protection information).
func (n Namespace) PIType() uint8 { return n.DPS & 0x07 }

// BlockSize is the logical block size in bytes.
func (n Namespace) BlockSize() uint32 { return 1 << n.Format().DataSizeLog2 }

// NGUIDHex is the NGUID in lower-case hex (Linux shows it as wwid "eui.<hex>").
func (n Namespace) NGUIDHex() string { return hex.EncodeToString(n.NGUID[:]) }

// ParseNamespace decodes the 4096-byte Identify Namespace structure.
func ParseNamespace(b []byte) (Namespace, error) {
	if len(b) < 4096 {
		return Namespace{}, fmt.Errorf("identify namespace: %d bytes, want 4096", len(b))
	}
	le := binary.LittleEndian
	n := Namespace{NSZE: le.Uint64(b[0:]), NCAP: le.Uint64(b[8:]), NUSE: le.Uint64(b[16:]), FLBAS: b[26], DPS: b[29],
		NMIC: b[30], MSSRL: le.Uint16(b[74:]), MCL: le.Uint32(b[76:]), MSRC: b[80], ANAGRPID: le.Uint32(b[92:])}
	copy(n.NGUID[:], b[104:120])
	copy(n.EUI64[:], b[120:128])
	count := int(b[25]) + 1 // NLBAF is 0-based
	if count > 64 {
		count = 64
	}
	for i := 0; i < count; i++ {
		off := 128 + 4*i
		n.LBAFormats = append(n.LBAFormats, LBAFormat{MetadataSize: le.Uint16(b[off:]), DataSizeLog2: b[off+2], RelativePerf: b[off+3] & 0x3})
	}
	if n.FormatIndex() >= len(n.LBAFormats) {
		return n, fmt.Errorf("identify namespace: format index %d beyond %d formats", n.FormatIndex(), len(n.LBAFormats))
	}
	return n, nil
}

// NVMNamespace is the NVM command set specific Identify Namespace data (CNS 05h).
type NVMNamespace struct {
	ELBAF []uint32 // extended LBA formats: PIF in bits 8:7
}

// PIF returns the protection information format of LBA format i (0 = 16-bit guard, 2 = 64-bit).
func (n NVMNamespace) PIF(i int) uint8 {
	if i < len(n.ELBAF) {
		return uint8(n.ELBAF[i]>>7) & 0x3
	}
	return 0
}

// STS returns the storage tag size in bits of LBA format i (ELBAF bits 6:0): that many bits of
// the reference tag field hold a storage tag instead.
func (n NVMNamespace) STS(i int) uint8 {
	if i < len(n.ELBAF) {
		return uint8(n.ELBAF[i]) & 0x7f
	}
	return 0
}

// ParseNVMNamespace decodes CNS 05h data (4096 bytes).
func ParseNVMNamespace(b []byte) (NVMNamespace, error) {
	if len(b) < 4096 {
		return NVMNamespace{}, fmt.Errorf("identify NVM namespace: %d bytes, want 4096", len(b))
	}
	var n NVMNamespace
	for i := 0; i < 64; i++ {
		n.ELBAF = append(n.ELBAF, binary.LittleEndian.Uint32(b[12+4*i:]))
	}
	return n, nil
}

// IdentifyCommand builds Identify for cns (and nsid for namespace data).
func IdentifyCommand(cns uint8, nsid uint32, csi uint8) Command {
	return Command{Opcode: AdminIdentify, NSID: nsid, CDW10: uint32(cns), CDW11: uint32(csi) << 24}
}
