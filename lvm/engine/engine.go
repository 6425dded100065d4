package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/ioctl/blk"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/lvm"
)

// Options tune a copy.
type Options struct {
	// ForceHost skips offload (the operator asked for a host copy).
	ForceHost bool
	// Verify compares source and destination after the copy.
	Verify bool
	// HostChunk and HostInFlight shape the host copy (default 8 MiB, 8 in flight).
	HostChunk    int64
	HostInFlight int
	// OffloadInFlight bounds offload commands in flight per destination LU (further bounded
	// by what the LU reports).
	OffloadInFlight int
	// Progress is called about once a second and at the end with bytes done and total.
	Progress func(done, total int64)
	// Log receives one line per decision (method choice, fallback, cache flushes).
	Log    func(format string, args ...any)
	Roots  Roots
	Proc   string
	Tables dm.TableReader // nil: /dev/mapper/control
	// LVMLockDir is LVM's locking_dir (default /run/lock/lvm).
	LVMLockDir string

	io devIO // nil: the real devices
}

func (o *Options) defaults() {
	if o.HostChunk <= 0 {
		o.HostChunk = 8 << 20
	}
	if o.HostInFlight <= 0 {
		o.HostInFlight = 8
	}
	if o.OffloadInFlight <= 0 {
		o.OffloadInFlight = 4
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Roots.Sys == "" {
		o.Roots.Sys = "/sys"
	}
	if o.Roots.Dev == "" {
		o.Roots.Dev = "/dev"
	}
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	if o.LVMLockDir == "" {
		o.LVMLockDir = lvm.LockDir
	}
	if o.io == nil {
		o.io = sysIO{}
	}
}

// Endpoint is a device (or file) and a byte offset in it.
type Endpoint struct {
	Path   string
	Offset int64
}

// Result reports what a copy did.
type Result struct {
	Bytes      int64
	Offloaded  int64 // bytes copied inside the storage (and not copied again)
	HostCopied int64 // bytes read and written by the host (second copies included)
	Zeroed     int64 // bytes written as BLKZEROOUT instead of data
	Redone     int64 // bytes copied a second time, through the host, after a deferred error or a mapping change
	Methods    []string
	Fallbacks  []string
	Duration   time.Duration
}

// ErrBusy is returned when the destination is mounted, held by another device or open.
var ErrBusy = errors.New("destination in use")

// ErrNotDurable is returned when the destination could not be flushed to stable media: the
// bytes were written, but a power loss could still take them.
var ErrNotDurable = errors.New("copy not on stable media")

// Copy copies the whole of src to the start of dst (dst must be at least as large).
func Copy(ctx context.Context, src, dst string, o Options) (*Result, error) {
	return CopyRange(ctx, Endpoint{Path: src}, Endpoint{Path: dst}, 0, o)
}

// file is one side of the copy.
type file struct {
	path   string
	f      *os.File
	block  bool
	dev    dm.Dev
	size   int64
	bs     int
	direct bool
}

func openSide(path string, write bool) (*file, error) {
	flags := os.O_RDONLY
	if write {
		flags = os.O_RDWR
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	s := &file{path: path, block: fi.Mode()&os.ModeDevice != 0}
	if s.block && write {
		flags |= unix.O_EXCL // fails while mounted or claimed by a device-mapper table
	}
	s.f, err = os.OpenFile(path, flags|unix.O_DIRECT, 0)
	if err != nil && !s.block {
		s.f, err = os.OpenFile(path, flags, 0) // file systems without O_DIRECT (tmpfs)
	} else if err == nil {
		s.direct = true
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("%s: %w (mounted or held by another device)", path, ErrBusy)
		}
		return nil, err
	}
	if s.block {
		if s.dev, err = devOf(s.f); err != nil {
			s.f.Close()
			return nil, err
		}
		if s.size, err = blk.Size(s.f); err != nil {
			s.f.Close()
			return nil, err
		}
		if s.bs, err = blk.LogicalBlockSize(s.f); err != nil {
			s.f.Close()
			return nil, err
		}
	} else {
		s.size, s.bs = fi.Size(), 512
	}
	return s, nil
}

// Open opens a block device (or a file standing in for one) as the copy does: with O_DIRECT
// where the file system allows it, and exclusively for writing a block device (it fails while
// mounted or held). It returns the file and its size.
func Open(path string, write bool) (*os.File, int64, error) {
	s, err := openSide(path, write)
	if err != nil {
		return nil, 0, err
	}
	return s.f, s.size, nil
}

// CopyRange copies length bytes (0 = from the source offset to its end) from src to dst.
func CopyRange(ctx context.Context, src, dst Endpoint, length int64, o Options) (*Result, error) {
	o.defaults()
	start := time.Now()
	s, err := openSide(src.Path, false)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	defer s.f.Close()
	if fi, err := os.Stat(dst.Path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		if err := checkDestination(o.Roots, o.Proc, dst.Path); err != nil {
			return nil, err
		}
	}
	d, err := openSide(dst.Path, true)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	defer d.f.Close()
	if length == 0 {
		length = s.size - src.Offset
	}
	switch {
	case length <= 0 || src.Offset < 0 || dst.Offset < 0:
		return nil, fmt.Errorf("nothing to copy: %d bytes at %d", length, src.Offset)
	case src.Offset+length > s.size:
		return nil, fmt.Errorf("source %s has %d bytes, cannot read %d at %d", src.Path, s.size, length, src.Offset)
	case dst.Offset+length > d.size:
		return nil, fmt.Errorf("destination %s has %d bytes, needs %d at %d: it is smaller than the source", dst.Path, d.size, length, dst.Offset)
	case s.bs != d.bs:
		return nil, fmt.Errorf("logical block sizes differ: %s has %d, %s has %d", src.Path, s.bs, dst.Path, d.bs)
	case length%int64(s.bs) != 0 || src.Offset%int64(s.bs) != 0 || dst.Offset%int64(s.bs) != 0:
		return nil, fmt.Errorf("range %d+%d not aligned to the %d-byte block size", src.Offset, length, s.bs)
	}
	c := newCopier(o, s, d, length)
	if err := c.copy(ctx, src.Offset, dst.Offset, length); err != nil {
		return c.res, err
	}
	c.res.Duration = time.Since(start)
	if o.Progress != nil {
		o.Progress(length, length)
	}
	return c.res, nil
}

// chunk is a piece of the copy with its method.
type chunk struct {
	srcOff, dstOff int64 // logical byte offsets in the endpoints
	length         int64
	pair           *pair  // nil: host copy
	srcLBA, dstLBA uint64 // physical, in device blocks (offload only)
	lu             *lu    // the destination LU (nil when unknown: files, unresolved layers)
	redo           bool   // a second copy: its bytes are already counted in the progress
	rec            *record
}

type copier struct {
	o      Options
	io     devIO
	s, d   *file
	res    *Result
	total  int64
	done   atomic.Int64
	mu     sync.Mutex
	tables dm.TableReader
	ctl    *dm.Control // opened for this copy (nil when Options.Tables serves)
	pairs  map[[2]dm.Dev]*pair
	devs   map[dm.Dev]*Device
	lus    map[string]*lu
	guard  *guard
	// mapChanged: the guard saw a change (said once in the log).
	mapChanged bool
	// layers are the device-mapper devices under the destination (page caches to drop).
	layers map[dm.Dev]dm.Layer
	// zeroOut: all-zero pieces go to the destination as BLKZEROOUT. Only where the device
	// zeroes without data (WRITE SAME, NVMe Write Zeroes): elsewhere the kernel writes zero
	// pages itself, one synchronous request at a time, slower than the copy's own writes.
	// Turned off (and said in the log) when BLKZEROOUT fails: the rest goes as data.
	zeroOut atomic.Bool
}

func newCopier(o Options, s, d *file, length int64) *copier {
	c := &copier{o: o, io: o.io, s: s, d: d, res: &Result{Bytes: length}, total: length,
		pairs: map[[2]dm.Dev]*pair{}, devs: map[dm.Dev]*Device{}, lus: map[string]*lu{}}
	if d.block {
		wz := readTrim(o.Roots.sys("dev", "block", d.dev.String(), "queue", "write_zeroes_max_bytes"))
		c.zeroOut.Store(wz != "" && wz != "0")
	}
	return c
}

func (c *copier) addDone(n int64) { c.done.Add(n) }

func (c *copier) note(list *[]string, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	*list = append(*list, msg)
	c.mu.Unlock()
	c.o.Log("%s", msg)
}

// copy plans, copies, copies again what a deferred error or a mapping change made suspect,
// and flushes the destination to stable media.
func (c *copier) copy(ctx context.Context, srcOff, dstOff, length int64) error {
	// The array copies what it has: dirty pages of the source must reach it first.
	if c.s.block {
		if err := c.io.dropCache(c.s.f); err != nil {
			c.o.Log("flushing source cache: %v", err)
		}
	}
	plan, release, err := c.prepare(ctx, srcOff, dstOff, length)
	if c.ctl != nil {
		defer c.ctl.Close()
	}
	if err != nil {
		return err
	}
	defer release()
	if err := c.run(ctx, plan); err != nil {
		return err
	}
	if why := c.guard.check(); why != "" {
		c.mappingChanged(why)
	}
	for round := 0; ; round++ {
		if err := c.redo(ctx); err != nil {
			return err
		}
		err := c.flushLUs(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, errRedo) || round >= 2 {
			return fmt.Errorf("%w: %w", ErrNotDurable, err)
		}
	}
	release() // the LVs may move again: every offload command has completed
	if err := c.syncDestination(); err != nil {
		return err
	}
	c.dropCaches()
	if c.o.Verify {
		if err := c.verify(ctx, srcOff, dstOff, length); err != nil {
			return err
		}
		c.o.Log("verified: destination equals source (%s)", human(length))
	}
	return nil
}

// prepare resolves both sides, refuses overlapping ones and splits the range into chunks,
// each offloaded or copied by the host. When some are offloaded it holds LVM's read lock on
// the volume groups involved until release.
func (c *copier) prepare(ctx context.Context, srcOff, dstOff, length int64) ([]chunk, func(), error) {
	nothing := func() {}
	host := func(reason string) ([]chunk, func(), error) {
		c.note(&c.res.Methods, "copy method: host copy of %s (%s)", human(length), reason)
		return []chunk{{srcOff: srcOff, dstOff: dstOff, length: length}}, nothing, nil
	}
	if !c.s.block || !c.d.block {
		return host("not block devices")
	}
	c.tables = c.o.Tables
	if c.tables == nil {
		ctl, err := dm.OpenControl("")
		if err != nil {
			if err := c.checkOverlap(nil, err, nil, err, srcOff, dstOff, length); err != nil {
				return nil, nothing, err
			}
			return host("device-mapper unavailable: " + err.Error())
		}
		c.ctl = ctl
		c.tables = ctl
	}
	resolve := func() (*dm.Resolver, []dm.Extent, error, []dm.Extent, error) {
		r := &dm.Resolver{Tables: c.tables, Sys: c.o.Roots.Sys, Layers: map[dm.Dev]dm.Layer{}}
		sx, errS := r.Resolve(c.s.dev, uint64(srcOff/512), uint64(length/512))
		dx, errD := r.Resolve(c.d.dev, uint64(dstOff/512), uint64(length/512))
		return r, sx, errS, dx, errD
	}
	r, sx, errS, dx, errD := resolve()
	if err := c.checkOverlap(sx, errS, dx, errD, srcOff, dstOff, length); err != nil {
		return nil, nothing, err
	}
	c.logHealth(ctx, "source", sx)
	c.logHealth(ctx, "destination", dx)
	switch {
	case c.o.ForceHost:
		return host("host copy forced")
	case errS != nil:
		return host("source: " + errS.Error())
	case errD != nil:
		return host("destination: " + errD.Error())
	}
	release, err := c.lockVGs(ctx, r.Layers)
	if err != nil {
		return host(err.Error())
	}
	// Resolved again under the locks: this is the mapping the offload commands use.
	r, sx, errS, dx, errD = resolve()
	if err := errors.Join(errS, errD); err != nil {
		release()
		return host(err.Error())
	}
	c.guard = &guard{tables: c.tables, layers: r.Layers}
	c.layers = map[dm.Dev]dm.Layer{}
	for d := range below(c.o.Roots, c.d.dev) {
		if l, ok := r.Layers[d]; ok {
			c.layers[d] = l
		}
	}
	if l, ok := r.Layers[c.d.dev]; ok {
		c.layers[c.d.dev] = l
	}
	var out []chunk
	offload := false
	for _, run := range intersect(sx, dx, uint64(srcOff/512), uint64(dstOff/512)) {
		p := c.pairFor(ctx, run)
		chunks := p.split(ctx, c, run)
		for _, ch := range chunks {
			offload = offload || ch.pair != nil
		}
		out = append(out, chunks...)
	}
	if !offload {
		release() // nothing bypasses device-mapper: LVM may change what it likes
		release = nothing
	}
	return out, release, nil
}

// logHealth says, once per device, what the devices under one side report about
// themselves: a restore's log then keeps the state of what it read and wrote.
func (c *copier) logHealth(ctx context.Context, side string, xs []dm.Extent) {
	seen := map[dm.Dev]bool{}
	for _, x := range xs {
		if seen[x.Dev] {
			continue
		}
		seen[x.Dev] = true
		d := c.device(ctx, x.Dev)
		who := strings.TrimSpace(d.Vendor + " " + d.Model)
		if d.Serial != "" {
			who += ", serial " + d.Serial
		}
		if who != "" {
			who = " (" + who + ")"
		}
		src := ""
		if d.Health.Source != "" {
			src = " [" + d.Health.Source + "]"
		}
		name := d.Name
		if name == "" {
			name = x.Dev.String()
		}
		c.o.Log("%s device %s%s: health %s%s", side, name, who, d.Health.Summary(), src)
	}
}

// errRedo: a flush reported a deferred error; what it covers was marked for a second copy.
var errRedo = errors.New("deferred error on flush")

// mappingChanged stops offloading (the guard keeps answering with the change) and marks
// everything offloaded so far for a second copy through the host: device-mapper now maps the
// LVs elsewhere than the commands wrote. Called again after the last command, it marks what
// completed in between.
func (c *copier) mappingChanged(why string) {
	for _, l := range c.lus {
		l.mu.Lock()
		for _, r := range l.records {
			if r.offloaded {
				r.suspect = true
			}
		}
		l.mu.Unlock()
	}
	c.mu.Lock()
	first := !c.mapChanged
	c.mapChanged = true
	c.mu.Unlock()
	if first {
		c.note(&c.res.Fallbacks, "the mapping changed during the copy (%s): offload stopped; what was offloaded is copied again through the host", why)
	}
}

// run copies the planned chunks: offload chunks through their pairs' workers, host chunks
// (and offload chunks that fell back) through the host workers.
func (c *copier) run(ctx context.Context, plan []chunk) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hostQ := make(chan chunk, c.o.HostInFlight*2)
	errc := make(chan error, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	var hostWG sync.WaitGroup
	for i := 0; i < c.o.HostInFlight; i++ {
		hostWG.Add(1)
		go func() {
			defer hostWG.Done()
			h, err := newHostWorker(c)
			if err != nil {
				fail(err)
				return
			}
			defer h.close()
			for ch := range hostQ {
				if ctx.Err() != nil {
					continue
				}
				if err := h.copy(ctx, ch); err != nil {
					fail(err)
				}
			}
		}()
	}
	stopProg := c.progress()
	defer stopProg()
	toHost := func(ch chunk) {
		ch.pair = nil
		select {
		case hostQ <- ch:
		case <-ctx.Done():
		}
	}
	queues := map[*pair]chan chunk{}
	var offWG sync.WaitGroup
	for _, ch := range plan {
		if ch.pair == nil || queues[ch.pair] != nil {
			continue
		}
		q := make(chan chunk, 16)
		queues[ch.pair] = q
		for i := 0; i < ch.pair.inFlight; i++ {
			offWG.Add(1)
			go func(p *pair) {
				defer offWG.Done()
				w, err := p.worker(c)
				if err != nil {
					p.disable(c, fmt.Sprintf("cannot open %s for offload: %v", p.dst.Path, err))
				}
				if w != nil {
					defer w.close()
				}
				for ch := range q {
					if ctx.Err() != nil {
						continue
					}
					if w == nil || p.disabled() {
						toHost(ch)
						continue
					}
					if !c.offload(ctx, p, w, &ch) && ctx.Err() == nil {
						toHost(ch)
					}
				}
			}(ch.pair)
		}
	}
	for _, ch := range plan {
		if ch.pair == nil {
			select {
			case hostQ <- ch:
			case <-ctx.Done():
			}
			continue
		}
		select {
		case queues[ch.pair] <- ch:
		case <-ctx.Done():
		}
	}
	for _, q := range queues {
		close(q)
	}
	offWG.Wait()
	close(hostQ)
	hostWG.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	return ctx.Err()
}

// offload sends one chunk's command; false sends the chunk to the host instead.
func (c *copier) offload(ctx context.Context, p *pair, w offloadWorker, ch *chunk) bool {
	if why := c.guard.check(); why != "" {
		c.mappingChanged(why)
		return false
	}
	if err := ch.lu.acquire(ctx); err != nil {
		return false
	}
	ch.rec = ch.lu.start(*ch)
	err := w.copy(ctx, *ch)
	ch.lu.release()
	if err == nil {
		p.succeeded()
		ch.lu.mu.Lock()
		ch.lu.offloaded = true
		ch.rec.offloaded = true
		ch.lu.mu.Unlock()
		c.mu.Lock()
		c.res.Offloaded += ch.length
		c.mu.Unlock()
		c.addDone(ch.length)
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	switch {
	case isDeferred(err):
		n, seen := ch.lu.deferredError()
		c.note(&c.res.Fallbacks, "deferred error on %s (%v): the %d piece(s) written to it before are copied again through the host",
			ch.lu.key, err, n)
		if seen >= 3 {
			p.disable(c, fmt.Sprintf("%d deferred errors on %s", seen, ch.lu.key))
		}
		ch.lu.mu.Lock()
		ch.rec.suspect = false // copied by the host now, not again
		ch.lu.mu.Unlock()
	case permanent(err):
		p.disable(c, err.Error())
	default:
		p.failed(c, err)
	}
	return false
}

// redo copies again, through the host, every piece marked suspect (by a deferred error or a
// mapping change), and forgets the marks.
func (c *copier) redo(ctx context.Context) error {
	var plan []chunk
	for _, l := range c.lus {
		l.mu.Lock()
		for _, r := range l.records {
			if !r.suspect {
				continue
			}
			r.suspect = false
			ch := r.ch
			ch.pair, ch.redo, ch.rec = nil, true, r
			plan = append(plan, ch)
			if r.offloaded {
				r.offloaded = false
				c.res.Offloaded -= ch.length
			}
			c.res.Redone += ch.length
		}
		l.mu.Unlock()
	}
	if len(plan) == 0 {
		return nil
	}
	c.o.Log("copying %d piece(s) (%s) again through the host", len(plan), human(sumLen(plan)))
	return c.run(ctx, plan)
}

func sumLen(cs []chunk) int64 {
	var n int64
	for _, ch := range cs {
		n += ch.length
	}
	return n
}

func (c *copier) progress() func() {
	if c.o.Progress == nil {
		return func() {}
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				c.o.Progress(c.done.Load(), c.total)
			}
		}
	}()
	return func() { close(stop) }
}

// syncDestination makes the host's writes durable: fsync on a block device is blkdev_fsync,
// which sends the device a cache flush (REQ_PREFLUSH: SYNCHRONIZE CACHE, NVMe Flush), down
// through every device-mapper layer; BLKFLSBUF only writes back and drops the page cache.
func (c *copier) syncDestination() error {
	if err := c.io.fsync(c.d.f); err != nil {
		return fmt.Errorf("flushing %s: %v: %w", c.d.path, err, ErrNotDurable)
	}
	c.o.Log("flushed %s to stable media", c.d.path)
	return nil
}

// dropCaches makes what the array wrote behind the kernel's back visible: the page caches of
// the destination, of every device-mapper layer under it and of every path of every LU an
// offload command wrote are written back and dropped.
func (c *copier) dropCaches() {
	var paths []string
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			paths = append(paths, p)
		}
	}
	for _, l := range c.lus {
		if !l.offloaded {
			continue
		}
		for _, p := range l.paths {
			add(c.devPath(p))
		}
		if l.mpath != (dm.Dev{}) {
			add(c.devPath(l.mpath))
		}
	}
	if len(paths) == 0 {
		return
	}
	for d := range c.layers {
		add(c.devPath(d))
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err == nil {
			err = c.io.dropCache(f)
			f.Close()
		}
		if err != nil {
			c.o.Log("dropping page cache of %s: %v", p, err)
		}
	}
	if err := c.io.dropCache(c.d.f); err != nil {
		c.o.Log("dropping page cache of %s: %v", c.d.path, err)
	}
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// run of identical mapping: src and dst physical extents aligned.
type mappedRun struct {
	src, dst       dm.Extent // the extents the run lies in
	srcSec, dstSec uint64    // physical sectors
	logSrc, logDst uint64    // logical sectors (in the endpoints)
	sectors        uint64
}

// intersect pairs source and destination extents over the same logical range.
func intersect(sx, dx []dm.Extent, srcBase, dstBase uint64) []mappedRun {
	var out []mappedRun
	i, j := 0, 0
	var pos uint64 // sectors from the start of the copy
	for i < len(sx) && j < len(dx) {
		a, b := sx[i], dx[j]
		aOff := pos - (a.Start - srcBase) // position inside extent a
		bOff := pos - (b.Start - dstBase)
		n := min(a.Length-aOff, b.Length-bOff)
		out = append(out, mappedRun{src: a, dst: b, srcSec: a.DevStart + aOff, dstSec: b.DevStart + bOff,
			logSrc: srcBase + pos, logDst: dstBase + pos, sectors: n})
		pos += n
		if aOff+n == a.Length {
			i++
		}
		if bOff+n == b.Length {
			j++
		}
	}
	return out
}
