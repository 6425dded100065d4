package storage

import (
	"context"
	"fmt"
	"os"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// OffloadableVG reports whether every PV of a volume group sits on devices that can copy
// inside the storage (SCSI third-party copy or NVMe Copy), looked up now, not cached.
func OffloadableVG(run runner.Runner, roots engine.Roots) func(ctx context.Context, vg string) (bool, string) {
	return func(ctx context.Context, vg string) (bool, string) {
		pvs, err := (&lvm.LVM{Run: run}).PVs(ctx, vg)
		if err != nil {
			return false, err.Error()
		}
		if len(pvs) == 0 {
			return false, "volume group " + vg + " has no physical volumes"
		}
		ctl, err := dm.OpenControl("")
		if err != nil {
			return false, "device-mapper unavailable: " + err.Error()
		}
		defer ctl.Close()
		r := &dm.Resolver{Tables: ctl, Sys: roots.Sys}
		for _, pv := range pvs {
			f, err := os.Open(pv.Name)
			if err != nil {
				return false, err.Error()
			}
			fi, err := f.Stat()
			f.Close()
			if err != nil {
				return false, err.Error()
			}
			dev, err := devNumber(fi)
			if err != nil {
				return false, err.Error()
			}
			ext, err := r.ResolveAll(dev)
			if err != nil {
				return false, fmt.Sprintf("PV %s: %v", pv.Name, err)
			}
			for _, x := range ext {
				if ok, why := engine.Identify(ctx, roots, x.Dev).Offload(); !ok {
					return false, fmt.Sprintf("PV %s: %s", pv.Name, why)
				}
			}
		}
		return true, ""
	}
}
