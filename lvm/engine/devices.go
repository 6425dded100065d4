// Package engine copies a block range (an LV, a whole device) to another so that, whenever
// the storage can do it, the bytes never cross the host: SCSI EXTENDED COPY between LUs of one
// array, NVMe Copy between namespaces of one subsystem; otherwise, or when told to, a host
// copy with O_DIRECT, several I/Os in flight and zero detection.
package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// Kind of a physical device.
const (
	KindSCSI  = "scsi"
	KindNVMe  = "nvme"
	KindOther = "other"
)

// Device is a physical block device below every mapping layer, with what the engine needs to
// decide whether copies can be offloaded.
type Device struct {
	Dev       dm.Dev
	Name      string // sda, nvme0n1
	Path      string // /dev/sda
	Kind      string
	Size      int64
	BlockSize int
	Serial    string
	Vendor    string
	Model     string

	// SCSI
	SCSI *scsi.Identity

	// NVMe
	NSID        uint32
	SubNQN      string
	Controllers []string // /dev/nvmeX of the subsystem's controllers
	Ctrl        *nvme.Controller
	NS          *nvme.Namespace
	PIF         uint8 // protection information format of the LBA format in use (0: 16-bit guard)
	STS         uint8 // storage tag bits in its reference tags
	WWID        string

	// Err is why the device could not be identified (it is then copied by the host).
	Err error
}

// Roots locate sysfs and /dev (configurable for tests).
type Roots struct {
	Sys string
	Dev string
}

func (r Roots) sys(parts ...string) string {
	return filepath.Join(append([]string{r.Sys}, parts...)...)
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Identify classifies a physical device and reads its offload capabilities.
func Identify(ctx context.Context, roots Roots, d dm.Dev) *Device {
	out := &Device{Dev: d, Kind: KindOther}
	link, err := filepath.EvalSymlinks(roots.sys("dev", "block", d.String()))
	if err != nil {
		out.Err = fmt.Errorf("device %s not in sysfs: %w", d, err)
		return out
	}
	out.Name = filepath.Base(link)
	out.Path = filepath.Join(roots.Dev, out.Name)
	out.WWID = readTrim(filepath.Join(link, "wwid"))
	if out.WWID == "" {
		out.WWID = readTrim(filepath.Join(link, "device", "wwid"))
	}
	if sz, err := strconv.ParseInt(readTrim(filepath.Join(link, "size")), 10, 64); err == nil {
		out.Size = sz * 512
	}
	out.BlockSize, _ = strconv.Atoi(readTrim(filepath.Join(link, "queue", "logical_block_size")))
	switch {
	case strings.HasPrefix(out.Name, "sd"):
		out.Kind = KindSCSI
		identifySCSI(ctx, out)
	case strings.HasPrefix(out.Name, "nvme"):
		out.Kind = KindNVMe
		identifyNVMe(ctx, roots, link, out)
	}
	return out
}

func identifySCSI(ctx context.Context, d *Device) {
	dev, err := scsi.Open(d.Path)
	if err != nil {
		d.Err = err
		return
	}
	defer dev.Close()
	id, err := scsi.Identify(ctx, dev)
	if err != nil {
		d.Err = err
		return
	}
	d.SCSI = id
	d.Serial = id.Serial
	d.Vendor, d.Model = id.Inquiry.Vendor, id.Inquiry.Product
	if d.BlockSize == 0 {
		d.BlockSize = int(id.Capacity.BlockSize)
	}
}

func identifyNVMe(ctx context.Context, roots Roots, link string, d *Device) {
	n, err := strconv.ParseUint(readTrim(filepath.Join(link, "nsid")), 10, 32)
	if err != nil {
		d.Err = fmt.Errorf("%s: no nsid in sysfs", d.Name)
		return
	}
	d.NSID = uint32(n)
	// A native-multipath head lives under its subsystem; a plain namespace under its
	// controller.
	parent := filepath.Dir(link)
	if strings.HasPrefix(filepath.Base(parent), "nvme-subsys") {
		d.SubNQN = readTrim(filepath.Join(parent, "subsysnqn"))
		ents, _ := os.ReadDir(parent)
		for _, e := range ents {
			if ctrlRe.MatchString(e.Name()) { // nvme0, nvme1: the controllers; nvme0n1: heads
				d.Controllers = append(d.Controllers, filepath.Join(roots.Dev, e.Name()))
			}
		}
	} else {
		d.Controllers = []string{filepath.Join(roots.Dev, filepath.Base(parent))}
		d.SubNQN = readTrim(filepath.Join(parent, "subsysnqn"))
	}
	sort.Strings(d.Controllers)
	if len(d.Controllers) == 0 {
		d.Err = fmt.Errorf("%s: no controller found", d.Name)
		return
	}
	ctrl, err := nvme.Open(d.Controllers[0])
	if err != nil {
		d.Err = err
		return
	}
	defer ctrl.Close()
	c, err := ctrl.IdentifyController(ctx)
	if err != nil {
		d.Err = err
		return
	}
	d.Ctrl = &c
	d.Serial, d.Model = c.Serial, c.Model
	ns, err := ctrl.IdentifyNamespace(ctx, d.NSID)
	if err != nil {
		d.Err = err
		return
	}
	d.NS = &ns
	if nvmNS, err := ctrl.IdentifyNVMNamespace(ctx, d.NSID); err == nil {
		d.PIF = nvmNS.PIF(ns.FormatIndex())
		d.STS = nvmNS.STS(ns.FormatIndex())
	}
	if d.BlockSize == 0 {
		d.BlockSize = int(ns.BlockSize())
	}
}

var ctrlRe = regexp.MustCompile(`^nvme[0-9]+$`)

// Capabilities summarises what the device offers for offloaded copies (for `pvesnap devices`).
func (d *Device) Capabilities() string {
	switch {
	case d.Err != nil:
		return "unknown: " + d.Err.Error()
	case d.Kind == KindSCSI && d.SCSI != nil:
		if !d.SCSI.Inquiry.ThirdPartyCopy {
			return "no third-party copy (3PC clear)"
		}
		if d.SCSI.Copy == nil {
			return fmt.Sprintf("3PC set but copy parameters unavailable: %v", d.SCSI.CopyError)
		}
		p := d.SCSI.Copy
		return fmt.Sprintf("EXTENDED COPY: %d segment(s)/command, max segment %s, %d concurrent, granularity %d B",
			p.MaxSegmentDescriptors, sizeText(int64(p.MaxSegmentLength)), max(int(p.MaxConcurrentCopies), 1), 1<<p.DataSegmentGranLog2)
	case d.Kind == KindNVMe && d.Ctrl != nil && d.NS != nil:
		if !d.Ctrl.SupportsCopy() {
			return "no Copy command (ONCS bit 8 clear)"
		}
		var f []string
		for i := 0; i < 4; i++ {
			if d.Ctrl.SupportsCopyFormat(i) {
				f = append(f, fmt.Sprintf("%dh", i))
			}
		}
		return fmt.Sprintf("Copy formats %s, MSSRL %d, MCL %d, MSRC %d", strings.Join(f, "/"), d.NS.MSSRL, d.NS.MCL, int(d.NS.MSRC)+1)
	}
	return "host copy only"
}

func sizeText(n int64) string {
	if n == 0 {
		return "unlimited"
	}
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// List identifies every whole disk of the node (SCSI disks and NVMe namespace heads).
func List(ctx context.Context, roots Roots) ([]*Device, error) {
	ents, err := os.ReadDir(roots.sys("block"))
	if err != nil {
		return nil, err
	}
	var out []*Device
	for _, e := range ents {
		name := e.Name()
		if !(strings.HasPrefix(name, "sd") || strings.HasPrefix(name, "nvme")) || strings.Contains(strings.TrimPrefix(name, "nvme"), "c") {
			continue
		}
		d, err := dm.ParseDev(readTrim(roots.sys("block", name, "dev")))
		if err != nil {
			continue
		}
		out = append(out, Identify(ctx, roots, d))
	}
	return out, nil
}

// devOf returns the device number of an open block device.
func devOf(f *os.File) (dm.Dev, error) {
	fi, err := f.Stat()
	if err != nil {
		return dm.Dev{}, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return dm.Dev{}, fmt.Errorf("%s is not a block device", f.Name())
	}
	return statDev(fi)
}

// Offload reports whether the device can copy inside the storage at all, with the reason
// when it cannot (a pair still needs both ends on one array or subsystem).
func (d *Device) Offload() (bool, string) {
	switch {
	case d.Err != nil:
		return false, d.Err.Error()
	case d.Kind == KindSCSI && d.SCSI != nil:
		switch {
		case !d.SCSI.Inquiry.ThirdPartyCopy:
			return false, d.Name + ": no third-party copy (3PC clear)"
		case !d.SCSI.HasNAA:
			return false, d.Name + ": no NAA designator"
		case d.SCSI.Copy == nil:
			return false, fmt.Sprintf("%s: no copy operating parameters (%v)", d.Name, d.SCSI.CopyError)
		}
		return true, ""
	case d.Kind == KindNVMe && d.Ctrl != nil:
		if !d.Ctrl.SupportsCopy() {
			return false, d.Name + ": no NVMe Copy command"
		}
		return true, ""
	}
	return false, d.Name + ": not an array LUN or NVMe namespace"
}
