package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/runner"
)

// Host finds, rescans and removes this node's block devices of array volumes through sysfs,
// multipathd and blockdev.
//
// On a real SAN a volume the array stops presenting does not leave the node by itself: its
// SCSI paths stay (every I/O on them failing) and so does a multipath map over them, until
// something removes them. Remove does it the way multipath-tools expects (as Red Hat's and
// SUSE's storage guides order it): the multipath map first (multipathd flushes it and stops
// watching it), then for each path its buffers are flushed and the SCSI device deleted. It
// never flushes every map of the node (multipath -F), only the one of the volume it removes.
type Host struct {
	Sys string // /sys
	Dev string // /dev
	Run runner.Runner
	// Settle is how long to wait for multipathd to build a map over a new device.
	Settle time.Duration
	// Multipathd reports whether multipathd runs on this node (nil: its pid file exists and
	// Sys is the real /sys).
	Multipathd func() bool
	// sysWrite writes a sysfs attribute (tests emulate the kernel's answer).
	sysWrite func(path string, b []byte) error
}

func (h Host) write(path, v string) error {
	if h.sysWrite != nil {
		return h.sysWrite(path, []byte(v))
	}
	return os.WriteFile(path, []byte(v), 0o200)
}

var hctlRe = regexp.MustCompile(`/host(\d+)/(?:[^/]+/)*target\d+:(\d+):(\d+)/\d+:\d+:\d+:(\d+)$`)

// scsiDevices lists sd devices whose wwid starts with prefix (naa.624a9370<serial-prefix>),
// with their H:C:T:L.
func (h Host) scsiDevices(prefix string) map[string][4]string {
	out := map[string][4]string{}
	ms, _ := filepath.Glob(filepath.Join(h.Sys, "block", "sd*", "device", "wwid"))
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), prefix) {
			continue
		}
		dev := filepath.Dir(m)
		real, err := filepath.EvalSymlinks(dev)
		if err != nil {
			continue
		}
		if x := hctlRe.FindStringSubmatch(real); x != nil {
			out[filepath.Base(filepath.Dir(dev))] = [4]string{x[1], x[2], x[3], x[4]}
		}
	}
	return out
}

// Rescan asks only the SCSI hosts and NVMe controllers that already lead to the array (found
// by the array's serial prefix: serials start with the array id) to look for LUN lun, instead
// of rescanning every bus of the node. With no device of the array present yet, every iSCSI
// and FC host is scanned for that LUN.
func (h Host) Rescan(serial string, lun int, log func(string, ...any)) {
	prefix := "naa.624a9370" + strings.ToLower(serial[:16])
	seen := map[string]bool{}
	for _, hctl := range h.scsiDevices(prefix) {
		key := hctl[0] + ":" + hctl[1] + ":" + hctl[2]
		if seen[key] {
			continue
		}
		seen[key] = true
		scan := filepath.Join(h.Sys, "class", "scsi_host", "host"+hctl[0], "scan")
		if err := h.write(scan, fmt.Sprintf("%s %s %d", hctl[1], hctl[2], lun)); err != nil {
			log("rescan host%s channel %s target %s LUN %d: %v", hctl[0], hctl[1], hctl[2], lun, err)
		} else {
			log("rescanned host%s channel %s target %s for LUN %d", hctl[0], hctl[1], hctl[2], lun)
		}
	}
	if len(seen) == 0 {
		for _, class := range []string{"iscsi_host", "fc_host"} {
			hosts, _ := filepath.Glob(filepath.Join(h.Sys, "class", class, "host*"))
			for _, hp := range hosts {
				scan := filepath.Join(h.Sys, "class", "scsi_host", filepath.Base(hp), "scan")
				if err := h.write(scan, fmt.Sprintf("- - %d", lun)); err == nil {
					log("rescanned %s (%s) for LUN %d", filepath.Base(hp), class, lun)
				}
			}
		}
	}
	for _, ctrl := range h.nvmeControllers("eui.00" + strings.ToLower(serial[:14])) {
		if err := h.write(filepath.Join(ctrl, "rescan_controller"), "1"); err == nil {
			log("rescanned NVMe controller %s", filepath.Base(ctrl))
		}
	}
}

// nvmeControllers are the controllers (sysfs directories) with a namespace whose wwid starts
// with prefix.
func (h Host) nvmeControllers(prefix string) []string {
	ms, _ := filepath.Glob(filepath.Join(h.Sys, "class", "nvme", "nvme*", "nvme*n*", "wwid"))
	var out []string
	for _, m := range ms {
		b, err := os.ReadFile(m)
		ctrl := filepath.Dir(filepath.Dir(m))
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), prefix) || (len(out) > 0 && out[len(out)-1] == ctrl) {
			continue
		}
		out = append(out, ctrl)
	}
	return out
}

// mapOf finds the multipath map of a volume: its kernel name (dm-3) and its map name.
func (h Host) mapOf(serial string) (dm, name string) {
	want := "mpath-3" + pure.NAA(serial)
	maps, _ := filepath.Glob(filepath.Join(h.Sys, "block", "dm-*", "dm", "uuid"))
	for _, m := range maps {
		if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) == want {
			n, _ := os.ReadFile(filepath.Join(filepath.Dir(m), "name"))
			return filepath.Base(filepath.Dir(filepath.Dir(m))), strings.TrimSpace(string(n))
		}
	}
	return "", ""
}

// scsiPaths are the sd devices of a volume.
func (h Host) scsiPaths(serial string) []string {
	want := "naa." + pure.NAA(serial)
	ms, _ := filepath.Glob(filepath.Join(h.Sys, "block", "sd*", "device", "wwid"))
	var out []string
	for _, m := range ms {
		if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) == want {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(m))))
		}
	}
	return out
}

// nvmeNamespaces are the NVMe namespaces (nvme0n3) of a volume.
func (h Host) nvmeNamespaces(serial string) []string {
	ms, _ := filepath.Glob(filepath.Join(h.Sys, "block", "nvme*n*", "wwid"))
	var out []string
	for _, m := range ms {
		b, _ := os.ReadFile(m)
		if s, ok := pure.SerialFromWWID(strings.TrimSpace(string(b))); ok && s == strings.ToUpper(serial) {
			out = append(out, filepath.Base(filepath.Dir(m)))
		}
	}
	return out
}

// holders are what sits on a block device (device-mapper maps, md arrays).
func (h Host) holders(dev string) []string {
	es, _ := os.ReadDir(filepath.Join(h.Sys, "block", dev, "holders"))
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// Find returns the block device of the volume with serial: its multipath map when one exists,
// else the SCSI disk or NVMe namespace ("" when none).
func (h Host) Find(serial string) string {
	if dm, _ := h.mapOf(serial); dm != "" {
		return filepath.Join(h.Dev, dm)
	}
	if p := h.scsiPaths(serial); len(p) > 0 {
		return filepath.Join(h.Dev, p[0])
	}
	if n := h.nvmeNamespaces(serial); len(n) > 0 {
		return filepath.Join(h.Dev, n[0])
	}
	return ""
}

// Wait waits up to within for the volume's device. When a SCSI path appears and multipathd
// runs, multipathd gets Settle to build its map over it; when it does not (a new WWID under
// find_multipaths, or no uevent reached it), the paths and the map are added through
// multipathd, so the volume is used through its map as every other multipathed LUN is.
func (h Host) Wait(ctx context.Context, serial string, within time.Duration, log func(string, ...any)) (string, error) {
	deadline := time.Now().Add(within)
	for {
		if d := h.Find(serial); d != "" {
			if !strings.HasPrefix(filepath.Base(d), "sd") || !h.multipathd() {
				return d, nil
			}
			if m := h.waitMap(ctx, serial, h.Settle); m != "" {
				return m, nil
			}
			return h.addMap(ctx, serial, d, log), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no device with serial %s (NAA %s) appeared within %s", serial, pure.NAA(serial), within)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitMap waits up to d for the volume's multipath map ("" when none came).
func (h Host) waitMap(ctx context.Context, serial string, d time.Duration) string {
	until := time.Now().Add(d)
	for {
		if dm, _ := h.mapOf(serial); dm != "" {
			return filepath.Join(h.Dev, dm)
		}
		if time.Now().After(until) || ctx.Err() != nil {
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// addMap has multipathd watch the volume's paths and build its map; without a map after
// Settle, the path device is used as it is (the log says so).
func (h Host) addMap(ctx context.Context, serial, path string, log func(string, ...any)) string {
	paths := h.scsiPaths(serial)
	for _, p := range paths {
		if out, err := h.Run.Run(ctx, []string{"multipathd", "add", "path", p}); err != nil {
			log("multipathd add path %s: %v %s", p, err, strings.TrimSpace(string(out)))
		}
	}
	wwid := "3" + pure.NAA(serial)
	if out, err := h.Run.Run(ctx, []string{"multipathd", "add", "map", wwid}); err != nil {
		log("multipathd add map %s: %v %s", wwid, err, strings.TrimSpace(string(out)))
	}
	if m := h.waitMap(ctx, serial, h.Settle); m != "" {
		log("multipath map %s added over %s", filepath.Base(m), strings.Join(paths, ", "))
		return m
	}
	log("multipathd made no map over %s (%s): using the path device", strings.Join(paths, ", "), wwid)
	return path
}

func (h Host) multipathd() bool {
	if h.Multipathd != nil {
		return h.Multipathd()
	}
	_, err := os.Stat("/run/multipathd.pid")
	return err == nil && h.Sys == "/sys"
}

// Remove takes the volume's devices off this node: its multipath map, then each SCSI path
// (buffers flushed, device deleted), and has the NVMe controllers of its namespaces rescan
// (a namespace goes once the array withdrew it). A map or path something still sits on (an
// active LV) is refused, not pulled from under it.
func (h Host) Remove(ctx context.Context, serial string, log func(string, ...any)) error {
	if dm, name := h.mapOf(serial); dm != "" {
		if hs := h.holders(dm); len(hs) > 0 {
			return fmt.Errorf("multipath map %s (%s) of serial %s is in use by %s: not removed", name, dm, serial, strings.Join(hs, ", "))
		}
		argv := []string{"multipathd", "remove", "map", name}
		if !h.multipathd() {
			argv = []string{"multipath", "-f", name} // this one map; never -F (every unused map)
		}
		if err := h.removeMap(ctx, argv, serial, dm, log); err != nil {
			return err
		}
		if still, _ := h.mapOf(serial); still != "" {
			return fmt.Errorf("multipath map %s of serial %s is still there after %s", name, serial, strings.Join(argv, " "))
		}
		log("multipath map %s (%s) removed", name, dm)
	}
	for _, sd := range h.scsiPaths(serial) {
		if hs := h.holders(sd); len(hs) > 0 {
			return fmt.Errorf("%s (serial %s) is in use by %s: not removed", sd, serial, strings.Join(hs, ", "))
		}
		if h.multipathd() {
			// Best effort: multipathd may not watch it (it never made a map over it).
			h.Run.Run(ctx, []string{"multipathd", "remove", "path", sd}) //nolint:errcheck
		}
		if _, err := h.Run.Run(ctx, []string{"blockdev", "--flushbufs", filepath.Join(h.Dev, sd)}); err != nil {
			return fmt.Errorf("flushing the buffers of %s (serial %s): %w", sd, serial, err)
		}
		if err := h.write(filepath.Join(h.Sys, "block", sd, "device", "delete"), "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("deleting %s (serial %s): %w", sd, serial, err)
		}
		log("SCSI device %s (serial %s) deleted", sd, serial)
	}
	for _, ns := range h.nvmeNamespaces(serial) {
		if hs := h.holders(ns); len(hs) > 0 {
			return fmt.Errorf("%s (serial %s) is in use by %s", ns, serial, strings.Join(hs, ", "))
		}
	}
	for _, ctrl := range h.nvmeControllers("eui." + pure.NGUID(serial)) {
		h.write(filepath.Join(ctrl, "rescan_controller"), "1") //nolint:errcheck // what it does is checked by Gone
	}
	return nil
}

// A map that another process has open for a moment refuses removal: LVM's device scan
// (pvestatd runs vgs every 10 s), blkid. Neither multipathd's "remove map" nor "multipath -f"
// retries by default (remove_retries 0), so pvesnap does, as os-brick does: for up to
// mapRemoveAttempts × mapRemoveDelay, while nothing holds the map.
const mapRemoveAttempts = 10

var mapRemoveDelay = 500 * time.Millisecond // shorter in tests

// removeMap runs argv (the removal of map dm of serial) until the map is gone or the attempts
// are spent; a holder that appears meanwhile ends it at once.
func (h Host) removeMap(ctx context.Context, argv []string, serial, dm string, log func(string, ...any)) error {
	name := argv[len(argv)-1]
	for attempt := 1; ; attempt++ {
		out, err := h.Run.Run(ctx, argv)
		if err == nil {
			return nil
		}
		if said := strings.TrimSpace(string(out)); said != "" {
			err = fmt.Errorf("%w (%s answered %q)", err, argv[0], said) // multipathd answers on stdout
		}
		if still, _ := h.mapOf(serial); still == "" {
			return nil // gone all the same (removed by multipathd itself meanwhile)
		}
		if hs := h.holders(dm); len(hs) > 0 {
			return fmt.Errorf("multipath map %s (%s) of serial %s is in use by %s: not removed", name, dm, serial, strings.Join(hs, ", "))
		}
		if attempt == mapRemoveAttempts {
			return fmt.Errorf("removing multipath map %s of serial %s (%d attempts over %s: something keeps it open): %w",
				name, serial, attempt, time.Duration(attempt-1)*mapRemoveDelay, err)
		}
		if attempt == 1 {
			log("multipath map %s is busy (%v): trying again for up to %s", name, err, time.Duration(mapRemoveAttempts-1)*mapRemoveDelay)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(mapRemoveDelay):
		}
	}
}

// Gone checks, once the array no longer presents the volume, that no device of it is left:
// what reappeared since Remove (a rescan, an iSCSI session's re-login) is removed again, and
// NVMe namespaces get up to within to go after their controller's rescan.
func (h Host) Gone(ctx context.Context, serial string, within time.Duration, log func(string, ...any)) error {
	if err := h.Remove(ctx, serial, log); err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for {
		left := h.scsiPaths(serial)
		left = append(left, h.nvmeNamespaces(serial)...)
		if dm, _ := h.mapOf(serial); dm != "" {
			left = append(left, dm)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("devices of serial %s still present after the array stopped presenting it: %s", serial, strings.Join(left, ", "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
