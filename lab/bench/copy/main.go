// Command copy runs inside the lab guest for `make bench`: it copies a 1 GiB LV between two
// LUNs of one (LIO) array with pvesnap's engine (EXTENDED COPY), with its host copy, with dd
// and with qemu-img convert, and clones a 1 GiB zvol the way pvesnap answers a CSI copy
// (snapshot + clone) against zfs send | zfs recv. Results go to a JSON file.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

const (
	mib  = int64(1) << 20
	size = 1024 * mib
)

// Case is one measured copy.
type Case struct {
	Name      string       `json:"name"`
	Seconds   float64      `json:"seconds"`
	HostBytes int64        `json:"host_bytes"` // read+written on the initiator's devices
	Samples   [][2]float64 `json:"samples,omitempty"`
	Note      string       `json:"note,omitempty"`
}

var ctx = context.Background()

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %v %s", name, args, err, out)
	}
	return nil
}

func main() {
	out := flag.String("out", "/mnt/host/bench-copy.json", "result file")
	flag.Parse()
	res, err := bench()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench copy:", err)
		os.Exit(1)
	}
	b, _ := json.MarshalIndent(res, "", " ")
	os.WriteFile(*out, b, 0o644)
	fmt.Println(string(b))
}

func bench() ([]Case, error) {
	l, err := guest.SetupLIO()
	if err != nil {
		return nil, err
	}
	parts, err := guest.Partition("/dev/vda", 2)
	if err != nil {
		return nil, err
	}
	tg, err := l.CreateTarget(61)
	if err != nil {
		return nil, err
	}
	var devs []string
	for i, p := range parts {
		lun, err := l.CreateBlockLUN(fmt.Sprintf("b%d", i), p, fmt.Sprintf("6C1B16CE1C034D1C0000C%03d", i))
		if err != nil {
			return nil, err
		}
		d, err := tg.Map(lun, i)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	lv := &lvm.LVM{Run: &runner.Exec{Timeout: 5 * time.Minute}}
	for i, d := range devs {
		vg := fmt.Sprintf("vgb%d", i)
		if err := run("pvcreate", "-ff", "-y", d); err != nil {
			return nil, err
		}
		if err := run("vgcreate", vg, d); err != nil {
			return nil, err
		}
	}
	if err := lv.Create(ctx, "vgb0", "src", size, lvm.CreateOptions{}); err != nil {
		return nil, err
	}
	// The whole source holds data: no zero ranges for a host copy to skip.
	if err := guest.WritePattern("/dev/vgb0/src", 7, 0, size); err != nil {
		return nil, err
	}
	var cases []Case
	// Each case copies into a fresh LV (the destination VG holds one at a time), checked after.
	measure := func(name, note string, fn func(samples *[][2]float64) error) error {
		if err := lv.Create(ctx, "vgb1", "dst", size, lvm.CreateOptions{}); err != nil {
			return err
		}
		defer lv.Remove(ctx, "vgb1", "dst")
		run("sync")
		before := guest.SnapStats(devs...)
		var samples [][2]float64
		t := time.Now()
		if err := fn(&samples); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		c := Case{Name: name, Seconds: time.Since(t).Seconds(), HostBytes: guest.HostBytes(before, guest.SnapStats(devs...)), Samples: samples, Note: note}
		if err := guest.SameContent("/dev/vgb0/src", "/dev/vgb1/dst", 0, 0, 64*mib); err != nil {
			return fmt.Errorf("%s copied wrong: %w", name, err)
		}
		cases = append(cases, c)
		fmt.Fprintf(os.Stderr, "%s: %.2f s, host bytes %d\n", name, c.Seconds, c.HostBytes)
		return nil
	}
	engineCopy := func(dst string, force bool) func(*[][2]float64) error {
		return func(samples *[][2]float64) error {
			start := time.Now()
			res, err := engine.Copy(ctx, "/dev/vgb0/src", dst, engine.Options{ForceHost: force,
				Progress: func(done, total int64) {
					*samples = append(*samples, [2]float64{time.Since(start).Seconds(), float64(done) / float64(mib)})
				}})
			if err == nil && !force && res.Offloaded != size {
				err = fmt.Errorf("not offloaded: %+v", res)
			}
			return err
		}
	}
	if err := measure("pvesnap copy (EXTENDED COPY)", "inside the array", engineCopy("/dev/vgb1/dst", false)); err != nil {
		return nil, err
	}
	if err := measure("pvesnap copy --force-host-copy", "O_DIRECT, 8 x 8 MiB in flight", engineCopy("/dev/vgb1/dst", true)); err != nil {
		return nil, err
	}
	if err := measure("dd bs=8M iflag=direct oflag=direct", "peer", func(*[][2]float64) error {
		return run("dd", "if=/dev/vgb0/src", "of=/dev/vgb1/dst", "bs=8M", "iflag=direct", "oflag=direct", "status=none")
	}); err != nil {
		return nil, err
	}
	if err := measure("qemu-img convert -t none -T none", "peer", func(*[][2]float64) error {
		return run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-t", "none", "-T", "none", "/dev/vgb0/src", "/dev/vgb1/dst")
	}); err != nil {
		return nil, err
	}
	zc, err := zfsCases()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zfs cases skipped:", err)
		cases = append(cases, Case{Name: "zfs", Note: "SKIP: " + err.Error()})
	} else {
		cases = append(cases, zc...)
	}
	return cases, nil
}

// zfsCases: the CSI copy pvesnap makes on a zfspool (snapshot + clone) against a full send.
func zfsCases() ([]Case, error) {
	if err := run("modprobe", "zfs"); err != nil {
		return nil, err
	}
	// No udev in the guest: partition first (zpool waits for udev when it labels a whole
	// disk), and use the zvol's /dev/zd* node (the /dev/zvol links are udev's).
	vparts, err := guest.Partition("/dev/vdb", 1)
	if err != nil {
		return nil, err
	}
	if err := run("zpool", "create", "-f", "benchpool", vparts[0]); err != nil {
		return nil, err
	}
	defer run("zpool", "destroy", "-f", "benchpool")
	if err := run("zfs", "create", "-V", "1G", "-s", "benchpool/vm-100-disk-0"); err != nil {
		return nil, err
	}
	zd := ""
	for i := 0; i < 50 && zd == ""; i++ {
		if ms, _ := filepath.Glob("/sys/block/zd*"); len(ms) > 0 {
			zd = "/dev/" + filepath.Base(ms[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if zd == "" {
		return nil, fmt.Errorf("zvol device did not appear")
	}
	if err := guest.WritePattern(zd, 9, 0, 512*mib); err != nil {
		return nil, err
	}
	run("sync")
	var out []Case
	t := time.Now()
	if err := run("zfs", "snapshot", "benchpool/vm-100-disk-0@pvesnap-clone"); err != nil {
		return nil, err
	}
	if err := run("zfs", "clone", "benchpool/vm-100-disk-0@pvesnap-clone", "benchpool/vm-101-disk-0"); err != nil {
		return nil, err
	}
	out = append(out, Case{Name: "zvol copy: zfs snapshot + clone (pvesnap)", Seconds: time.Since(t).Seconds(), Note: "512 MiB of data in a 1 GiB zvol"})
	t = time.Now()
	if err := run("zfs", "snapshot", "benchpool/vm-100-disk-0@send"); err != nil {
		return nil, err
	}
	send := exec.Command("zfs", "send", "benchpool/vm-100-disk-0@send")
	recv := exec.Command("zfs", "recv", "benchpool/vm-102-disk-0")
	pr, pw := io.Pipe()
	send.Stdout, recv.Stdin = pw, pr
	if err := recv.Start(); err != nil {
		return nil, err
	}
	if err := send.Run(); err != nil {
		return nil, err
	}
	pw.Close()
	if err := recv.Wait(); err != nil {
		return nil, err
	}
	out = append(out, Case{Name: "zvol copy: zfs send | zfs recv (PVE's copy)", Seconds: time.Since(t).Seconds(), Note: "peer"})
	if s, _ := os.ReadFile("/proc/spl/kstat/zfs/arcstats"); !strings.Contains(string(s), "size") {
		out[len(out)-1].Note += " (ARC stats unavailable)"
	}
	return out, nil
}
