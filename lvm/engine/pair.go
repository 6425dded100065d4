package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// pair is a (source device, destination device) pair with the method chosen for it.
type pair struct {
	src, dst *Device
	method   string // "xcopy", "nvme", "" (host)
	format   int    // NVMe descriptor format
	inFlight int
	// limits, in destination blocks
	maxBlocks   int64 // per command
	segBlocks   int64 // per SCSI segment / NVMe range
	segsPerCmd  int
	bs          int64
	listIDNone  bool
	mu          sync.Mutex
	off         string // why offload was turned off ("" while on)
	targets     [][]byte
	cdfeRefused error
}

func (p *pair) disabled() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.off != "" }

// disable turns offload off for the pair and records why, once.
func (p *pair) disable(c *copier, reason string) {
	p.mu.Lock()
	first := p.off == ""
	if first {
		p.off = reason
	}
	p.mu.Unlock()
	if first {
		c.note(&c.res.Fallbacks, "offload %s -> %s refused, falling back to host copy for the rest of this pair: %s", p.src.Name, p.dst.Name, reason)
	}
}

func (c *copier) device(ctx context.Context, d dm.Dev) *Device {
	if x, ok := c.devs[d]; ok {
		return x
	}
	x := Identify(ctx, c.o.Roots, d)
	c.devs[d] = x
	return x
}

// pairFor classifies a device pair once and logs the choice in one line.
func (c *copier) pairFor(ctx context.Context, sd, dd dm.Dev) *pair {
	if p, ok := c.pairs[[2]dm.Dev{sd, dd}]; ok {
		return p
	}
	p := &pair{src: c.device(ctx, sd), dst: c.device(ctx, dd), bs: int64(c.s.bs)}
	c.pairs[[2]dm.Dev{sd, dd}] = p
	reason := p.classify(ctx, c.o.OffloadInFlight)
	if p.method == "" {
		c.note(&c.res.Methods, "copy method %s -> %s: host copy (%s)", p.src.Name, p.dst.Name, reason)
	} else {
		c.note(&c.res.Methods, "copy method %s -> %s: %s", p.src.Name, p.dst.Name, reason)
		c.offDev[p.dst] = true
	}
	return p
}

// classify decides the method and its limits; it returns the explanation.
func (p *pair) classify(ctx context.Context, inFlight int) string {
	s, d := p.src, p.dst
	switch {
	case s.Err != nil:
		return "source device unidentified: " + s.Err.Error()
	case d.Err != nil:
		return "destination device unidentified: " + d.Err.Error()
	case s.Kind != d.Kind:
		return fmt.Sprintf("different transports (%s and %s)", s.Kind, d.Kind)
	case s.BlockSize != d.BlockSize:
		return fmt.Sprintf("different block sizes (%d and %d)", s.BlockSize, d.BlockSize)
	case s.Kind == KindSCSI:
		return p.classifySCSI(inFlight)
	case s.Kind == KindNVMe:
		return p.classifyNVMe(ctx, inFlight)
	}
	return "no offload for " + s.Kind + " devices"
}

func (p *pair) classifySCSI(inFlight int) string {
	s, d := p.src.SCSI, p.dst.SCSI
	switch {
	case !s.Inquiry.ThirdPartyCopy || !d.Inquiry.ThirdPartyCopy:
		return "third-party copy (3PC) not offered by both LUs"
	case !s.HasNAA || !d.HasNAA:
		return "an LU has no NAA designator for EXTENDED COPY target descriptors"
	case d.Copy == nil:
		return fmt.Sprintf("destination LU does not report copy operating parameters: %v", d.CopyError)
	case !d.Copy.Implements(scsi.SegBlockToBlock) || !d.Copy.Implements(scsi.TargetIdentificationE4):
		return fmt.Sprintf("destination LU does not implement block-to-block segments with identification descriptors (%x)", d.Copy.Implemented)
	case s.Inquiry.Vendor != d.Inquiry.Vendor || s.Inquiry.Product != d.Inquiry.Product:
		return fmt.Sprintf("different arrays (%s %s and %s %s)", s.Inquiry.Vendor, s.Inquiry.Product, d.Inquiry.Vendor, d.Inquiry.Product)
	}
	cp := d.Copy
	seg := int64(65535)
	if cp.MaxSegmentLength > 0 {
		seg = min(seg, int64(cp.MaxSegmentLength)/p.bs)
	}
	if g := int64(1) << cp.DataSegmentGranLog2; g > p.bs {
		seg = seg / (g / p.bs) * (g / p.bs)
	}
	segs := max(1, int(cp.MaxSegmentDescriptors))
	if cp.MaxDescriptorListLen > 0 {
		segs = min(segs, (int(cp.MaxDescriptorListLen)-2*32)/28)
	}
	segs = max(1, min(segs, 64))
	if seg <= 0 {
		return "copy operating parameters allow no segment"
	}
	t0, err0 := scsi.TargetDescriptor(s.NAA, uint32(p.bs))
	t1, err1 := scsi.TargetDescriptor(d.NAA, uint32(p.bs))
	if err := errors.Join(err0, err1); err != nil {
		return "target descriptors: " + err.Error()
	}
	p.targets = [][]byte{t0, t1}
	p.method, p.segBlocks, p.segsPerCmd = "xcopy", seg, segs
	p.maxBlocks = seg * int64(segs)
	p.listIDNone = cp.SNLID
	p.inFlight = max(1, min(inFlight, int(cp.MaxConcurrentCopies)))
	return fmt.Sprintf("SCSI EXTENDED COPY on the array (%s %s: 3PC, %d segment(s) of up to %s per command, %d in flight)",
		d.Inquiry.Vendor, d.Inquiry.Product, segs, human(seg*p.bs), p.inFlight)
}

func (p *pair) classifyNVMe(ctx context.Context, inFlight int) string {
	s, d := p.src, p.dst
	switch {
	case s.SubNQN == "" || s.SubNQN != d.SubNQN:
		return fmt.Sprintf("namespaces in different NVMe subsystems (%s and %s)", s.SubNQN, d.SubNQN)
	case !d.Ctrl.SupportsCopy():
		return "the controller has no Copy command (ONCS bit 8 clear)"
	case s.NS.Format().DataSizeLog2 != d.NS.Format().DataSizeLog2 || s.NS.Format().MetadataSize != d.NS.Format().MetadataSize:
		return "namespaces have different LBA formats (cross-namespace copy would fail with 0x4185)"
	}
	cross := s.NSID != d.NSID
	f := nvme.Format0
	if cross {
		f = nvme.Format2
	}
	if d.PIF != 0 {
		f++ // 32/64-bit guard protection information: formats 1h/3h
	}
	if !d.Ctrl.SupportsCopyFormat(f) {
		return fmt.Sprintf("the controller does not support copy descriptor format %dh (OCFS %#x)", f, d.Ctrl.OCFS)
	}
	l := nvme.Limits(*s.NS, *d.NS)
	if l.MaxRangeBlocks == 0 || l.MaxCommandBlocks == 0 {
		return "the namespaces report no copy limits (MSSRL/MCL 0)"
	}
	if f >= nvme.Format2 {
		// Cross-namespace formats must be enabled in Host Behavior Support on every
		// controller the I/O may take. Kernels from 6.12.110 refuse that from user space; the
		// device may not enforce it, so the first Copy decides.
		for _, path := range d.Controllers {
			ctrl, err := nvme.Open(path)
			if err != nil {
				p.cdfeRefused = err
				break
			}
			err = ctrl.EnableCopyFormats(ctx, f)
			ctrl.Close()
			if err != nil {
				p.cdfeRefused = err
				break
			}
		}
	}
	p.method, p.format = "nvme", f
	p.segBlocks = int64(l.MaxRangeBlocks)
	p.segsPerCmd = l.MaxRanges
	p.maxBlocks = min(int64(l.MaxCommandBlocks), int64(l.MaxRanges)*int64(l.MaxRangeBlocks))
	p.inFlight = inFlight
	note := ""
	if p.cdfeRefused != nil {
		note = fmt.Sprintf("; enabling format %dh failed (%v), trying whether the device enforces it", f, p.cdfeRefused)
	}
	return fmt.Sprintf("NVMe Copy format %dh (namespace %d -> %d of %s, up to %d ranges of %d blocks, %d blocks per command, %d in flight%s)",
		f, s.NSID, d.NSID, d.SubNQN, l.MaxRanges, l.MaxRangeBlocks, p.maxBlocks, p.inFlight, note)
}

// split cuts a mapped run into chunks of at most one offload command each.
func (p *pair) split(r mappedRun, bs int64) []chunk {
	secPerBlock := uint64(bs / 512)
	var out []chunk
	if p.method == "" {
		return []chunk{{srcOff: int64(r.logSrc) * 512, dstOff: int64(r.logDst) * 512, length: int64(r.sectors) * 512}}
	}
	maxSec := uint64(p.maxBlocks) * secPerBlock
	for done := uint64(0); done < r.sectors; {
		n := min(maxSec, r.sectors-done)
		out = append(out, chunk{srcOff: int64(r.logSrc+done) * 512, dstOff: int64(r.logDst+done) * 512, length: int64(n) * 512,
			pair: p, srcLBA: (r.srcSec + done) / secPerBlock, dstLBA: (r.dstSec + done) / secPerBlock})
		done += n
	}
	return out
}

// offloadWorker sends offload commands for one pair.
type offloadWorker interface {
	copy(ctx context.Context, ch chunk) error
	close()
}

func (p *pair) worker(slot int) (offloadWorker, error) {
	switch p.method {
	case "xcopy":
		dev, err := scsi.Open(p.dst.Path)
		if err != nil {
			return nil, err
		}
		return &xcopyWorker{p: p, dev: dev, listID: byte(slot + 1)}, nil
	case "nvme":
		dev, err := nvme.Open(p.dst.Path)
		if err != nil {
			return nil, err
		}
		return &nvmeWorker{p: p, dev: dev}, nil
	}
	return nil, nil
}

type xcopyWorker struct {
	p      *pair
	dev    *scsi.Device
	listID byte
}

func (w *xcopyWorker) close() { w.dev.Close() }

func (w *xcopyWorker) copy(ctx context.Context, ch chunk) error {
	blocks := uint64(ch.length / w.p.bs)
	var segs []scsi.Segment
	for done := uint64(0); done < blocks; {
		n := min(uint64(w.p.segBlocks), blocks-done)
		segs = append(segs, scsi.Segment{Source: 0, Destination: 1, Blocks: uint16(n), SourceLBA: ch.srcLBA + done, DestinationLBA: ch.dstLBA + done})
		done += n
	}
	usage, id := scsi.ListIDDiscard, w.listID
	if w.p.listIDNone {
		usage, id = scsi.ListIDNone, 0
	}
	params, err := scsi.ExtendedCopyParams(id, usage, 1, w.p.targets, segs)
	if err != nil {
		return err
	}
	return scsi.ExtendedCopy(ctx, w.dev, params)
}

type nvmeWorker struct {
	p   *pair
	dev *nvme.Device
}

func (w *nvmeWorker) close() { w.dev.Close() }

func (w *nvmeWorker) copy(ctx context.Context, ch chunk) error {
	blocks := uint64(ch.length / w.p.bs)
	var ranges []nvme.CopyRange
	for done := uint64(0); done < blocks; {
		n := min(uint64(w.p.segBlocks), blocks-done)
		r := nvme.CopyRange{SLBA: ch.srcLBA + done, NLB: uint32(n)}
		if w.p.format >= nvme.Format2 {
			r.SNSID = w.p.src.NSID
		}
		ranges = append(ranges, r)
		done += n
	}
	err := w.dev.Copy(ctx, w.p.dst.NSID, ch.dstLBA, w.p.format, ranges)
	if err != nil && w.p.cdfeRefused != nil && errors.Is(err, nvme.ErrNotSupported) {
		return fmt.Errorf("%v after %v", err, w.p.cdfeRefused)
	}
	return err
}

// syncCache flushes the device's volatile write cache.
func (d *Device) syncCache(ctx context.Context) error {
	switch d.Kind {
	case KindSCSI:
		dev, err := scsi.Open(d.Path)
		if err != nil {
			return err
		}
		defer dev.Close()
		return scsi.SyncCache(ctx, dev)
	case KindNVMe:
		dev, err := nvme.Open(d.Path)
		if err != nil {
			return err
		}
		defer dev.Close()
		return dev.Flush(ctx, d.NSID)
	}
	return nil
}
