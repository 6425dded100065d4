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
	"sync"

	"github.com/pvesnap/pvesnap/ioctl/ata"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/ioctl/nvme"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
)

// Kind of a physical device.
const (
	KindSCSI  = "scsi"
	KindATA   = "ata" // a SATA disk behind libata: SCSI in name only
	KindNVMe  = "nvme"
	KindOther = "other"
)

// Device is a physical block device below every mapping layer, with what it says about itself
// (identity, health) and what the engine needs to decide whether copies can be offloaded.
type Device struct {
	Dev               dm.Dev
	Name              string // sda, nvme0n1
	Path              string // /dev/sda
	Kind              string
	Size              int64
	BlockSize         int
	PhysicalBlockSize int
	Serial            string
	Vendor            string
	Model             string
	Firmware          string
	WWID              string

	// Paths are the kernel names of every path to the LU (sdb, sdc), Multipath the
	// dm-multipath map over them; set by the listings (List, Under), not by Identify.
	Paths     []string
	Multipath string

	// SCSI
	SCSI *scsi.Identity
	// SATA: IDENTIFY DEVICE, read through github.com/anatol/smart.go
	ATA *ata.Identity

	// NVMe
	NSID        uint32
	SubNQN      string
	Controllers []string // /dev/nvmeX of the subsystem's controllers
	Ctrl        *nvme.Controller
	NS          *nvme.Namespace
	PIF         uint8 // protection information format of the LBA format in use (0: 16-bit guard)
	STS         uint8 // storage tag bits in its reference tags
	// CDFE is Host Behavior Support's Copy Descriptor Formats Enable as the first controller
	// reports it (nil when unread: CDFEError says why).
	CDFE      *uint16
	CDFEError error

	Health Health

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

// SCSIDevice is an open SCSI device (a *scsi.Device).
type SCSIDevice interface {
	scsi.Executor
	Close() error
}

// NVMeController is an open NVMe controller as identification asks it (a *nvme.Device with
// the library's health log).
type NVMeController interface {
	IdentifyController(ctx context.Context) (*nvme.Controller, error)
	IdentifyNamespace(ctx context.Context, nsid uint32) (*nvme.Namespace, error)
	IdentifyNVMNamespace(ctx context.Context, nsid uint32) (nvme.NVMNamespace, error)
	HostBehavior(ctx context.Context) (nvme.HostBehavior, error)
	HealthLog() (*nvme.HealthLog, error)
	Close() error
}

// Openers reach the devices identification asks; nil fields open the device nodes.
// Fixtures in tests answer instead (as node_exporter's tests read a fake /sys).
type Openers struct {
	SCSI func(path string) (SCSIDevice, error)
	NVMe func(path string) (NVMeController, error)
	ATA  func(path string) (ata.Disk, error)
}

type nvmeCtrl struct {
	*nvme.Device
}

// HealthLog reads the controller's log through the library, on the node pvesnap has open.
func (c nvmeCtrl) HealthLog() (*nvme.HealthLog, error) { return nvme.ReadHealthLog(c.Path) }

func (o Openers) scsi(path string) (SCSIDevice, error) {
	if o.SCSI != nil {
		return o.SCSI(path)
	}
	return scsi.OpenRead(path)
}

func (o Openers) nvme(path string) (NVMeController, error) {
	if o.NVMe != nil {
		return o.NVMe(path)
	}
	d, err := nvme.Open(path)
	if err != nil {
		return nil, err
	}
	return nvmeCtrl{d}, nil
}

func (o Openers) ata(path string) (ata.Disk, error) {
	if o.ATA != nil {
		return o.ATA(path)
	}
	return ata.Open(path)
}

// Identifier identifies devices. What a controller says (Identify Controller, its health
// log, Host Behavior Support) is read once per Identifier and shared by its namespaces:
// namespaces are identified one by one, never by a walk over the controller's (an array
// controller has thousands).
type Identifier struct {
	Roots Roots
	Open  Openers

	mu    sync.Mutex
	ctrls map[string]*ctrlFacts
}

// ctrlFacts is what one controller answered.
type ctrlFacts struct {
	once   sync.Once
	ctrl   *nvme.Controller
	err    error
	log    *nvme.HealthLog
	logErr error
	cdfe   *uint16
	hbErr  error
}

// Identify classifies a physical device and reads its identity, offload capabilities and
// health, with a fresh Identifier.
func Identify(ctx context.Context, roots Roots, d dm.Dev) *Device {
	return (&Identifier{Roots: roots}).Identify(ctx, d)
}

// Identify classifies a physical device and reads its identity, offload capabilities and
// health.
func (id *Identifier) Identify(ctx context.Context, d dm.Dev) *Device {
	roots := id.Roots
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
	out.PhysicalBlockSize, _ = strconv.Atoi(readTrim(filepath.Join(link, "queue", "physical_block_size")))
	switch {
	case strings.HasPrefix(out.Name, "sd") && readTrim(filepath.Join(link, "device", "vendor")) == "ATA":
		out.Kind = KindATA
		id.identifyATA(ctx, out)
	case strings.HasPrefix(out.Name, "sd"):
		out.Kind = KindSCSI
		id.identifySCSI(ctx, out)
	case strings.HasPrefix(out.Name, "nvme"):
		out.Kind = KindNVMe
		id.identifyNVMe(ctx, link, out)
	default:
		out.Health.unknown("pvesnap asks SCSI, SATA and NVMe devices only")
	}
	if readTrim(filepath.Join(link, "ro")) == "1" {
		out.Health.ReadOnly = true
		out.Health.raise(HealthWarning, "the kernel has the device read-only (sysfs ro)")
	}
	return out
}

func (id *Identifier) identifySCSI(ctx context.Context, d *Device) {
	dev, err := id.Open.scsi(d.Path)
	if err != nil {
		d.Err = err
		d.Health.unknown(err.Error())
		return
	}
	defer dev.Close()
	sid, err := scsi.Identify(ctx, dev)
	if err != nil {
		d.Err = err
		d.Health.unknown(err.Error())
		return
	}
	d.SCSI = sid
	d.Serial = sid.Serial
	d.Vendor, d.Model, d.Firmware = sid.Inquiry.Vendor, sid.Inquiry.Product, sid.Inquiry.Revision
	if d.BlockSize == 0 {
		d.BlockSize = int(sid.Capacity.BlockSize)
	}
	if d.PhysicalBlockSize == 0 {
		d.PhysicalBlockSize = int(sid.Capacity.BlockSize) << sid.Capacity.LBPPBE
	}
	if d.Size == 0 {
		d.Size = int64(sid.Capacity.Bytes())
	}
	scsiHealth(ctx, &d.Health, dev)
}

// identifyATA asks a SATA disk through github.com/anatol/smart.go (IDENTIFY DEVICE, SMART
// attributes and thresholds) and, for the verdict the library does not ask, SG_IO.
func (id *Identifier) identifyATA(ctx context.Context, d *Device) {
	disk, err := id.Open.ata(d.Path)
	if err != nil {
		d.Err = fmt.Errorf("%s: ATA IDENTIFY: %w", d.Name, err)
		d.Health.unknown(d.Err.Error())
		return
	}
	defer disk.Close()
	raw, err := disk.Identify()
	if err != nil {
		d.Err = fmt.Errorf("%s: ATA IDENTIFY: %w", d.Name, err)
		d.Health.unknown(d.Err.Error())
		return
	}
	a := ata.IdentityOf(raw)
	d.ATA = &a
	d.Vendor, d.Model, d.Serial, d.Firmware = "ATA", a.Model, a.Serial, a.Firmware
	if d.BlockSize == 0 {
		d.BlockSize = int(a.LogicalSectorSize)
	}
	if d.PhysicalBlockSize == 0 {
		d.PhysicalBlockSize = int(a.PhysicalSectorSize)
	}
	x, err := id.Open.scsi(d.Path)
	if err != nil {
		d.Health.unknown(err.Error())
		return
	}
	defer x.Close()
	ataHealth(ctx, &d.Health, a, disk, x)
}

func (id *Identifier) identifyNVMe(ctx context.Context, link string, d *Device) {
	n, err := strconv.ParseUint(readTrim(filepath.Join(link, "nsid")), 10, 32)
	if err != nil {
		d.Err = fmt.Errorf("%s: no nsid in sysfs", d.Name)
		d.Health.unknown(d.Err.Error())
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
				d.Controllers = append(d.Controllers, filepath.Join(id.Roots.Dev, e.Name()))
			}
		}
	} else {
		d.Controllers = []string{filepath.Join(id.Roots.Dev, filepath.Base(parent))}
		d.SubNQN = readTrim(filepath.Join(parent, "subsysnqn"))
	}
	sort.Strings(d.Controllers)
	if len(d.Controllers) == 0 {
		d.Err = fmt.Errorf("%s: no controller found", d.Name)
		d.Health.unknown(d.Err.Error())
		return
	}
	ctrl, err := id.Open.nvme(d.Controllers[0])
	if err != nil {
		d.Err = err
		d.Health.unknown(err.Error())
		return
	}
	defer ctrl.Close()
	cf := id.controller(ctx, d.Controllers[0], ctrl)
	if cf.err != nil {
		d.Err = cf.err
		d.Health.unknown(cf.err.Error())
		return
	}
	d.Ctrl = cf.ctrl
	d.Serial, d.Model, d.Firmware = cf.ctrl.SerialNumber(), cf.ctrl.ModelNumber(), cf.ctrl.FirmwareRev()
	d.CDFE, d.CDFEError = cf.cdfe, cf.hbErr
	ns, err := ctrl.IdentifyNamespace(ctx, d.NSID)
	if err != nil {
		d.Err = err
		nvmeHealth(&d.Health, cf.log, cf.logErr, nil)
		return
	}
	d.NS = ns
	if nvmNS, err := ctrl.IdentifyNVMNamespace(ctx, d.NSID); err == nil {
		d.PIF = nvmNS.PIF(ns.FormatIndex())
		d.STS = nvmNS.STS(ns.FormatIndex())
	}
	if d.BlockSize == 0 {
		d.BlockSize = int(ns.BlockSize())
	}
	if d.Size == 0 {
		d.Size = int64(ns.Nsze) * int64(ns.BlockSize())
	}
	nvmeHealth(&d.Health, cf.log, cf.logErr, ns)
}

// controller reads what a controller says once per Identifier.
func (id *Identifier) controller(ctx context.Context, path string, c NVMeController) *ctrlFacts {
	id.mu.Lock()
	if id.ctrls == nil {
		id.ctrls = map[string]*ctrlFacts{}
	}
	cf := id.ctrls[path]
	if cf == nil {
		cf = &ctrlFacts{}
		id.ctrls[path] = cf
	}
	id.mu.Unlock()
	cf.once.Do(func() {
		if cf.ctrl, cf.err = c.IdentifyController(ctx); cf.err != nil {
			return
		}
		cf.log, cf.logErr = c.HealthLog()
		if cf.ctrl.SupportsCopy() {
			if hb, err := c.HostBehavior(ctx); err != nil {
				cf.hbErr = err
			} else {
				cf.cdfe = &hb.CDFE
			}
		}
	})
	return cf
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
		for _, i := range d.Ctrl.CopyFormats() {
			f = append(f, fmt.Sprintf("%dh", i))
		}
		cdfe := "CDFE unread"
		if d.CDFE != nil {
			cdfe = fmt.Sprintf("CDFE %#x", *d.CDFE)
		}
		return fmt.Sprintf("Copy formats %s, MSSRL %d, MCL %d, MSRC %d, %s", strings.Join(f, "/"), d.NS.Mssrl, d.NS.Mcl, int(d.NS.Msrc)+1, cdfe)
	}
	return "host copy only"
}

// CDFEState says whether the cross-namespace copy format pvesnap uses is enabled in Host
// Behavior Support, and what follows.
func (d *Device) CDFEState() string {
	f := nvme.Format2
	if d.PIF != 0 {
		f = nvme.Format3
	}
	switch {
	case d.Ctrl == nil || !d.Ctrl.SupportsCopy():
		return "no Copy command"
	case !d.Ctrl.SupportsCopyFormat(f):
		return fmt.Sprintf("cross-namespace copy format %dh not offered (OCFS %#x): copies between namespaces go through the host", f, d.Ctrl.Ocfs)
	case d.CDFEError != nil:
		return fmt.Sprintf("Host Behavior Support unreadable (%v)", d.CDFEError)
	case d.CDFE == nil:
		return "CDFE not read"
	case *d.CDFE&(1<<f) != 0:
		return fmt.Sprintf("CDFE %#x: format %dh enabled", *d.CDFE, f)
	}
	return fmt.Sprintf("CDFE %#x: format %dh not enabled; pvesnap enables it before a cross-namespace copy, which kernels from 6.12.110 refuse to user space (the first Copy then shows whether the device enforces it)", *d.CDFE, f)
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
// when it cannot (a pair still needs both ends on one array or subsystem). A device that
// reports itself failing or read-only is refused.
func (d *Device) Offload() (bool, string) {
	if why := d.Health.OffloadRefusal(true); why != "" {
		return false, d.Name + ": " + why
	}
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
