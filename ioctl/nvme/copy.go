package nvme

import (
	"encoding/binary"
	"fmt"
)

// FeatureHostBehavior is the Host Behavior Support feature (FID 16h): 512 bytes of data.
const (
	FeatureHostBehavior = 0x16
	HostBehaviorLen     = 512
)

// HostBehavior is the Host Behavior Support structure.
type HostBehavior struct {
	ACRE   uint8
	ETDAS  uint8
	LBAFEE uint8
	HDISNS uint8
	// CDFE bit n enables copy descriptor format n (2h and 3h must be enabled before use).
	CDFE uint16
	raw  [HostBehaviorLen]byte
}

// ParseHostBehavior decodes the 512-byte structure, keeping every byte so a read-modify-write
// changes only what it means to (Set Features replaces all 512 bytes).
func ParseHostBehavior(b []byte) (HostBehavior, error) {
	if len(b) < HostBehaviorLen {
		return HostBehavior{}, fmt.Errorf("host behavior support: %d bytes, want 512", len(b))
	}
	h := HostBehavior{ACRE: b[0], ETDAS: b[1], LBAFEE: b[2], HDISNS: b[3], CDFE: binary.LittleEndian.Uint16(b[4:])}
	copy(h.raw[:], b)
	return h, nil
}

// Marshal writes the structure back, unchanged but for the decoded fields.
func (h HostBehavior) Marshal() []byte {
	b := make([]byte, HostBehaviorLen)
	copy(b, h.raw[:])
	b[0], b[1], b[2], b[3] = h.ACRE, h.ETDAS, h.LBAFEE, h.HDISNS
	binary.LittleEndian.PutUint16(b[4:], h.CDFE)
	return b
}

// GetFeaturesCommand is Get Features for fid with select sel (0 = current).
func GetFeaturesCommand(fid uint8, sel uint8) Command {
	return Command{Opcode: AdminGetFeatures, CDW10: uint32(fid) | uint32(sel&0x7)<<8}
}

// SetFeaturesCommand is Set Features for fid (not saved across power cycles).
func SetFeaturesCommand(fid uint8, cdw11 uint32) Command {
	return Command{Opcode: AdminSetFeatures, CDW10: uint32(fid), CDW11: cdw11}
}

// CopyRange is one source range: NLB is the number of blocks (1..65536), encoded 0-based.
type CopyRange struct {
	SNSID uint32 // source namespace (formats 2h/3h only)
	SLBA  uint64
	NLB   uint32
	// EILBRT is the reference tag the range's first block must carry when PRINFOR checks
	// reference tags (types 1 and 2: the low 32 bits of its LBA); ELBAT and ELBATM the
	// application tag and mask checked with PRCHK app. Encoded for formats 0h and 2h.
	EILBRT        uint32
	ELBAT, ELBATM uint16
}

// Protection information action and check bits, the 4-bit PRINFOR/PRINFOW fields of Copy.
const (
	PRACT      = 0x8 // the controller generates the PI it writes (and strips what it reads)
	PRCHKGuard = 0x4 // check the guard (CRC) of each block
	PRCHKApp   = 0x2 // check the application tag
	PRCHKRef   = 0x1 // check the reference tag
)

// Descriptor formats.
const (
	Format0 = 0 // 32 bytes, same namespace, 16-bit guard PI
	Format1 = 1 // 40 bytes, same namespace, 32/64-bit guard PI
	Format2 = 2 // 32 bytes, cross-namespace (SNSID), 16-bit guard PI
	Format3 = 3 // 40 bytes, cross-namespace, 32/64-bit guard PI
)

// DescriptorSize is the size of one source range entry of format f.
func DescriptorSize(f int) int {
	if f == Format1 || f == Format3 {
		return 40
	}
	return 32
}

// EncodeCopyRanges writes the source range entries of format f.
func EncodeCopyRanges(f int, ranges []CopyRange) ([]byte, error) {
	if f < 0 || f > 3 {
		return nil, fmt.Errorf("copy descriptor format %d unknown", f)
	}
	if len(ranges) == 0 || len(ranges) > 256 {
		return nil, fmt.Errorf("copy with %d ranges (1..256)", len(ranges))
	}
	sz := DescriptorSize(f)
	b := make([]byte, sz*len(ranges))
	for i, r := range ranges {
		if r.NLB == 0 || r.NLB > 65536 {
			return nil, fmt.Errorf("range %d of %d blocks (1..65536)", i, r.NLB)
		}
		if (f == Format0 || f == Format1) && r.SNSID != 0 {
			return nil, fmt.Errorf("range %d names source namespace %d: formats 0h/1h copy within one namespace", i, r.SNSID)
		}
		if (f == Format2 || f == Format3) && r.SNSID == 0 {
			return nil, fmt.Errorf("range %d has no source namespace: formats 2h/3h need one", i)
		}
		d := b[i*sz:]
		if f >= Format2 {
			binary.LittleEndian.PutUint32(d[0:], r.SNSID)
		}
		binary.LittleEndian.PutUint64(d[8:], r.SLBA)
		binary.LittleEndian.PutUint16(d[16:], uint16(r.NLB-1))
		if f == Format0 || f == Format2 {
			binary.LittleEndian.PutUint32(d[24:], r.EILBRT)
			binary.LittleEndian.PutUint16(d[28:], r.ELBAT)
			binary.LittleEndian.PutUint16(d[30:], r.ELBATM)
		} else if r.EILBRT != 0 || r.ELBAT != 0 || r.ELBATM != 0 {
			// 32/64-bit guard formats hold a storage tag and a longer reference tag in
			// bytes 26-35; pvesnap does not copy such namespaces with offload.
			return nil, fmt.Errorf("range %d: protection fields of format %dh are not encoded", i, f)
		}
	}
	return b, nil
}

// CopyCommand is Copy to namespace nsid at sdlba from n ranges of format f (the command goes
// to the destination namespace; sources are named in the descriptors).
func CopyCommand(nsid uint32, sdlba uint64, f int, n int) Command {
	return Command{Opcode: IOCopy, NSID: nsid, CDW10: uint32(sdlba), CDW11: uint32(sdlba >> 32),
		CDW12: uint32(n-1)&0xff | uint32(f&0xf)<<8}
}

// Copy is one Copy command: Ranges, in descriptor format Format, copied to namespace NSID
// from SDLBA on.
type Copy struct {
	NSID   uint32
	SDLBA  uint64
	Format int
	Ranges []CopyRange
	// PRINFOR and PRINFOW are the protection information fields for the reads of the
	// sources and the writes of the destination (PRACT, PRCHK*). ILBRT is the reference tag
	// of the first destination block when the controller generates or checks it (types 1
	// and 2: the low 32 bits of SDLBA), LBAT/LBATM the application tag and mask.
	PRINFOR, PRINFOW uint8
	ILBRT            uint32
	LBAT, LBATM      uint16
}

// Command lays the Copy out: CDW12 carries NR, DESFMT, PRINFOR (bits 15:12) and PRINFOW
// (bits 29:26); CDW14 the initial reference tag; CDW15 the application tag mask and tag.
func (c Copy) Command() Command {
	cmd := CopyCommand(c.NSID, c.SDLBA, c.Format, len(c.Ranges))
	cmd.CDW12 |= uint32(c.PRINFOR&0xf)<<12 | uint32(c.PRINFOW&0xf)<<26
	cmd.CDW14 = c.ILBRT
	cmd.CDW15 = uint32(c.LBATM)<<16 | uint32(c.LBAT)
	return cmd
}

// FlushCommand flushes the volatile write cache of nsid.
func FlushCommand(nsid uint32) Command { return Command{Opcode: IOFlush, NSID: nsid} }

// CopyLimits are the limits a Copy must obey for a pair of namespaces: MSSRL of the source,
// MCL of the destination, MSRC of the destination.
type CopyLimits struct {
	MaxRangeBlocks   uint32 // MSSRL of the source namespace
	MaxCommandBlocks uint32 // MCL of the destination namespace
	MaxRanges        int    // MSRC+1 of the destination namespace
}

// Limits derives the copy limits for src → dst; zero values mean "no copy possible".
func Limits(src, dst *Namespace) CopyLimits {
	l := CopyLimits{MaxRangeBlocks: uint32(src.Mssrl), MaxCommandBlocks: dst.Mcl, MaxRanges: int(dst.Msrc) + 1}
	if l.MaxRangeBlocks > 65536 {
		l.MaxRangeBlocks = 65536
	}
	return l
}
