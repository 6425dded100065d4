package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// KindSnapshot is the task handler of an on-demand snapshot.
const KindSnapshot = "inventory-snapshot"

// SnapshotSpec asks for a snapshot of the array volumes holding a VM's disks.
type SnapshotSpec struct {
	VMID   int64  `json:"vmid"`
	Suffix string `json:"suffix"`
	Freeze bool   `json:"freeze"`
}

var suffixRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// CheckSuffix validates a snapshot suffix by Purity's naming rules.
func CheckSuffix(s string) error {
	if !suffixRe.MatchString(s) {
		return fmt.Errorf("snapshot suffix '%s' is invalid: 1-63 letters, digits and '-', beginning and ending with a letter or digit", s)
	}
	return nil
}

// DefaultSuffix names an on-demand snapshot: pvesnap, the VMID and the time.
func DefaultSuffix(vmid int64, at time.Time) string {
	return fmt.Sprintf("pvesnap-%d-%s", vmid, at.UTC().Format("20060102-150405"))
}

// SnapshotVM snapshots, in one call per array and with one suffix, every array volume that
// holds a disk of the live VM, so all its disks on an array share one point in time. With
// freeze, the guest's filesystems are frozen through the guest agent around it when the agent
// answers; they are thawed whatever happens.
func (inv *Inventory) SnapshotVM(ctx context.Context, t *tasks.Task, spec SnapshotSpec) error {
	if err := CheckSuffix(spec.Suffix); err != nil {
		return err
	}
	if err := inv.ScanVMs(ctx); err != nil {
		return err
	}
	d, err := inv.Detail(ctx, spec.VMID, 0)
	if err != nil {
		return err
	}
	if d.State != Live {
		return fmt.Errorf("VM %d does not exist any more (deleted %s)", spec.VMID, fmtTime(d.Deleted*1000))
	}
	if _, err := inv.Map(ctx); err != nil {
		return err
	}
	if d, err = inv.Detail(ctx, spec.VMID, 0); err != nil {
		return err
	}
	byArray := map[string][]string{}
	for _, dk := range d.DiskList {
		switch {
		case dk.Mapping == Mapped:
			if !slices.Contains(byArray[dk.Array], dk.Volume) {
				byArray[dk.Array] = append(byArray[dk.Array], dk.Volume)
			}
		case dk.Mapping != "not-on-array":
			t.Warnf("disk %s (%s) is not snapshotted: %s", dk.Key, dk.Volid, dk.Reason)
		default:
			t.Logf("disk %s (%s) is not on an array volume: not snapshotted", dk.Key, dk.Volid)
		}
	}
	if len(byArray) == 0 {
		return fmt.Errorf("VM %d has no disk on an array volume", spec.VMID)
	}
	if len(byArray) > 1 {
		t.Warnf("VM %d has disks on %d arrays: each array's snapshot is its own point in time", spec.VMID, len(byArray))
	}
	if spec.Freeze {
		thaw := inv.freeze(ctx, t, spec.VMID)
		defer thaw()
	}
	arrs, err := inv.Arrays.List()
	if err != nil {
		return err
	}
	ids := slices.Sorted(maps.Keys(byArray))
	for _, id := range ids {
		var a *pure.Client
		for _, x := range arrs {
			if x.ID == id {
				if a, err = inv.Client(x); err != nil {
					return err
				}
			}
		}
		if a == nil {
			return fmt.Errorf("array %s is no longer configured", id)
		}
		vols := byArray[id]
		sort.Strings(vols)
		t.Logf("array %s: snapshot of %v with suffix %s", id, vols, spec.Suffix)
		snaps, err := a.CreateVolumeSnapshots(ctx, vols, spec.Suffix)
		if err != nil {
			return fmt.Errorf("array %s: %w", id, err)
		}
		for _, s := range snaps {
			t.Logf("created %s (serial %s) at %s", s.Name, s.Serial, fmtTime(s.Created))
		}
		if err := inv.storeSnapshots(ctx, id, vols, snaps, false); err != nil {
			t.Warnf("snapshot cache not updated (the next refresh will): %v", err)
		}
	}
	return nil
}

// freeze freezes the guest's filesystems when its agent answers and returns the thaw.
func (inv *Inventory) freeze(ctx context.Context, t *tasks.Task, vmid int64) (thaw func()) {
	id := strconv.FormatInt(vmid, 10)
	agent := func(ctx context.Context, cmd string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return inv.Run.Run(ctx, []string{"qm", "guest", "cmd", id, cmd})
	}
	if _, err := agent(ctx, "ping"); err != nil {
		t.Warnf("guest agent of VM %d not answering (%v): the snapshot is crash-consistent", vmid, err)
		return func() {}
	}
	out, err := agent(ctx, "fsfreeze-freeze")
	if err != nil {
		t.Warnf("fsfreeze-freeze failed (%v): the snapshot is crash-consistent", err)
		agent(context.WithoutCancel(ctx), "fsfreeze-thaw") // a partial freeze must not stay
		return func() {}
	}
	t.Logf("guest filesystems frozen (%s)", trimJSON(out))
	return func() {
		if out, err := agent(context.WithoutCancel(ctx), "fsfreeze-thaw"); err != nil {
			t.Warnf("fsfreeze-thaw failed: %v: check the guest (qm guest cmd %d fsfreeze-status)", err, vmid)
		} else {
			t.Logf("guest filesystems thawed (%s)", trimJSON(out))
		}
	}
}

func trimJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) == nil {
		c, _ := json.Marshal(v)
		return string(c)
	}
	return string(b)
}

// AgentEnabled reads "agent: 1" / "agent: enabled=1,…" from a VM config.
func AgentEnabled(cfg *pve.VMConfig) bool {
	v := pve.ParsePropertyString(cfg.Props["agent"], "enabled")["enabled"]
	return v == "1" || v == "on" || v == "yes" || v == "true"
}
