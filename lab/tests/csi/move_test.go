//go:build lab

package csi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pvesnap/pvesnap/lab/cluster"
	"github.com/pvesnap/pvesnap/lab/guest"
	"github.com/pvesnap/pvesnap/sim/lio"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

const gib = int64(1) << 30

var percentRe = regexp.MustCompile(`progress: .*\(([0-9.]+)%\)`)

// mover is one kind of storage pair under test.
type mover struct {
	from, to string                        // storages on pve1 and pve2
	dev      func(node, vol string) string // a volume's device
	vmid     int                           // of the moved volume; the broken move's is the next
	insecure bool                          // datacenter.cfg's migration type=insecure: plain TCP
}

func zvolDev(t *testing.T, pool string) func(node, vol string) string {
	return func(node, vol string) string {
		d, err := cluster.ZvolDevice(pool+"/"+vol, 20*time.Second)
		must(t, err)
		return d
	}
}

// TestMoveBetweenNodes moves a 1 GiB zvol and a 1 GiB thin LV from pve1 to pve2 with a token
// that holds Datastore.Allocate and nothing else (PVE allows the call to root@pam alone),
// checks the data by hash, and breaks off a second move of each halfway: nothing of it may
// be left on pve2, and the tasks must say what happened.
func TestMoveBetweenNodes(t *testing.T) {
	if out, err := guest.Run("modprobe", "zfs"); err != nil {
		t.Skipf("SKIP: no ZFS module for this kernel (%v %s)", err, strings.TrimSpace(out))
	}
	zparts, err := guest.Partition("/dev/vda", 2)
	must(t, err)
	for i, p := range []string{"poola", "poolb"} {
		run(t, "zpool", "create", "-f", "-O", "compression=off", p, zparts[i])
		pool := p
		t.Cleanup(func() { guest.Run("zpool", "destroy", "-f", pool) })
		run(t, "zfs", "create", p+"/data")
	}
	// The VGs sit on LUNs of a LIO target backed by vdb's partitions: the guest's LVM sees no
	// virtio partition itself (lab/lvm-guest.conf), as a node sees its disks.
	lparts, err := guest.Partition("/dev/vdb", 2)
	must(t, err)
	li, err := guest.SetupLIO()
	must(t, err)
	tg, err := li.CreateTarget(71)
	must(t, err)
	var luns []*lio.LUN
	t.Cleanup(func() { // last: a backstore goes once its target does
		for _, l := range luns {
			li.Delete(l)
		}
	})
	t.Cleanup(func() { tg.Delete() })
	for i, vg := range []string{"vga", "vgb"} {
		lun, err := li.CreateBlockLUN("move"+vg, lparts[i], fmt.Sprintf("6C1B16CE1C034D1C0000E%03d", i))
		must(t, err)
		dev, err := tg.Map(lun, i)
		must(t, err)
		run(t, "pvcreate", "-ff", "-y", dev)
		run(t, "vgcreate", vg, dev)
		luns = append(luns, lun)
		v, d := vg, dev
		t.Cleanup(func() {
			guest.Run("vgremove", "-ff", "-y", v)
			guest.Run("pvremove", "-ff", "-y", d)
		})
		run(t, "lvcreate", "--yes", "--type", "thin-pool", "-L", "1900M", "-n", "data", vg)
	}
	ns, err := cluster.StartNodes("/tmp/lab-move", "", []string{"pve1", "pve2"}, cluster.TwoNodeStorage)
	if ns != nil {
		t.Cleanup(ns.Close)
	}
	must(t, err)
	must(t, ns.Sim.AddRole("MoveOnly", "Datastore.Allocate"))
	must(t, ns.Sim.AddUser("csi-move@pve", "unused"))
	must(t, ns.Sim.AddACL("/storage", "csi-move@pve", "MoveOnly", true))
	id, secret, err := ns.Sim.AddToken("csi-move@pve", "csi", false)
	must(t, err)
	c, err := simpve.NewClient(ns.URL["pve1"], ns.Sim.CAFile())
	must(t, err)
	c.Token, c.JSON = id+"="+secret, true

	zdev := func(node, vol string) string {
		return zvolDev(t, map[string]string{"pve1": "poola/data", "pve2": "poolb/data"}[node])(node, vol)
	}
	ldev := func(node, vol string) string {
		return "/dev/" + map[string]string{"pve1": "vga", "pve2": "vgb"}[node] + "/" + vol
	}
	for _, tc := range []struct {
		name string
		m    mover
	}{
		{"zvol", mover{"zfs-a", "zfs-b", zdev, 100, false}},
		{"thin-lv", mover{"thin-a", "thin-b", ldev, 100, false}},
		// The kernel sends into and receives from the TCP sockets themselves.
		{"zvol-plain-tcp", mover{"zfs-a", "zfs-b", zdev, 200, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc := "keyboard: en-us\n"
			if tc.m.insecure {
				dc += "migration: type=insecure\n"
			}
			must(t, os.WriteFile(filepath.Join(ns.Sim.Shared(), "datacenter.cfg"), []byte(dc), 0o640))
			moveAndBreak(t, ns, c, tc.m)
		})
	}
}

// logOf is a task's log through pvesnap.
func logOf(t *testing.T, c *simpve.Client, upid string) string {
	d, err := c.Must("GET", "/nodes/"+strings.Split(upid, ":")[1]+"/tasks/"+url.PathEscape(upid)+"/log", url.Values{"limit": {"5000"}})
	must(t, err)
	var lines []struct{ T string }
	json.Unmarshal(d, &lines)
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.T + "\n")
	}
	return b.String()
}

// receiving finds pve2's receiving task of a volume by its first log line.
func receiving(t *testing.T, ns *cluster.Nodes, c *simpve.Client, source string) string {
	t.Helper()
	for i := 0; i < 100; i++ {
		d, err := c.Must("GET", "/nodes/pve2/tasks", url.Values{"source": {"active"}})
		must(t, err)
		var active []struct{ UPID string }
		must(t, json.Unmarshal(d, &active))
		for _, a := range active {
			if strings.Contains(a.UPID, ":imgcopy::") && strings.Contains(logOf(t, c, a.UPID), "receiving '"+source+"' from node 'pve1'") {
				return a.UPID
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no receiving task for %s on pve2", source)
	return ""
}

func moveAndBreak(t *testing.T, ns *cluster.Nodes, c *simpve.Client, m mover) {
	root := ns.API["pve1"]
	alloc := func(vol string, vmid int) string {
		_, err := root.Must("POST", "/nodes/pve1/storage/"+m.from+"/content",
			url.Values{"filename": {vol}, "size": {"1G"}, "vmid": {fmt.Sprint(vmid)}})
		must(t, err)
		return m.dev("pve1", vol)
	}
	move := func(vol string) string {
		d, err := c.Must("POST", "/nodes/pve1/storage/"+m.from+"/content/"+vol,
			url.Values{"target": {m.to + ":" + vol}, "target_node": {"pve2"}})
		must(t, err)
		return simpve.UPIDOf(d)
	}

	vol, broken := fmt.Sprintf("vm-%d-disk-0", m.vmid), fmt.Sprintf("vm-%d-disk-0", m.vmid+1)
	t.Cleanup(func() { // room for the next case: the pools hold two volumes' data
		for _, v := range []string{vol, broken} {
			if m.from == "zfs-a" {
				guest.Run("zfs", "destroy", "-r", "poola/data/"+v)
				guest.Run("zfs", "destroy", "-r", "poolb/data/"+v)
			} else {
				guest.Run("lvremove", "-f", "vga/"+v)
				guest.Run("lvremove", "-f", "vgb/"+v)
			}
		}
	})
	// A whole move: data in the first 768 MiB, zeros after (the stream skips them).
	src := alloc(vol, m.vmid)
	must(t, guest.WritePattern(src, 29, 0, 768<<20))
	h0, err := guest.Hash(src, 0, gib)
	must(t, err)
	start := time.Now()
	upid := move(vol)
	st, err := cluster.WaitTask(c, upid, time.Second, 20*time.Minute)
	if err != nil || st != "OK" {
		t.Fatalf("move: %q %v\n%s", st, err, logOf(t, c, upid))
	}
	took := time.Since(start)
	h1, err := guest.Hash(m.dev("pve2", vol), 0, gib)
	must(t, err)
	if h1 != h0 {
		t.Fatalf("the moved volume's hash %s differs from the source's %s", h1, h0)
	}
	recv := receiving(t, ns, c, m.from+":"+vol)
	slog, rlog := logOf(t, c, upid), logOf(t, c, recv)
	for _, l := range []string{slog, rlog} {
		if !strings.Contains(l, "progress: ") || !strings.HasSuffix(strings.TrimSpace(l), "TASK OK") {
			t.Errorf("a task of the move logged no progress or did not end OK:\n%s", l)
		}
		if strings.Contains(l, "plain TCP") != m.insecure {
			t.Errorf("plain TCP expected: %v\n%s", m.insecure, l)
		}
	}
	t.Logf("1 GiB moved in %s, hash %s on both nodes\nsending task (pve1):\n%sreceiving task (pve2):\n%s", took.Round(time.Millisecond), h0[:16], slog, rlog)
	if m.from != "zfs-a" { // the LV was received under a temporary name and tag; the tag goes with the name
		tags, err := guest.Output("lvs", "--noheadings", "-o", "lv_tags", "vgb/"+vol)
		must(t, err)
		if strings.Contains(tags, "pvesnap-temp") || strings.Contains(rlog, "could not remove the tag") {
			t.Errorf("the moved LV kept the temporary tag: %q", strings.TrimSpace(tags))
		}
	}

	// A move broken off halfway: the sender is killed (zvol) or stopped (thin LV, zvol over
	// plain TCP).
	src = alloc(broken, m.vmid+1)
	must(t, guest.WritePattern(src, 31, 0, 768<<20))
	upid = move(broken)
	for i := 0; ; i++ {
		if mm := percentRe.FindAllStringSubmatch(logOf(t, c, upid), -1); len(mm) > 0 {
			if p, _ := strconv.ParseFloat(mm[len(mm)-1][1], 64); p >= 30 {
				t.Logf("breaking the move off at %.1f%%", p)
				break
			}
		}
		if i > 600 {
			t.Fatalf("the second move never reached 30%%:\n%s", logOf(t, c, upid))
		}
		time.Sleep(time.Second)
	}
	recv = receiving(t, ns, c, m.from+":"+broken)
	if m.from == "zfs-a" && !m.insecure {
		pid, _ := strconv.ParseInt(strings.Split(upid, ":")[2], 16, 64)
		must(t, syscall.Kill(int(pid), syscall.SIGKILL))
	} else {
		_, err := c.Must("DELETE", "/nodes/pve1/tasks/"+url.PathEscape(upid), nil)
		must(t, err)
		if st, err := cluster.WaitTask(c, upid, time.Second, time.Minute); err != nil || st != "interrupted by stop request" {
			t.Errorf("the stopped sending task ended %q (%v)", st, err)
		}
	}
	st, err = cluster.WaitTask(c, recv, time.Second, 2*time.Minute)
	must(t, err)
	t.Logf("receiving task after the break: %s", st)
	if !strings.Contains(st, "the stream from node 'pve1' broke off after") {
		t.Errorf("receiving task ended %q\n%s", st, logOf(t, c, recv))
	}
	if m.from == "zfs-a" {
		out, _ := guest.Output("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", "poolb")
		if strings.Contains(out, broken) || strings.Contains(out, "%") {
			t.Errorf("left on poolb after the broken move:\n%s", out)
		}
	} else {
		out, _ := guest.Output("lvs", "--noheadings", "-o", "lv_name", "vgb")
		if strings.Contains(out, broken) || strings.Contains(out, "pvesnap-") {
			t.Errorf("left in vgb after the broken move:\n%s", out)
		}
	}
}
