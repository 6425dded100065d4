//go:build lab

// In-guest tests of what keeps a copy from losing or corrupting a write: the flush after the
// last write (QEMU's blklogwrites logs every write and flush the guest sends), block sizes
// taken from each device (4096-byte LUNs and namespaces, a VG mixing 512 and 4096), NVMe
// protection information, LVs that move during a copy, and a path that goes offline.
package engine_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// disk finds a disk labrun attached with -disk name=serial, or fails the test.
func disk(t *testing.T, serial string) string {
	t.Helper()
	d, err := guest.DiskBySerial(serial)
	if err != nil {
		t.Fatalf("%v (lab/run-tests.sh attaches it)", err)
	}
	return d
}

// namespace finds an NVMe namespace by NSID.
func namespace(t *testing.T, nsid uint32) string {
	t.Helper()
	ns, err := guest.NVMeNamespaces()
	must(t, err)
	p, ok := ns[nsid]
	if !ok {
		t.Fatalf("no NVMe namespace %d (lab/run-tests.sh attaches it with -nvme-extra)", nsid)
	}
	return p
}

// vg makes a volume group on devs with LVs of the given sizes (MiB), each allocated on the
// first PV unless said otherwise, and removes it when the test ends.
func vg(t *testing.T, name string, devs []string, lvs map[string]int64, extra ...string) {
	t.Helper()
	for _, d := range devs {
		if out, err := guest.Run("pvcreate", append(append([]string{}, extra...), "-ff", "-y", d)...); err != nil {
			t.Fatalf("pvcreate %s: %v %s", d, err, out)
		}
	}
	if out, err := guest.Run("vgcreate", append(append(append([]string{}, extra...), name), devs...)...); err != nil {
		t.Fatalf("vgcreate %s: %v %s", name, err, out)
	}
	t.Cleanup(func() { guest.Run("vgremove", append(append([]string{}, extra...), "-ff", "-y", name)...) })
	for n, size := range lvs {
		if out, err := guest.Run("lvcreate", append(append([]string{}, extra...), "-y", "-Wy", "-Zn", "-L", fmt.Sprintf("%dM", size), "-n", n, name, devs[0])...); err != nil {
			t.Fatalf("lvcreate %s/%s: %v %s", name, n, err, out)
		}
	}
}

// logTo passes the engine's lines to the test log and closes ready at the first line that
// contains sub.
func logTo(t *testing.T, sub string, ready chan struct{}) func(string, ...any) {
	var once sync.Once
	return func(f string, a ...any) {
		line := fmt.Sprintf(f, a...)
		t.Logf("engine: %s", line)
		if ready != nil && strings.Contains(line, sub) {
			once.Do(func() { close(ready) })
		}
	}
}

// ioreqs is the number of commands the SCSI layer sent to a device (device/iorequest_cnt).
func ioreqs(t *testing.T, dev string) int64 {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "device", "iorequest_cnt"))
	must(t, err)
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 0, 64)
	must(t, err)
	return n
}

// afterCommands runs fn in the background once the engine has planned its copy (planned is
// closed) and dev has taken n more commands (n EXTENDED COPY commands, since nothing else
// goes to it then); it gives up when the copy returns first (done is closed). Wait on the
// result before looking at what fn did.
func afterCommands(t *testing.T, planned, done chan struct{}, dev string, n int64, fn func()) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-planned:
		case <-done:
			return
		}
		start := ioreqs(t, dev)
		for ioreqs(t, dev) < start+n {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
		fn()
	}()
	return &wg
}

func devNumber(t *testing.T, path string) string {
	var st unix.Stat_t
	must(t, unix.Stat(path, &st))
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

func sectors(t *testing.T, dev string) int64 {
	b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(dev), "size"))
	must(t, err)
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	must(t, err)
	return n
}

func setupLIO(t *testing.T) {
	t.Helper()
	if lio != nil {
		return
	}
	var err error
	lio, err = guest.SetupLIO()
	must(t, err)
}

// lunsOn partitions disk into n and makes each partition an iblock LUN (a Pure serial built
// from id), mapped through every target given; it returns the LUNs and, per target, their
// devices.
func lunsOn(t *testing.T, disk string, id, n int, targets ...*guest.Target) ([]*guest.LUN, [][]string) {
	t.Helper()
	parts, err := guest.Partition(disk, n)
	must(t, err)
	var luns []*guest.LUN
	devs := make([][]string, len(targets))
	for i, p := range parts {
		l, err := lio.CreateBlockLUN(fmt.Sprintf("l%d_%d", id, i), p, fmt.Sprintf("6C1B16CE1C034D1C%06X%02X", id, i))
		must(t, err)
		luns = append(luns, l)
		for j, tg := range targets {
			d, err := tg.Map(l, i)
			must(t, err)
			devs[j] = append(devs[j], d)
		}
	}
	return luns, devs
}

// TestDurabilityFlushAfterLastWrite: on disks whose every write and flush QEMU logs, the copy
// is followed by a cache flush after its last write, for the host copy, EXTENDED COPY and
// NVMe Copy.
func TestDurabilityFlushAfterLastWrite(t *testing.T) {
	const size = 64 * mib
	check := func(t *testing.T, logName string, copy func() *engine.Result, want func(*engine.Result) bool) {
		logPath := "/mnt/host/" + logName + ".log"
		before, err := guest.ReadWriteLog(logPath)
		must(t, err)
		res := copy()
		if !want(res) {
			dmesg, _ := guest.Run("dmesg")
			if lines := strings.Split(strings.TrimSpace(dmesg), "\n"); len(lines) > 40 {
				dmesg = strings.Join(lines[len(lines)-40:], "\n")
			}
			t.Fatalf("copy result %+v\nkernel log:\n%s", res, dmesg)
		}
		after, err := guest.ReadWriteLog(logPath)
		must(t, err)
		if err := guest.FlushAfterLastWrite(after, len(before)); err != nil {
			t.Fatalf("%s: %v", logName, err)
		}
		t.Logf("%s: %d entries logged during the copy, the last write followed by a flush", logName, len(after)-len(before))
	}
	t.Run("host", func(t *testing.T) {
		d := disk(t, "dlog")
		vg(t, "vgdl", []string{d}, map[string]int64{"src": 64, "dst": 64})
		must(t, guest.WritePattern("/dev/vgdl/src", 71, 0, size))
		check(t, "dlog", func() *engine.Result {
			res, err := engine.Copy(ctx, "/dev/vgdl/src", "/dev/vgdl/dst", engine.Options{ForceHost: true, Log: logTo(t, "", nil)})
			must(t, err)
			return res
		}, func(r *engine.Result) bool { return r.HostCopied+r.Zeroed == size })
		sameContent(t, "/dev/vgdl/src", "/dev/vgdl/dst", size)
	})
	t.Run("xcopy", func(t *testing.T) {
		setupLIO(t)
		tg, err := lio.CreateTarget(31)
		must(t, err)
		_, devs := lunsOn(t, disk(t, "xlog"), 31, 2, tg)
		vg(t, "vgxs", devs[0][:1], map[string]int64{"src": 64})
		vg(t, "vgxd", devs[0][1:], map[string]int64{"dst": 64})
		must(t, guest.WritePattern("/dev/vgxs/src", 72, 0, size))
		check(t, "xlog", func() *engine.Result {
			res, err := engine.Copy(ctx, "/dev/vgxs/src", "/dev/vgxd/dst", engine.Options{Log: logTo(t, "", nil)})
			must(t, err)
			return res
		}, func(r *engine.Result) bool { return r.Offloaded == size })
		sameContent(t, "/dev/vgxs/src", "/dev/vgxd/dst", size)
	})
	t.Run("nvme", func(t *testing.T) {
		vg(t, "vgnl", []string{namespace(t, 6)}, map[string]int64{"src": 64, "dst": 64})
		must(t, guest.WritePattern("/dev/vgnl/src", 73, 0, size))
		check(t, "ns6", func() *engine.Result {
			res, err := engine.Copy(ctx, "/dev/vgnl/src", "/dev/vgnl/dst", engine.Options{Log: logTo(t, "", nil)})
			must(t, err)
			return res
		}, func(r *engine.Result) bool { return r.Offloaded == size })
		sameContent(t, "/dev/vgnl/src", "/dev/vgnl/dst", size)
	})
}

// offloaded fills src with pattern seed, copies it onto dst and checks that the copy was
// offloaded whole and reads back equal.
func offloaded(t *testing.T, src, dst string, size int64, seed uint64) *engine.Result {
	t.Helper()
	must(t, guest.WritePattern(src, seed, 0, size))
	res, err := engine.Copy(ctx, src, dst, engine.Options{Log: logTo(t, "", nil)})
	must(t, err)
	if res.Offloaded != size {
		t.Fatalf("not offloaded: %+v", res)
	}
	must(t, guest.CheckPattern(dst, 0, size, seed, 0))
	return res
}

// TestBlockSizes: 4096-byte LIO LUNs and a 4 KiB NVMe namespace copied end to end, and a VG
// mixing a 512-byte and a 4096-byte namespace (the LV has 4096-byte blocks; LBAs on the
// 512-byte PV must still count 512-byte blocks).
func TestBlockSizes(t *testing.T) {
	t.Run("lio4k", func(t *testing.T) {
		setupLIO(t)
		tg, err := lio.CreateTarget(32)
		must(t, err)
		_, devs := lunsOn(t, disk(t, "d4k"), 32, 2, tg)
		if bs, _ := os.ReadFile("/sys/block/" + filepath.Base(devs[0][0]) + "/queue/logical_block_size"); strings.TrimSpace(string(bs)) != "4096" {
			t.Fatalf("LUN block size %q, want 4096", bs)
		}
		vg(t, "vg4s", devs[0][:1], map[string]int64{"src": 128})
		vg(t, "vg4d", devs[0][1:], map[string]int64{"dst": 128})
		offloaded(t, "/dev/vg4s/src", "/dev/vg4d/dst", 128*mib, 81)
	})
	t.Run("nvme4k", func(t *testing.T) {
		ns := namespace(t, 4)
		vg(t, "vgn4", []string{ns}, map[string]int64{"src": 128, "dst": 128})
		offloaded(t, "/dev/vgn4/src", "/dev/vgn4/dst", 128*mib, 82)
	})
	t.Run("mixed", func(t *testing.T) {
		mixed := []string{"--config", "devices/allow_mixed_block_sizes=1"}
		n512, n4k := namespace(t, 7), namespace(t, 4)
		vg(t, "vgmix", []string{n512, n4k}, nil, mixed...)
		// Each LV: 32 MiB on the 512-byte PV, then 32 MiB on the 4096-byte PV.
		for _, n := range []string{"m1", "m2"} {
			if out, err := guest.Run("lvcreate", append(append([]string{}, mixed...), "-y", "-Wy", "-Zn", "-L", "32M", "-n", n, "vgmix", n512)...); err != nil {
				t.Fatalf("lvcreate: %v %s", err, out)
			}
			if out, err := guest.Run("lvextend", append(append([]string{}, mixed...), "-L", "+32M", "vgmix/"+n, n4k)...); err != nil {
				t.Fatalf("lvextend: %v %s", err, out)
			}
		}
		if bs, _ := os.ReadFile("/sys/dev/block/" + devNumber(t, "/dev/vgmix/m1") + "/queue/logical_block_size"); strings.TrimSpace(string(bs)) != "4096" {
			t.Fatalf("LV block size %q, want 4096 (a segment on the 4096-byte PV)", bs)
		}
		offloaded(t, "/dev/vgmix/m1", "/dev/vgmix/m2", 64*mib, 83)
	})
}

// TestNVMeProtectionInformation: two LVs on a namespace formatted with PI type 1 (QEMU
// pi=1, ms=8): the Copy writes protection information for the destination LBAs, so the
// kernel's reference tag checks pass when the copy is read back.
func TestNVMeProtectionInformation(t *testing.T) {
	ns := namespace(t, 5)
	if f, _ := os.ReadFile("/sys/block/" + filepath.Base(ns) + "/integrity/format"); !strings.Contains(string(f), "TYPE1") {
		t.Fatalf("namespace 5 integrity format %q: want T10-DIF-TYPE1", f)
	}
	vg(t, "vgpi", []string{ns}, map[string]int64{"src": 64, "dst": 64})
	// Read back through the kernel: each block's guard and reference tag are checked.
	res := offloaded(t, "/dev/vgpi/src", "/dev/vgpi/dst", 64*mib, 91)
	if !strings.Contains(strings.Join(res.Methods, " "), "protection information type 1") {
		t.Fatalf("PI not handled: %+v", res)
	}
}

// movingSetup: VG vgpm on two LUNs (partitions of disk dk) of one LIO target (one array),
// src (a pattern) and dst (zeros) on the first.
func movingSetup(t *testing.T, dk string, id int, size int64) (a, b string) {
	setupLIO(t)
	tg, err := lio.CreateTarget(id)
	must(t, err)
	_, devs := lunsOn(t, disk(t, dk), id, 2, tg)
	a, b = devs[0][0], devs[0][1]
	vg(t, "vgpm", []string{a, b}, map[string]int64{"src": size / mib, "dst": size / mib})
	must(t, guest.WritePattern("/dev/vgpm/src", 95, 0, size))
	must(t, guest.Zero("/dev/vgpm/dst", 0, size))
	return a, b
}

// TestMovingExtents: the destination LV moves while it is being copied.
func TestMovingExtents(t *testing.T) {
	const size = 512 * mib
	exec.Command("modprobe", "-a", "dm_mirror", "dm_log").Run()
	// pvmove started during an offloaded copy waits for the copy's LVM read lock: the result
	// is the source, and the LV ends up moved.
	t.Run("pvmove", func(t *testing.T) {
		a, b := movingSetup(t, "pm1", 33, size)
		planned, done := make(chan struct{}), make(chan struct{})
		var pvmoveOut []byte
		var pvmoveErr error
		var pvmoveStart, pvmoveDone time.Time
		tableBefore, _ := guest.Output("dmsetup", "table", "vgpm-dst")
		wg := afterCommands(t, planned, done, a, 2, func() {
			cmd := exec.Command("pvmove", "--config", "global/use_lvmpolld=0", "-i", "1", "-n", "dst", a, b)
			pvmoveStart = time.Now()
			pvmoveOut, pvmoveErr = cmd.CombinedOutput()
			pvmoveDone = time.Now()
		})
		res, err := engine.Copy(ctx, "/dev/vgpm/src", "/dev/vgpm/dst", engine.Options{Log: logTo(t, "copy method sd", planned)})
		copyDone := time.Now()
		tableAtEnd, _ := guest.Output("dmsetup", "table", "vgpm-dst")
		close(done)
		wg.Wait()
		must(t, err)
		if pvmoveDone.IsZero() {
			t.Fatal("pvmove was never started: the copy ended before two commands went out")
		}
		if pvmoveErr != nil {
			t.Fatalf("pvmove: %v %s", pvmoveErr, pvmoveOut)
		}
		// pvmove was started during the copy, and had not remapped the LV when it ended:
		// it waited for the copy's LVM lock.
		if !pvmoveStart.Before(copyDone) || tableAtEnd != tableBefore {
			t.Errorf("pvmove started %s before the copy's end; the LV's table then: %q (before: %q)",
				copyDone.Sub(pvmoveStart), tableAtEnd, tableBefore)
		}
		out, _ := guest.Output("lvs", "--noheadings", "-o", "devices", "vgpm/dst")
		if !strings.Contains(out, b) {
			t.Errorf("dst not moved to %s: %s", b, out)
		}
		t.Logf("copy %+v; pvmove done %s after it", res, pvmoveDone.Sub(copyDone).Round(time.Millisecond))
		sameContent(t, "/dev/vgpm/src", "/dev/vgpm/dst", size)
	})
	// A table reload that bypasses LVM (another node's pvmove, dmsetup): the engine sees the
	// new table before its next command, stops offloading and copies again, through the new
	// mapping, what it had offloaded.
	t.Run("table", func(t *testing.T) {
		a, b := movingSetup(t, "pm2", 34, size)
		sec := size / 512
		far := sectors(t, b) - sec - 8192
		must(t, guest.Zero(b, far*512, size))
		planned, done := make(chan struct{}), make(chan struct{})
		var swapped time.Time
		var swapErr error
		wg := afterCommands(t, planned, done, a, 2, func() {
			table := fmt.Sprintf("0 %d linear %s %d", sec, devNumber(t, b), far)
			for _, args := range [][]string{{"suspend", "vgpm-dst"}, {"load", "vgpm-dst", "--table", table}, {"resume", "vgpm-dst"}} {
				if out, err := guest.Run("dmsetup", args...); err != nil {
					swapErr = fmt.Errorf("dmsetup %v: %v %s", args, err, out)
					return
				}
			}
			swapped = time.Now()
		})
		res, err := engine.Copy(ctx, "/dev/vgpm/src", "/dev/vgpm/dst", engine.Options{Log: logTo(t, "copy method sd", planned)})
		returned := time.Now()
		close(done)
		wg.Wait()
		must(t, err)
		must(t, swapErr)
		if swapped.IsZero() || swapped.After(returned) {
			t.Fatalf("the table was not swapped before the copy returned: nothing tested")
		}
		if !strings.Contains(strings.Join(res.Fallbacks, " "), "mapping changed") || res.Redone == 0 {
			t.Fatalf("the change went unnoticed: %+v", res)
		}
		t.Logf("copy %+v", res)
		sameContent(t, "/dev/vgpm/src", "/dev/vgpm/dst", size)
	})
}

// TestMultipathPathOffline: the destination LU reached through two LIO fabrics (two
// tcm_loop targets) under dm-multipath; the path EXTENDED COPY uses goes offline mid-copy:
// the copy goes on through the other path, offloaded, and is right.
func TestMultipathPathOffline(t *testing.T) {
	const size = 512 * mib
	setupLIO(t)
	exec.Command("modprobe", "-a", "dm_multipath", "dm_round_robin").Run()
	ta, err := lio.CreateTarget(35)
	must(t, err)
	tb, err := lio.CreateTarget(36)
	must(t, err)
	luns, devs := lunsOn(t, disk(t, "mp"), 35, 2, ta, tb)
	maps := map[string][2]string{"mps": {devs[0][0], devs[1][0]}, "mpd": {devs[0][1], devs[1][1]}}
	for i, name := range []string{"mps", "mpd"} {
		p := maps[name]
		if p[0] == p[1] {
			t.Fatalf("%s: both paths are %s: the second target's device was not found", name, p[0])
		}
		table := fmt.Sprintf("0 %d multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 %s 1 %s 1",
			sectors(t, p[0]), devNumber(t, p[0]), devNumber(t, p[1]))
		if out, err := guest.Run("dmsetup", "create", name, "--uuid", "mpath-3"+luns[i].NAA, "--table", table); err != nil {
			t.Fatalf("dmsetup create %s: %v %s", name, err, out)
		}
		guest.Run("dmsetup", "mknodes", name) // no udev in the guest
		t.Cleanup(func() { guest.Run("dmsetup", "remove", name) })
	}
	vg(t, "vgmps", []string{"/dev/mapper/mps"}, map[string]int64{"src": size / mib})
	vg(t, "vgmpd", []string{"/dev/mapper/mpd"}, map[string]int64{"dst": size / mib})
	must(t, guest.WritePattern("/dev/vgmps/src", 97, 0, size))
	dA, dB := maps["mpd"][0], maps["mpd"][1]
	state := func(d string) string { return "/sys/block/" + filepath.Base(d) + "/device/state" }
	t.Cleanup(func() { os.WriteFile(state(dA), []byte("running\n"), 0o644) })
	planned, done := make(chan struct{}), make(chan struct{})
	var offAt, bAt int64
	wg := afterCommands(t, planned, done, dA, 2, func() {
		bAt, offAt = ioreqs(t, dB), ioreqs(t, dA)
		os.WriteFile(state(dA), []byte("offline\n"), 0o644)
	})
	// The engine waits for a path for as long as the map queues I/O: bound the test.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	res, err := engine.Copy(cctx, "/dev/vgmps/src", "/dev/vgmpd/dst", engine.Options{Log: logTo(t, "copy method sd", planned)})
	close(done)
	wg.Wait()
	must(t, err)
	if offAt == 0 {
		t.Fatal("the path was never taken offline")
	}
	t.Logf("copy %+v; path %s offline after %d commands; %s took %d commands after that", res, dA, offAt, dB, ioreqs(t, dB)-bAt)
	if res.Offloaded != size {
		t.Fatalf("with one path left the copy must stay offloaded: %+v", res)
	}
	if ioreqs(t, dB) <= bAt {
		t.Fatalf("no command went through %s after %s went offline", dB, dA)
	}
	sameContent(t, "/dev/vgmps/src", "/dev/vgmpd/dst", size)
}
