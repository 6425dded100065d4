package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// world is a fake node for the engine: a sysfs tree, device-mapper tables and status, and
// devices whose answers each test scripts. Its arrays acknowledge EXTENDED COPY and NVMe Copy
// without moving a byte, so whatever the destination holds at the end was written by the
// host: a piece the engine wrongly counts as copied shows up as zeros.
type world struct {
	t      *testing.T
	sys    string
	devDir string

	mu       sync.Mutex
	tables   map[dm.Dev]dm.Layer
	status   map[dm.Dev]string
	ids      map[dm.Dev]*Device
	luns     map[string]*fakeLU // by device path
	nss      map[string]*fakeNS
	events   []string
	dropped  []string
	pauses   int
	onPause  func(n int)
	fsyncErr error
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, sys: t.TempDir(), devDir: t.TempDir(), tables: map[dm.Dev]dm.Layer{}, status: map[dm.Dev]string{},
		ids: map[dm.Dev]*Device{}, luns: map[string]*fakeLU{}, nss: map[string]*fakeNS{}}
	return w
}

func (w *world) event(format string, args ...any) {
	w.mu.Lock()
	w.events = append(w.events, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

// disk adds a block device to sysfs (and a node under devDir).
func (w *world) disk(name string, d dm.Dev, sectors uint64, files map[string]string) {
	dir := filepath.Join(w.sys, "devices", name)
	for k, v := range map[string]string{"dev": d.String(), "size": fmt.Sprint(sectors)} {
		files[k] = v
	}
	for k, v := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, k)), 0o755)
		os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o644)
	}
	os.MkdirAll(filepath.Join(w.sys, "dev", "block"), 0o755)
	os.MkdirAll(filepath.Join(w.sys, "class", "block"), 0o755)
	os.Symlink(filepath.Join("..", "..", "devices", name), filepath.Join(w.sys, "dev", "block", d.String()))
	os.Symlink(filepath.Join("..", "..", "devices", name), filepath.Join(w.sys, "class", "block", name))
	os.WriteFile(filepath.Join(w.devDir, name), nil, 0o644)
}

// lu adds a SCSI LU seen through path name (sdX) with its identity and copy parameters.
func (w *world) lu(name string, d dm.Dev, naa string, bs int, cp scsi.CopyParams) *fakeLU {
	w.disk(name, d, 1<<21, map[string]string{"device/wwid": "naa." + naa, "device/state": "running"})
	v, _ := hex.DecodeString(naa)
	id := &scsi.Identity{Inquiry: scsi.StandardInquiry{ThirdPartyCopy: true, Vendor: "PURE", Product: "FlashArray"},
		NAA: scsi.Designator{CodeSet: 1, Type: scsi.DesigNAA, Value: v}, HasNAA: true,
		Capacity: scsi.Capacity{BlockSize: uint32(bs), LastLBA: 1 << 30}, Copy: &cp}
	w.ids[d] = &Device{Dev: d, Name: name, Path: filepath.Join(w.devDir, name), Kind: KindSCSI, BlockSize: bs, SCSI: id, WWID: "naa." + naa}
	f := &fakeLU{w: w, name: name, inUse: map[byte]bool{}}
	w.luns[filepath.Join(w.devDir, name)] = f
	return f
}

// dmdev adds a device-mapper device with its table; under are its slaves.
func (w *world) dmdev(name string, d dm.Dev, uuid string, targets []dm.Target, under ...string) {
	var sectors uint64
	for _, t := range targets {
		sectors += t.Length
	}
	w.disk(name, d, sectors, map[string]string{"dm/name": name})
	for _, u := range under {
		os.MkdirAll(filepath.Join(w.sys, "devices", name, "slaves"), 0o755)
		os.WriteFile(filepath.Join(w.sys, "devices", name, "slaves", u), nil, 0o644)
	}
	w.tables[d] = dm.Layer{Info: dm.Info{Name: name, UUID: uuid, Dev: d}, Targets: targets}
}

func (w *world) Table(d dm.Dev) (dm.Info, []dm.Target, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, ok := w.tables[d]
	if !ok {
		return dm.Info{}, nil, fmt.Errorf("no device-mapper device %s", d)
	}
	return l.Info, l.Targets, nil
}

func (w *world) Status(d dm.Dev) (dm.Info, []dm.Target, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, ok := w.status[d]
	if !ok {
		return dm.Info{}, nil, fmt.Errorf("no status for %s", d)
	}
	l := w.tables[d]
	return l.Info, []dm.Target{{Start: 0, Length: l.Targets[0].Length, Type: "multipath", Params: st}}, nil
}

func (w *world) setTable(d dm.Dev, ts []dm.Target) {
	w.mu.Lock()
	l := w.tables[d]
	l.Targets = ts
	w.tables[d] = l
	w.mu.Unlock()
}

func (w *world) setStatus(d dm.Dev, st string) { w.mu.Lock(); w.status[d] = st; w.mu.Unlock() }

// devIO
func (w *world) identify(ctx context.Context, roots Roots, d dm.Dev) *Device {
	if x, ok := w.ids[d]; ok {
		return x
	}
	return &Device{Dev: d, Kind: KindOther, Err: errors.New("unknown device")}
}

func (w *world) openSCSI(path string) (SCSIDevice, error) {
	f, ok := w.luns[path]
	if !ok {
		return nil, fmt.Errorf("open %s: no such device", path)
	}
	return &fakeHandle{lu: f, path: filepath.Base(path)}, nil
}

func (w *world) openNVMe(path string) (nvmeDevice, error) {
	f, ok := w.nss[path]
	if !ok {
		return nil, fmt.Errorf("open %s: no such device", path)
	}
	return f, nil
}

func (w *world) dropCache(f *os.File) error {
	w.mu.Lock()
	w.dropped = append(w.dropped, filepath.Base(f.Name()))
	w.mu.Unlock()
	return nil
}

func (w *world) zeroOut(f *os.File, off, n int64) error { return errors.New("no BLKZEROOUT here") }

func (w *world) fsync(f *os.File) error {
	w.event("fsync %s", filepath.Base(f.Name()))
	if w.fsyncErr != nil {
		return w.fsyncErr
	}
	return f.Sync()
}

func (w *world) pause(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.pauses++
	n, hook := w.pauses, w.onPause
	w.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return ctx.Err()
}

// xcall is an EXTENDED COPY as the fake array decoded it from the parameter list bytes.
type xcall struct {
	path         string
	listID       byte
	usage        byte
	cscds        int
	segs         []xseg
	srcLU, dstLU string // designators of the CSCDs the segments name, hex
}

type xseg struct {
	blocks           uint16
	srcLBA, dstLBA   uint64
	srcCSCD, dstCSCD uint16
}

// decodeXCOPY reads an EXTENDED COPY(LID1) parameter list field by field as SPC-4 lays it out.
func decodeXCOPY(t *testing.T, path string, b []byte) xcall {
	if len(b) < 16 {
		t.Fatalf("parameter list of %d bytes", len(b))
	}
	tdl, sdl := int(binary.BigEndian.Uint16(b[2:])), int(binary.BigEndian.Uint32(b[8:]))
	if tdl%32 != 0 || sdl%28 != 0 || 16+tdl+sdl != len(b) {
		t.Fatalf("descriptor lengths %d+%d in %d bytes", tdl, sdl, len(b))
	}
	x := xcall{path: path, listID: b[0], usage: b[1] >> 3 & 3, cscds: tdl / 32}
	var names []string
	for i := 0; i < tdl/32; i++ {
		d := b[16+32*i:]
		names = append(names, hex.EncodeToString(d[8:8+int(d[7])]))
	}
	for i := 0; i < sdl/28; i++ {
		s := b[16+tdl+28*i:]
		x.segs = append(x.segs, xseg{blocks: binary.BigEndian.Uint16(s[10:]), srcLBA: binary.BigEndian.Uint64(s[12:]),
			dstLBA: binary.BigEndian.Uint64(s[20:]), srcCSCD: binary.BigEndian.Uint16(s[4:]), dstCSCD: binary.BigEndian.Uint16(s[6:])})
		x.srcLU, x.dstLU = names[x.segs[i].srcCSCD], names[x.segs[i].dstCSCD]
	}
	return x
}

// fakeLU is one destination LU of the fake array.
type fakeLU struct {
	w     *world
	name  string
	mu    sync.Mutex
	calls []xcall
	syncs int
	// xcopy answers the n-th EXTENDED COPY (0-based); nil: GOOD.
	xcopy func(n int, x xcall) error
	sync  func(n int, path string) error
	delay time.Duration
	// in flight, and the largest number seen at once; list identifiers in use
	inFlight, maxInFlight int
	inUse                 map[byte]bool
	dupIDs                int
}

type fakeHandle struct {
	lu   *fakeLU
	path string
}

func (h *fakeHandle) Close() error { return nil }

func (h *fakeHandle) Pause(ctx context.Context, d time.Duration) error { return ctx.Err() }

func (h *fakeHandle) Exec(ctx context.Context, cdb []byte, dir scsi.Direction, data []byte) (int, error) {
	f := h.lu
	switch cdb[0] {
	case scsi.OpThirdPartyCopyOut:
		x := decodeXCOPY(f.w.t, h.path, data)
		f.mu.Lock()
		n := len(f.calls)
		f.calls = append(f.calls, x)
		f.inFlight++
		f.maxInFlight = max(f.maxInFlight, f.inFlight)
		if x.usage != 3 {
			if f.inUse[x.listID] {
				f.dupIDs++
			}
			f.inUse[x.listID] = true
		}
		f.mu.Unlock()
		f.w.event("xcopy %s %s", f.name, h.path)
		time.Sleep(f.delay)
		f.mu.Lock()
		f.inFlight--
		if x.usage != 3 {
			delete(f.inUse, x.listID)
		}
		fn := f.xcopy
		f.mu.Unlock()
		if fn != nil {
			return 0, fn(n, x)
		}
		return 0, nil
	case scsi.OpSyncCache10, scsi.OpSyncCache16:
		f.mu.Lock()
		n := f.syncs
		f.syncs++
		fn := f.sync
		f.mu.Unlock()
		f.w.event("sync %s %s", f.name, h.path)
		if fn != nil {
			return 0, fn(n, h.path)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("fake LU: unexpected command %#02x", cdb[0])
}

func (f *fakeLU) copies() []xcall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]xcall(nil), f.calls...)
}

// fakeNS is an NVMe namespace of the fake subsystem.
type fakeNS struct {
	w      *world
	name   string
	mu     sync.Mutex
	copies []nvme.Copy
	copy   func(n int) error
	flush  func(n int) error
	nflush int
}

func (f *fakeNS) Copy(ctx context.Context, c nvme.Copy) error {
	f.mu.Lock()
	n := len(f.copies)
	f.copies = append(f.copies, c)
	fn := f.copy
	f.mu.Unlock()
	f.w.event("nvme copy %s", f.name)
	if fn != nil {
		return fn(n)
	}
	return nil
}

func (f *fakeNS) Flush(ctx context.Context, nsid uint32) error {
	f.mu.Lock()
	n := f.nflush
	f.nflush++
	fn := f.flush
	f.mu.Unlock()
	f.w.event("nvme flush %s", f.name)
	if fn != nil {
		return fn(n)
	}
	return nil
}

func (f *fakeNS) Close() error { return nil }

// endpoints makes the source (random bytes) and destination (zeros) of n bytes, standing for
// the block devices src and dst with logical block size bs.
func (w *world) endpoints(src, dst dm.Dev, n int64, bs int) (*file, *file, []byte) {
	return w.endpointsSized(src, dst, n, n, bs)
}

func (w *world) endpointsSized(src, dst dm.Dev, srcN, n int64, bs int) (*file, *file, []byte) {
	data := make([]byte, srcN)
	rand.Read(data)
	sp, dp := filepath.Join(w.devDir, "src-lv"), filepath.Join(w.devDir, "dst-lv")
	os.WriteFile(sp, data, 0o644)
	os.WriteFile(dp, make([]byte, n), 0o644)
	sf, err := os.Open(sp)
	if err != nil {
		w.t.Fatal(err)
	}
	df, err := os.OpenFile(dp, os.O_RDWR, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { sf.Close(); df.Close() })
	return &file{path: sp, f: sf, block: true, dev: src, size: srcN, bs: bs},
		&file{path: dp, f: df, block: true, dev: dst, size: n, bs: bs}, data
}

// copier builds the engine's copier on the fake node.
func (w *world) copier(s, d *file, o Options) *copier {
	o.Tables, o.Roots, o.LVMLockDir, o.io = w, Roots{Sys: w.sys, Dev: w.devDir}, w.t.TempDir(), w
	if o.HostChunk == 0 {
		o.HostChunk = 1 << 20
	}
	var mu sync.Mutex
	o.Log = func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		w.t.Logf("engine: "+f, a...)
	}
	o.defaults()
	return newCopier(o, s, d, s.size)
}

func (w *world) dstContent(d *file) []byte {
	b, err := os.ReadFile(d.path)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *world) eventList() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.events...)
}

// lioParams are LIO's copy operating parameters (target_rcr_operating_parameters).
func lioParams() scsi.CopyParams {
	return scsi.CopyParams{SNLID: true, MaxTargetDescriptors: 2, MaxSegmentDescriptors: 1, MaxDescriptorListLen: 1024,
		MaxSegmentLength: 1 << 20, TotalConcurrentCopies: 1, MaxConcurrentCopies: 1, DataSegmentGranLog2: 9,
		Implemented: []byte{scsi.SegBlockToBlock, scsi.TargetIdentificationE4}}
}

const (
	naaB = "624a93706c1b16ce1c034d1c0000b001"
	naaC = "624a93706c1b16ce1c034d1c0000c001"
	naaD = "624a93706c1b16ce1c034d1c0000d001"
)

var (
	sdb, sdc, sdd, sde = dm.Dev{Major: 8, Minor: 16}, dm.Dev{Major: 8, Minor: 32}, dm.Dev{Major: 8, Minor: 48}, dm.Dev{Major: 8, Minor: 64}
	dm0, dm1, dm2, dm3 = dm.Dev{Major: 253}, dm.Dev{Major: 253, Minor: 1}, dm.Dev{Major: 253, Minor: 2}, dm.Dev{Major: 253, Minor: 3}
)

// twoLUs: the source LV (vga-src, 253:1) on LU B (sdb) at sector 2048, the destination LV
// (vgb-dst, 253:2) on LU C (sdc) at sector 8192, n bytes each.
func twoLUs(t *testing.T, n int64, cp scsi.CopyParams) (*world, *fakeLU, *fakeLU) {
	w := newWorld(t)
	b := w.lu("sdb", sdb, naaB, 512, cp)
	c := w.lu("sdc", sdc, naaC, 512, cp)
	w.dmdev("dm-1", dm1, "LVM-aaaa", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "8:16 2048"}}, "sdb")
	w.dmdev("dm-2", dm2, "LVM-bbbb", []dm.Target{{Start: 0, Length: uint64(n / 512), Type: "linear", Params: "8:32 8192"}}, "sdc")
	w.tables[dm1] = dm.Layer{Info: dm.Info{Name: "vga-src", UUID: "LVM-aaaa", Dev: dm1}, Targets: w.tables[dm1].Targets}
	w.tables[dm2] = dm.Layer{Info: dm.Info{Name: "vgb-dst", UUID: "LVM-bbbb", Dev: dm2}, Targets: w.tables[dm2].Targets}
	return w, b, c
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("%s: destination differs from the source at byte %d (of %d)", what, i, len(want))
		}
	}
}

func joined(ss []string) string { return strings.Join(ss, "\n") }
