//go:build lab

// In-guest tests of the copy engine on real LVs: offloaded (XCOPY on LIO, NVMe Copy 2h on
// QEMU) and every fallback, each verified by content, with the host I/O measured.
package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

var (
	ctx     = context.Background()
	lv      = &lvm.LVM{Run: &runner.Exec{Timeout: 2 * time.Minute}}
	setupMu sync.Mutex
	lio     *guest.LIO
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fill writes pattern seed into a few regions of an LV (start, middle, end) and leaves the
// rest zero, so a full-content comparison is meaningful without writing every byte.
// fill writes pattern seed at the start, middle and end of path (32 MiB each) and zeros
// between them: a new LV holds whatever its extents held before (an earlier suite's data),
// and the zero-range tests count on the zeros.
func fill(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	for _, off := range []int64{0, size / 2, size - 32*mib} {
		must(t, guest.WritePattern(path, seed, off, 32*mib))
	}
	must(t, guest.Zero(path, 32*mib, size/2-32*mib))
	must(t, guest.Zero(path, size/2+32*mib, size/2-64*mib))
}

func sameContent(t *testing.T, a, b string, size int64) {
	t.Helper()
	if err := guest.SameContent(a, b, 0, 0, size); err != nil {
		t.Fatalf("after the copy: %v", err)
	}
}

func newVG(t *testing.T, name, dev string, lvs map[string]int64) {
	t.Helper()
	out, err := guest.Run("pvcreate", "-ff", "-y", dev)
	if err != nil {
		t.Fatalf("pvcreate %s: %v %s", dev, err, out)
	}
	if out, err := guest.Run("vgcreate", name, dev); err != nil {
		t.Fatalf("vgcreate: %v %s", err, out)
	}
	for n, size := range lvs {
		must(t, lv.Create(ctx, name, n, size, lvm.CreateOptions{Tags: []string{"pve-vm-100"}}))
	}
	t.Cleanup(func() { guest.Run("vgremove", "-ff", "-y", name) })
}

func logf(t *testing.T) func(string, ...any) {
	return func(f string, a ...any) { t.Logf("engine: "+f, a...) }
}

// writeZeroesMax is what the block layer says a device (or the LV behind a /dev link) can
// zero without data.
func writeZeroesMax(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat(path, &st))
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/queue/write_zeroes_max_bytes", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	must(t, err)
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	must(t, err)
	return n
}

func TestXCOPYLVToLVOnLIO(t *testing.T) {
	var err error
	lio, err = guest.SetupLIO()
	must(t, err)
	parts, err := guest.Partition("/dev/vda", 3)
	must(t, err)
	arrayA, err := lio.CreateTarget(21)
	must(t, err)
	arrayB, err := lio.CreateTarget(22)
	must(t, err)
	lunS, _ := lio.CreateBlockLUN("s", parts[0], "6C1B16CE1C034D1C0000B001")
	lunD, _ := lio.CreateBlockLUN("d", parts[1], "6C1B16CE1C034D1C0000B002")
	lunF, _ := lio.CreateBlockLUN("f", parts[2], "6C1B16CE1C034D1C0000B003")
	sdS, err := arrayA.Map(lunS, 0)
	must(t, err)
	sdD, err := arrayA.Map(lunD, 1)
	must(t, err)
	sdF, err := arrayB.Map(lunF, 0) // another "array": not reachable from array A's LUs
	must(t, err)
	newVG(t, "vga", sdS, map[string]int64{"src": gib})
	newVG(t, "vgb", sdD, map[string]int64{"dst": gib, "dst2": 256 * mib})
	newVG(t, "vgf", sdF, map[string]int64{"foreign": 256 * mib})
	fill(t, "/dev/vga/src", gib, 31)

	// 1 GiB LV -> LV offloaded with EXTENDED COPY.
	before := guest.SnapStats(sdS, sdD)
	start := time.Now()
	res, err := engine.Copy(ctx, "/dev/vga/src", "/dev/vgb/dst", engine.Options{Log: logf(t)})
	must(t, err)
	host := guest.HostBytes(before, guest.SnapStats(sdS, sdD))
	t.Logf("XCOPY 1 GiB LV in %s: offloaded %d, host %d, zeroed %d; host bytes on the initiator devices: %d (%.3f%% of the LV)",
		time.Since(start).Round(time.Millisecond), res.Offloaded, res.HostCopied, res.Zeroed, host, 100*float64(host)/float64(gib))
	if res.Offloaded != gib || res.HostCopied != 0 || len(res.Fallbacks) != 0 {
		t.Fatalf("not offloaded: %+v", res)
	}
	if host > gib/100 {
		t.Fatalf("host moved %d bytes (> 1%% of the LV) during an offloaded copy", host)
	}
	if !strings.Contains(strings.Join(res.Methods, " "), "EXTENDED COPY") {
		t.Errorf("method line %v", res.Methods)
	}
	sameContent(t, "/dev/vga/src", "/dev/vgb/dst", gib)
	fmt.Printf("RESULT xcopy_1gib_seconds=%.3f host_bytes=%d\n", time.Since(start).Seconds(), host)

	// Cross-"array": LIO cannot reach the other target's LU: falls back per extent, says why.
	res, err = engine.CopyRange(ctx, engine.Endpoint{Path: "/dev/vga/src"}, engine.Endpoint{Path: "/dev/vgf/foreign"}, 256*mib, engine.Options{Log: logf(t)})
	must(t, err)
	if res.HostCopied+res.Zeroed != 256*mib || len(res.Fallbacks) != 1 || !strings.Contains(res.Fallbacks[0], "copy target device not reachable") {
		t.Fatalf("cross-array: %+v", res)
	}
	sameContent(t, "/dev/vgf/foreign", "/dev/vga/src", 32*mib)

	// Forced host copy.
	var engineLog []string
	var logMu sync.Mutex
	capture := func(f string, a ...any) {
		logMu.Lock()
		engineLog = append(engineLog, fmt.Sprintf(f, a...))
		logMu.Unlock()
		logf(t)(f, a...)
	}
	res, err = engine.CopyRange(ctx, engine.Endpoint{Path: "/dev/vga/src"}, engine.Endpoint{Path: "/dev/vgb/dst2"}, 256*mib,
		engine.Options{ForceHost: true, Verify: true, Log: capture})
	must(t, err)
	// The zero part goes as BLKZEROOUT where the device zeroes without data, as data elsewhere.
	wz := writeZeroesMax(t, "/dev/vgb/dst2")
	wantZeroed := int64(0)
	if wz > 0 {
		wantZeroed = 224 * mib
	}
	t.Logf("forced host copy onto a device with write_zeroes_max_bytes=%d: %+v", wz, res)
	// Should BLKZEROOUT fail, the engine says so and writes the rest as data: then less is
	// zeroed, but never nothing where the device zeroes.
	zeroFailed := strings.Contains(strings.Join(engineLog, "\n"), "zeroing on /dev/vgb/dst2 failed")
	switch {
	case res.Offloaded != 0 || res.HostCopied+res.Zeroed != 256*mib:
		t.Fatalf("forced host copy: %+v", res)
	case res.Zeroed != wantZeroed && !(zeroFailed && res.Zeroed > 0 && res.Zeroed < wantZeroed):
		t.Fatalf("forced host copy: %+v (write_zeroes_max_bytes %d: %d bytes should go as BLKZEROOUT)", res, wz, wantZeroed)
	}

	// A destination in use is refused: open by another process (a running VM's QEMU), mounted.
	holder := exec.Command("sh", "-c", "exec 3</dev/vgb/dst2; sleep 30")
	must(t, holder.Start())
	time.Sleep(200 * time.Millisecond)
	_, err = engine.Copy(ctx, "/dev/vgf/foreign", "/dev/vgb/dst2", engine.Options{})
	holder.Process.Kill()
	holder.Wait()
	if !errors.Is(err, engine.ErrBusy) || !strings.Contains(err.Error(), "open by process") {
		t.Fatalf("destination open by another process: %v", err)
	}
	must(t, exec.Command("mkfs.ext4", "-q", "/dev/vgb/dst2").Run())
	os.MkdirAll("/mnt/busy", 0o755)
	exec.Command("modprobe", "ext4").Run()
	if out, err := guest.Run("mount", "-t", "ext4", "/dev/vgb/dst2", "/mnt/busy"); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	_, err = engine.Copy(ctx, "/dev/vgf/foreign", "/dev/vgb/dst2", engine.Options{})
	exec.Command("umount", "/mnt/busy").Run()
	if !errors.Is(err, engine.ErrBusy) {
		t.Fatalf("mounted destination: %v", err)
	}
}

func nvmeVGs(t *testing.T) {
	ns, err := guest.NVMeNamespaces()
	must(t, err)
	newVG(t, "vgn1", ns[1], map[string]int64{"src": gib})
	newVG(t, "vgn2", ns[2], map[string]int64{"dst": gib})
	fill(t, "/dev/vgn1/src", gib, 41)
	if guest.KernelAtLeast(6, 12, 110) {
		must(t, guest.WritePattern("/dev/vgn1/src", 41, 100*mib, 32*mib)) // inside the 256 MiB copied there
	}
}

// TestNVMeCopyLVToLV: format 2h cross-namespace where the kernel lets pvesnap enable it
// (6.12.107); on kernels that refuse (6.12.117) the same copy falls back with the reason.
func TestNVMeCopyLVToLV(t *testing.T) {
	nvmeVGs(t)
	ns, _ := guest.NVMeNamespaces()
	size := gib
	if guest.KernelAtLeast(6, 12, 110) {
		size = 256 * mib // only the fallback is exercised on this kernel
	}
	before := guest.SnapStats(ns[1], ns[2])
	start := time.Now()
	res, err := engine.CopyRange(ctx, engine.Endpoint{Path: "/dev/vgn1/src"}, engine.Endpoint{Path: "/dev/vgn2/dst"}, size, engine.Options{Log: logf(t)})
	must(t, err)
	host := guest.HostBytes(before, guest.SnapStats(ns[1], ns[2]))
	sameContent(t, "/dev/vgn1/src", "/dev/vgn2/dst", size)
	if guest.KernelAtLeast(6, 12, 110) {
		if res.Offloaded != 0 || len(res.Fallbacks) != 1 || !strings.Contains(res.Fallbacks[0], "refused by the kernel") {
			t.Fatalf("on a kernel refusing CDFE the copy must fall back and say why: %+v", res)
		}
		t.Logf("fallback verified: %s", res.Fallbacks[0])
		return
	}
	t.Logf("NVMe Copy 2h of a 1 GiB LV in %s: offloaded %d, host %d; host bytes on the namespaces: %d (%.3f%%)",
		time.Since(start).Round(time.Millisecond), res.Offloaded, res.HostCopied, host, 100*float64(host)/float64(gib))
	if res.Offloaded != gib || len(res.Fallbacks) != 0 || !strings.Contains(strings.Join(res.Methods, " "), "format 2h") {
		t.Fatalf("not offloaded: %+v", res)
	}
	if host > gib/100 {
		t.Fatalf("host moved %d bytes during an offloaded copy", host)
	}
	fmt.Printf("RESULT nvme2h_1gib_seconds=%.3f host_bytes=%d\n", time.Since(start).Seconds(), host)
}
