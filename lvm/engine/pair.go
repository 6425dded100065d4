package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// pair is a (source device, destination device) pair with the method chosen for it.
type pair struct {
	src, dst *Device
	dstLU    *lu
	method   string // "xcopy", "nvme", "" (host)
	format   int    // NVMe descriptor format
	inFlight int
	// bs is the logical block size of both devices: every LBA of a command counts blocks of
	// the device it addresses, whatever the LV's block size (a VG may mix 512 and 4096).
	bs int64
	// limits, in device blocks
	maxBlocks  int64 // per command
	segBlocks  int64 // per SCSI segment / NVMe range
	granBlocks int64 // a segment's length must be a multiple of this (DATA SEGMENT GRANULARITY)
	segsPerCmd int
	listIDNone bool
	targets    [][]byte
	dstTarget  uint16 // index of the destination CSCD (0 when one CSCD serves both: the same LU)
	prinfo     uint8  // NVMe PRINFOR/PRINFOW for namespaces with protection information
	cdfe       error  // why enabling the cross-namespace format failed, if it did

	mu       sync.Mutex
	off      string // why offload was turned off ("" while on)
	fails    int    // offload commands failed in a row
	unusable bool   // a run was not aligned to the device's blocks (said once)
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

// failedInARow is how many offload commands of a pair may fail in a row, each piece then
// copied by the host, before the rest of the pair goes through the host.
const failedInARow = 3

// failed notes an offload command that failed for a reason that may pass (retries used up,
// no usable path): its piece goes through the host, the next one is offloaded again.
func (p *pair) failed(c *copier, err error) {
	p.mu.Lock()
	p.fails++
	n := p.fails
	p.mu.Unlock()
	c.note(&c.res.Fallbacks, "offload %s -> %s: a command failed (%v): that piece is copied through the host, offload goes on", p.src.Name, p.dst.Name, err)
	if n >= failedInARow {
		p.disable(c, fmt.Sprintf("%d offload commands failed in a row", n))
	}
}

func (p *pair) succeeded() { p.mu.Lock(); p.fails = 0; p.mu.Unlock() }

// isDeferred: the error reports an earlier command's failure (SCSI deferred error).
func isDeferred(err error) bool { return errors.Is(err, scsi.ErrDeferred) }

// permanent: the device refuses this kind of command for this pair; retrying cannot help.
func permanent(err error) bool {
	switch {
	case errors.Is(err, scsi.ErrNotSupported), errors.Is(err, scsi.ErrUnreachable),
		errors.Is(err, nvme.ErrNotSupported), errors.Is(err, nvme.ErrIncompatible):
		return true
	}
	var se *nvme.StatusError
	if errors.As(err, &se) {
		return se.Permanent()
	}
	var ce *scsi.CommandError
	if errors.As(err, &ce) {
		return !ce.Transient() && !ce.PathFailure() && !ce.Deferred()
	}
	return false
}

func (c *copier) device(ctx context.Context, d dm.Dev) *Device {
	if x, ok := c.devs[d]; ok {
		return x
	}
	x := c.io.identify(ctx, c.o.Roots, d)
	c.devs[d] = x
	return x
}

// pairFor classifies a device pair once and logs the choice in one line.
func (c *copier) pairFor(ctx context.Context, run mappedRun) *pair {
	key := [2]dm.Dev{run.src.Dev, run.dst.Dev}
	if p, ok := c.pairs[key]; ok {
		return p
	}
	p := &pair{src: c.device(ctx, run.src.Dev), dst: c.device(ctx, run.dst.Dev), dstLU: c.luFor(ctx, run.dst)}
	c.pairs[key] = p
	reason := p.classify(ctx, c, c.o.OffloadInFlight)
	if p.method == "" {
		c.note(&c.res.Methods, "copy method %s -> %s: host copy (%s)", p.src.Name, p.dst.Name, reason)
	} else {
		c.note(&c.res.Methods, "copy method %s -> %s: %s", p.src.Name, p.dst.Name, reason)
		p.dstLU.limit(p.inFlight)
	}
	return p
}

// classify decides the method and its limits; it returns the explanation.
func (p *pair) classify(ctx context.Context, c *copier, inFlight int) string {
	s, d := p.src, p.dst
	if why := d.Health.OffloadRefusal(true); why != "" {
		return "offload to " + d.Name + " refused: " + why
	}
	if why := s.Health.OffloadRefusal(false); why != "" {
		return "offload from " + s.Name + " refused: " + why
	}
	switch {
	case s.Err != nil:
		return "source device unidentified: " + s.Err.Error()
	case d.Err != nil:
		return "destination device unidentified: " + d.Err.Error()
	case s.Kind != d.Kind:
		return fmt.Sprintf("different transports (%s and %s)", s.Kind, d.Kind)
	case s.BlockSize != d.BlockSize:
		return fmt.Sprintf("different block sizes (%d and %d)", s.BlockSize, d.BlockSize)
	case s.BlockSize < 512 || s.BlockSize%512 != 0:
		return fmt.Sprintf("block size %d is not a multiple of 512", s.BlockSize)
	}
	p.bs = int64(s.BlockSize)
	switch s.Kind {
	case KindSCSI:
		return p.classifySCSI(inFlight)
	case KindNVMe:
		return p.classifyNVMe(ctx, c, inFlight)
	}
	return "no offload for " + s.Kind + " devices"
}

func (p *pair) classifySCSI(inFlight int) string {
	s, d := p.src.SCSI, p.dst.SCSI
	if s == nil || d == nil {
		return "SCSI identity unavailable"
	}
	sameLU := s.HasNAA && d.HasNAA && bytes.Equal(s.NAA.Value, d.NAA.Value)
	sOUI, sok := s.NAA.CompanyID()
	dOUI, dok := d.NAA.CompanyID()
	switch {
	case !s.Inquiry.ThirdPartyCopy || !d.Inquiry.ThirdPartyCopy:
		return "third-party copy (3PC) not offered by both LUs"
	case !s.HasNAA || !d.HasNAA:
		return "an LU has no NAA designator for EXTENDED COPY target descriptors"
	case d.Copy == nil:
		return fmt.Sprintf("destination LU does not report copy operating parameters: %v", d.CopyError)
	case !d.Copy.Implements(scsi.SegBlockToBlock) || !d.Copy.Implements(scsi.TargetIdentificationE4):
		return fmt.Sprintf("destination LU does not implement block-to-block segments with identification descriptors (%x)", d.Copy.Implemented)
	case s.Capacity.ProtectionEnabled || d.Capacity.ProtectionEnabled:
		return fmt.Sprintf("protection information (type %d and %d): EXTENDED COPY has no PROTECT field, the array would copy the source's tags, reference tags included, to other LBAs",
			s.Capacity.ProtectionType, d.Capacity.ProtectionType)
	case !sameLU && (!sok || !dok):
		return "an LU's NAA designator names no company (NAA 3, locally assigned): the array cannot be told"
	case !sameLU && sOUI != dOUI:
		// The NAA's company id says whose storage named the LU; INQUIRY vendor and product
		// strings say nothing of which array (two FlashArrays answer the same).
		return fmt.Sprintf("different arrays (NAA company id %06x and %06x)", sOUI, dOUI)
	}
	cp := d.Copy
	nCSCD := 2
	if sameLU {
		nCSCD = 1 // one CSCD descriptor names the LU as source and destination
	}
	if int(cp.MaxTargetDescriptors) < nCSCD {
		return fmt.Sprintf("the LU takes %d CSCD descriptor(s) per EXTENDED COPY, a copy between two LUs needs 2", cp.MaxTargetDescriptors)
	}
	if cp.MaxSegmentDescriptors == 0 {
		return "the LU takes no segment descriptors (MAXIMUM SEGMENT DESCRIPTOR COUNT 0)"
	}
	gran := int64(1) << min(cp.DataSegmentGranLog2, 31)
	p.granBlocks = 1
	if gran > p.bs {
		if gran%p.bs != 0 {
			return fmt.Sprintf("DATA SEGMENT GRANULARITY %d bytes is not a multiple of the %d-byte block", gran, p.bs)
		}
		p.granBlocks = gran / p.bs
	} else if p.bs%gran != 0 {
		return fmt.Sprintf("DATA SEGMENT GRANULARITY %d bytes does not divide the %d-byte block", gran, p.bs)
	}
	seg := int64(65535) // the segment's NUMBER OF BLOCKS field is 16 bits
	if cp.MaxSegmentLength > 0 {
		seg = min(seg, int64(cp.MaxSegmentLength)/p.bs)
	}
	seg = seg / p.granBlocks * p.granBlocks
	if seg <= 0 {
		return fmt.Sprintf("MAXIMUM SEGMENT LENGTH %d bytes holds no whole segment of %d-byte blocks", cp.MaxSegmentLength, p.bs)
	}
	segs := min(int(cp.MaxSegmentDescriptors), 64)
	if cp.MaxDescriptorListLen > 0 {
		room := int(cp.MaxDescriptorListLen) - nCSCD*32
		if room < 28 {
			return fmt.Sprintf("MAXIMUM DESCRIPTOR LIST LENGTH %d bytes cannot hold %d CSCD descriptor(s) and one segment descriptor", cp.MaxDescriptorListLen, nCSCD)
		}
		segs = min(segs, room/28)
	}
	t0, err := scsi.TargetDescriptor(s.NAA, uint32(p.bs))
	if err != nil {
		return "target descriptors: " + err.Error()
	}
	p.targets = [][]byte{t0}
	if !sameLU {
		t1, err := scsi.TargetDescriptor(d.NAA, uint32(p.bs))
		if err != nil {
			return "target descriptors: " + err.Error()
		}
		p.targets, p.dstTarget = append(p.targets, t1), 1
	}
	p.method, p.segBlocks, p.segsPerCmd = "xcopy", seg, segs
	p.maxBlocks = seg * int64(segs)
	p.listIDNone = cp.SNLID
	// TOTAL CONCURRENT COPIES bounds every EXTENDED COPY; MAXIMUM CONCURRENT COPIES those
	// with a list identifier. 0 is "not reported": one at a time.
	limit := int(cp.TotalConcurrentCopies)
	if !cp.SNLID && cp.MaxConcurrentCopies > 0 && (limit == 0 || int(cp.MaxConcurrentCopies) < limit) {
		limit = int(cp.MaxConcurrentCopies)
	}
	p.inFlight = max(1, min(inFlight, max(limit, 1)))
	return fmt.Sprintf("SCSI EXTENDED COPY on the array (company id %06x: 3PC, %d segment(s) of up to %s per command, %d in flight per LU)",
		dOUI, segs, human(seg*p.bs), p.inFlight)
}

func (p *pair) classifyNVMe(ctx context.Context, c *copier, inFlight int) string {
	s, d := p.src, p.dst
	switch {
	case s.NS == nil || d.NS == nil || d.Ctrl == nil:
		return "NVMe identity unavailable"
	case s.SubNQN == "" || s.SubNQN != d.SubNQN:
		return fmt.Sprintf("namespaces in different NVMe subsystems (%s and %s)", s.SubNQN, d.SubNQN)
	case !d.Ctrl.SupportsCopy():
		return "the controller has no Copy command (ONCS bit 8 clear)"
	case s.NS.BlockSize() != d.NS.BlockSize() || s.NS.MetadataSize() != d.NS.MetadataSize():
		return "namespaces have different LBA formats (cross-namespace copy would fail with 0x4185)"
	case s.NS.Dps != d.NS.Dps:
		return fmt.Sprintf("namespaces have different protection information settings (DPS %#x and %#x)", s.NS.Dps, d.NS.Dps)
	case s.PIF != d.PIF:
		return fmt.Sprintf("namespaces have different protection information formats (PIF %d and %d)", s.PIF, d.PIF)
	}
	if pi := d.NS.PIType(); pi != 0 {
		switch {
		case d.PIF != 0:
			return fmt.Sprintf("protection information type %d with a %d-bit guard: its storage and reference tags are not encoded by pvesnap", pi, map[uint8]int{1: 32, 2: 64}[d.PIF])
		case d.STS != 0:
			return fmt.Sprintf("protection information type %d with %d-bit storage tags: not encoded by pvesnap", pi, d.STS)
		}
		// The controller checks the source's guard (and, types 1 and 2, its reference tags:
		// the source LBAs) and writes fresh protection information for the destination LBAs.
		p.prinfo = nvme.PRACT | nvme.PRCHKGuard
		if pi != 3 {
			p.prinfo |= nvme.PRCHKRef
		}
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
		return fmt.Sprintf("the controller does not support copy descriptor format %dh (OCFS %#x)", f, d.Ctrl.Ocfs)
	}
	l := nvme.Limits(s.NS, d.NS)
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
				p.cdfe = err
				break
			}
			err = ctrl.EnableCopyFormats(ctx, f)
			ctrl.Close()
			if err != nil {
				p.cdfe = err
				break
			}
		}
	}
	p.method, p.format = "nvme", f
	p.granBlocks = 1
	p.segBlocks = int64(l.MaxRangeBlocks)
	p.segsPerCmd = l.MaxRanges
	p.maxBlocks = min(int64(l.MaxCommandBlocks), int64(l.MaxRanges)*int64(l.MaxRangeBlocks))
	p.inFlight = inFlight
	note := ""
	if p.prinfo != 0 {
		note = fmt.Sprintf("; protection information type %d: PRINFO %#x, the controller checks the source and writes the destination's", d.NS.PIType(), p.prinfo)
	}
	if p.cdfe != nil {
		note += fmt.Sprintf("; enabling format %dh failed (%v), trying whether the device enforces it", f, p.cdfe)
	}
	return fmt.Sprintf("NVMe Copy format %dh (namespace %d -> %d of %s, up to %d ranges of %d blocks, %d blocks per command, %d in flight%s)",
		f, s.NSID, d.NSID, d.SubNQN, l.MaxRanges, l.MaxRangeBlocks, p.maxBlocks, p.inFlight, note)
}

// split cuts a mapped run into chunks of at most one offload command each. LBAs count blocks
// of the devices the commands address; a tail shorter than the data segment granularity, or
// a run not aligned to the devices' blocks, goes through the host.
func (p *pair) split(ctx context.Context, c *copier, r mappedRun) []chunk {
	l := c.luFor(ctx, r.dst)
	whole := chunk{srcOff: int64(r.logSrc) * 512, dstOff: int64(r.logDst) * 512, length: int64(r.sectors) * 512, lu: l}
	if p.method == "" {
		return []chunk{whole}
	}
	secPerBlock := uint64(p.bs / 512)
	if r.srcSec%secPerBlock != 0 || r.dstSec%secPerBlock != 0 || r.sectors%secPerBlock != 0 {
		p.mu.Lock()
		first := !p.unusable
		p.unusable = true
		p.mu.Unlock()
		if first {
			c.note(&c.res.Fallbacks, "offload %s -> %s: an extent is not aligned to the devices' %d-byte blocks (sectors %d and %d): it is copied through the host",
				p.src.Name, p.dst.Name, p.bs, r.srcSec, r.dstSec)
		}
		return []chunk{whole}
	}
	granSec := uint64(p.granBlocks) * secPerBlock
	offSec := r.sectors / granSec * granSec
	maxSec := uint64(p.maxBlocks) * secPerBlock
	var out []chunk
	for done := uint64(0); done < offSec; {
		n := min(maxSec, offSec-done)
		out = append(out, chunk{srcOff: int64(r.logSrc+done) * 512, dstOff: int64(r.logDst+done) * 512, length: int64(n) * 512,
			pair: p, srcLBA: (r.srcSec + done) / secPerBlock, dstLBA: (r.dstSec + done) / secPerBlock, lu: l})
		done += n
	}
	if offSec < r.sectors {
		out = append(out, chunk{srcOff: int64(r.logSrc+offSec) * 512, dstOff: int64(r.logDst+offSec) * 512,
			length: int64(r.sectors-offSec) * 512, lu: l})
	}
	return out
}

// offloadWorker sends offload commands for one pair.
type offloadWorker interface {
	copy(ctx context.Context, ch chunk) error
	close()
}

func (p *pair) worker(c *copier) (offloadWorker, error) {
	switch p.method {
	case "xcopy":
		return &xcopyWorker{c: c, p: p}, nil
	case "nvme":
		dev, err := c.io.openNVMe(p.dst.Path)
		if err != nil {
			return nil, err
		}
		return &nvmeWorker{c: c, p: p, dev: dev}, nil
	}
	return nil, nil
}

// pathConn is a SCSI device opened on one path of an LU.
type pathConn struct {
	dev SCSIDevice
	on  dm.Dev
}

func (pc *pathConn) close() {
	if pc.dev != nil {
		pc.dev.Close()
		pc.dev = nil
	}
}

// onPath runs fn on a path of the LU, moving to another path when the command fails on its
// path (transport errors, ALUA standby or unavailable), as dm-multipath moves its own I/O.
func (c *copier) onPath(ctx context.Context, l *lu, pc *pathConn, fn func(SCSIDevice) error) error {
	multi := l.mpath != (dm.Dev{}) && len(l.paths) > 1
	tries := 2 * len(l.paths)
	for attempt := 1; ; attempt++ {
		path, err := c.path(ctx, l)
		if err != nil {
			return err
		}
		if pc.dev == nil || pc.on != path {
			pc.close()
			dev, err := c.io.openSCSI(c.devPath(path))
			if err != nil {
				if !multi || attempt >= tries {
					return err
				}
				l.pathFailed(path)
				c.o.Log("path %s to %s cannot be opened (%v): trying another", c.devName(path), l.key, err)
				continue
			}
			pc.dev, pc.on = dev, path
		}
		err = fn(pc.dev)
		if err == nil || !errors.Is(err, scsi.ErrPath) || !multi || attempt >= tries {
			return err
		}
		l.pathFailed(path)
		c.o.Log("path %s to %s failed (%v): trying another", c.devName(path), l.key, err)
		pc.close()
	}
}

type xcopyWorker struct {
	c  *copier
	p  *pair
	pc pathConn
}

func (w *xcopyWorker) close() { w.pc.close() }

func (w *xcopyWorker) copy(ctx context.Context, ch chunk) error {
	blocks := uint64(ch.length / w.p.bs)
	var segs []scsi.Segment
	for done := uint64(0); done < blocks; {
		n := min(uint64(w.p.segBlocks), blocks-done)
		segs = append(segs, scsi.Segment{Source: 0, Destination: w.p.dstTarget, Blocks: uint16(n), SourceLBA: ch.srcLBA + done, DestinationLBA: ch.dstLBA + done})
		done += n
	}
	usage, id := scsi.ListIDDiscard, byte(0)
	if w.p.listIDNone {
		usage = scsi.ListIDNone
	} else {
		var err error
		if id, err = ch.lu.listID(); err != nil {
			return err
		}
		defer ch.lu.freeID(id)
	}
	params, err := scsi.ExtendedCopyParams(id, usage, 1, w.p.targets, segs)
	if err != nil {
		return err
	}
	return w.c.onPath(ctx, ch.lu, &w.pc, func(d SCSIDevice) error { return scsi.ExtendedCopy(ctx, d, params) })
}

type nvmeWorker struct {
	c   *copier
	p   *pair
	dev nvmeDevice
}

func (w *nvmeWorker) close() { w.dev.Close() }

func (w *nvmeWorker) copy(ctx context.Context, ch chunk) error {
	blocks := uint64(ch.length / w.p.bs)
	cmd := nvme.Copy{NSID: w.p.dst.NSID, SDLBA: ch.dstLBA, Format: w.p.format,
		PRINFOR: w.p.prinfo, PRINFOW: w.p.prinfo, ILBRT: uint32(ch.dstLBA)}
	for done := uint64(0); done < blocks; {
		n := min(uint64(w.p.segBlocks), blocks-done)
		r := nvme.CopyRange{SLBA: ch.srcLBA + done, NLB: uint32(n), EILBRT: uint32(ch.srcLBA + done)}
		if w.p.format >= nvme.Format2 {
			r.SNSID = w.p.src.NSID
		}
		cmd.Ranges = append(cmd.Ranges, r)
		done += n
	}
	err := w.c.nvmeRetry(ctx, w.p.dst, func() error { return w.dev.Copy(ctx, cmd) })
	if err != nil && w.p.cdfe != nil && errors.Is(err, nvme.ErrNotSupported) {
		return fmt.Errorf("%w after %v", err, w.p.cdfe)
	}
	return err
}

// nvmeRetry runs fn again while it fails with a status the controller allows retrying (DNR
// clear: a path-related status, an ANA transition) or finds no path, pausing as the status's
// CRD asks (or with the SCSI backoff), for as long as a SCSI command would be retried.
func (c *copier) nvmeRetry(ctx context.Context, d *Device, fn func() error) error {
	var waited int64
	for n := 1; ; n++ {
		err := fn()
		if err == nil {
			return nil
		}
		var se *nvme.StatusError
		isStatus := errors.As(err, &se)
		retry := errors.Is(err, nvme.ErrPath) || (isStatus && se.Retryable() && !errors.Is(err, nvme.ErrNotSupported))
		if !retry || waited >= int64(scsi.RetryBudget) || ctx.Err() != nil {
			return err
		}
		pause := scsi.Backoff(n)
		if isStatus && d.Ctrl != nil {
			if crd := d.Ctrl.RetryDelay(se.Status); crd > 0 {
				pause = crd
			}
		}
		if n == 1 {
			c.o.Log("%s: %v: retrying", d.Name, err)
		}
		waited += int64(pause)
		if perr := c.io.pause(ctx, pause); perr != nil {
			return err
		}
	}
}

// flushLUs flushes the volatile write cache of every LU an offload command wrote, through a
// usable path: what the array wrote is on stable media only then. A failure fails the copy; a
// deferred error marks what it covers for a second copy (errRedo).
func (c *copier) flushLUs(ctx context.Context) error {
	keys := make([]string, 0, len(c.lus))
	for k, l := range c.lus {
		if l.offloaded {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	redo := false
	for _, k := range keys {
		l := c.lus[k]
		var err error
		switch l.dev.Kind {
		case KindSCSI:
			var pc pathConn
			err = c.onPath(ctx, l, &pc, func(d SCSIDevice) error { return scsi.SyncCache(ctx, d) })
			pc.close()
			if errors.Is(err, scsi.ErrNotSupported) {
				// No SYNCHRONIZE CACHE: the kernel knows whether the LU has a volatile cache
				// (WCE) and flushes it as it would for its own writes.
				err = c.syncPath(c.devPath(l.paths[0]))
			}
		case KindNVMe:
			var dev nvmeDevice
			if dev, err = c.io.openNVMe(l.dev.Path); err == nil {
				err = c.nvmeRetry(ctx, l.dev, func() error { return dev.Flush(ctx, l.dev.NSID) })
				dev.Close()
			}
		default:
			err = c.syncPath(l.dev.Path)
		}
		switch {
		case isDeferred(err):
			n, _ := l.deferredError()
			c.note(&c.res.Fallbacks, "deferred error on %s when flushing its cache (%v): the %d piece(s) written to it are copied again through the host", l.key, err, n)
			redo = true
		case err != nil:
			return fmt.Errorf("flushing the write cache of %s (%s): %w", l.key, l.dev.Name, err)
		default:
			c.o.Log("flushed the write cache of %s (%s)", l.key, l.dev.Name)
		}
	}
	if redo {
		return errRedo
	}
	return nil
}

// syncPath is fsync on a device node: the kernel sends its flush.
func (c *copier) syncPath(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return c.io.fsync(f)
}
