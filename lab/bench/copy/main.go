// Command copy runs inside the lab guest for `make bench`: it copies a 1 GiB LV between two
// LUNs of one (LIO) array with pvesnap's engine (EXTENDED COPY) against sg_xcopy, with its
// host copy against dd and qemu-img convert (also on a half-zero LV), makes the CSI copy of
// a 1 GiB and an 8 GiB zvol through the real daemon against zfs send | zfs recv; with -set
// move, it moves a 1 GiB zvol to another node (two daemons, two pools) against zfs send |
// zfs recv piped locally and zfs send | ssh … zfs recv. Results go to a JSON file.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/ioctl/zfs"
	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
	"github.com/pvesnap/pvesnap/sim/lio"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

const (
	mib  = int64(1) << 20
	size = 1024 * mib
	// lvRounds is how often each LV copy case runs (the median is reported).
	lvRounds = 3
)

// Case is one measured copy.
type Case struct {
	Name      string       `json:"name"`
	Seconds   float64      `json:"seconds"`
	HostBytes int64        `json:"host_bytes"` // read+written on the initiator's devices
	Samples   [][2]float64 `json:"samples,omitempty"`
	Note      string       `json:"note,omitempty"`
	// Peers name the cases this one is measured against (none for a peer itself); Table
	// groups the cases into the report's tables.
	Peers []string `json:"peers,omitempty"`
	Table string   `json:"table"`
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
	set := flag.String("set", "copy", "copy: the copies on one node; move: a zvol moved to another node")
	flag.Parse()
	var res []Case
	var err error
	switch *set {
	case "copy":
		res, err = bench()
	case "move":
		res, err = moveCases()
	default:
		err = fmt.Errorf("unknown set %q", *set)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench "+*set+":", err)
		os.Exit(1)
	}
	b, _ := json.MarshalIndent(res, "", " ")
	os.WriteFile(*out, b, 0o644)
	fmt.Println(string(b))
}

// The report's tables.
const (
	tableLV       = "lv"        // 1 GiB LV, full of data
	tableHalfZero = "half-zero" // 1 GiB LV, second half zeros
	tableLayout   = "layout"    // the host copy's I/O layouts, the same LV
	tableSAN      = "san"       // the same LUNs over iSCSI with dm-multipath
	tableZvol     = "zvol"      // CSI copies of zvols through the daemon
	tableMove     = "move"      // a zvol moved to another node
)

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
	defer tg.Delete()
	var devs, serials []string
	var luns []*lio.LUN
	for i, p := range parts {
		serial := fmt.Sprintf("6C1B16CE1C034D1C0000C%03d", i)
		lun, err := l.CreateBlockLUN(fmt.Sprintf("b%d", i), p, serial)
		if err != nil {
			return nil, err
		}
		luns, serials = append(luns, lun), append(serials, serial)
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
		defer run("vgremove", "-ff", "-y", vg)
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
	measure := func(table, name, note string, peers []string, fn func(samples *[][2]float64) error) (Case, error) {
		if err := lv.Create(ctx, "vgb1", "dst", size, lvm.CreateOptions{}); err != nil {
			return Case{}, err
		}
		defer lv.Remove(ctx, "vgb1", "dst")
		run("sync")
		before := guest.SnapStats(devs...)
		var samples [][2]float64
		t := time.Now()
		if err := fn(&samples); err != nil {
			return Case{}, fmt.Errorf("%s: %w", name, err)
		}
		c := Case{Name: name, Seconds: time.Since(t).Seconds(), HostBytes: guest.HostBytes(before, guest.SnapStats(devs...)),
			Samples: samples, Note: note, Peers: peers, Table: table}
		if err := guest.SameContent("/dev/vgb0/src", "/dev/vgb1/dst", 0, 0, size); err != nil {
			return Case{}, fmt.Errorf("%s copied wrong: %w", name, err)
		}
		fmt.Fprintf(os.Stderr, "%s: %.2f s, host bytes %d\n", name, c.Seconds, c.HostBytes)
		return c, nil
	}
	type step struct {
		table, name, note string
		peers             []string
		fn                func(*[][2]float64) error
	}
	// Under TCG one run of a case can take twice as long as the next: every case runs
	// lvRounds times, interleaved with its peers so a slow spell of the host falls on all of
	// them, and the run with the median time is kept.
	measureAll := func(steps []step) error {
		runs := map[string][]Case{}
		for r := 0; r < lvRounds; r++ {
			for _, st := range steps {
				c, err := measure(st.table, st.name, st.note, st.peers, st.fn)
				if err != nil {
					return err
				}
				runs[st.name] = append(runs[st.name], c)
			}
		}
		for _, st := range steps {
			rs := runs[st.name]
			sort.Slice(rs, func(i, j int) bool { return rs[i].Seconds < rs[j].Seconds })
			c := rs[len(rs)/2]
			c.Note += fmt.Sprintf("; median of %d interleaved runs, %.2f-%.2f s", len(rs), rs[0].Seconds, rs[len(rs)-1].Seconds)
			cases = append(cases, c)
		}
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
	const (
		xcopy  = "pvesnap copy (EXTENDED COPY)"
		host   = "pvesnap copy --force-host-copy"
		dd     = "dd bs=8M iflag=direct oflag=direct conv=fsync"
		sgx    = "sg_xcopy (sg3-utils)"
		qemu   = "qemu-img convert -n -t none -T none -W -m 8"
		hostHZ = "pvesnap copy --force-host-copy, half-zero source"
		ddHZ   = "dd bs=8M iflag=direct oflag=direct conv=fsync, half-zero source"
	)
	// conv=fsync: dd then ends with the same cache flush the engine's copy ends with.
	ddCopy := func(*[][2]float64) error {
		return run("dd", "if=/dev/vgb0/src", "of=/dev/vgb1/dst", "bs=8M", "iflag=direct", "oflag=direct", "conv=fsync", "status=none")
	}
	steps := []step{
		{tableLV, xcopy, "inside the array", []string{sgx}, engineCopy("/dev/vgb1/dst", false)},
		{tableLV, sgx, "peer: default bpt=128, 64 KiB per command", nil, func(*[][2]float64) error {
			// sg_xcopy addresses the LUNs, not the LVs: the LVs' offsets come from their
			// device-mapper tables (one linear segment each).
			src, err := linearOffset("vgb0-src")
			if err != nil {
				return err
			}
			dst, err := linearOffset("vgb1-dst")
			if err != nil {
				return err
			}
			sgIn, err := sgOf(devs[0])
			if err != nil {
				return err
			}
			sgOut, err := sgOf(devs[1])
			if err != nil {
				return err
			}
			return run("sg_xcopy", "if="+sgIn, "of="+sgOut, "bs=512", fmt.Sprintf("skip=%d", src), fmt.Sprintf("seek=%d", dst),
				fmt.Sprintf("count=%d", size/512))
		}},
		{tableLV, host, "O_DIRECT, 8 x 8 MiB in flight", []string{dd, qemu}, engineCopy("/dev/vgb1/dst", true)},
		{tableLV, dd, "peer", nil, ddCopy},
		{tableLV, qemu, "peer", nil, func(*[][2]float64) error {
			return run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", "-t", "none", "-T", "none", "-W", "-m", "8", "/dev/vgb0/src", "/dev/vgb1/dst")
		}},
	}
	if err := measureAll(steps); err != nil {
		return nil, err
	}
	// hostLayout is the host copy with inFlight I/Os of chunkMiB each (0: the default).
	hostLayout := func(inFlight, chunkMiB int) func(*[][2]float64) error {
		return func(*[][2]float64) error {
			_, err := engine.Copy(ctx, "/dev/vgb0/src", "/dev/vgb1/dst", engine.Options{ForceHost: true, HostInFlight: inFlight, HostChunk: int64(chunkMiB) << 20})
			return err
		}
	}
	// The host copy's I/O layout swept, against dd again: where the layouts tie, the copy is
	// bound by the disks' path (here the emulated one), not by how the I/O is issued.
	var layouts []step
	for _, l := range [][2]int{{1, 8}, {2, 8}, {4, 8}, {8, 8}, {4, 16}, {16, 4}} {
		layouts = append(layouts, step{tableLayout, fmt.Sprintf("pvesnap copy --force-host-copy --in-flight %d --chunk-mib %d", l[0], l[1]), "O_DIRECT",
			[]string{dd}, hostLayout(l[0], l[1])})
	}
	if err := measureAll(append(layouts, step{tableLayout, dd, "peer", nil, ddCopy})); err != nil {
		return nil, err
	}
	// Half of the source zeros: the host copy writes zero ranges as BLKZEROOUT.
	if err := guest.Zero("/dev/vgb0/src", size/2, size/2); err != nil {
		return nil, err
	}
	wz, _ := os.ReadFile("/sys/block/" + filepath.Base(devs[1]) + "/queue/write_zeroes_max_bytes")
	noteHZ := "zero pieces written as data: the LUN cannot zero without data (write_zeroes_max_bytes 0)"
	if w := strings.TrimSpace(string(wz)); w != "" && w != "0" {
		noteHZ = "zero pieces as BLKZEROOUT (write_zeroes_max_bytes " + w + "; the kernel counts them as written)"
	}
	if err := measureAll([]step{{tableHalfZero, hostHZ, noteHZ, []string{ddHZ}, engineCopy("/dev/vgb1/dst", true)},
		{tableHalfZero, ddHZ, "peer", nil, ddCopy}}); err != nil {
		return nil, err
	}
	// The same LUNs over iSCSI with dm-multipath, as a production node reaches its array:
	// each command now takes a network round trip, which in-flight I/O hides and dd's one
	// I/O at a time waits out.
	sanCases := func() error {
		for _, vg := range []string{"vgb0", "vgb1"} {
			if err := run("vgchange", "-an", vg); err != nil {
				return err
			}
		}
		tg.Delete() // the loopback paths go; the backstores stay
		tg = nil
		san, err := cluster.StartSAN(l, "iqn.2026-11.org.pvesnap:bench", "/tmp/bench-san")
		if err != nil {
			return err
		}
		defer san.Close(serials...)
		var maps []string
		for i, lun := range luns {
			m, err := san.Attach(lun, i, serials[i])
			if err != nil {
				return err
			}
			maps = append(maps, m)
		}
		defer func() {
			run("vgchange", "-an", "vgb0")
			run("vgchange", "-an", "vgb1")
		}()
		for _, vg := range []string{"vgb0", "vgb1"} {
			if err := run("vgchange", "-ay", vg); err != nil {
				return err
			}
		}
		if deps, _ := guest.Output("dmsetup", "deps", "-o", "blkdevname", "vgb0-src"); !strings.Contains(deps, filepath.Base(maps[0])) {
			return fmt.Errorf("vgb0/src is not on the multipath map %s: %s", maps[0], deps)
		}
		devs = maps // host I/O is counted on the maps now
		if err := guest.WritePattern("/dev/vgb0/src", 7, 0, size); err != nil {
			return err
		}
		return measureAll([]step{
			{tableSAN, host + " over iSCSI", "O_DIRECT, 8 x 8 MiB in flight", []string{dd + " over iSCSI"}, engineCopy("/dev/vgb1/dst", true)},
			{tableSAN, host + " --in-flight 1 over iSCSI", "O_DIRECT, 1 x 8 MiB in flight", []string{dd + " over iSCSI"}, hostLayout(1, 8)},
			{tableSAN, dd + " over iSCSI", "peer", nil, ddCopy},
		})
	}
	if err := sanCases(); err != nil {
		fmt.Fprintln(os.Stderr, "SAN cases skipped:", err)
		cases = append(cases, Case{Name: "san", Table: tableSAN, Note: "SKIP: " + err.Error()})
	}
	if tg != nil {
		if err := lv.Remove(ctx, "vgb0", "src"); err != nil {
			return nil, err
		}
		tg.Delete()
	}
	zc, err := zvolCases()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zvol cases skipped:", err)
		cases = append(cases, Case{Name: "zvol", Table: tableZvol, Note: "SKIP: " + err.Error()})
	} else {
		cases = append(cases, zc...)
	}
	return cases, nil
}

// sgOf is the SCSI generic node of a disk: sg_xcopy finds it through udev's links otherwise,
// and the guest has no udev.
func sgOf(dev string) (string, error) {
	run("modprobe", "sg")
	ms, _ := filepath.Glob("/sys/block/" + filepath.Base(dev) + "/device/scsi_generic/sg*")
	if len(ms) != 1 {
		return "", fmt.Errorf("%s: no SCSI generic device", dev)
	}
	return "/dev/" + filepath.Base(ms[0]), nil
}

// linearOffset is the start, in 512-byte sectors on its device, of a one-segment linear DM
// device (dmsetup table: "0 <len> linear <maj:min> <offset>").
func linearOffset(dm string) (int64, error) {
	out, err := guest.Output("dmsetup", "table", dm)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	if len(f) != 5 || f[2] != "linear" {
		return 0, fmt.Errorf("%s: not one linear segment: %q", dm, out)
	}
	return strconv.ParseInt(f[4], 10, 64)
}

// zvolCases: the copy proxmox-csi-plugin asks for, through the real daemon (call to task OK,
// as the plugin's first poll sees it), on a 1 GiB and an 8 GiB zvol full of data, against
// zfs send | zfs recv of the same zvol (PVE's own copy).
func zvolCases() ([]Case, error) {
	if err := run("modprobe", "zfs"); err != nil {
		return nil, err
	}
	// No udev in the guest: partition first (zpool waits for udev when it labels a whole
	// disk); zvols are found by their /dev/zd* node (the /dev/zvol links are udev's).
	vparts, err := guest.Partition("/dev/vdb", 1)
	if err != nil {
		return nil, err
	}
	if err := run("zpool", "create", "-f", "-O", "compression=off", "rpool", vparts[0]); err != nil {
		return nil, err
	}
	defer run("zpool", "destroy", "-f", "rpool")
	if err := run("zfs", "create", "rpool/data"); err != nil {
		return nil, err
	}
	n, err := cluster.Start(cluster.Options{Work: "/tmp/bench-csi", Sim: simpve.Options{Volumes: cluster.RealVolumes}})
	if n != nil {
		defer n.Close()
	}
	if err != nil {
		return nil, err
	}
	api := n.API
	var out []Case
	const rounds = 10
	for _, gib := range []int64{1, 8} {
		vol := fmt.Sprintf("vm-%d-disk-0", 100+gib)
		if _, err := api.Must("POST", "/nodes/pve1/storage/local-zfs/content",
			url.Values{"filename": {vol}, "size": {fmt.Sprintf("%dG", gib)}, "vmid": {fmt.Sprint(100 + gib)}}); err != nil {
			return nil, err
		}
		dev, err := cluster.ZvolDevice("rpool/data/"+vol, 20*time.Second)
		if err != nil {
			return nil, err
		}
		if err := guest.WritePattern(dev, uint64(gib), 0, gib<<30); err != nil {
			return nil, err
		}
		run("sync")
		var lat []float64
		for i := 0; i < rounds; i++ {
			target := fmt.Sprintf("vm-9999-bench-%d-%d", gib, i)
			t := time.Now()
			d, err := api.Must("POST", "/nodes/pve1/storage/local-zfs/content/"+vol, url.Values{"target": {target}})
			if err != nil {
				return nil, err
			}
			if st, err := api.WaitTask(simpve.UPIDOf(d), time.Minute); err != nil || st != "OK" {
				return nil, fmt.Errorf("copy to %s: %q %v", target, st, err)
			}
			lat = append(lat, time.Since(t).Seconds())
		}
		for i := 0; i < rounds; i++ {
			d, err := api.Must("DELETE", fmt.Sprintf("/nodes/pve1/storage/local-zfs/content/vm-9999-bench-%d-%d", gib, i), nil)
			if err != nil {
				return nil, err
			}
			if st, err := api.WaitTask(simpve.UPIDOf(d), time.Minute); err != nil || st != "OK" {
				return nil, fmt.Errorf("delete: %q %v", st, err)
			}
		}
		sort.Float64s(lat)
		cli, err := zfsCLI("rpool/data/"+vol, fmt.Sprintf("rpool/data/vm-9998-cli-%d", gib), rounds)
		if err != nil {
			return nil, err
		}
		floor, err := zfsIoctls("rpool/data/"+vol, fmt.Sprintf("rpool/data/vm-9996-ioctl-%d", gib), rounds)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%d GiB zvol: pvesnap copy, call to task OK", gib)
		peer := fmt.Sprintf("%d GiB zvol: zfs send | zfs recv", gib)
		cliName := fmt.Sprintf("%d GiB zvol: zfs list + snapshot + clone commands", gib)
		floorName := fmt.Sprintf("%d GiB zvol: the same ioctls alone", gib)
		out = append(out, Case{Name: name, Seconds: lat[len(lat)/2], Table: tableZvol, Peers: []string{peer, cliName, floorName},
			Note: fmt.Sprintf("median of %d, through the daemon (snapshot + clone)", rounds)})
		out = append(out, Case{Name: cliName, Seconds: cli, Table: tableZvol,
			Note: fmt.Sprintf("peer: the same steps with the zfs command, as a tool driving the CLI takes them, without API or task; median of %d", rounds)})
		out = append(out, Case{Name: floorName, Seconds: floor, Table: tableZvol,
			Note: fmt.Sprintf("floor: pvesnap's /dev/zfs calls without API or task; median of %d", rounds)})
		secs, err := sendRecv("rpool/data/"+vol, fmt.Sprintf("rpool/data/vm-9997-recv-%d", gib))
		if err != nil {
			return nil, err
		}
		out = append(out, Case{Name: peer, Seconds: secs, Table: tableZvol, Note: "peer: PVE's copy"})
		fmt.Fprintf(os.Stderr, "%s: %.3f s; %s: %.1f s\n", name, lat[len(lat)/2], peer, secs)
		run("zfs", "destroy", "-r", fmt.Sprintf("rpool/data/vm-9997-recv-%d", gib))
		run("zfs", "destroy", "-r", "rpool/data/"+vol)
	}
	return out, nil
}

// zfsCLI times the steps of an instant copy taken with the zfs command - the check that src
// exists and dst does not, the snapshot, the clone - as a tool driving the CLI takes them.
func zfsCLI(src, dst string, rounds int) (float64, error) {
	return timeCopies(src, dst, "cli", rounds, func(snap, clone string) error {
		exec.Command("zfs", "list", "-H", "-o", "name", src, clone).Run() // exits 1: clone is missing, as it should be
		if err := run("zfs", "snapshot", snap); err != nil {
			return err
		}
		return run("zfs", "clone", snap, clone)
	})
}

// zfsIoctls times the same steps through /dev/zfs as pvesnap's worker takes them: the floor
// under pvesnap's copy, so the difference is pvesnap's own time (API, permission check, task).
func zfsIoctls(src, dst string, rounds int) (float64, error) {
	return timeCopies(src, dst, "ioctl", rounds, func(snap, clone string) error {
		d, err := zfs.Open("/dev/zfs")
		if err != nil {
			return err
		}
		defer d.Close()
		d.Who = "copybench"
		for _, n := range []string{src, clone} {
			if _, err := d.Exists(n); err != nil {
				return err
			}
		}
		if err := d.Snapshot(snap); err != nil {
			return err
		}
		return d.Clone(snap, clone)
	})
}

// timeCopies runs step (snapshot of src, clone to dst-i) rounds times and returns the median,
// then removes what it made.
func timeCopies(src, dst, tag string, rounds int, step func(snap, clone string) error) (float64, error) {
	var lat []float64
	var made []string // each clone before its snapshot, the order they can be destroyed in
	for i := 0; i < rounds; i++ {
		snap, clone := fmt.Sprintf("%s@%s-%d", src, tag, i), fmt.Sprintf("%s-%d", dst, i)
		t := time.Now()
		if err := step(snap, clone); err != nil {
			return 0, err
		}
		lat = append(lat, time.Since(t).Seconds())
		made = append(made, clone, snap)
	}
	for _, ds := range made {
		if err := run("zfs", "destroy", ds); err != nil {
			return 0, err
		}
	}
	sort.Float64s(lat)
	return lat[len(lat)/2], nil
}

// sendRecv times a snapshot of src and its full send into a new dataset dst.
func sendRecv(src, dst string) (float64, error) {
	t := time.Now()
	if err := run("zfs", "snapshot", src+"@send"); err != nil {
		return 0, err
	}
	send := exec.Command("zfs", "send", src+"@send")
	recv := exec.Command("zfs", "recv", dst)
	pr, pw := io.Pipe()
	send.Stdout, recv.Stdin = pw, pr
	if err := recv.Start(); err != nil {
		return 0, err
	}
	if err := send.Run(); err != nil {
		return 0, err
	}
	pw.Close()
	if err := recv.Wait(); err != nil {
		return 0, err
	}
	return time.Since(t).Seconds(), nil
}
