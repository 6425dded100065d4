package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/ioctl"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// RealVolumes backs the simulated pveproxy's zfspool and lvmthin storages with the guest's
// real pools, as PVE's ZFSPoolPlugin and LvmThinPlugin manage them, so that what pvesnap does
// on a pool is what pveproxy lists and deletes. Other storages keep the simulator's files.
func RealVolumes(_ string, st *simpve.Storage) simpve.Volumes {
	switch st.Type {
	case "zfspool":
		return ZFSVolumes{Pool: st.Pool}
	case "lvmthin":
		return ThinVolumes{VG: st.VGName, Pool: st.ThinPool}
	}
	return nil
}

// ZFSVolumes are the zvols directly under Pool.
type ZFSVolumes struct{ Pool string }

// List is `zfs list -t volume` of the pool's children.
func (z ZFSVolumes) List() ([]volstore.Vol, error) {
	// Sample line: lab/data/vm-100-disk-0\t1073741824\t-\t1795312145
	out, err := guest.Output("zfs", "list", "-H", "-p", "-t", "volume", "-o", "name,volsize,origin,creation", "-d", "1", z.Pool)
	if err != nil {
		return nil, err
	}
	var vols []volstore.Vol
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || !strings.HasPrefix(f[0], z.Pool+"/") {
			continue
		}
		size, _ := strconv.ParseInt(f[1], 10, 64)
		created, _ := strconv.ParseInt(f[3], 10, 64)
		v := volstore.Vol{Name: strings.TrimPrefix(f[0], z.Pool+"/"), Size: size, Meta: volstore.Meta{Created: created}}
		if f[2] != "-" {
			v.Meta.Origin = strings.TrimPrefix(f[2], z.Pool+"/")
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// Exists reports whether the zvol exists.
func (z ZFSVolumes) Exists(vol string) bool {
	_, err := guest.Output("zfs", "list", "-H", "-o", "name", z.Pool+"/"+vol)
	return err == nil
}

// Create makes a sparse zvol, as PVE does on a sparse zfspool.
func (z ZFSVolumes) Create(vol string, size int64, _ volstore.Meta) error {
	if z.Exists(vol) {
		return fmt.Errorf("%s/%s: %w", z.Pool, vol, volstore.ErrExists)
	}
	_, err := guest.Output("zfs", "create", "-s", "-V", fmt.Sprintf("%dk", size/1024), z.Pool+"/"+vol)
	return err
}

// Destroy is PVE's `zfs destroy -r`; zfs refuses it while clones depend on the volume.
func (z ZFSVolumes) Destroy(vol string, _ bool) error {
	if !z.Exists(vol) {
		return fmt.Errorf("%s/%s: %w", z.Pool, vol, volstore.ErrNotFound)
	}
	if _, err := guest.Output("zfs", "destroy", "-r", z.Pool+"/"+vol); err != nil {
		return fmt.Errorf("zfs error: %w", err)
	}
	return nil
}

// Path is the zvol's /dev/zd* node ("" when it has none yet).
func (z ZFSVolumes) Path(vol string) string {
	d, _ := ZvolDevice(z.Pool+"/"+vol, 0)
	return d
}

// blkzname is the zvol driver's BLKZNAME ioctl, _IOR(0x12, 125, char[256]): the dataset
// behind a /dev/zd* node. udev's zvol_id uses it to make the /dev/zvol links, and the guest
// has no udev.
var blkzname = ioctl.IOR(0x12, 125, 256)

// ZvolDevice finds the /dev/zd* node of dataset ds, waiting up to wait for the zvol driver
// to create it (it does so asynchronously after create, clone and promote).
func ZvolDevice(ds string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		ms, _ := filepath.Glob("/sys/block/zd*")
		for _, m := range ms {
			dev := "/dev/" + filepath.Base(m)
			if name, err := zvolName(dev); err == nil && name == ds {
				return dev, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no /dev/zd* device for %s", ds)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func zvolName(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 256)
	if _, err := ioctl.Ioctl(f.Fd(), blkzname, buf); err != nil {
		return "", err
	}
	n := 0
	for n < len(buf) && buf[n] != 0 {
		n++
	}
	return string(buf[:n]), nil
}

// ThinVolumes are the thin LVs of thin pool VG/Pool.
type ThinVolumes struct{ VG, Pool string }

func (t ThinVolumes) lvm() *lvm.LVM { return &lvm.LVM{Run: &runner.Exec{Timeout: 2 * time.Minute}} }

// List is the pool's thin LVs, as `lvs` reports them.
func (t ThinVolumes) List() ([]volstore.Vol, error) {
	lvs, err := t.lvm().LVs(ctx, t.VG)
	if err != nil {
		return nil, err
	}
	var vols []volstore.Vol
	for _, lv := range lvs {
		if !lv.Thin() || lv.Pool != t.Pool {
			continue
		}
		vols = append(vols, volstore.Vol{Name: lv.Name, Size: lv.Size, Meta: volstore.Meta{Created: lv.Time.Unix(), ThinOrigin: lv.Origin, Tags: lv.Tags}})
	}
	return vols, nil
}

// Exists reports whether the thin LV exists.
func (t ThinVolumes) Exists(vol string) bool {
	_, err := t.lvm().LV(ctx, t.VG, vol)
	return err == nil
}

// Create makes a thin LV in the pool.
func (t ThinVolumes) Create(vol string, size int64, m volstore.Meta) error {
	if t.Exists(vol) {
		return fmt.Errorf("%s/%s: %w", t.VG, vol, volstore.ErrExists)
	}
	return t.lvm().Create(ctx, t.VG, vol, size, lvm.CreateOptions{ThinPool: t.Pool, Tags: m.Tags})
}

// Destroy is PVE's `lvremove -f`.
func (t ThinVolumes) Destroy(vol string, _ bool) error {
	if !t.Exists(vol) {
		return fmt.Errorf("%s/%s: %w", t.VG, vol, volstore.ErrNotFound)
	}
	return t.lvm().Remove(ctx, t.VG, vol)
}

// Path is the LV's /dev/<vg>/<lv> link (LVM makes it itself without udev).
func (t ThinVolumes) Path(vol string) string { return "/dev/" + t.VG + "/" + vol }
