// Command demo runs inside the lab guest for `make demo`: one Proxmox VE node (simulated
// pveproxy, real LVM) on a simulated FlashArray whose volumes are LIO LUNs, with the real
// pvesnap daemon on :8009 (forwarded to the host), seeded with VMs and array snapshots so a
// restore can be done from the GUI or with curl - and checked on :8010/verify.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

const diskSize = 64 * cluster.MiB

func main() {
	extjs := flag.String("extjs", "/mnt/host/extjs", "Ext JS GPL build directory")
	flag.Parse()
	if err := run(*extjs); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func hashes(paths []string) []string {
	var out []string
	for _, p := range paths {
		h, err := guest.Hash(p, 0, diskSize)
		if err != nil {
			h = "(" + err.Error() + ")"
		}
		out = append(out, h[:16])
	}
	return out
}

func run(extjs string) error {
	n, err := cluster.Start(cluster.Options{Work: "/tmp/demo", DataDisk: "/dev/vdb", Listen: "0.0.0.0:8009", LogPath: "/mnt/host/pvesnap.log",
		Sim: simpve.Options{ExtJS: extjs}})
	if err != nil {
		return err
	}
	defer n.Close()
	seed := func(paths []string, s uint64) error {
		for i, p := range paths {
			for _, off := range []int64{0, diskSize / 2, diskSize - 4*cluster.MiB} {
				if err := guest.WritePattern(p, s+uint64(i), off, 4*cluster.MiB); err != nil {
					return err
				}
			}
		}
		return nil
	}
	expected := map[string]map[string][]string{} // point -> VM -> disk hashes
	web, err := n.AddVM(100, "web", 2, diskSize, time.Now().Add(-2*time.Hour))
	if err != nil {
		return err
	}
	db, err := n.AddVM(101, "db", 1, diskSize, time.Now().Add(-2*time.Hour))
	if err != nil {
		return err
	}
	old, err := n.AddVM(102, "legacy", 1, diskSize, time.Now().Add(-2*time.Hour))
	if err != nil {
		return err
	}
	for i, ps := range [][]string{web, db, old} {
		if err := seed(ps, uint64(10*i+1)); err != nil {
			return err
		}
	}
	record := func(point string) {
		expected[point] = map[string][]string{"100": hashes(web), "101": hashes(db), "102": hashes(old)}
	}
	time.Sleep(1100 * time.Millisecond)
	if err := n.FA.CreateProtectionGroup("pg-pve", "pve-san1"); err != nil {
		return err
	}
	if _, err := n.FA.SnapshotProtectionGroup("pg-pve", "nightly-1"); err != nil {
		return err
	}
	record("fa1:pg-pve.nightly-1")
	for i, ps := range [][]string{web, db} {
		if err := seed(ps, uint64(10*i+5)); err != nil {
			return err
		}
	}
	if _, err := n.FACli.CreateVolumeSnapshots(context.Background(), []string{"pve-san1"}, "before-upgrade"); err != nil {
		return err
	}
	record("fa1:before-upgrade")
	for i, ps := range [][]string{web, db} {
		if err := seed(ps, uint64(10*i+7)); err != nil { // the VMs go on changing
			return err
		}
	}
	// VM 102 is deleted after the snapshots: it stays restorable as a new VM.
	os.Remove(filepath.Join(n.Sim.NodePaths("pve1").PVE, "nodes", "pve1", "qemu-server", "102.conf"))
	guest.Run("lvremove", "-f", "vgsan1/vm-102-disk-0")
	// Read the arrays' snapshots now (the daemon's periodic refresh is off in the demo).
	if r, err := n.API.Do("GET", "/nodes/pve1/pvesnap/vms", url.Values{"refresh": {"1"}}); err != nil || r.Code != 200 {
		return fmt.Errorf("inventory refresh: %v %v", err, r)
	}
	go http.ListenAndServe("0.0.0.0:8010", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := map[string][]string{}
		for vmid := 100; vmid < 300; vmid++ {
			var ps []string
			for d := 0; d < 2; d++ {
				p := fmt.Sprintf("/dev/vgsan1/vm-%d-disk-%d", vmid, d)
				if _, err := os.Stat(p); err == nil {
					ps = append(ps, p)
				}
			}
			if len(ps) > 0 {
				now[fmt.Sprint(vmid)] = hashes(ps)
			}
		}
		var matches []string
		for point, vms := range expected {
			for vmid, want := range vms {
				for got, h := range now {
					if strings.Join(h, ",") == strings.Join(want, ",") {
						matches = append(matches, fmt.Sprintf("VM %s holds VM %s's disks as of %s", got, vmid, point))
					}
				}
			}
		}
		sort.Strings(matches)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"disks_now": now, "restore_points": expected, "matches": matches})
	}))
	fmt.Print(`
=====================================================================================
 pvesnap demo is up.
   GUI:    https://127.0.0.1:8009/   (root@pam / pvesnap; accept the self-signed certificate)
   verify: curl -s http://127.0.0.1:8010/verify   (disk hashes now, and at each restore point)

 With curl:
   T=$(curl -sk -d username=root@pam -d password=pvesnap https://127.0.0.1:8009/api2/json/access/ticket)
   TICKET=$(echo "$T" | jq -r .data.ticket); CSRF=$(echo "$T" | jq -r .data.CSRFPreventionToken)
   pve() { curl -sk -b "PVEAuthCookie=$TICKET" -H "CSRFPreventionToken: $CSRF" "$@"; }
   pve https://127.0.0.1:8009/api2/json/nodes/pve1/pvesnap/vms | jq .
   pve https://127.0.0.1:8009/api2/json/nodes/pve1/pvesnap/vms/100 | jq '.data.points[] | {id, created, predates_disk}'
   pve -X POST -d vmid=100 -d point=fa1:pg-pve.nightly-1 -d mode=overwrite https://127.0.0.1:8009/api2/json/nodes/pve1/pvesnap/restore
   pve -X POST -d vmid=102 -d point=fa1:before-upgrade -d mode=new -d newid=200 https://127.0.0.1:8009/api2/json/nodes/pve1/pvesnap/restore
   pve "https://127.0.0.1:8009/api2/json/nodes/pve1/tasks/<UPID>/log" | jq -r '.data[].t'
   curl -s http://127.0.0.1:8010/verify | jq .matches

 Stop with Ctrl-C (the guest powers off).
=====================================================================================
`)
	return n.Wait()
}
