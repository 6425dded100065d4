package inventory

import (
	"context"
	"fmt"
	"sort"

	"github.com/pvesnap/pvesnap/daemon/pure"
)

// Snapshot is a cached array snapshot of a mapped volume.
type Snapshot struct {
	Array     string `json:"array"`
	Volume    string `json:"volume"`
	Name      string `json:"name"`
	Serial    string `json:"serial,omitempty"`
	Created   int64  `json:"created"` // ms since the epoch, as the array reports
	PGroup    string `json:"pgroup,omitempty"`
	Point     string `json:"point"` // what the snapshot shares with its siblings: "PG.SUFFIX" or "SUFFIX" (see pointKey)
	Destroyed bool   `json:"destroyed,omitempty"`
}

// RefreshResult says what a refresh did, per array.
type RefreshResult struct {
	Snapshots int               `json:"snapshots"`
	Errors    map[string]string `json:"errors,omitempty"`
}

// Refresh maps the storages, updates the disks' LV identities and replaces the cached
// snapshots of every mapped volume, array by array (an unreachable array keeps its old cache
// and records the error). Deleted incarnations that no snapshot can restore any more are
// pruned.
func (inv *Inventory) Refresh(ctx context.Context) (*RefreshResult, error) {
	if err := inv.ScanVMs(ctx); err != nil {
		return nil, err
	}
	maps, err := inv.Map(ctx)
	if err != nil {
		return nil, err
	}
	if err := inv.UpdateDiskIdentities(ctx, maps); err != nil {
		inv.logger().Warn("reading LV identities", "err", err)
	}
	byArray := map[string][]string{}
	for _, m := range maps {
		if m.State == Mapped {
			byArray[m.Array] = append(byArray[m.Array], m.Volume)
		}
	}
	res := &RefreshResult{Errors: map[string]string{}}
	arrs, err := inv.Arrays.List()
	if err != nil {
		return nil, err
	}
	for _, a := range arrs {
		vols := byArray[a.ID]
		now := inv.now().Unix()
		var snaps []pure.VolumeSnapshot
		c, err := inv.Client(a)
		if err == nil && len(vols) > 0 {
			snaps, err = c.VolumeSnapshots(ctx, vols, "")
		}
		if err != nil {
			res.Errors[a.ID] = err.Error()
			inv.DB.ExecContext(ctx, `INSERT INTO refresh (array, fetched, error) VALUES (?, ?, ?)
				ON CONFLICT (array) DO UPDATE SET error = excluded.error`, a.ID, now, err.Error())
			continue
		}
		if err := inv.storeSnapshots(ctx, a.ID, vols, snaps, true); err != nil {
			return nil, err
		}
		inv.DB.ExecContext(ctx, `INSERT INTO refresh (array, fetched, error) VALUES (?, ?, '')
			ON CONFLICT (array) DO UPDATE SET fetched = excluded.fetched, error = ''`, a.ID, now)
		res.Snapshots += len(snaps)
	}
	if err := inv.prune(ctx); err != nil {
		return nil, err
	}
	return res, nil
}

// storeSnapshots writes snapshots of volumes into the cache; replace drops the volumes' other
// cached snapshots (a full listing), otherwise rows are only added (pvesnap just made them).
func (inv *Inventory) storeSnapshots(ctx context.Context, array string, volumes []string, snaps []pure.VolumeSnapshot, replace bool) error {
	tx, err := inv.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := inv.now().Unix()
	if replace {
		for _, v := range volumes {
			if _, err := tx.ExecContext(ctx, `DELETE FROM snapshots WHERE array = ? AND volume = ?`, array, v); err != nil {
				return err
			}
		}
	}
	for _, s := range snaps {
		vol := ""
		if s.Source != nil {
			vol = s.Source.Name
		}
		pg, point := pointKey(s.Name)
		if _, err := tx.ExecContext(ctx, `INSERT INTO snapshots (array, volume, name, serial, created, pgroup, suffix, destroyed, fetched)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (array, name) DO UPDATE SET destroyed = excluded.destroyed, fetched = excluded.fetched`,
			array, vol, s.Name, s.Serial, s.Created, pg, point, s.Destroyed, now); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Snapshots returns the cached snapshots of one array volume, oldest first.
func (inv *Inventory) Snapshots(ctx context.Context, array, volume string) ([]Snapshot, error) {
	rows, err := inv.DB.QueryContext(ctx, `SELECT name, serial, created, pgroup, suffix, destroyed FROM snapshots
		WHERE array = ? AND volume = ? ORDER BY created, name`, array, volume)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		s := Snapshot{Array: array, Volume: volume}
		if err := rows.Scan(&s.Name, &s.Serial, &s.Created, &s.PGroup, &s.Point, &s.Destroyed); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// allSnapshots loads the whole cache, by "array/volume", each list sorted by creation.
func (inv *Inventory) allSnapshots(ctx context.Context) (map[string][]Snapshot, error) {
	rows, err := inv.DB.QueryContext(ctx, `SELECT array, volume, name, serial, created, pgroup, suffix, destroyed FROM snapshots WHERE destroyed = 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]Snapshot{}
	for rows.Next() {
		var s Snapshot
		if err := rows.Scan(&s.Array, &s.Volume, &s.Name, &s.Serial, &s.Created, &s.PGroup, &s.Point, &s.Destroyed); err != nil {
			return nil, err
		}
		k := s.Array + "/" + s.Volume
		out[k] = append(out[k], s)
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool {
			return l[i].Created < l[j].Created || (l[i].Created == l[j].Created && l[i].Name < l[j].Name)
		})
	}
	return out, rows.Err()
}

// prune forgets deleted incarnations that no cached snapshot can restore: none of their
// disks' volumes has a snapshot taken between the disk's creation and the VM's deletion.
func (inv *Inventory) prune(ctx context.Context) error {
	incs, err := inv.Incarnations(ctx, 0)
	if err != nil {
		return err
	}
	all, err := inv.allSnapshots(ctx)
	if err != nil {
		return err
	}
	maps, err := inv.Maps(ctx, MapMaxAge)
	if err != nil {
		return err
	}
	vol := volumesByStorage(maps)
	lvmStorage := map[string]bool{}
	for _, m := range maps {
		lvmStorage[m.Storage] = true
	}
	for _, in := range incs {
		if in.Deleted == 0 {
			continue
		}
		keep := false
		for _, d := range in.Disks {
			if !lvmStorage[d.Storage] {
				continue // not on array-backed LVM: no snapshot can hold it
			}
			v, ok := vol[d.Storage]
			if !ok {
				keep = true // its storage is not mapped now (array down?): do not judge
				break
			}
			for _, s := range all[v] {
				if s.Created >= d.LVTime*1000 && s.Created <= in.Deleted*1000 {
					keep = true
					break
				}
			}
		}
		if !keep {
			if _, err := inv.DB.ExecContext(ctx, `DELETE FROM incarnations WHERE vmid = ? AND ctime = ?`, in.VMID, in.CTime); err != nil {
				return err
			}
			inv.logger().Info("deleted VM forgotten: no snapshot holds its disks", "vmid", in.VMID, "ctime", in.CTime)
		}
	}
	return nil
}

// volumesByStorage maps mapped storages to "array/volume".
func volumesByStorage(maps []StorageMap) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		if m.State == Mapped {
			out[m.Storage] = m.Array + "/" + m.Volume
		}
	}
	return out
}

// errorf is fmt.Errorf wrapping a class.
func errorf(class error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{class}, args...)...)
}
