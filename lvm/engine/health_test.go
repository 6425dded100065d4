package engine_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/ioctl/ata"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/lvm/engine"
	"github.com/pvesnap/pvesnap/lvm/engine/enginetest"
)

var ctx = context.Background()

func node(t *testing.T) *enginetest.Node {
	return enginetest.NewNode(t.TempDir(), t.TempDir())
}

func qemuController(cw uint8) *enginetest.Controller {
	c := &enginetest.Controller{Serial: "PVESNAPLAB01", Model: "QEMU NVMe Ctrl", Firmware: "10.0.2", SubNQN: "nqn.2026-01.lab.pvesnap:subsys0",
		ONCS: 0x15d, OCFS: 0xf, CritWarning: cw, TemperatureK: 323, AvailSpare: 100, Thresh: 10, PercentUsed: 3, UnsafeShutdowns: 2,
		Namespaces: map[uint32]*enginetest.Namespace{}}
	for i := uint32(1); i <= 3; i++ {
		c.Namespaces[i] = &enginetest.Namespace{Blocks: 1 << 22, LBADS: 9, MSSRL: 65535, MCL: 1048576, MSRC: 127,
			NGUID: "006c1b16ce1c034d24a9371c000b9fa" + string(rune('0'+i))}
	}
	return c
}

// A namespace whose controller's SMART / Health log reports critical warnings is failing and
// read-only, with the specification's words for each bit; offload to it is refused with
// them. The namespace is identified by itself: no walk over the controller's 256.
func TestNVMeCriticalWarning(t *testing.T) {
	n := node(t)
	c := qemuController(0x04 | 0x08) // reliability degraded, media read-only
	n.AddNVMe("nvme0", c, dm.Dev{Major: 259}, 1, 2)
	id := &engine.Identifier{Roots: n.Roots(), Open: n.Openers()}
	d := id.Identify(ctx, dm.Dev{Major: 259})
	if d.Err != nil || d.Kind != engine.KindNVMe || d.NSID != 1 || d.Serial != "PVESNAPLAB01" || d.Model != "QEMU NVMe Ctrl" ||
		d.Firmware != "10.0.2" || d.SubNQN != "nqn.2026-01.lab.pvesnap:subsys0" || d.BlockSize != 512 || d.Size != 2<<30 {
		t.Fatalf("identity %+v (%v)", d, d.Err)
	}
	h := d.Health
	if h.State != engine.HealthFailing || !h.ReadOnly || !h.Critical() || *h.Temperature != 50 || *h.PercentUsed != 3 || *h.UnsafeShutdowns != 2 {
		t.Fatalf("health %+v", h)
	}
	for _, want := range []string{"critical warning: reliability degraded (media or internal errors)", "critical warning: media placed in read-only mode"} {
		if !slices.Contains(h.Problems, want) {
			t.Errorf("problems %q lack %q", h.Problems, want)
		}
	}
	ok, why := d.Offload()
	if ok || !strings.Contains(why, "nvme0n1: it reports itself read-only (") || !strings.Contains(why, "media placed in read-only mode") {
		t.Fatalf("offload %v %q", ok, why)
	}
	if h.OffloadRefusal(false) == "" {
		t.Error("a failing device must not be an offload source either")
	}
	// The second namespace shares the controller's answers.
	d2 := id.Identify(ctx, dm.Dev{Major: 259, Minor: 1})
	nss, ctrls := c.Identified()
	if d2.NSID != 2 || !slices.Equal(nss, []uint32{1, 2}) || ctrls != 1 {
		t.Fatalf("Identify Namespace sent for %v, Identify Controller %d times", nss, ctrls)
	}
	v := d.View()
	if v.Copy.Offload || v.Copy.CDFE == nil || *v.Copy.CDFE != 0 || !strings.Contains(v.Copy.CDFEState, "format 2h not enabled") ||
		!slices.Equal(v.Copy.Formats, []int{0, 1, 2, 3}) || v.Copy.MSSRL != 65535 || v.Copy.MSRC != 127 || v.PI != "none" {
		t.Fatalf("view %+v", v)
	}
	b, _ := json.Marshal(v)
	if !strings.Contains(string(b), `"state":"failing"`) || !strings.Contains(string(b), `"read_only":true`) {
		t.Errorf("JSON %s", b)
	}
}

func TestNVMeHealthy(t *testing.T) {
	n := node(t)
	c := qemuController(0)
	c.CDFE = 1 << 2
	n.AddNVMe("nvme0", c, dm.Dev{Major: 259}, 1)
	d := (&engine.Identifier{Roots: n.Roots(), Open: n.Openers()}).Identify(ctx, dm.Dev{Major: 259})
	if d.Health.State != engine.HealthOK || d.Health.Critical() || len(d.Health.Problems) != 0 {
		t.Fatalf("health %+v", d.Health)
	}
	if ok, why := d.Offload(); !ok {
		t.Fatalf("offload refused: %s", why)
	}
	if s := d.CDFEState(); !strings.Contains(s, "CDFE 0x4: format 2h enabled") {
		t.Errorf("CDFE state %q", s)
	}
	// Temperature alone is a warning, not a failure: offload goes on.
	c.CritWarning = 0x02
	d = (&engine.Identifier{Roots: n.Roots(), Open: n.Openers()}).Identify(ctx, dm.Dev{Major: 259})
	if d.Health.State != engine.HealthWarning || !d.Health.Critical() || d.Health.OffloadRefusal(true) != "" {
		t.Fatalf("temperature warning %+v", d.Health)
	}
	// A write protected namespace is read-only: a destination refused, a source not.
	c.CritWarning = 0
	c.Namespaces[1].WriteProtected = true
	d = (&engine.Identifier{Roots: n.Roots(), Open: n.Openers()}).Identify(ctx, dm.Dev{Major: 259})
	if !d.Health.ReadOnly || d.Health.OffloadRefusal(true) == "" || d.Health.OffloadRefusal(false) != "" {
		t.Fatalf("write protected %+v", d.Health)
	}
}

func pureLU(serial string) *enginetest.LU {
	return &enginetest.LU{Vendor: "PURE", Product: "FlashArray", Revision: "8888", Serial: serial, NAA: "624a9370" + strings.ToLower(serial),
		Blocks: 1 << 33, BlockSize: 512, PhysicalExp: 3, ThirdPartyCopy: true, Temperature: 0xFF}
}

// A SCSI LU that reports a failure prediction (Informational Exceptions, ASC 5Dh) is failing,
// in SPC's words; one without the log page (LIO) is unknown, and that is no reason to refuse
// offload. A 4 TiB LU's size comes from READ CAPACITY(16).
func TestSCSIInformationalExceptions(t *testing.T) {
	n := node(t)
	lu := pureLU("6C1B16CE1C034D1C0000A001")
	n.AddLU("sdb", dm.Dev{Major: 8, Minor: 16}, lu)
	id := func() *engine.Device {
		return (&engine.Identifier{Roots: n.Roots(), Open: n.Openers()}).Identify(ctx, dm.Dev{Major: 8, Minor: 16})
	}
	d := id()
	if d.Err != nil || d.Kind != engine.KindSCSI || d.Size != 4<<40 || d.PhysicalBlockSize != 4096 || d.Serial != lu.Serial ||
		d.Vendor != "PURE" || d.Model != "FlashArray" || d.Firmware != "8888" {
		t.Fatalf("identity %+v %v", d, d.Err)
	}
	if d.Health.State != engine.HealthUnknown || !strings.Contains(d.Health.Note, "LOG SENSE page 2Fh not supported") {
		t.Fatalf("health without the page: %+v", d.Health)
	}
	if ok, why := d.Offload(); !ok {
		t.Fatalf("offload refused: %s", why)
	}
	lu.SetIE(0, 0)
	lu.Temperature = 31
	if d = id(); d.Health.State != engine.HealthOK || *d.Health.Temperature != 31 {
		t.Fatalf("no exception: %+v", d.Health)
	}
	lu.SetIE(0x5D, 0x00)
	d = id()
	if d.Health.State != engine.HealthFailing || !slices.Equal(d.Health.Problems, []string{"failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00)"}) {
		t.Fatalf("failure prediction: %+v", d.Health)
	}
	if ok, why := d.Offload(); ok || why != "sdb: it reports itself failing (failure prediction threshold exceeded (ASC/ASCQ 0x5D/0x00))" {
		t.Fatalf("offload %v %q", ok, why)
	}
	lu.SetIE(0x0B, 0x01)
	if d = id(); d.Health.State != engine.HealthWarning || d.Health.OffloadRefusal(true) != "" {
		t.Fatalf("temperature warning: %+v", d.Health)
	}
	// The kernel's read-only flag makes any device read-only.
	lu.SetIE(0, 0)
	n.ReadOnly("sdb", true)
	if d = id(); !d.Health.ReadOnly || d.Health.State != engine.HealthWarning || d.Health.OffloadRefusal(true) == "" {
		t.Fatalf("sysfs ro: %+v", d.Health)
	}
}

// A SATA disk is asked through the library (IDENTIFY, attributes, thresholds) and SMART
// RETURN STATUS gives the verdict.
func TestATASMART(t *testing.T) {
	n := node(t)
	disk := &enginetest.ATADisk{Model: "Samsung SSD 870 EVO 1TB", Serial: "S6PUNX0R123456", Firmware: "SVT02B6Q", Sectors: 1953525168,
		Attributes: []ata.Attribute{{ID: 5, Name: "Reallocated_Sector_Ct", Value: 100, Worst: 100, Threshold: 10, PreFail: true},
			{ID: 9, Name: "Power_On_Hours", Value: 99, Worst: 99, Raw: 1234}}}
	n.AddATA("sda", dm.Dev{Major: 8}, disk)
	id := func() *engine.Device {
		return (&engine.Identifier{Roots: n.Roots(), Open: n.Openers()}).Identify(ctx, dm.Dev{Major: 8})
	}
	d := id()
	if d.Err != nil || d.Kind != engine.KindATA || d.Model != disk.Model || d.Serial != disk.Serial || d.Firmware != disk.Firmware ||
		d.ATA == nil || d.ATA.Sectors != disk.Sectors || d.ATA.PhysicalSectorSize != 4096 || d.ATA.RotationRate != 1 {
		t.Fatalf("identity %+v %+v %v", d, d.ATA, d.Err)
	}
	if d.Health.State != engine.HealthOK || len(d.Health.Attributes) != 2 || d.Health.Attributes[1].Raw != 1234 {
		t.Fatalf("health %+v", d.Health)
	}
	disk.ThresholdExceeded = true
	if d = id(); d.Health.State != engine.HealthFailing || !strings.Contains(d.Health.Summary(), "SMART RETURN STATUS: the drive reports a threshold exceeded") {
		t.Fatalf("threshold exceeded: %+v", d.Health)
	}
	disk.ThresholdExceeded = false
	disk.Attributes[0].Value = 9
	if d = id(); d.Health.State != engine.HealthFailing ||
		!slices.Contains(d.Health.Problems, "SMART attribute Reallocated_Sector_Ct (5, pre-fail): value 9, threshold 10, raw 0: failing now") {
		t.Fatalf("pre-fail attribute: %+v", d.Health)
	}
	disk.SMARTDisabled = true
	if d = id(); d.Health.State != engine.HealthUnknown || d.Health.Note != "SMART is disabled on the drive" {
		t.Fatalf("SMART disabled: %+v", d.Health)
	}
	if ok, _ := d.Offload(); ok {
		t.Error("a SATA disk offered offload")
	}
}

// A PV on an LV on a partition of a multipath map over two paths resolves to one LU with its
// two paths, asked once through the first.
func TestUnderMultipathPartition(t *testing.T) {
	n := node(t)
	a, b := pureLU("6C1B16CE1C034D1C0000B001"), pureLU("6C1B16CE1C034D1C0000B001")
	n.AddLU("sdb", dm.Dev{Major: 8, Minor: 16}, a)
	n.AddLU("sdc", dm.Dev{Major: 8, Minor: 32}, b)
	n.Mapped("dm-0", "mpatha", "mpath-3"+a.NAA, dm.Dev{Major: 253}, 1<<33, "sdb", "sdc")
	n.Partition("dm-0", "dm-1", dm.Dev{Major: 253, Minor: 1}, 2048, 1<<32)
	n.Mapped("dm-2", "vg-pv", "LVM-x", dm.Dev{Major: 253, Minor: 2}, 1<<20, "dm-1")
	lus, err := engine.Under(n.Roots(), dm.Dev{Major: 253, Minor: 2})
	if err != nil || len(lus) != 1 || len(lus[0].Paths) != 2 || lus[0].Multipath != (dm.Dev{Major: 253}) || lus[0].Key != "naa."+a.NAA {
		t.Fatalf("LUs %+v %v", lus, err)
	}
	id := &engine.Identifier{Roots: n.Roots(), Open: n.Openers()}
	d := id.Describe(ctx, lus[0])
	if !slices.Equal(d.Paths, []string{"sdb", "sdc"}) || d.Multipath != "mpatha" || d.Err != nil {
		t.Fatalf("device %+v", d)
	}
	if len(a.Sent()) == 0 || len(b.Sent()) != 0 {
		t.Fatalf("commands: %d to the first path, %d to the second", len(a.Sent()), len(b.Sent()))
	}
	devs, err := engine.List(ctx, n.Roots())
	if err != nil || len(devs) != 1 || !slices.Equal(devs[0].Paths, []string{"sdb", "sdc"}) || devs[0].Multipath != "mpatha" {
		t.Fatalf("list: %d devices %v", len(devs), err)
	}
}
