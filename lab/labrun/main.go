// Command labrun boots the pvesnap storage lab guest (QEMU, TCG unless KVM really works) on a
// work directory shared over 9p, runs the work directory's script inside, and exits with the
// script's status. The guest has LIO (tcm_loop), an emulated NVMe subsystem with several
// namespaces and generous copy limits, virtio disks, LVM and ZFS.
//
//	labrun -work DIR [-kernel KV] [-nvme=true] [-vdisks N] [-timeout 10m] [-fwd 8009:8009]
//	       [-disk name=dlog,size=512M,bs=512,log] [-nvme-extra nsid=5,size=256M,bs=512,ms=8,pi=1,log]
//
// -disk adds a virtio disk the guest finds by its serial (the name); -nvme-extra adds a
// namespace to the NVMe controller. bs sets the logical and physical block size; ms and pi
// format a namespace with metadata and protection information; log puts the disk behind
// QEMU's blklogwrites driver with its write cache on: every write and every cache flush the
// guest sends is appended, in dm-log-writes format, to work/<name>.log, which the guest reads
// at /mnt/host/<name>.log to check that a flush follows the last write.
//
// Every image is made afresh and sparse at each boot, and the guest's discards and zero
// writes punch holes in it, so a run holds on the host little more than the data its tests
// hold. A write the host's file system refuses (ENOSPC) is an I/O error in the guest, not a
// paused guest waiting out the timeout; labrun says so when the file system is full after a
// failed run.
//
// A missing /dev/kvm is never an error. On failure, the tail of the guest console is printed.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	labDir := flag.String("lab", envOr("LAB_DIR", "/var/tmp/pvesnap-lab"), "lab directory prepared by lab/setup.sh")
	work := flag.String("work", "", "work directory shared with the guest as /mnt/host (required)")
	kernel := flag.String("kernel", os.Getenv("LAB_KV"), "guest kernel version (default: the trixie base's, from LAB_DIR/out/kernels.env)")
	script := flag.String("script", "run.sh", "script in the work directory to run")
	nvme := flag.Bool("nvme", true, "attach an NVMe subsystem with namespaces (work/nvme-ns{1..N}.img)")
	nvmeNS := flag.Int("nvme-ns", 3, "number of NVMe namespaces")
	nvmeSize := flag.String("nvme-size", "2G", "size of each NVMe namespace image")
	vdisks := flag.Int("vdisks", 1, "virtio disks to attach (work/vd{1..N}.img)")
	vdiskSize := flag.String("vdisk-size", "4G", "size of each virtio disk image")
	mem := flag.Int("mem", 3072, "guest memory in MiB")
	smp := flag.Int("smp", 2, "guest CPUs")
	timeout := flag.Duration("timeout", 10*time.Minute, "kill the guest after this long")
	fwd := flag.String("fwd", "", "forward host ports to the guest: host:guest[,host:guest…] (needs user networking)")
	hostname := flag.String("hostname", "pve1", "guest host name")
	verbose := flag.Bool("v", false, "stream the guest console")
	var extraDisks, extraNS specs
	flag.Var(&extraDisks, "disk", "extra virtio disk: name=N,size=S[,bs=512|4096][,log] (repeatable)")
	flag.Var(&extraNS, "nvme-extra", "extra NVMe namespace: nsid=N,size=S[,bs=…][,ms=8,pi=1][,log] (repeatable; needs -nvme)")
	flag.Parse()
	if *work == "" {
		fmt.Fprintln(os.Stderr, "labrun: -work is required")
		os.Exit(2)
	}
	if *kernel == "" {
		*kernel = labKernel(*labDir, "KV_TRIXIE")
	}
	w, err := filepath.Abs(*work)
	must(err)
	must(os.MkdirAll(w, 0o755))
	var imgs images
	vmlinux := filepath.Join(*labDir, "out", "vmlinux-"+*kernel)
	initrd := filepath.Join(*labDir, "out", "initramfs-"+*kernel+".cpio")
	for _, f := range []string{vmlinux, initrd} {
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintf(os.Stderr, "labrun: %s missing: run 'make lab' (lab/setup.sh) first\n", f)
			os.Exit(3)
		}
	}
	args := []string{"-accel", "tcg,thread=multi,tb-size=512", "-cpu", "max", "-M", "pc",
		"-m", strconv.Itoa(*mem), "-smp", strconv.Itoa(*smp), "-nographic", "-no-reboot", "-nodefaults",
		"-serial", "stdio", "-bios", "/usr/share/qemu/qboot.rom", "-kernel", vmlinux, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 lab.script=%s lab.hostname=%s", *script, *hostname),
		"-virtfs", "local,path=" + w + ",mount_tag=host,security_model=none,id=host"}
	if *nvme {
		// One subsystem, one controller, several namespaces with realistic copy limits
		// (MSSRL 64 Ki blocks per range, MCL 1 Mi blocks per command, 128 ranges).
		args = append(args, "-device", "nvme-subsys,id=nsubsys0,nqn=nqn.2026-01.lab.pvesnap:subsys0",
			"-device", "nvme,id=nvme0,serial=PVESNAPLAB01,subsys=nsubsys0,mdts=9")
		for i := 1; i <= *nvmeNS; i++ {
			img := filepath.Join(w, fmt.Sprintf("nvme-ns%d.img", i))
			must(imgs.make(img, *nvmeSize))
			args = append(args, "-drive", fmt.Sprintf("file=%s,if=none,id=ns%d,%s", img, i, driveOpts),
				"-device", fmt.Sprintf("nvme-ns,drive=ns%d,bus=nvme0,nsid=%d,mssrl=65535,mcl=1048576,msrc=127", i, i))
		}
		for _, sp := range extraNS {
			nsid := get(sp, "nsid", "")
			if nsid == "" {
				fmt.Fprintf(os.Stderr, "labrun: -nvme-extra %v needs nsid=\n", sp)
				os.Exit(2)
			}
			name := "ns" + nsid
			node, props := backend(w, name, sp, &imgs, &args)
			dev := fmt.Sprintf("nvme-ns,drive=%s%s,bus=nvme0,nsid=%s,mssrl=65535,mcl=1048576,msrc=127%s", node, props, nsid, blockSizes(sp))
			if ms := get(sp, "ms", ""); ms != "" {
				dev += ",ms=" + ms + ",pi=" + get(sp, "pi", "0")
			}
			args = append(args, "-device", dev)
		}
	} else if len(extraNS) > 0 {
		fmt.Fprintln(os.Stderr, "labrun: -nvme-extra needs -nvme")
		os.Exit(2)
	}
	for i := 1; i <= *vdisks; i++ {
		img := filepath.Join(w, fmt.Sprintf("vd%d.img", i))
		must(imgs.make(img, *vdiskSize))
		// An explicit device, not if=virtio: QEMU places if=virtio drives after every -device,
		// and vda, vdb must stay these disks whatever -disk adds.
		args = append(args, "-drive", fmt.Sprintf("file=%s,if=none,id=vd%d,%s", img, i, driveOpts),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=vd%d", i))
	}
	for _, sp := range extraDisks {
		name := get(sp, "name", "")
		if name == "" {
			fmt.Fprintf(os.Stderr, "labrun: -disk %v needs name=\n", sp)
			os.Exit(2)
		}
		node, props := backend(w, name, sp, &imgs, &args)
		if props != "" {
			// virtio-blk merges requests up to IOV_MAX buffers; blklogwrites adds two for
			// the log entry and its write then fails (EIO in the guest, seen as LIO's
			// XCOPY writes failing on a logged disk). The error policy is the device's
			// here: a -blockdev node has none of its own.
			props += ",request-merging=off,werror=report,rerror=report"
		}
		args = append(args, "-device", fmt.Sprintf("virtio-blk-pci,drive=%s%s,serial=%s%s", node, props, name, blockSizes(sp)))
	}
	if *fwd != "" {
		var rules []string
		for _, p := range strings.Split(*fwd, ",") {
			h, g, ok := strings.Cut(p, ":")
			if !ok {
				fmt.Fprintf(os.Stderr, "labrun: bad -fwd %q\n", p)
				os.Exit(2)
			}
			rules = append(rules, fmt.Sprintf("hostfwd=tcp:127.0.0.1:%s-:%s", h, g))
		}
		args = append(args, "-netdev", "user,id=n0,"+strings.Join(rules, ","), "-device", "virtio-net-pci,netdev=n0")
	}
	imgs.checkSpace(w)
	os.Remove(filepath.Join(w, ".rc"))
	console, err := os.Create(filepath.Join(w, "console.log"))
	must(err)
	defer console.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	must(cmd.Start())
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(console, line)
			if *verbose {
				fmt.Println(line)
			}
		}
		close(done)
	}()
	qerr := cmd.Wait()
	pw.Close()
	<-done
	for _, l := range imgs.logs {
		os.Remove(l) // of use to the guest only, and as large as what it wrote
	}
	wall := time.Since(start)
	rc := readRC(filepath.Join(w, ".rc"))
	fmt.Fprintf(os.Stderr, "labrun: kernel %s script %s guest rc=%s wall=%.1fs\n", *kernel, *script, rcString(rc), wall.Seconds())
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		fmt.Fprintf(os.Stderr, "labrun: guest killed after %s timeout\n", *timeout)
		rc = -1
	} else if qerr != nil && rc < 0 {
		fmt.Fprintf(os.Stderr, "labrun: qemu: %v\n", qerr)
	}
	if rc != 0 {
		tail(filepath.Join(w, "console.log"), 60)
		if free, err := freeBytes(w); err == nil && free < 256<<20 {
			fmt.Fprintf(os.Stderr, "labrun: the file system of %s is full (%d MiB free): the guest's writes to its disks were refused (ENOSPC), which fails the tests above; free space there or set LAB_WORK to a larger one\n", w, free>>20)
		}
		if rc < 0 {
			rc = 125
		}
		os.Exit(rc)
	}
}

// specs is a repeatable flag of comma-separated key=value lists ("log" alone is log=1).
type specs []map[string]string

func (s *specs) String() string { return fmt.Sprint(*s) }

func (s *specs) Set(v string) error {
	m := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			val = "1"
		}
		m[k] = val
	}
	*s = append(*s, m)
	return nil
}

func get(m map[string]string, k, d string) string {
	if v, ok := m[k]; ok {
		return v
	}
	return d
}

// blockSizes is the device properties for bs= (logical and physical alike).
func blockSizes(sp map[string]string) string {
	if bs := get(sp, "bs", ""); bs != "" {
		return ",logical_block_size=" + bs + ",physical_block_size=" + bs
	}
	return ""
}

// backend adds the block node for an extra disk or namespace and returns its node name and
// the device properties it needs: a raw image (scratch, flushes ignored), or with log the
// image behind blklogwrites with a fresh log and the device's write cache on, so the guest
// sends flushes and they reach the log.
func backend(w, name string, sp map[string]string, imgs *images, args *[]string) (string, string) {
	img := filepath.Join(w, name+".img")
	must(imgs.make(img, get(sp, "size", "1G")))
	if get(sp, "log", "") == "" {
		*args = append(*args, "-drive", fmt.Sprintf("file=%s,if=none,id=%s,%s", img, name, driveOpts))
		return name, ""
	}
	logf := filepath.Join(w, name+".log")
	must(os.WriteFile(logf, nil, 0o644)) // a new log each boot
	imgs.logs = append(imgs.logs, logf)
	*args = append(*args,
		"-blockdev", fmt.Sprintf("driver=file,filename=%s,node-name=%s-img,aio=threads,discard=unmap,detect-zeroes=unmap", img, name),
		"-blockdev", fmt.Sprintf("driver=file,filename=%s,node-name=%s-log", logf, name),
		"-blockdev", fmt.Sprintf("driver=blklogwrites,node-name=%s,file=%s-img,log=%s-log,log-sector-size=512,discard=unmap", name, name, name))
	return name, ",write-cache=on"
}

func rcString(rc int) string {
	if rc < 0 {
		return "none"
	}
	return strconv.Itoa(rc)
}

func readRC(p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// driveOpts are the options of every -drive: the image is scratch (cache=unsafe: the host
// never flushes it); the guest's discards, and its writes of zeros, become holes in it
// (discard=unmap, detect-zeroes=unmap: the tests write large zero ranges on purpose, and the
// guest reads them back as zeros all the same); a write the host refuses is the guest's I/O
// error (werror=report; QEMU's default for ENOSPC pauses the guest, which then sits out the
// whole timeout).
const driveOpts = "format=raw,cache=unsafe,aio=threads,discard=unmap,detect-zeroes=unmap,werror=report,rerror=report"

// images are the disk images of one boot and the most they can take on the host, and the
// write logs of logged disks (read by the guest while it runs; they grow with every write).
type images struct {
	total int64
	logs  []string
}

// make makes a new sparse image of size, replacing one left by an earlier boot: the
// contents are scratch, and what a boot wrote stays allocated until the file is gone.
func (m *images) make(p, size string) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	m.total += n
	return f.Truncate(n)
}

// checkSpace warns when the images could outgrow the free space of w's file system. Only a
// warning: the guest's tests fill a part of their disks, and discard most of what they fill.
func (m *images) checkSpace(w string) {
	free, err := freeBytes(w)
	if err != nil || free >= m.total {
		return
	}
	fmt.Fprintf(os.Stderr, "labrun: warning: the guest's disk images can grow to %d MiB and %s has %d MiB free; a write the host refuses fails in the guest as an I/O error\n", m.total>>20, w, free>>20)
}

// freeBytes is what an unprivileged process can still write on p's file system.
func freeBytes(p string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func tail(p string, n int) {
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(os.Stderr, "---- guest console (last %d lines of %s) ----\n%s\n----\n", len(lines), p, strings.Join(lines, "\n"))
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "labrun:", err)
		os.Exit(3)
	}
}

// labKernel reads a kernel version that lab/setup.sh chose (out/kernels.env, KEY=value lines).
func labKernel(labDir, key string) string {
	b, err := os.ReadFile(filepath.Join(labDir, "out", "kernels.env"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "labrun: %v: run 'make lab' (lab/setup.sh) first\n", err)
		os.Exit(3)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok && v != "" {
			return v
		}
	}
	fmt.Fprintf(os.Stderr, "labrun: no %s in %s/out/kernels.env\n", key, labDir)
	os.Exit(3)
	return ""
}
