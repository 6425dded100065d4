package inventory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
)

// How an incarnation's creation time was learnt.
const (
	CTimeMeta      = "meta"       // the config's meta: ctime= (PVE 7 and later)
	CTimeQMCreate  = "qmcreate"   // the latest qmcreate task for the VMID on this node
	CTimeFirstSeen = "first-seen" // when pvesnap first saw the config
)

// Incarnation is one life of a VMID: a VM is identified by (vmid, ctime), so a VMID reused
// after a VM was destroyed is a different VM.
type Incarnation struct {
	VMID        int64    `json:"vmid"`
	CTime       int64    `json:"ctime"`
	CTimeSource string   `json:"ctime_source"`
	Node        string   `json:"node"`
	Name        string   `json:"name,omitempty"`
	FirstSeen   int64    `json:"first_seen"`
	LastSeen    int64    `json:"last_seen"`
	Deleted     int64    `json:"deleted,omitempty"` // when its config disappeared; 0 while it exists
	Config      string   `json:"-"`
	Disks       []DiskID `json:"-"`
}

// DiskID is a disk's identity in an incarnation: the LV's UUID and creation time tell a
// disk from a later one of the same name.
type DiskID struct {
	Key     string `json:"key"`
	Volid   string `json:"volid"`
	Storage string `json:"storage"`
	LVUUID  string `json:"lv_uuid,omitempty"`
	LVTime  int64  `json:"lv_time,omitempty"` // seconds (the original's, for a disk restored in place)
	Size    int64  `json:"size,omitempty"`
	// Lineage are the UUIDs of the LVs this one replaced by in-place restores: a snapshot
	// holding one of them holds this disk.
	Lineage []string `json:"lineage,omitempty"`
}

// Holds reports whether an LV with uuid (found in a snapshot) is this disk.
func (d DiskID) Holds(uuid string) bool {
	if uuid == d.LVUUID {
		return true
	}
	for _, u := range d.Lineage {
		if u == uuid {
			return true
		}
	}
	return false
}

type fileStamp struct {
	mtime time.Time
	size  int64
	vmid  int64
	ctime int64
	src   string
	node  string
	name  string
	raw   []byte
	disks []pve.Disk
}

// ScanVMs reads every VM config of the cluster (/etc/pve/nodes/*/qemu-server/*.conf), records
// new incarnations, refreshes the last config of live ones and marks vanished ones deleted.
// Configs unchanged since the last scan are not re-read: pmxcfs is local and cheap to stat, so
// this runs every few seconds (inotify does not see changes made on other nodes).
func (inv *Inventory) ScanVMs(ctx context.Context) error {
	paths, err := filepath.Glob(filepath.Join(inv.PVE, "nodes", "*", "qemu-server", "*.conf"))
	if err != nil {
		return err
	}
	now := inv.now().Unix()
	inv.mu.Lock()
	if inv.files == nil {
		inv.files = map[string]fileStamp{}
	}
	prev := inv.files
	inv.mu.Unlock()
	seen := map[string]fileStamp{}
	for _, p := range paths {
		vmid, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(p), ".conf"), 10, 64)
		if err != nil || pve.CheckVMID(vmid) != nil {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			continue // removed while scanning
		}
		node := filepath.Base(filepath.Dir(filepath.Dir(p)))
		if old, ok := prev[p]; ok && old.mtime.Equal(st.ModTime()) && old.size == st.Size() {
			seen[p] = old
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cfg, err := pve.ParseVMConfig(raw)
		if err != nil {
			inv.logger().Warn("unreadable VM config", "path", p, "err", err)
			continue
		}
		fs := fileStamp{mtime: st.ModTime(), size: st.Size(), vmid: vmid, node: node, name: cfg.Props["name"], raw: raw, disks: cfg.Disks()}
		if ct := cfg.CTime(); ct > 0 {
			fs.ctime, fs.src = ct, CTimeMeta
		} else if old, ok := prev[p]; ok && old.src != CTimeMeta {
			fs.ctime, fs.src = old.ctime, old.src
		} else if ct, src, err := inv.liveCTime(ctx, vmid); err == nil && ct > 0 && src != CTimeMeta {
			fs.ctime, fs.src = ct, src // this process restarted: keep the identity it knew
		} else if ct := inv.qmcreateTime(vmid); ct > 0 {
			fs.ctime, fs.src = ct, CTimeQMCreate
		} else {
			fs.ctime, fs.src = now, CTimeFirstSeen
		}
		seen[p] = fs
	}
	changed := map[string]bool{}
	for p, fs := range seen {
		if old, ok := prev[p]; !ok || !old.mtime.Equal(fs.mtime) || old.size != fs.size {
			changed[p] = true
		}
	}
	if len(changed) == 0 && len(seen) == len(prev) && prev != nil && inv.scanned {
		return nil // nothing new, nothing gone: the common case every few seconds
	}
	if err := inv.record(ctx, seen, changed, now); err != nil {
		return err
	}
	inv.mu.Lock()
	inv.files, inv.scanned = seen, true
	inv.mu.Unlock()
	if len(changed) > 0 {
		// New or changed disks get their LV identity at once: a restore must never see a
		// disk whose creation time is unknown as older than every snapshot.
		maps, err := inv.Maps(ctx, MapMaxAge)
		if err != nil {
			return err
		}
		return inv.UpdateDiskIdentities(ctx, maps)
	}
	return nil
}

// liveCTime returns the ctime of the VMID's live incarnation in the database (0 if none).
func (inv *Inventory) liveCTime(ctx context.Context, vmid int64) (int64, string, error) {
	var ct int64
	var src string
	err := inv.DB.QueryRowContext(ctx, `SELECT ctime, ctime_source FROM incarnations WHERE vmid = ? AND deleted = 0 ORDER BY ctime DESC LIMIT 1`, vmid).Scan(&ct, &src)
	if err == sql.ErrNoRows {
		return 0, "", nil
	}
	return ct, src, err
}

// qmcreateTime is the start of the newest successful qmcreate task for vmid on this node.
func (inv *Inventory) qmcreateTime(vmid int64) int64 {
	if inv.Tasks == nil {
		return 0
	}
	id := strconv.FormatInt(vmid, 10)
	var best int64
	inv.Tasks.Archive(func(e tasks.Entry) bool {
		u, err := tasks.ParseUPID(e.UPID)
		if err == nil && u.Type == "qmcreate" && u.ID == id && e.Status == "OK" && u.StartTime > best {
			best = u.StartTime
		}
		return true
	})
	return best
}

// record writes the changed configs of a scan into the incarnations tables and marks the
// incarnations whose config is gone as deleted, in one transaction.
func (inv *Inventory) record(ctx context.Context, seen map[string]fileStamp, changed map[string]bool, now int64) error {
	tx, err := inv.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	live := map[[2]int64]bool{}
	for p, fs := range seen {
		key := [2]int64{fs.vmid, fs.ctime}
		if live[key] {
			continue // the same VM listed on two nodes mid-migration
		}
		live[key] = true
		if !changed[p] {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO incarnations (vmid, ctime, ctime_source, node, name, config, first_seen, last_seen, deleted)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)
			ON CONFLICT (vmid, ctime) DO UPDATE SET node = excluded.node, name = excluded.name, config = excluded.config,
				last_seen = excluded.last_seen, deleted = 0`,
			fs.vmid, fs.ctime, fs.src, fs.node, fs.name, string(fs.raw), now, now); err != nil {
			return err
		}
		var keys []any
		for _, d := range fs.disks {
			keys = append(keys, d.Key)
			// The LV identity is filled in by a refresh (lvs); a changed volid resets it.
			if _, err := tx.ExecContext(ctx, `INSERT INTO incarnation_disks (vmid, ctime, key, volid, storage) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (vmid, ctime, key) DO UPDATE SET
					lv_uuid = CASE WHEN volid = excluded.volid THEN lv_uuid ELSE '' END,
					lv_time = CASE WHEN volid = excluded.volid THEN lv_time ELSE 0 END,
					volid = excluded.volid, storage = excluded.storage`,
				fs.vmid, fs.ctime, d.Key, d.Volid.String(), d.Volid.Storage); err != nil {
				return err
			}
		}
		// Disks no longer in the config are forgotten for the live incarnation.
		q := `DELETE FROM incarnation_disks WHERE vmid = ? AND ctime = ?`
		args := []any{fs.vmid, fs.ctime}
		if len(keys) > 0 {
			q += ` AND key NOT IN (?` + strings.Repeat(",?", len(keys)-1) + `)`
			args = append(args, keys...)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT vmid, ctime FROM incarnations WHERE deleted = 0`)
	if err != nil {
		return err
	}
	var gone [][2]int64
	for rows.Next() {
		var k [2]int64
		if err := rows.Scan(&k[0], &k[1]); err != nil {
			rows.Close()
			return err
		}
		if !live[k] {
			gone = append(gone, k)
		}
	}
	rows.Close()
	for _, k := range gone {
		if _, err := tx.ExecContext(ctx, `UPDATE incarnations SET deleted = ? WHERE vmid = ? AND ctime = ?`, now, k[0], k[1]); err != nil {
			return err
		}
		inv.logger().Info("VM config gone: remembered as deleted", "vmid", k[0], "ctime", k[1])
	}
	return tx.Commit()
}

// UpdateDiskIdentities reads the LVs of the mapped storages (one lvs per VG) and records each
// live disk's LV UUID, creation time and size. An LV a restore swapped in keeps the identity
// of the disk it replaced (its lineage); one that a restore still in progress put there is not
// recorded at all, because the restore may yet be rolled back and the replaced disk return.
func (inv *Inventory) UpdateDiskIdentities(ctx context.Context, maps []StorageMap) error {
	vgOf := map[string]string{}
	for _, m := range maps {
		if m.State == Mapped {
			vgOf[m.Storage] = m.VG
		}
	}
	lvs := map[string]map[string]lvm.LV{} // storage -> LV name -> LV
	for sid, vg := range vgOf {
		list, err := inv.LVM.LVs(ctx, vg)
		if err != nil {
			return fmt.Errorf("storage %s: %w", sid, err)
		}
		lvs[sid] = map[string]lvm.LV{}
		for _, lv := range list {
			lvs[sid][lv.Name] = lv
		}
	}
	rows, err := inv.DB.QueryContext(ctx, `SELECT d.vmid, d.ctime, d.key, d.volid, d.storage FROM incarnation_disks d
		JOIN incarnations i ON i.vmid = d.vmid AND i.ctime = d.ctime WHERE i.deleted = 0`)
	if err != nil {
		return err
	}
	type upd struct {
		vmid, ctime, t, size int64
		key, uuid, lineage   string
		tags                 []string
	}
	var ups []upd
	for rows.Next() {
		var vmid, ctime int64
		var key, volid, sid string
		if err := rows.Scan(&vmid, &ctime, &key, &volid, &sid); err != nil {
			rows.Close()
			return err
		}
		_, vol, _ := strings.Cut(volid, ":")
		if lv, ok := lvs[sid][vol]; ok {
			ups = append(ups, upd{vmid: vmid, ctime: ctime, t: lv.Time.Unix(), size: lv.Size, key: key, uuid: lv.UUID, tags: lv.Tags})
		}
	}
	rows.Close()
	kept := ups[:0]
	for _, u := range ups {
		var origin string
		var ot int64
		err := inv.DB.QueryRowContext(ctx, `SELECT origin, origin_time FROM lineage WHERE lv_uuid = ?`, u.uuid).Scan(&origin, &ot)
		switch {
		case err == nil:
			u.lineage, u.t = origin, ot
		case !errors.Is(err, sql.ErrNoRows):
			return err
		default:
			busy, err := inv.restoreInProgress(ctx, u.tags)
			if err != nil {
				return err
			}
			if busy {
				continue // the previous record stands until the restore commits or rolls back
			}
		}
		kept = append(kept, u)
	}
	ups = kept
	if len(ups) == 0 {
		return nil // no write lock for nothing: transactions begin IMMEDIATE
	}
	tx, err := inv.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, u := range ups {
		if _, err := tx.ExecContext(ctx, `UPDATE incarnation_disks SET lv_uuid = ?, lv_time = ?, size = ?, lineage = ? WHERE vmid = ? AND ctime = ? AND key = ?`,
			u.uuid, u.t, u.size, u.lineage, u.vmid, u.ctime, u.key); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// restoreInProgress tells whether an LV's tags name a restore job (the tag "pvesnap-<job>" its
// lvcreate set) that has not committed: running, or failed with its undo not yet complete.
func (inv *Inventory) restoreInProgress(ctx context.Context, tags []string) (bool, error) {
	for _, tag := range tags {
		job, ok := strings.CutPrefix(tag, "pvesnap-")
		if !ok {
			continue
		}
		var n int
		if err := inv.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs WHERE id = ? AND state IN (?, ?)`, job, store.JobRunning, store.JobStuck).Scan(&n); err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Incarnations returns the remembered incarnations (live and deleted) with their disks and
// last configs, of one VMID or of all (vmid 0).
func (inv *Inventory) Incarnations(ctx context.Context, vmid int64) ([]Incarnation, error) {
	return inv.load(ctx, vmid, true)
}

func (inv *Inventory) load(ctx context.Context, vmid int64, withConfig bool) ([]Incarnation, error) {
	cfgCol := "''"
	if withConfig {
		cfgCol = "config"
	}
	where, dwhere := "", ""
	var args []any
	if vmid > 0 {
		where, dwhere, args = " WHERE vmid = ?", " WHERE vmid = ?", []any{vmid}
	}
	rows, err := inv.DB.QueryContext(ctx, `SELECT vmid, ctime, ctime_source, node, name, `+cfgCol+`, first_seen, last_seen, deleted
		FROM incarnations`+where+` ORDER BY vmid, ctime`, args...)
	if err != nil {
		return nil, err
	}
	var out []Incarnation
	idx := map[[2]int64]int{}
	for rows.Next() {
		var in Incarnation
		if err := rows.Scan(&in.VMID, &in.CTime, &in.CTimeSource, &in.Node, &in.Name, &in.Config, &in.FirstSeen, &in.LastSeen, &in.Deleted); err != nil {
			rows.Close()
			return nil, err
		}
		idx[[2]int64{in.VMID, in.CTime}] = len(out)
		out = append(out, in)
	}
	rows.Close()
	drows, err := inv.DB.QueryContext(ctx, `SELECT vmid, ctime, key, volid, storage, lv_uuid, lv_time, size, lineage
		FROM incarnation_disks`+dwhere+` ORDER BY vmid, ctime, key`, args...)
	if err != nil {
		return nil, err
	}
	defer drows.Close()
	for drows.Next() {
		var vm, ct int64
		var d DiskID
		var lineage string
		if err := drows.Scan(&vm, &ct, &d.Key, &d.Volid, &d.Storage, &d.LVUUID, &d.LVTime, &d.Size, &lineage); err != nil {
			return nil, err
		}
		if lineage != "" {
			d.Lineage = strings.Split(lineage, ",")
		}
		if i, ok := idx[[2]int64{vm, ct}]; ok {
			out[i].Disks = append(out[i].Disks, d)
		}
	}
	return out, drows.Err()
}

// RecordLineage makes the LV newUUID, swapped in for disk by an in-place restore, the same
// disk: it inherits the replaced LV's creation time and UUIDs.
func (inv *Inventory) RecordLineage(ctx context.Context, newUUID string, disk DiskID) error {
	origin := append([]string{disk.LVUUID}, disk.Lineage...)
	_, err := inv.DB.ExecContext(ctx, `INSERT INTO lineage (lv_uuid, origin, origin_time, recorded) VALUES (?, ?, ?, ?)
		ON CONFLICT (lv_uuid) DO UPDATE SET origin = excluded.origin, origin_time = excluded.origin_time`,
		newUUID, strings.Join(origin, ","), disk.LVTime, inv.now().Unix())
	return err
}
