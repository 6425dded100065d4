package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/runner"
)

// Host finds, rescans and removes this node's block devices of array volumes through sysfs.
type Host struct {
	Sys string // /sys
	Dev string // /dev
	Run runner.Runner
	// Settle is how long to wait for a multipath map over a new device when multipathd runs.
	Settle time.Duration
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
		if err := os.WriteFile(scan, []byte(fmt.Sprintf("%s %s %d", hctl[1], hctl[2], lun)), 0o200); err != nil {
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
				if err := os.WriteFile(scan, []byte(fmt.Sprintf("- - %d", lun)), 0o200); err == nil {
					log("rescanned %s (%s) for LUN %d", filepath.Base(hp), class, lun)
				}
			}
		}
	}
	// NVMe: controllers whose namespaces carry the array's NGUID prefix.
	nguidPrefix := "eui.00" + strings.ToLower(serial[:14])
	ms, _ := filepath.Glob(filepath.Join(h.Sys, "class", "nvme", "nvme*", "nvme*n*", "wwid"))
	done := map[string]bool{}
	for _, m := range ms {
		b, err := os.ReadFile(m)
		ctrl := filepath.Dir(filepath.Dir(m))
		if err != nil || done[ctrl] || !strings.HasPrefix(strings.TrimSpace(string(b)), nguidPrefix) {
			continue
		}
		done[ctrl] = true
		if err := os.WriteFile(filepath.Join(ctrl, "rescan_controller"), []byte("1"), 0o200); err == nil {
			log("rescanned NVMe controller %s", filepath.Base(ctrl))
		}
	}
}

// Find returns the block device of the volume with serial: its multipath map when one exists,
// else the SCSI disk or NVMe namespace ("" when none).
func (h Host) Find(serial string) string {
	naa := pure.NAA(serial)
	maps, _ := filepath.Glob(filepath.Join(h.Sys, "block", "dm-*", "dm", "uuid"))
	for _, m := range maps {
		b, _ := os.ReadFile(m)
		if strings.TrimSpace(string(b)) == "mpath-3"+naa {
			return filepath.Join(h.Dev, filepath.Base(filepath.Dir(filepath.Dir(m))))
		}
	}
	for _, pat := range []string{"sd*/device/wwid", "nvme*n*/wwid"} {
		ms, _ := filepath.Glob(filepath.Join(h.Sys, "block", pat))
		for _, m := range ms {
			b, _ := os.ReadFile(m)
			if s, ok := pure.SerialFromWWID(strings.TrimSpace(string(b))); ok && s == strings.ToUpper(serial) {
				name := strings.Split(strings.TrimPrefix(m, filepath.Join(h.Sys, "block")+"/"), "/")[0]
				return filepath.Join(h.Dev, name)
			}
		}
	}
	return ""
}

// Wait waits up to within for the volume's device; when a SCSI disk appears and multipathd
// runs, it gives multipath Settle to build its map over it.
func (h Host) Wait(ctx context.Context, serial string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		if d := h.Find(serial); d != "" {
			if strings.Contains(d, "/sd") && h.multipathd() {
				settle := time.Now().Add(h.Settle)
				for time.Now().Before(settle) {
					time.Sleep(200 * time.Millisecond)
					if m := h.Find(serial); m != d {
						return m, nil
					}
				}
			}
			return d, nil
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

func (h Host) multipathd() bool {
	_, err := os.Stat("/run/multipathd.pid")
	return err == nil && h.Sys == "/sys"
}

// Remove takes the volume's devices off this node: its multipath map (dmsetup remove, only a
// map named for this serial), then each SCSI path (sysfs delete). NVMe namespaces go when
// the array withdraws them.
func (h Host) Remove(ctx context.Context, serial string) error {
	naa := pure.NAA(serial)
	maps, _ := filepath.Glob(filepath.Join(h.Sys, "block", "dm-*", "dm", "uuid"))
	for _, m := range maps {
		b, _ := os.ReadFile(m)
		if strings.TrimSpace(string(b)) != "mpath-3"+naa {
			continue
		}
		name, _ := os.ReadFile(filepath.Join(filepath.Dir(m), "name"))
		if _, err := h.Run.Run(ctx, []string{"dmsetup", "remove", "--retry", strings.TrimSpace(string(name))}); err != nil {
			return err
		}
	}
	ms, _ := filepath.Glob(filepath.Join(h.Sys, "block", "sd*", "device", "wwid"))
	for _, m := range ms {
		b, _ := os.ReadFile(m)
		if strings.TrimSpace(string(b)) != "naa."+naa {
			continue
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(m), "delete"), []byte("1"), 0o200); err != nil {
			return fmt.Errorf("removing %s: %w", filepath.Base(filepath.Dir(filepath.Dir(m))), err)
		}
	}
	return nil
}
