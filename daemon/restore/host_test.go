package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/runner"
)

const testSerial = "6C1B16CE1C034D1C000B9FAC"

// san is a fake /sys and /dev of a node with multipathed SCSI LUNs, and the commands run on
// it: multipathd's and multipath's map commands change the tree as they would change the
// kernel's.
type san struct {
	t        *testing.T
	sys, dev string
	mu       sync.Mutex
	calls    []string
	// mapOnAdd: "multipathd add map" builds the map over the paths.
	mapOnAdd bool
	// busy: this many map removals fail first, as for a map another process has open.
	busy int
	gone []string // SCSI devices deleted through sysfs
}

func newSAN(t *testing.T) *san {
	root := t.TempDir()
	s := &san{t: t, sys: filepath.Join(root, "sys"), dev: filepath.Join(root, "dev")}
	must(t, os.MkdirAll(filepath.Join(s.sys, "block"), 0o755))
	must(t, os.MkdirAll(s.dev, 0o755))
	return s
}

func (s *san) write(p, v string) {
	s.t.Helper()
	must(s.t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(s.t, os.WriteFile(p, []byte(v), 0o644))
}

// path adds SCSI disk sd of serial.
func (s *san) path(sd, serial string) {
	s.write(filepath.Join(s.sys, "block", sd, "device", "wwid"), "naa."+pure.NAA(serial)+"\n")
	must(s.t, os.MkdirAll(filepath.Join(s.sys, "block", sd, "holders"), 0o755))
}

// sysWrite answers sysfs writes as the kernel: "1" to a SCSI device's delete removes it.
func (s *san) sysWrite(p string, b []byte) error {
	if filepath.Base(p) == "delete" && string(b) == "1" {
		dir := filepath.Dir(filepath.Dir(p))
		if _, err := os.Stat(dir); err != nil {
			return err
		}
		s.mu.Lock()
		s.gone = append(s.gone, filepath.Base(dir))
		s.mu.Unlock()
		return os.RemoveAll(dir)
	}
	return nil
}

// multipathMap adds map dm over paths.
func (s *san) multipathMap(dm, serial string, paths ...string) {
	s.write(filepath.Join(s.sys, "block", dm, "dm", "uuid"), "mpath-3"+pure.NAA(serial)+"\n")
	s.write(filepath.Join(s.sys, "block", dm, "dm", "name"), "3"+pure.NAA(serial)+"\n")
	must(s.t, os.MkdirAll(filepath.Join(s.sys, "block", dm, "holders"), 0o755))
	for _, p := range paths {
		s.write(filepath.Join(s.sys, "block", p, "holders", dm), "")
	}
}

func (s *san) deleted(sd string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.gone, sd)
}

func (s *san) Run(_ context.Context, argv []string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, strings.Join(argv, " "))
	switch {
	case len(argv) == 4 && argv[0] == "multipathd" && argv[1] == "remove" && argv[2] == "map",
		len(argv) == 3 && argv[0] == "multipath" && argv[1] == "-f":
		if s.busy > 0 {
			s.busy--
			return []byte("fail\n"), errors.New("exit code 1")
		}
		name := argv[len(argv)-1]
		ms, _ := filepath.Glob(filepath.Join(s.sys, "block", "dm-*", "dm", "name"))
		for _, m := range ms {
			if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) == name {
				dm := filepath.Dir(filepath.Dir(m))
				hs, _ := filepath.Glob(filepath.Join(s.sys, "block", "sd*", "holders", filepath.Base(dm)))
				for _, h := range hs {
					os.Remove(h)
				}
				os.RemoveAll(dm)
			}
		}
	case len(argv) == 4 && argv[0] == "multipathd" && argv[1] == "add" && argv[2] == "map" && s.mapOnAdd:
		var paths []string
		ms, _ := filepath.Glob(filepath.Join(s.sys, "block", "sd*", "device", "wwid"))
		for _, m := range ms {
			if b, _ := os.ReadFile(m); "3"+strings.TrimPrefix(strings.TrimSpace(string(b)), "naa.") == argv[3] {
				paths = append(paths, filepath.Base(filepath.Dir(filepath.Dir(m))))
			}
		}
		s.mu.Unlock()
		s.multipathMap("dm-9", testSerial, paths...)
		s.mu.Lock()
	}
	return nil, nil
}

func (s *san) host(multipathd bool) Host {
	return Host{Sys: s.sys, Dev: s.dev, Run: runner.Func(s.Run), Settle: 300 * time.Millisecond, Multipathd: func() bool { return multipathd }, sysWrite: s.sysWrite}
}

func noLog(string, ...any) {}

// After a disconnect the LUN's map and paths are removed as multipath-tools expects: the map
// through multipathd, then each path's buffers flushed and the device deleted; only this
// volume's devices, never multipath -F.
func TestRemoveDevicesMultipath(t *testing.T) {
	s := newSAN(t)
	s.path("sdc", testSerial)
	s.path("sdd", testSerial)
	s.path("sde", "6C1B16CE1C034D1C000B9FAD") // another LUN of the array, in use
	s.multipathMap("dm-3", testSerial, "sdc", "sdd")
	s.multipathMap("dm-4", "6C1B16CE1C034D1C000B9FAD", "sde")
	must(t, s.host(true).Remove(ctx, testSerial, noLog))
	name := "3" + pure.NAA(testSerial)
	want := []string{"multipathd remove map " + name,
		"multipathd remove path sdc", "blockdev --flushbufs " + filepath.Join(s.dev, "sdc"),
		"multipathd remove path sdd", "blockdev --flushbufs " + filepath.Join(s.dev, "sdd")}
	if !slices.Equal(s.calls, want) {
		t.Fatalf("commands:\n%s\nwant:\n%s", strings.Join(s.calls, "\n"), strings.Join(want, "\n"))
	}
	if !s.deleted("sdc") || !s.deleted("sdd") || s.deleted("sde") {
		t.Fatal("deleted the wrong SCSI devices")
	}
	if _, err := os.Stat(filepath.Join(s.sys, "block", "dm-4")); err != nil {
		t.Fatal("another LUN's map went")
	}
}

// A map another process has open for a moment (an LVM scan) refuses removal; the removal is
// tried again until it goes, and a map that stays busy fails with how long it was tried.
func TestRemoveDevicesMapBusyForAMoment(t *testing.T) {
	s := newSAN(t)
	s.path("sdc", testSerial)
	s.multipathMap("dm-3", testSerial, "sdc")
	defer func(d time.Duration) { mapRemoveDelay = d }(mapRemoveDelay)
	mapRemoveDelay = 10 * time.Millisecond
	s.busy = 2
	var logged []string
	log := func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }
	must(t, s.host(true).Remove(ctx, testSerial, log))
	name := "3" + pure.NAA(testSerial)
	if n := slices.Index(s.calls, "multipathd remove map "+name); n != 0 || s.calls[1] != s.calls[0] || s.calls[2] != s.calls[0] || !s.deleted("sdc") {
		t.Fatalf("commands %v: want the removal three times, then the path deleted", s.calls)
	}
	if len(logged) == 0 || !strings.Contains(logged[0], "multipath map "+name+" is busy") {
		t.Fatalf("log %q", logged)
	}

	s = newSAN(t)
	s.path("sdc", testSerial)
	s.multipathMap("dm-3", testSerial, "sdc")
	s.busy = mapRemoveAttempts
	err := s.host(true).Remove(ctx, testSerial, noLog)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d attempts over", mapRemoveAttempts)) ||
		!strings.Contains(err.Error(), `multipathd answered "fail"`) || s.deleted("sdc") {
		t.Fatalf("a map that stays busy: %v (path deleted: %v)", err, s.deleted("sdc"))
	}
}

// Without multipathd a map is flushed by name (multipath -f), never all of them (-F).
func TestRemoveDevicesWithoutMultipathd(t *testing.T) {
	s := newSAN(t)
	s.path("sdc", testSerial)
	s.multipathMap("dm-3", testSerial, "sdc")
	must(t, s.host(false).Remove(ctx, testSerial, noLog))
	if s.calls[0] != "multipath -f 3"+pure.NAA(testSerial) || slices.ContainsFunc(s.calls, func(c string) bool { return strings.Contains(c, "-F") }) {
		t.Fatalf("commands %v", s.calls)
	}
	if !s.deleted("sdc") {
		t.Fatal("path not deleted")
	}
}

// A map or path something sits on (an LV still active) is refused, nothing is pulled.
func TestRemoveDevicesInUse(t *testing.T) {
	s := newSAN(t)
	s.path("sdc", testSerial)
	s.multipathMap("dm-3", testSerial, "sdc")
	s.write(filepath.Join(s.sys, "block", "dm-3", "holders", "dm-5"), "")
	err := s.host(true).Remove(ctx, testSerial, noLog)
	if err == nil || !strings.Contains(err.Error(), "in use by dm-5") || len(s.calls) != 0 || s.deleted("sdc") {
		t.Fatalf("map in use: %v, commands %v", err, s.calls)
	}
	s2 := newSAN(t)
	s2.path("sdc", testSerial)
	s2.write(filepath.Join(s2.sys, "block", "sdc", "holders", "dm-7"), "")
	if err := s2.host(false).Remove(ctx, testSerial, noLog); err == nil || s2.deleted("sdc") {
		t.Fatalf("path in use: %v", err)
	}
}

// A path that appears without a map (multipathd got no uevent, or find_multipaths waits for a
// second path) is added to multipathd with its map, and the map is what the restore uses.
func TestWaitAddsMissingMap(t *testing.T) {
	s := newSAN(t)
	s.mapOnAdd = true
	s.path("sdc", testSerial)
	s.path("sdd", testSerial)
	var log []string
	dev, err := s.host(true).Wait(ctx, testSerial, time.Second, func(f string, a ...any) { log = append(log, f) })
	must(t, err)
	wwid := "3" + pure.NAA(testSerial)
	if dev != filepath.Join(s.dev, "dm-9") {
		t.Fatalf("device %s, log %v", dev, log)
	}
	if want := []string{"multipathd add path sdc", "multipathd add path sdd", "multipathd add map " + wwid}; !slices.Equal(s.calls, want) {
		t.Fatalf("commands %v, want %v", s.calls, want)
	}
	// Without multipathd the path itself is the device, and nothing is run.
	s2 := newSAN(t)
	s2.path("sdc", testSerial)
	if dev, err := s2.host(false).Wait(ctx, testSerial, time.Second, noLog); err != nil || dev != filepath.Join(s2.dev, "sdc") || len(s2.calls) != 0 {
		t.Fatalf("no multipathd: %s %v %v", dev, err, s2.calls)
	}
}

// Gone: after the disconnect, a path that came back (a rescan, a session's re-login) is
// removed too; an NVMe namespace that does not go is reported.
func TestGoneAfterDisconnect(t *testing.T) {
	s := newSAN(t)
	s.path("sdf", testSerial)
	must(t, s.host(true).Gone(ctx, testSerial, time.Second, noLog))
	if !s.deleted("sdf") {
		t.Fatal("a path back after the removal stayed")
	}
	s.write(filepath.Join(s.sys, "block", "nvme0n3", "wwid"), "eui."+pure.NGUID(testSerial)+"\n")
	err := s.host(true).Gone(ctx, testSerial, 300*time.Millisecond, noLog)
	if err == nil || !strings.Contains(err.Error(), "nvme0n3") {
		t.Fatalf("a namespace that stays: %v", err)
	}
}
