//go:build lab

// In-guest tests of the FlashArray client against the simulator's LIO data plane: a volume
// copied from a snapshot and connected to this host appears on the SCSI bus with the
// identity of a FlashArray volume, holds the snapshot's bytes, and goes away on disconnect;
// a second simulated array stands for a foreign array that XCOPY cannot reach.
package flasharray_test

import (
	"context"
	"encoding/hex"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/ioctl/scsi"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/lvm/engine"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	"github.com/pvesnap/pvesnap/sim/lio"
)

var ctx = context.Background()

const mib = int64(1) << 20

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type labArray struct {
	sim    *flasharray.Array
	data   *flasharray.LIO
	client *pure.Client
}

// newArray starts a simulated array whose connections to host "lab" land in its own
// loopback target.
func newArray(t *testing.T, l *lio.LIO, name string, target int) *labArray {
	t.Helper()
	tg, err := l.CreateTarget(target)
	must(t, err)
	data := &flasharray.LIO{Files: &flasharray.Files{Dir: filepath.Join(t.TempDir(), name)}, L: l,
		Targets: map[string]*lio.Target{"lab": tg}}
	a := flasharray.New(name, data)
	a.AddToken("token-"+name, "pvesnap")
	must(t, a.CreateHost("lab", []string{"iqn.2026-11.org.pvesnap:lab"}, nil, nil))
	srv := httptest.NewTLSServer(a)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), name+".pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	c, err := pure.New(srv.URL, "token-"+name, pure.Options{CAFile: ca})
	must(t, err)
	return &labArray{sim: a, data: data, client: c}
}

// connect connects a volume to this host and waits for its device.
func (a *labArray) connect(t *testing.T, vol pure.Volume) string {
	t.Helper()
	conn, err := a.client.Connect(ctx, vol.Name, pure.Target{Host: "lab"})
	must(t, err)
	dev, err := lio.WaitForNAA(lio.PureNAA(vol.Serial), 10*time.Second)
	must(t, err)
	t.Logf("%s (serial %s) connected as LUN %d: %s", vol.Name, vol.Serial, conn.LUN, dev)
	return dev
}

func TestRestoreVolumeAppearsBySerial(t *testing.T) {
	l, err := guest.SetupLIO()
	must(t, err)
	a := newArray(t, l, "fa-a", 41)
	vol, err := a.client.CreateVolume(ctx, "vm-100-disk-0", 64*mib)
	must(t, err)
	dev := a.connect(t, vol)
	must(t, guest.WritePattern(dev, 1, 0, 8*mib))
	must(t, guest.WritePattern(dev, 1, 48*mib, 8*mib))
	snaps, err := a.client.CreateVolumeSnapshots(ctx, []string{vol.Name}, "before")
	must(t, err)
	must(t, guest.WritePattern(dev, 2, 0, 8*mib)) // the VM writes on after the snapshot

	restored, err := a.client.CopyVolume(ctx, "pvesnap-restore-1", snaps[0].Name, false)
	must(t, err)
	rdev := a.connect(t, restored)

	// The LUN carries the FlashArray identity: NAA 6 24a937 0 <serial>.
	sd, err := scsi.Open(rdev)
	must(t, err)
	id, err := scsi.Identify(ctx, sd)
	sd.Close()
	must(t, err)
	if !id.HasNAA || hex.EncodeToString(id.NAA.Value) != "624a9370"+strings.ToLower(restored.Serial) {
		t.Fatalf("VPD 0x83 NAA %x, want 624a9370%s", id.NAA.Value, strings.ToLower(restored.Serial))
	}
	if int64(id.Capacity.Bytes()) != 64*mib {
		t.Fatalf("capacity %d", id.Capacity.Bytes())
	}
	// It holds the snapshot's bytes, not the volume's later ones.
	must(t, guest.CheckPattern(rdev, 0, 8*mib, 1, 0))
	must(t, guest.CheckPattern(rdev, 48*mib, 8*mib, 1, 48*mib))
	must(t, guest.CheckPattern(dev, 0, 8*mib, 2, 0))

	// XCOPY works inside the array: the engine offloads between its two LUNs.
	res, err := engine.CopyRange(ctx, engine.Endpoint{Path: dev}, engine.Endpoint{Path: rdev}, 64*mib, engine.Options{})
	must(t, err)
	if res.Offloaded != 64*mib {
		t.Fatalf("copy inside one simulated array not offloaded: %+v", res)
	}
	must(t, guest.CheckPattern(rdev, 0, 8*mib, 2, 0))

	// A second array is foreign: no XCOPY across, the engine says why and copies by host.
	b := newArray(t, l, "fa-b", 42)
	fvol, err := b.client.CreateVolume(ctx, "foreign", 64*mib)
	must(t, err)
	fdev := b.connect(t, fvol)
	res, err = engine.CopyRange(ctx, engine.Endpoint{Path: rdev}, engine.Endpoint{Path: fdev}, 64*mib, engine.Options{})
	must(t, err)
	if res.Offloaded != 0 || len(res.Fallbacks) == 0 || !strings.Contains(res.Fallbacks[0], "not reachable") {
		t.Fatalf("cross-array copy: %+v", res)
	}
	must(t, guest.CheckPattern(fdev, 0, 8*mib, 2, 0))

	// Disconnect: the device goes away, as when an array connection is deleted.
	for _, x := range []struct {
		a   *labArray
		vol pure.Volume
	}{{a, restored}, {a, vol}, {b, fvol}} {
		must(t, x.a.client.Disconnect(ctx, x.vol.Name, pure.Target{Host: "lab"}))
		deadline := time.Now().Add(10 * time.Second)
		for lio.FindByNAA(lio.PureNAA(x.vol.Serial)) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("%s still present 10 s after disconnect", x.vol.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Destroyed and eradicated, its bytes are gone from the data plane.
	must(t, a.client.DestroyVolume(ctx, restored.Name))
	must(t, a.client.EradicateVolume(ctx, restored.Name))
	if _, err := os.Stat(a.data.Path(restored.Serial)); !os.IsNotExist(err) {
		t.Fatalf("eradicated volume's file: %v", err)
	}
}
