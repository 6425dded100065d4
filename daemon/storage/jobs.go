package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
	"github.com/pvesnap/pvesnap/lvm/engine"
)

// SnapshotPrefix marks the snapshots pvesnap creates; it destroys no other.
const SnapshotPrefix = "pvesnap-"

// zfsClone: snapshot the source under a fresh name, clone it to the target; the snapshot is
// rolled back when the clone fails. ZFS records the dependency itself (origin/clones).
func (m *Module) zfsClone(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
	var s CopySpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	z := m.zfs()
	src, dst := s.Pool+"/"+s.Source, s.Pool+"/"+s.Target
	unlockPool, err := m.lock(ctx, "zfs-"+s.Pool, false) // deletes take it exclusively
	if err != nil {
		return err
	}
	defer unlockPool()
	for _, n := range []string{src, dst} {
		unlock, err := m.lock(ctx, "zfs-"+n, true)
		if err != nil {
			return err
		}
		defer unlock()
	}
	// The call checked that the target does not exist; one made since makes the clone fail
	// (and the snapshot is removed again): no extra command on the way of an instant copy.
	// A fresh snapshot name per copy: a snapshot left behind by an earlier failure is never
	// reused (it would not hold the source's current data).
	suffix := make([]byte, 4)
	rand.Read(suffix)
	snap := SnapshotPrefix + s.Target + "-" + hex.EncodeToString(suffix)
	t.Logf("zfs snapshot %s@%s", src, snap)
	if err := z.TakeSnapshot(ctx, src, snap); err != nil {
		return fmt.Errorf("snapshot of %s failed: %w", src, err)
	}
	t.Logf("zfs clone %s@%s %s", src, snap, dst)
	if err := z.Clone(ctx, src+"@"+snap, dst); err != nil {
		if rerr := z.Destroy(context.WithoutCancel(ctx), src+"@"+snap, false); rerr != nil {
			t.Warnf("could not remove snapshot %s@%s after the failed clone: %v", src, snap, rerr)
		} else {
			t.Logf("removed snapshot %s@%s after the failed clone", src, snap)
		}
		if errors.Is(err, ErrDatasetExists) {
			return fmt.Errorf("volume '%s:%s' already exists", s.Storage, s.Target)
		}
		return fmt.Errorf("clone of %s failed: %w", src, err)
	}
	t.Logf("copied '%s:%s' to '%s:%s' instantly (ZFS clone of %s@%s)", s.Storage, s.Source, s.Storage, s.Target, src, snap)
	return nil
}

// zfsDelete destroys a volume without losing any clone's data: while its snapshots have
// clones pvesnap made, the clone of the newest such snapshot is promoted (taking the older
// snapshots with it); clones pvesnap did not make make it refuse. Afterwards the origin
// snapshot of the deleted volume is removed when it is pvesnap's and nothing else uses it.
func (m *Module) zfsDelete(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
	var s DeleteSpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	z := m.zfs()
	ds := s.Pool + "/" + s.Volume
	unlock, err := m.lock(ctx, "zfs-"+s.Pool, true)
	if err != nil {
		return err
	}
	defer unlock()
	for round := 0; ; round++ {
		if round > 64 {
			return fmt.Errorf("%s: too many dependent clones to promote", ds)
		}
		snaps, err := z.Snapshots(ctx, ds)
		if errors.Is(err, ErrNoDataset) {
			return fmt.Errorf("no such volume '%s:%s'", s.Storage, s.Volume)
		}
		if err != nil {
			return err
		}
		var newest *Snapshot
		var foreign []string
		for i := range snaps {
			if len(snaps[i].Clones) == 0 {
				continue
			}
			if !strings.HasPrefix(snaps[i].Short(), SnapshotPrefix) {
				foreign = append(foreign, snaps[i].Clones...)
				continue
			}
			newest = &snaps[i]
		}
		if len(foreign) > 0 {
			sort.Strings(foreign)
			return fmt.Errorf("volume '%s:%s' has dependent clones not made by pvesnap (%s): refusing to delete it", s.Storage, s.Volume, strings.Join(foreign, ", "))
		}
		if newest == nil {
			break
		}
		sort.Strings(newest.Clones)
		promote := newest.Clones[0]
		t.Logf("%s has dependent clones (%s); promoting %s so they keep their data", ds, strings.Join(newest.Clones, ", "), promote)
		if err := z.Promote(ctx, promote); err != nil {
			return fmt.Errorf("promoting %s failed: %w", promote, err)
		}
	}
	info, err := z.Get(ctx, ds)
	if err != nil {
		return err
	}
	t.Logf("zfs destroy -r %s", ds)
	if err := z.Destroy(ctx, ds, true); err != nil {
		return fmt.Errorf("destroying %s failed: %w", ds, err)
	}
	t.Logf("Removed volume '%s:%s'", s.Storage, s.Volume)
	if info.Origin == "" {
		return nil
	}
	parent, snap, _ := strings.Cut(info.Origin, "@")
	if !strings.HasPrefix(snap, SnapshotPrefix) {
		return nil // not ours: leave it
	}
	snaps, err := z.Snapshots(ctx, parent)
	if err != nil {
		t.Warnf("could not check origin snapshot %s: %v", info.Origin, err)
		return nil
	}
	for _, sn := range snaps {
		if sn.Name == info.Origin && len(sn.Clones) == 0 {
			t.Logf("zfs destroy %s (origin snapshot, no longer used)", info.Origin)
			if err := z.Destroy(ctx, info.Origin, false); err != nil {
				t.Warnf("could not remove origin snapshot %s: %v", info.Origin, err)
			}
		}
	}
	return nil
}

// thinSnapshot makes the target a thin snapshot of the source, active like any volume.
func (m *Module) thinSnapshot(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
	var s CopySpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	l := &lvm.LVM{Run: m.Run}
	t.Logf("lvcreate -s -kn -n %s %s/%s", s.Target, s.VG, s.Source)
	if err := l.ThinSnapshot(ctx, s.VG, s.Source, s.Target); err != nil {
		return fmt.Errorf("thin snapshot of %s/%s failed: %w", s.VG, s.Source, err)
	}
	t.Logf("copied '%s:%s' to '%s:%s' instantly (LVM thin snapshot)", s.Storage, s.Source, s.Storage, s.Target)
	return nil
}

// lvmCopy allocates the target LV like PVE does and copies with the engine (offloaded);
// the new LV is removed again when the copy fails.
func (m *Module) lvmCopy(ctx context.Context, t *tasks.Task, raw json.RawMessage) error {
	var s CopySpec
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	l := &lvm.LVM{Run: m.Run}
	src, err := l.LV(ctx, s.VG, s.Source)
	if err != nil {
		return err
	}
	tags := []string{}
	for _, tag := range src.Tags {
		if !strings.HasPrefix(tag, "pve-vm-") {
			tags = append(tags, tag)
		}
	}
	if owner := ownerTag(s.Target); owner != "" {
		tags = append(tags, owner)
	}
	t.Logf("allocating %s/%s (%s)", s.VG, s.Target, tasks.HumanBytes(src.Size))
	if err := l.Create(ctx, s.VG, s.Target, src.Size, lvm.CreateOptions{Tags: tags}); err != nil {
		return err
	}
	o := m.Engine
	o.Log = func(f string, a ...any) { t.Logf(f, a...) }
	start := time.Now()
	o.Progress = func(done, total int64) { t.Progress(done, total, start, 5*time.Second) }
	var res *engine.Result
	dst, err := l.LV(ctx, s.VG, s.Target) // the devices as LVM reports them (lv_path)
	if err == nil {
		res, err = engine.Copy(ctx, src.Path, dst.Path, o)
	}
	if err != nil {
		if rerr := l.Remove(context.WithoutCancel(ctx), s.VG, s.Target); rerr != nil {
			t.Warnf("could not remove %s/%s after the failed copy: %v", s.VG, s.Target, rerr)
		} else {
			t.Logf("removed %s/%s after the failed copy", s.VG, s.Target)
		}
		return err
	}
	t.Logf("copied %s in %s: %s offloaded, %s through the host", tasks.HumanBytes(res.Bytes), res.Duration.Round(time.Millisecond),
		tasks.HumanBytes(res.Offloaded), tasks.HumanBytes(res.HostCopied))
	return nil
}

func ownerTag(volume string) string {
	var id int64
	if _, err := fmt.Sscanf(volume, "vm-%d-", &id); err == nil {
		return fmt.Sprintf("pve-vm-%d", id)
	}
	return ""
}
