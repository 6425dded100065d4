package inventory

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/ioctl/dm"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
	"github.com/pvesnap/pvesnap/lvm/engine/enginetest"
	"github.com/pvesnap/pvesnap/sim/fakecli"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

// The storage mapping's devices, from a fake sysfs and devices answering the commands
// (enginetest): san1 on a partition of a multipath map over two paths to a FlashArray LU,
// fast on an NVMe namespace whose controller reports its spare below threshold, local on a
// SATA disk. The NVMe PV carries a warning in the device's words, and offload to it is
// refused with them; the LU is asked once, through its first path, until the mapping is
// made again.
func TestDevicesUnderStorages(t *testing.T) {
	root := t.TempDir()
	pveDir := filepath.Join(root, "pve")
	os.MkdirAll(pveDir, 0o755)
	os.WriteFile(filepath.Join(pveDir, "storage.cfg"), []byte(`lvm: san1
	vgname vgsan1
	content images

lvm: fast
	vgname vgfast
	content images

lvm: local
	vgname vglocal
	content images
`), 0o644)
	roots := Roots{Dev: filepath.Join(root, "dev"), Sys: filepath.Join(root, "sys")}
	n := enginetest.NewNode(roots.Sys, roots.Dev)
	lu := func() *enginetest.LU {
		return &enginetest.LU{Vendor: "PURE", Product: "FlashArray", Revision: "8888", Serial: "6C1B16CE1C034D1C0000B001",
			NAA: "624a93706c1b16ce1c034d1c0000b001", Blocks: 1 << 33, BlockSize: 512, ThirdPartyCopy: true}
	}
	a, b := lu(), lu() // two paths to one LU: each counts what it is sent
	n.AddLU("sdb", dm.Dev{Major: 8, Minor: 16}, a)
	n.AddLU("sdc", dm.Dev{Major: 8, Minor: 32}, b)
	n.Mapped("dm-0", "mpatha", "mpath-3"+a.NAA, dm.Dev{Major: 253}, 1<<33, "sdb", "sdc")
	n.Partition("dm-0", "dm-1", dm.Dev{Major: 253, Minor: 1}, 2048, 1<<32)
	os.MkdirAll(filepath.Join(roots.Dev, "mapper"), 0o755)
	os.Symlink("../dm-1", filepath.Join(roots.Dev, "mapper", "mpatha-part1"))
	c := &enginetest.Controller{Serial: "NVME0001", Model: "QEMU NVMe Ctrl", Firmware: "10.0.2", SubNQN: "nqn.2026-01.lab.pvesnap:subsys0",
		ONCS: 0x100, OCFS: 0x1, CritWarning: 0x01, TemperatureK: 310, AvailSpare: 4, Thresh: 10,
		Namespaces: map[uint32]*enginetest.Namespace{1: {Blocks: 1 << 21, LBADS: 9, MSSRL: 128, MCL: 1024, MSRC: 7, NGUID: "00112233445566778899aabbccddeeff"}}}
	n.AddNVMe("nvme0", c, dm.Dev{Major: 259}, 1)
	n.AddATA("sda", dm.Dev{Major: 8}, &enginetest.ATADisk{Model: "QEMU HARDDISK", Serial: "QM00001", Firmware: "2.5+", Sectors: 1 << 24})

	fl := &fakecli.LVM{VGs: map[string]fakecli.VG{}}
	for vg, pv := range map[string]string{"vgsan1": "/dev/mapper/mpatha-part1", "vgfast": "/dev/nvme0n1", "vglocal": "/dev/sda"} {
		fl.VGs[vg] = fakecli.VG{Store: volstore.Store{Dir: filepath.Join(root, "vg", vg)}, PVs: []string{pv}}
	}
	db, err := store.Open(filepath.Join(root, "state", "pvesnap.db"))
	must(t, err)
	t.Cleanup(func() { db.Close() })
	inv := &Inventory{Node: "pve1", PVE: pveDir, Storage: pve.NewStorageConfig(pveDir), Arrays: &arrays.Config{PVE: pveDir},
		LVM: &lvm.LVM{Run: runner.Emulator(fl.Command)}, Roots: roots, DB: db}
	devs := &Devices{Inv: inv, Open: n.Openers()}

	pvs, err := devs.List(ctx, false)
	must(t, err)
	by := map[string]PVDevices{}
	for _, p := range pvs {
		by[p.Storage] = p
		if p.Error != "" || len(p.Devices) != 1 {
			t.Fatalf("%s: %+v", p.Storage, p)
		}
	}
	if len(by) != 3 {
		t.Fatalf("PVs %+v", pvs)
	}
	san := by["san1"].Devices[0]
	if by["san1"].PV != "/dev/mapper/mpatha-part1" || san.Name != "sdb" || !slices.Equal(san.Paths, []string{"sdb", "sdc"}) || san.Multipath != "mpatha" ||
		san.Serial != a.Serial || san.NAA != a.NAA || san.Size != 4<<40 || !san.Copy.Offload || san.Health.State != engine.HealthUnknown || by["san1"].Warning != "" {
		t.Fatalf("san1: %+v", san)
	}
	fast := by["fast"]
	want := "nvme0n1: failing: critical warning: available spare below its threshold"
	if fast.Warning != want || fast.Devices[0].Health.State != engine.HealthFailing || *fast.Devices[0].Health.AvailableSpare != 4 {
		t.Fatalf("fast: warning %q, want %q; %+v", fast.Warning, want, fast.Devices[0].Health)
	}
	if fast.Devices[0].Copy.Offload || fast.Devices[0].Copy.Reason != "nvme0n1: it reports itself failing (critical warning: available spare below its threshold)" {
		t.Fatalf("offload to the failing namespace: %+v", fast.Devices[0].Copy)
	}
	local := by["local"].Devices[0]
	if local.Transport != engine.KindATA || local.Model != "QEMU HARDDISK" || local.Health.State != engine.HealthOK || local.Health.Source != "ATA SMART" {
		t.Fatalf("local: %+v", local)
	}
	// Asked once: a second look reuses the answers, a fresh one asks again.
	sent := len(a.Sent())
	if len(b.Sent()) != 0 || sent == 0 {
		t.Fatalf("commands: %d to sdb, %d to sdc", sent, len(b.Sent()))
	}
	c.CritWarning = 0
	pvs, _ = devs.List(ctx, false)
	if len(a.Sent()) != sent || !strings.Contains(pvs[0].Warning+pvs[1].Warning+pvs[2].Warning, "spare") {
		t.Fatalf("asked again without a refresh (%d commands, was %d)", len(a.Sent()), sent)
	}
	pvs, _ = devs.List(ctx, true)
	if len(a.Sent()) == sent || strings.Contains(pvs[0].Warning+pvs[1].Warning+pvs[2].Warning, "spare") {
		t.Fatalf("a refresh did not ask again: %+v", pvs)
	}
	if nss, ctrls := c.Identified(); !slices.Equal(nss, []uint32{1, 1}) || ctrls != 2 {
		t.Fatalf("Identify Namespace for %v, Identify Controller %d times: one each per mapping", nss, ctrls)
	}
}
