package scsi

import (
	"encoding/binary"
	"fmt"
)

// CopyParams is RECEIVE COPY OPERATING PARAMETERS data: the limits an EXTENDED COPY must obey.
type CopyParams struct {
	SNLID                 bool   // supports "no list identifier" (LIST ID USAGE 11b)
	MaxTargetDescriptors  uint16 // CSCD descriptors per command
	MaxSegmentDescriptors uint16 // segment descriptors per command
	MaxDescriptorListLen  uint32 // bytes of CSCD + segment descriptors
	MaxSegmentLength      uint32 // bytes per segment, 0 = no limit
	MaxInlineDataLength   uint32
	HeldDataLimit         uint32
	MaxStreamTransferSize uint32
	TotalConcurrentCopies uint16
	MaxConcurrentCopies   uint8
	DataSegmentGranLog2   uint8 // segment byte length must be a multiple of 2^this
	InlineDataGranLog2    uint8
	HeldDataGranLog2      uint8
	Implemented           []byte // descriptor type codes (0x02 block→block, 0xE4 identification)
}

// Implements reports whether a descriptor type code is implemented.
func (p CopyParams) Implements(code byte) bool {
	for _, c := range p.Implemented {
		if c == code {
			return true
		}
	}
	return false
}

// ParseCopyParams decodes RECEIVE COPY OPERATING PARAMETERS data (at least 44 bytes).
func ParseCopyParams(b []byte) (CopyParams, error) {
	if len(b) < 44 {
		return CopyParams{}, fmt.Errorf("RECEIVE COPY OPERATING PARAMETERS: %w (%d bytes)", errShort, len(b))
	}
	avail := int(binary.BigEndian.Uint32(b[0:]))
	p := CopyParams{
		SNLID:                 b[4]&0x01 != 0,
		MaxTargetDescriptors:  binary.BigEndian.Uint16(b[8:]),
		MaxSegmentDescriptors: binary.BigEndian.Uint16(b[10:]),
		MaxDescriptorListLen:  binary.BigEndian.Uint32(b[12:]),
		MaxSegmentLength:      binary.BigEndian.Uint32(b[16:]),
		MaxInlineDataLength:   binary.BigEndian.Uint32(b[20:]),
		HeldDataLimit:         binary.BigEndian.Uint32(b[24:]),
		MaxStreamTransferSize: binary.BigEndian.Uint32(b[28:]),
		TotalConcurrentCopies: binary.BigEndian.Uint16(b[34:]),
		MaxConcurrentCopies:   b[36],
		DataSegmentGranLog2:   b[37],
		InlineDataGranLog2:    b[38],
		HeldDataGranLog2:      b[39],
	}
	n := int(b[43])
	if 44+n > len(b) || 44+n > avail+4 {
		return p, fmt.Errorf("RECEIVE COPY OPERATING PARAMETERS: %d implemented descriptors claimed, data ends first", n)
	}
	p.Implemented = append([]byte(nil), b[44:44+n]...)
	return p, nil
}

// Descriptor type codes.
const (
	SegBlockToBlock        = 0x02
	TargetIdentificationE4 = 0xE4

	targetDescriptorLen  = 32
	segmentDescriptorLen = 28
)

// TargetDescriptor builds an identification-descriptor CSCD descriptor (type E4h) from a
// logical unit's VPD 0x83 designator: code set and designator type copied with the protocol
// identifier and PIV cleared, as sg_xcopy and LIO expect; disk block length in bytes 29-31.
func TargetDescriptor(d Designator, blockSize uint32) ([]byte, error) {
	if len(d.Value) > 20 {
		return nil, fmt.Errorf("designator of %d bytes does not fit a target descriptor (max 20)", len(d.Value))
	}
	if blockSize == 0 || blockSize >= 1<<24 {
		return nil, fmt.Errorf("block size %d not encodable", blockSize)
	}
	t := make([]byte, targetDescriptorLen)
	t[0] = TargetIdentificationE4
	t[1] = 0x00 // LU ID type 0, NUL 0, peripheral device type 0 (direct access)
	t[4] = d.CodeSet & 0x0f
	t[5] = (d.Association&0x03)<<4 | d.Type&0x0f
	t[7] = byte(len(d.Value))
	copy(t[8:28], d.Value)
	t[29], t[30], t[31] = byte(blockSize>>16), byte(blockSize>>8), byte(blockSize)
	return t, nil
}

// Segment is one block→block segment (type 02h).
type Segment struct {
	Source, Destination uint16 // indexes into the CSCD descriptor list
	Blocks              uint16 // number of blocks, not 0-based; 0 copies nothing
	SourceLBA           uint64
	DestinationLBA      uint64
}

// EncodeSegment writes a 28-byte segment descriptor (DC=0: blocks counted in source blocks).
func EncodeSegment(s Segment) []byte {
	b := make([]byte, segmentDescriptorLen)
	b[0] = SegBlockToBlock
	binary.BigEndian.PutUint16(b[2:], segmentDescriptorLen-4)
	binary.BigEndian.PutUint16(b[4:], s.Source)
	binary.BigEndian.PutUint16(b[6:], s.Destination)
	binary.BigEndian.PutUint16(b[10:], s.Blocks)
	binary.BigEndian.PutUint64(b[12:], s.SourceLBA)
	binary.BigEndian.PutUint64(b[20:], s.DestinationLBA)
	return b
}

// ListIDUsage is the LIST ID USAGE field.
type ListIDUsage byte

const (
	ListIDHold    ListIDUsage = 0 // keep results for RECEIVE COPY RESULTS
	ListIDDiscard ListIDUsage = 2 // list id in use while the command runs, then discarded
	ListIDNone    ListIDUsage = 3 // no list identifier (needs SNLID; list id must be 0)
)

// ExtendedCopyParams builds the EXTENDED COPY (LID1) parameter list: the 16-byte header,
// the CSCD descriptors, then the segment descriptors, no inline data.
func ExtendedCopyParams(listID byte, usage ListIDUsage, priority byte, targets [][]byte, segs []Segment) ([]byte, error) {
	if usage == ListIDNone && listID != 0 {
		return nil, fmt.Errorf("list identifier must be 0 with LIST ID USAGE 11b")
	}
	for i, t := range targets {
		if len(t) != targetDescriptorLen {
			return nil, fmt.Errorf("target descriptor %d is %d bytes, want 32", i, len(t))
		}
	}
	for i, s := range segs {
		if int(s.Source) >= len(targets) || int(s.Destination) >= len(targets) {
			return nil, fmt.Errorf("segment %d names target descriptors %d→%d of %d", i, s.Source, s.Destination, len(targets))
		}
		if s.Blocks == 0 {
			return nil, fmt.Errorf("segment %d copies no blocks", i)
		}
	}
	tdl := len(targets) * targetDescriptorLen
	sdl := len(segs) * segmentDescriptorLen
	b := make([]byte, 16, 16+tdl+sdl)
	b[0] = listID
	b[1] = byte(usage&0x3)<<3 | priority&0x7
	binary.BigEndian.PutUint16(b[2:], uint16(tdl))
	binary.BigEndian.PutUint32(b[8:], uint32(sdl))
	// bytes 12-15: inline data length 0
	for _, t := range targets {
		b = append(b, t...)
	}
	for _, s := range segs {
		b = append(b, EncodeSegment(s)...)
	}
	return b, nil
}

// String renders the parameters for logs.
func (p CopyParams) String() string {
	return fmt.Sprintf("snlid=%v cscd=%d segments=%d desclist=%d maxseg=%d inline=%d held=%d stream=%d total=%d concurrent=%d gran=%d/%d/%d implemented=%x",
		p.SNLID, p.MaxTargetDescriptors, p.MaxSegmentDescriptors, p.MaxDescriptorListLen, p.MaxSegmentLength,
		p.MaxInlineDataLength, p.HeldDataLimit, p.MaxStreamTransferSize, p.TotalConcurrentCopies, p.MaxConcurrentCopies,
		p.DataSegmentGranLog2, p.InlineDataGranLog2, p.HeldDataGranLog2, p.Implemented)
}
