package nvme

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	smart "github.com/anatol/smart.go"
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

// IdentifyLen is the size of every Identify data structure.
const IdentifyLen = 4096

// Controller is the Identify Controller data structure (CNS 01h) as github.com/anatol/smart.go
// lays it out, field for field (its ModelNumber, SerialNumber, FirmwareRev and SubNQN trim the
// strings), with what pvesnap derives from it. The library sends Identify only as part of a
// walk over every namespace 1..NN (thousands on an array controller) and does not check the
// command's status, so pvesnap sends the one Identify it needs itself (Device) and decodes the
// answer with the library's structure.
type Controller struct {
	smart.NvmeIdentController
}

// VolatileWriteCache reports a volatile write cache (VWC bit 0): writes, Copy's included,
// are on stable media only after a Flush.
func (c *Controller) VolatileWriteCache() bool { return c.Vwc&0x01 != 0 }

// RetryDelay is how long the controller asks the host to wait before retrying a command
// that failed with status s (its CRD field selects CRDT1..3; 0 means at once).
func (c *Controller) RetryDelay(s Status) time.Duration {
	crdt := [3]uint16{c.Crdt1, c.Crdt2, c.Crdt3}
	crd := s.CRD()
	if crd == 0 {
		return 0
	}
	return time.Duration(crdt[crd-1]) * 100 * time.Millisecond
}

// SupportsCopy reports the Copy command (ONCS bit 8).
func (c *Controller) SupportsCopy() bool { return c.Oncs&ONCSCopy != 0 }

// SupportsCopyFormat reports descriptor format f (OCFS bit f).
func (c *Controller) SupportsCopyFormat(f int) bool { return f >= 0 && f < 16 && c.Ocfs&(1<<f) != 0 }

// CopyFormats lists the copy descriptor formats the controller supports (OCFS), when it has
// the Copy command at all.
func (c *Controller) CopyFormats() []int {
	var out []int
	if !c.SupportsCopy() {
		return nil
	}
	for f := 0; f < 16; f++ {
		if c.SupportsCopyFormat(f) {
			out = append(out, f)
		}
	}
	return out
}

// decode reads b into the library's structure, checking its size first (binary.Read of a
// short buffer would leave the tail of the structure zero without a word).
func decode(what string, b []byte, into any) error {
	if len(b) < binary.Size(into) {
		return fmt.Errorf("%s: %d bytes, want %d", what, len(b), binary.Size(into))
	}
	return binary.Read(bytes.NewReader(b), binary.LittleEndian, into)
}

// ParseController decodes the 4096-byte Identify Controller structure.
func ParseController(b []byte) (*Controller, error) {
	c := &Controller{}
	if err := decode("identify controller", b, &c.NvmeIdentController); err != nil {
		return nil, err
	}
	return c, nil
}

// Namespace is the Identify Namespace data structure (CNS 00h) as github.com/anatol/smart.go
// lays it out, with what pvesnap derives from it.
type Namespace struct {
	smart.NvmeIdentNamespace
}

// FormatCount is the number of LBA formats (NLBAF is 0-based).
func (n *Namespace) FormatCount() int { return min(int(n.Nlbaf)+1, len(n.Lbaf)) }

// FormatIndex is the LBA format in use: FLBAS bits 3:0 and, above 16 formats, bits 6:5 (the
// library's LbaSize reads bits 3:0 only).
func (n *Namespace) FormatIndex() int { return int(n.Flbas&0x0f) | int(n.Flbas>>5&0x3)<<4 }

// Format is the LBA format in use.
func (n *Namespace) Format() smart.NvmeLBAF {
	if i := n.FormatIndex(); i < n.FormatCount() {
		return n.Lbaf[i]
	}
	return smart.NvmeLBAF{}
}

// PIType is the protection information type the namespace is formatted with (DPS bits 2:0:
// 1, 2 or 3; 0 without protection information).
func (n *Namespace) PIType() uint8 { return n.Dps & 0x07 }

// BlockSize is the logical block size in bytes.
func (n *Namespace) BlockSize() uint32 { return 1 << n.Format().Ds }

// MetadataSize is the metadata bytes per block of the format in use (protection information
// lives in them).
func (n *Namespace) MetadataSize() uint16 { return n.Format().Ms }

// WriteProtected reports NSATTR bit 0: the namespace is write protected.
func (n *Namespace) WriteProtected() bool { return n.Nsattr&0x01 != 0 }

// NGUIDHex is the NGUID in lower-case hex (Linux shows it as wwid "eui.<hex>").
func (n *Namespace) NGUIDHex() string { return hex.EncodeToString(n.Nguid[:]) }

// EUI64Hex is the EUI-64 in lower-case hex.
func (n *Namespace) EUI64Hex() string { return hex.EncodeToString(n.Eui64[:]) }

// ParseNamespace decodes the 4096-byte Identify Namespace structure.
func ParseNamespace(b []byte) (*Namespace, error) {
	n := &Namespace{}
	if err := decode("identify namespace", b, &n.NvmeIdentNamespace); err != nil {
		return nil, err
	}
	if n.FormatIndex() >= n.FormatCount() {
		return n, fmt.Errorf("identify namespace: format index %d beyond %d formats", n.FormatIndex(), n.FormatCount())
	}
	if n.Nsze == 0 {
		return n, fmt.Errorf("identify namespace: size 0 (the namespace is not active)")
	}
	if ds := n.Format().Ds; ds < 9 || ds > 31 {
		return n, fmt.Errorf("identify namespace: LBA data size 2^%d", ds)
	}
	return n, nil
}

// NVMNamespace is the NVM command set specific Identify Namespace data (CNS 05h), which
// the library does not read.
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
	if len(b) < IdentifyLen {
		return NVMNamespace{}, fmt.Errorf("identify NVM namespace: %d bytes, want %d", len(b), IdentifyLen)
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
