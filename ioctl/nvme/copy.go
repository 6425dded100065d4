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
}

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
	}
	return b, nil
}

// CopyCommand is Copy to namespace nsid at sdlba from n ranges of format f (the command goes
// to the destination namespace; sources are named in the descriptors).
func CopyCommand(nsid uint32, sdlba uint64, f int, n int) Command {
	return Command{Opcode: IOCopy, NSID: nsid, CDW10: uint32(sdlba), CDW11: uint32(sdlba >> 32),
		CDW12: uint32(n-1)&0xff | uint32(f&0xf)<<8}
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
func Limits(src, dst Namespace) CopyLimits {
	l := CopyLimits{MaxRangeBlocks: uint32(src.MSSRL), MaxCommandBlocks: dst.MCL, MaxRanges: int(dst.MSRC) + 1}
	if l.MaxRangeBlocks > 65536 {
		l.MaxRangeBlocks = 65536
	}
	return l
}
