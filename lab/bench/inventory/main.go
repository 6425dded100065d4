// Command inventory measures the inventory tree at scale: N VMs with D disks each on S
// array-backed LVM storages, P snapshots per array volume. It reports the tree's latency warm
// (the API handler's work: tree, privilege filter, JSON) and the process's peak RSS, and, as
// the peer measured in the same run, the simulated pveproxy's /cluster/resources?type=vm for
// the same VMs (the GUI's own VM list).
//
//	go run ./lab/bench/inventory [-vms 2000] [-disks 4] [-storages 20] [-snapshots 200]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/sim/fakecli"
	"github.com/pvesnap/pvesnap/sim/flasharray"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
	"github.com/pvesnap/pvesnap/sim/volstore"
)

func main() {
	vms := flag.Int("vms", 2000, "VMs")
	disks := flag.Int("disks", 4, "disks per VM")
	storages := flag.Int("storages", 20, "array-backed LVM storages (one array volume each)")
	snaps := flag.Int("snapshots", 200, "snapshots per array volume")
	rounds := flag.Int("rounds", 20, "warm measurements")
	flag.Parse()
	if err := run(*vms, *disks, *storages, *snaps, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench inventory:", err)
		os.Exit(1)
	}
}

func run(nVMs, nDisks, nStorages, nSnaps, rounds int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pvesnap-bench-inventory-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	sim, err := simpve.Start(simpve.Options{Dir: filepath.Join(dir, "sim"), PvestatdInterval: time.Hour})
	if err != nil {
		return err
	}
	defer sim.Close()
	pveRoot := sim.NodePaths("pve1").PVE
	fa := flasharray.New("fa-bench", nil)
	srv, err := flasharray.Listen(fa, "127.0.0.1:0", filepath.Join(dir, "fa"))
	if err != nil {
		return err
	}
	defer srv.Close()
	tok, _ := os.ReadFile(srv.TokenFile)
	ac := &arrays.Config{PVE: pveRoot}
	if err := ac.Add(arrays.Array{ID: "fa1", Type: arrays.TypeFlashArray, Endpoint: srv.URL, CA: srv.CAFile}, strings.TrimSpace(string(tok))); err != nil {
		return err
	}
	roots := inventory.Roots{Dev: filepath.Join(dir, "dev"), Sys: filepath.Join(dir, "sys")}
	os.MkdirAll(roots.Dev, 0o755)
	lv := &fakecli.LVM{VGs: map[string]fakecli.VG{}}
	var cfg strings.Builder
	cfg.WriteString(simpve.DefaultStorageConfig)
	t0 := time.Now().Add(-1000 * time.Hour)
	for s := 0; s < nStorages; s++ {
		vg, dev := fmt.Sprintf("vgsan%d", s), fmt.Sprintf("sd%c%c", 'a'+s/26, 'a'+s%26)
		fmt.Fprintf(&cfg, "\nlvm: san%d\n\tvgname %s\n\tcontent images\n\tshared 1\n", s, vg)
		serial, err := fa.CreateVolume(fmt.Sprintf("pve-san%d", s), 1<<44)
		if err != nil {
			return err
		}
		os.WriteFile(filepath.Join(roots.Dev, dev), nil, 0o644)
		os.MkdirAll(filepath.Join(roots.Sys, "class", "block", dev, "device"), 0o755)
		os.WriteFile(filepath.Join(roots.Sys, "class", "block", dev, "device", "wwid"), []byte("naa."+pure.NAA(serial)), 0o644)
		lv.VGs[vg] = fakecli.VG{Store: volstore.Store{Dir: filepath.Join(dir, "vg", vg)}, PVs: []string{"/dev/" + dev}}
	}
	if err := sim.SetStorageConfig(cfg.String()); err != nil {
		return err
	}
	// VMs: disks spread over the storages, created over the first 500 hours.
	for v := 0; v < nVMs; v++ {
		vmid := int64(1000 + v)
		created := t0.Add(time.Duration(v) * 500 * time.Hour / time.Duration(nVMs))
		var b strings.Builder
		fmt.Fprintf(&b, "name: vm%d\nmemory: 2048\nmeta: creation-qemu=9.2.0,ctime=%d\n", vmid, created.Unix())
		for d := 0; d < nDisks; d++ {
			s := (v*nDisks + d) % nStorages
			name := fmt.Sprintf("vm-%d-disk-%d", vmid, d)
			st := volstore.Store{Dir: filepath.Join(dir, "vg", fmt.Sprintf("vgsan%d", s))}
			if err := st.Create(name, 1<<30, volstore.Meta{Created: created.Unix()}); err != nil {
				return err
			}
			fmt.Fprintf(&b, "scsi%d: san%d:%s,size=1G\n", d, s, name)
		}
		if err := sim.WriteVMConfig("pve1", vmid, b.String()); err != nil {
			return err
		}
	}
	// Snapshots: every volume every 5 hours over 1000 hours, as protection-group points.
	var vols []string
	for s := 0; s < nStorages; s++ {
		vols = append(vols, fmt.Sprintf("pve-san%d", s))
	}
	if err := fa.CreateProtectionGroup("pg-bench", vols...); err != nil {
		return err
	}
	for p := 0; p < nSnaps; p++ {
		at := t0.Add(time.Duration(p) * 1000 * time.Hour / time.Duration(nSnaps))
		fa.Now = func() time.Time { return at }
		if _, err := fa.SnapshotProtectionGroup("pg-bench", fmt.Sprintf("h%d", p)); err != nil {
			return err
		}
	}
	fa.Now = time.Now
	seeded := time.Since(start)

	db, err := store.Open(filepath.Join(dir, "state", "pvesnap.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	inv := &inventory.Inventory{Node: "pve1", PVE: pveRoot, Storage: pve.NewStorageConfig(pveRoot), Arrays: ac,
		LVM: &lvm.LVM{Run: runner.Emulator(lv.Command)}, Roots: roots, DB: db}
	t := time.Now()
	res, err := inv.Refresh(ctx)
	if err != nil {
		return err
	}
	cold := time.Since(t)
	// The handler's work, warm: rescan (nothing changed), tree, privilege filter, JSON.
	tree := func() (int, error) {
		if err := inv.ScanVMs(ctx); err != nil {
			return 0, err
		}
		views, err := inv.Tree(ctx, nil)
		if err != nil {
			return 0, err
		}
		allowed := make(map[string]bool, len(views))
		for _, v := range views {
			allowed[fmt.Sprintf("/vms/%d", v.VMID)] = true
		}
		out := views[:0]
		for _, v := range views {
			if allowed[fmt.Sprintf("/vms/%d", v.VMID)] {
				out = append(out, v)
			}
		}
		b, err := json.Marshal(map[string]any{"data": out})
		return len(b), err
	}
	if pf := os.Getenv("BENCH_CPUPROFILE"); pf != "" { // where the time goes, for tuning
		f, _ := os.Create(pf)
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var size int
	var lat []time.Duration
	for i := 0; i < rounds; i++ {
		t := time.Now()
		if size, err = tree(); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	detailT := time.Now()
	if _, err := inv.Detail(ctx, 1000, 0); err != nil {
		return err
	}
	detail := time.Since(detailT)
	peer, err := peerLatency(sim, rounds)
	if err != nil {
		return err
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	med := lat[len(lat)/2]
	rss := peakRSS()
	fmt.Printf("inventory: %d VMs x %d disks on %d array volumes, %d snapshots each (%d cached); seeded in %s\n",
		nVMs, nDisks, nStorages, nSnaps, res.Snapshots, seeded.Round(time.Millisecond))
	fmt.Printf("  first refresh (scan %d configs, map, lvs, list snapshots): %s\n", nVMs, cold.Round(time.Millisecond))
	fmt.Printf("  tree warm: median %s, max %s over %d rounds, %d bytes of JSON\n", med.Round(100*time.Microsecond),
		lat[len(lat)-1].Round(100*time.Microsecond), rounds, size)
	fmt.Printf("  one VM's restore points: %s\n", detail.Round(100*time.Microsecond))
	fmt.Printf("  peer: simulated pveproxy GET /cluster/resources?type=vm, median %s; ratio tree/peer %.2f\n",
		peer.Round(100*time.Microsecond), float64(med)/float64(peer))
	fmt.Printf("  peak RSS of the whole bench process (simulators included): %.1f MiB\n", float64(rss)/(1<<20))
	fmt.Printf("RESULT inventory_tree_ms=%.1f inventory_tree_max_ms=%.1f peer_ms=%.1f ratio=%.2f rss_mib=%.1f targets_met=%v\n",
		ms(med), ms(lat[len(lat)-1]), ms(peer), float64(med)/float64(peer), float64(rss)/(1<<20),
		med <= 200*time.Millisecond && rss <= 200<<20)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// peerLatency times the simulated pveproxy's VM list of the same cluster, as root.
func peerLatency(sim *simpve.Cluster, rounds int) (time.Duration, error) {
	ca, err := os.ReadFile(sim.CAFile())
	if err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ticket, _, err := sim.Ticket("root@pam")
	if err != nil {
		return 0, err
	}
	var lat []time.Duration
	for i := 0; i < rounds; i++ {
		req, _ := http.NewRequest("GET", sim.URL("pve1")+"/api2/json/cluster/resources?type=vm", nil)
		req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: ticket})
		t := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("peer: %s", resp.Status)
		}
		lat = append(lat, time.Since(t))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], nil
}

// peakRSS reads VmHWM (bytes).
func peakRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}
