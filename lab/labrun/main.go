// Command labrun boots the pvesnap storage lab guest (QEMU, TCG unless KVM really works) on a
// work directory shared over 9p, runs the work directory's script inside, and exits with the
// script's status. The guest has LIO (tcm_loop), an emulated NVMe subsystem with several
// namespaces and generous copy limits, virtio disks, LVM and ZFS.
//
//	labrun -work DIR [-kernel KV] [-nvme=true] [-vdisks N] [-timeout 10m] [-fwd 8009:8009]
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
			must(ensureImage(img, *nvmeSize))
			args = append(args, "-drive", fmt.Sprintf("file=%s,if=none,id=ns%d,format=raw,cache=unsafe,aio=threads", img, i),
				"-device", fmt.Sprintf("nvme-ns,drive=ns%d,bus=nvme0,nsid=%d,mssrl=65535,mcl=1048576,msrc=127", i, i))
		}
	}
	for i := 1; i <= *vdisks; i++ {
		img := filepath.Join(w, fmt.Sprintf("vd%d.img", i))
		must(ensureImage(img, *vdiskSize))
		args = append(args, "-drive", fmt.Sprintf("file=%s,if=virtio,format=raw,cache=unsafe,aio=threads", img))
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
		if rc < 0 {
			rc = 125
		}
		os.Exit(rc)
	}
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

// ensureImage makes a sparse image of size, or grows a smaller one left by an earlier run
// (its contents are scratch; a larger one is kept as it is).
func ensureImage(p, size string) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(p); err == nil && fi.Size() >= n {
		return nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(n)
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
