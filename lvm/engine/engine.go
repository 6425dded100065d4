package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/ioctl/blk"
	"github.com/pvesnap/pvesnap/ioctl/dm"
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
	// OffloadInFlight bounds offload commands in flight per device pair (further bounded by
	// what the device reports).
	OffloadInFlight int
	// Progress is called about once a second and at the end with bytes done and total.
	Progress func(done, total int64)
	// Log receives one line per decision (method choice, fallback, cache flushes).
	Log    func(format string, args ...any)
	Roots  Roots
	Proc   string
	Tables dm.TableReader // nil: /dev/mapper/control
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
}

// Endpoint is a device (or file) and a byte offset in it.
type Endpoint struct {
	Path   string
	Offset int64
}

// Result reports what a copy did.
type Result struct {
	Bytes      int64
	Offloaded  int64 // bytes copied inside the storage
	HostCopied int64 // bytes read and written by the host
	Zeroed     int64 // bytes written as BLKZEROOUT instead of data
	Methods    []string
	Fallbacks  []string
	Duration   time.Duration
}

// ErrBusy is returned when the destination is mounted, held by another device or open.
var ErrBusy = errors.New("destination in use")

// Copy copies the whole of src to the start of dst (dst must be at least as large).
func Copy(ctx context.Context, src, dst string, o Options) (*Result, error) {
	return CopyRange(ctx, Endpoint{Path: src}, Endpoint{Path: dst}, 0, o)
}

// file is one side of the copy.
type file struct {
	path    string
	f       *os.File
	block   bool
	dev     dm.Dev
	size    int64
	bs      int
	direct  bool
	extents []dm.Extent
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
	res := &Result{Bytes: length}
	c := &copier{o: o, s: s, d: d, res: res, total: length}
	if d.block {
		wz := readTrim(o.Roots.sys("dev", "block", d.dev.String(), "queue", "write_zeroes_max_bytes"))
		c.zeroOut.Store(wz != "" && wz != "0")
	}
	// The array copies what it has: dirty pages of the source must reach it first.
	if s.block {
		if err := blk.FlushBuffers(s.f); err != nil {
			o.Log("flushing source cache: %v", err)
		}
	}
	plan := c.plan(ctx, src.Offset, dst.Offset, length)
	if err := c.run(ctx, plan); err != nil {
		return res, err
	}
	c.finish(ctx)
	if o.Verify {
		if err := c.verify(ctx, src.Offset, dst.Offset, length); err != nil {
			return res, err
		}
		o.Log("verified: destination equals source (%s)", human(length))
	}
	res.Duration = time.Since(start)
	if o.Progress != nil {
		o.Progress(length, length)
	}
	return res, nil
}

// chunk is a piece of the copy with its method.
type chunk struct {
	srcOff, dstOff int64 // logical byte offsets in the endpoints
	length         int64
	pair           *pair  // nil: host copy
	srcLBA, dstLBA uint64 // physical, in device blocks (offload only)
}

type copier struct {
	o      Options
	s, d   *file
	res    *Result
	total  int64
	done   atomic.Int64
	mu     sync.Mutex
	pairs  map[[2]dm.Dev]*pair
	devs   map[dm.Dev]*Device
	offDev map[*Device]bool // destination devices written by offload: sync their cache
	// zeroOut: all-zero pieces go to the destination as BLKZEROOUT. Only where the device
	// zeroes without data (WRITE SAME, NVMe Write Zeroes): elsewhere the kernel writes zero
	// pages itself, one synchronous request at a time, slower than the copy's own writes.
	// Turned off (and said in the log) when BLKZEROOUT fails: the rest goes as data.
	zeroOut atomic.Bool
}

func (c *copier) addDone(n int64) { c.done.Add(n) }

func (c *copier) note(list *[]string, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	*list = append(*list, msg)
	c.mu.Unlock()
	c.o.Log("%s", msg)
}

// plan splits the range into chunks, each offloaded or copied by the host.
func (c *copier) plan(ctx context.Context, srcOff, dstOff, length int64) []chunk {
	host := func(reason string) []chunk {
		c.note(&c.res.Methods, "copy method: host copy of %s (%s)", human(length), reason)
		return []chunk{{srcOff: srcOff, dstOff: dstOff, length: length}}
	}
	switch {
	case c.o.ForceHost:
		return host("host copy forced")
	case !c.s.block || !c.d.block:
		return host("not block devices")
	}
	tables := c.o.Tables
	if tables == nil {
		ctl, err := dm.OpenControl("")
		if err != nil {
			return host("device-mapper unavailable: " + err.Error())
		}
		defer ctl.Close()
		tables = ctl
	}
	r := &dm.Resolver{Tables: tables, Sys: c.o.Roots.Sys}
	sx, err := r.Resolve(c.s.dev, uint64(srcOff/512), uint64(length/512))
	if err != nil {
		return host("source: " + err.Error())
	}
	dx, err := r.Resolve(c.d.dev, uint64(dstOff/512), uint64(length/512))
	if err != nil {
		return host("destination: " + err.Error())
	}
	c.pairs = map[[2]dm.Dev]*pair{}
	c.devs = map[dm.Dev]*Device{}
	c.offDev = map[*Device]bool{}
	var out []chunk
	for _, run := range intersect(sx, dx, uint64(srcOff/512), uint64(dstOff/512)) {
		p := c.pairFor(ctx, run.src, run.dst)
		out = append(out, p.split(run, int64(c.s.bs))...)
	}
	return out
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
	// Offload queues per pair.
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
			go func(p *pair, slot int) {
				defer offWG.Done()
				w, err := p.worker(slot)
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
					if w != nil && !p.disabled() {
						err := w.copy(ctx, ch)
						if err == nil {
							c.mu.Lock()
							c.res.Offloaded += ch.length
							c.mu.Unlock()
							c.addDone(ch.length)
							continue
						}
						if ctx.Err() != nil {
							continue
						}
						p.disable(c, err.Error())
					}
					select {
					case hostQ <- ch: // fall back for this chunk (and, disabled, for the rest)
					case <-ctx.Done():
					}
				}
			}(ch.pair, i)
		}
	}
	for _, ch := range plan {
		q := hostQ
		if ch.pair != nil {
			q = queues[ch.pair]
		}
		select {
		case q <- ch:
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

// finish makes the result visible to the host: the storage's write cache flushed, and the
// page caches of the destination (and its physical devices) dropped, since the array wrote
// behind the kernel's back.
func (c *copier) finish(ctx context.Context) {
	if c.d.block && c.res.Offloaded > 0 {
		for dev := range c.offDev {
			if err := dev.syncCache(ctx); err != nil {
				c.o.Log("cache flush on %s: %v", dev.Path, err)
			}
			if err := flushDevice(dev.Path); err != nil {
				c.o.Log("dropping page cache of %s: %v", dev.Path, err)
			}
		}
	}
	if c.d.block {
		if err := blk.FlushBuffers(c.d.f); err != nil {
			c.o.Log("dropping page cache of %s: %v", c.d.path, err)
		}
	} else {
		c.d.f.Sync()
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
	src, dst       dm.Dev
	srcSec, dstSec uint64 // physical sectors
	logSrc, logDst uint64 // logical sectors (in the endpoints)
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
		out = append(out, mappedRun{src: a.Dev, dst: b.Dev, srcSec: a.DevStart + aOff, dstSec: b.DevStart + bOff,
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
