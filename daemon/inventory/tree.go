package inventory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// States of an incarnation.
const (
	Live    = "live"
	Deleted = "deleted"
)

// VMView is one VM incarnation in the inventory tree.
type VMView struct {
	VMID        int64    `json:"vmid"`
	CTime       int64    `json:"ctime"`
	CTimeSource string   `json:"ctime_source"`
	Name        string   `json:"name,omitempty"`
	Node        string   `json:"node"`
	State       string   `json:"state"`
	Deleted     int64    `json:"deleted,omitempty"`
	Disks       int      `json:"disks"`
	MappedDisks int      `json:"mapped_disks"`
	Restorable  int      `json:"restore_points"`     // restore points holding at least one disk
	Newest      int64    `json:"newest,omitempty"`   // ms, newest such point
	Problems    []string `json:"problems,omitempty"` // disks that cannot be restored, and why
}

// DiskView is a disk with where it lives on the array.
type DiskView struct {
	DiskID
	Array   string `json:"array,omitempty"`
	Volume  string `json:"volume,omitempty"`
	Mapping string `json:"mapping"`
	Reason  string `json:"reason,omitempty"`
}

// Point is a restore point of a VM: the snapshots sharing one protection-group snapshot or
// one suffix on the array volumes holding the VM's disks.
type Point struct {
	ID        string            `json:"id"` // "<array>:<point>", what a restore names
	Array     string            `json:"array"`
	Point     string            `json:"point"`
	PGroup    string            `json:"pgroup,omitempty"`
	Created   int64             `json:"created"`   // ms, the earliest member
	Snapshots map[string]string `json:"snapshots"` // disk key -> array snapshot name
	// Missing are disks on mapped storage the point has no snapshot for.
	Missing []string `json:"missing,omitempty"`
	// PredatesDisk are disks created after the point's snapshot: it cannot hold them.
	PredatesDisk []string `json:"predates_disk,omitempty"`
}

// VMDetail is one incarnation with its disks and restore points, newest first.
type VMDetail struct {
	VMView
	DiskList []DiskView `json:"disk_list"`
	Points   []Point    `json:"points"`
}

type treeInput struct {
	maps  map[string]StorageMap
	snaps map[string][]Snapshot // by "array/volume", oldest first
	// points counts the restore points of a set of snapshot ranges (see summary), for this
	// input only: the VMs on one storage mostly predate all its snapshots, and so share one.
	points map[string]int
}

func (inv *Inventory) input(ctx context.Context) (*treeInput, error) {
	maps, err := inv.Maps(ctx, MapMaxAge)
	if err != nil {
		return nil, err
	}
	snaps, err := inv.allSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	in := &treeInput{maps: map[string]StorageMap{}, snaps: snaps}
	for _, m := range maps {
		in.maps[m.Storage] = m
	}
	return in, nil
}

// Tree lists every incarnation (live and deleted) that allow says the caller may see.
func (inv *Inventory) Tree(ctx context.Context, allow func(vmid int64) bool) ([]VMView, error) {
	in, err := inv.input(ctx)
	if err != nil {
		return nil, err
	}
	incs, err := inv.load(ctx, 0, false)
	if err != nil {
		return nil, err
	}
	out := make([]VMView, 0, len(incs))
	for i := range incs {
		if allow != nil && !allow(incs[i].VMID) {
			continue
		}
		out = append(out, in.summary(&incs[i]))
	}
	return out, nil
}

// Detail is one incarnation: ctime 0 picks the live one, else the newest deleted one.
func (inv *Inventory) Detail(ctx context.Context, vmid, ctime int64) (*VMDetail, error) {
	incs, err := inv.Incarnations(ctx, vmid)
	if err != nil {
		return nil, err
	}
	var pick *Incarnation
	for i := range incs {
		switch {
		case ctime != 0 && incs[i].CTime == ctime:
			pick = &incs[i]
		case ctime == 0 && (pick == nil || (pick.Deleted != 0 && (incs[i].Deleted == 0 || incs[i].CTime > pick.CTime))):
			pick = &incs[i]
		}
	}
	if pick == nil {
		if ctime != 0 {
			return nil, fmt.Errorf("VM %d has no incarnation created at %d (%s): %w", vmid, ctime, fmtTime(ctime*1000), ErrUnknown)
		}
		return nil, fmt.Errorf("VM %d is unknown to pvesnap: %w", vmid, ErrUnknown)
	}
	in, err := inv.input(ctx)
	if err != nil {
		return nil, err
	}
	return in.detail(pick), nil
}

// Details is Detail of every incarnation (live and deleted) that allow accepts, from one read
// of the snapshot cache: what a listing of all restore points needs.
func (inv *Inventory) Details(ctx context.Context, allow func(vmid int64) bool) ([]*VMDetail, error) {
	in, err := inv.input(ctx)
	if err != nil {
		return nil, err
	}
	incs, err := inv.load(ctx, 0, false)
	if err != nil {
		return nil, err
	}
	out := make([]*VMDetail, 0, len(incs))
	for i := range incs {
		if allow == nil || allow(incs[i].VMID) {
			out = append(out, in.detail(&incs[i]))
		}
	}
	return out, nil
}

// ErrUnknown: no such VM, incarnation or restore point.
var ErrUnknown = errors.New("not known")

func (in *treeInput) disks(inc *Incarnation) []DiskView {
	out := make([]DiskView, 0, len(inc.Disks))
	for _, d := range inc.Disks {
		v := DiskView{DiskID: d}
		if m, ok := in.maps[d.Storage]; ok {
			v.Mapping, v.Reason, v.Array, v.Volume = m.State, m.Reason, m.Array, m.Volume
			if v.Mapping == Mapped && strings.HasSuffix(d.Volid, ".qcow2") {
				v.Mapping = VolumeChain
				v.Reason = "a qcow2 volume chain on LVM (PVE 9 snapshot-as-volume-chain): pvesnap restores raw LVs only, and a copy of one layer of a chain is not the disk"
			}
		} else {
			v.Mapping, v.Reason = "not-on-array", fmt.Sprintf("storage %s is not an LVM storage on an array volume of this node", d.Storage)
		}
		out = append(out, v)
	}
	return out
}

func (in *treeInput) view(inc *Incarnation, disks []DiskView) VMView {
	v := VMView{VMID: inc.VMID, CTime: inc.CTime, CTimeSource: inc.CTimeSource, Name: inc.Name, Node: inc.Node,
		State: Live, Deleted: inc.Deleted, Disks: len(disks)}
	if inc.Deleted != 0 {
		v.State = Deleted
	}
	for _, d := range disks {
		if d.Mapping == Mapped {
			v.MappedDisks++
		} else if d.Mapping != "not-on-array" {
			v.Problems = append(v.Problems, fmt.Sprintf("%s (%s): %s", d.Key, d.Volid, d.Reason))
		}
	}
	return v
}

// summary counts restore points without building them: per volume, the snapshots taken while
// at least one of the VM's disks on it existed (binary search in the sorted list). With one
// volume every snapshot is a point of its own; with several they are grouped as detail does.
func (in *treeInput) summary(inc *Incarnation) VMView {
	disks := in.disks(inc)
	v := in.view(inc, disks)
	first := map[string]int64{} // "array/volume" -> earliest lv_time of the VM's disks there
	for _, d := range disks {
		if d.Mapping != Mapped {
			continue
		}
		k := d.Array + "/" + d.Volume
		if t, ok := first[k]; !ok || d.LVTime < t {
			first[k] = d.LVTime
		}
	}
	// Each volume's usable snapshots are a range of its list: the VM's points are those of
	// the ranges, counted once per set of ranges.
	type span struct {
		volume string
		from   int
		to     int
	}
	spans := make([]span, 0, len(first))
	for k, lvTime := range first {
		list := in.snaps[k]
		i := sort.Search(len(list), func(i int) bool { return list[i].Created >= lvTime*1000 })
		j := i
		for ; j < len(list) && isUsable(list[j].Created, lvTime, inc.Deleted); j++ {
			v.Newest = max(v.Newest, list[j].Created)
		}
		spans = append(spans, span{k, i, j})
	}
	if len(spans) == 1 {
		v.Restorable = spans[0].to - spans[0].from
		return v
	}
	slices.SortFunc(spans, func(a, b span) int { return strings.Compare(a.volume, b.volume) })
	var key strings.Builder
	for _, sp := range spans {
		fmt.Fprintf(&key, "%s\x00%d\x00%d\x00", sp.volume, sp.from, sp.to)
	}
	ranges := key.String()
	n, ok := in.points[ranges]
	if !ok {
		var usable []Snapshot
		for _, sp := range spans {
			usable = append(usable, in.snaps[sp.volume][sp.from:sp.to]...)
		}
		n = countPoints(usable)
		if in.points == nil {
			in.points = map[string]int{}
		}
		in.points[ranges] = n
	}
	v.Restorable = n
	return v
}

// isUsable: a snapshot can hold a disk created at lvTime (s) of a VM deleted at deleted (s, 0 =
// live) when it was taken after the disk's creation and before the VM's deletion.
func isUsable(created, lvTime, deleted int64) bool {
	return created >= lvTime*1000 && (deleted == 0 || created <= deleted*1000)
}

func (in *treeInput) detail(inc *Incarnation) *VMDetail {
	disks := in.disks(inc)
	d := &VMDetail{VMView: in.view(inc, disks), DiskList: disks, Points: []Point{}}
	var snaps []Snapshot
	onVolume := map[string][]DiskView{} // "array/volume" -> the VM's disks there
	for _, dk := range disks {
		if dk.Mapping != Mapped {
			continue
		}
		k := dk.Array + "/" + dk.Volume
		if _, ok := onVolume[k]; !ok {
			for _, s := range in.snaps[k] {
				if inc.Deleted == 0 || s.Created <= inc.Deleted*1000 { // else taken after the VM was gone
					snaps = append(snaps, s)
				}
			}
		}
		onVolume[k] = append(onVolume[k], dk)
	}
	groups := groupPoints(snaps)
	ids := namePoints(groups)
	for i, g := range groups {
		p := Point{ID: ids[i], Array: g.array, Point: g.key, PGroup: g.pgroup, Created: g.created, Snapshots: map[string]string{}}
		for _, s := range g.members {
			for _, dk := range onVolume[s.Array+"/"+s.Volume] {
				p.Snapshots[dk.Key] = s.Name
				if s.Created < dk.LVTime*1000 {
					p.PredatesDisk = append(p.PredatesDisk, dk.Key)
				}
			}
		}
		for _, dk := range disks {
			if _, ok := p.Snapshots[dk.Key]; !ok && dk.Mapping == Mapped {
				p.Missing = append(p.Missing, dk.Key)
			}
		}
		sort.Strings(p.PredatesDisk)
		sort.Strings(p.Missing)
		if len(p.PredatesDisk) < len(p.Snapshots) { // else shown, flagged: nothing in it can be restored
			d.VMView.Newest = max(d.VMView.Newest, p.Created)
			d.VMView.Restorable++
		}
		d.Points = append(d.Points, p)
	}
	sort.Slice(d.Points, func(i, j int) bool {
		return d.Points[i].Created > d.Points[j].Created || (d.Points[i].Created == d.Points[j].Created && d.Points[i].ID < d.Points[j].ID)
	})
	return d
}

// DiskSource is where one disk of a restore comes from.
type DiskSource struct {
	Disk     DiskView `json:"disk"`
	Array    string   `json:"array"`
	Volume   string   `json:"volume"`
	Snapshot string   `json:"snapshot"`
	Created  int64    `json:"created"`
}

// Sources resolves a restore of an incarnation's disks (all mapped ones when keys is empty)
// from a restore point. A snapshot taken before a disk existed is refused (ErrPredatesDisk,
// HTTP 409), naming snapshot, disk and both times; a disk the point has no snapshot for, or
// that is not on a mapped storage, is refused too.
func (inv *Inventory) Sources(ctx context.Context, vmid, ctime int64, pointID string, keys []string) (*VMDetail, []DiskSource, error) {
	d, err := inv.Detail(ctx, vmid, ctime)
	if err != nil {
		return nil, nil, err
	}
	var p *Point
	for i := range d.Points {
		if d.Points[i].ID != pointID {
			continue
		}
		if p != nil {
			return nil, nil, fmt.Errorf("restore point %s of VM %d names two points (a protection-group snapshot and a volume snapshot of the same name): pvesnap will not guess which; rename the volume or the protection group on the array", pointID, vmid)
		}
		p = &d.Points[i]
	}
	if p == nil {
		return nil, nil, fmt.Errorf("VM %d (created %s) has no restore point %s: %w", vmid, fmtTime(d.CTime*1000), pointID, ErrUnknown)
	}
	want, unseen := map[string]bool{}, map[string]bool{}
	for _, k := range keys {
		want[k], unseen[k] = true, true
	}
	var out []DiskSource
	for _, dk := range d.DiskList {
		if len(want) > 0 && !want[dk.Key] {
			continue
		}
		if len(want) == 0 && strings.HasPrefix(dk.Key, "unused") {
			continue // unusedN: detached from the VM, restored only when asked for by name
		}
		delete(unseen, dk.Key)
		if dk.Mapping != Mapped {
			if len(keys) == 0 && dk.Mapping != VolumeChain {
				continue // not on the array: not part of a restore from it
			}
			return nil, nil, fmt.Errorf("disk %s (%s) of VM %d cannot be restored from the array: %s", dk.Key, dk.Volid, vmid, dk.Reason)
		}
		if dk.LVTime == 0 || dk.LVUUID == "" {
			return nil, nil, errorf(ErrPredatesDisk, "disk %s (%s) of VM %d: its logical volume was not found, so pvesnap cannot tell whether snapshot point %s holds it",
				dk.Key, dk.Volid, vmid, pointID)
		}
		name, ok := p.Snapshots[dk.Key]
		if !ok {
			return nil, nil, fmt.Errorf("restore point %s has no snapshot of array volume %s, which holds disk %s (%s)", pointID, dk.Volume, dk.Key, dk.Volid)
		}
		var created int64
		for _, s := range inv.snapshotsOf(ctx, dk.Array, dk.Volume) {
			if s.Name == name {
				created = s.Created
			}
		}
		if created < dk.LVTime*1000 {
			return nil, nil, errorf(ErrPredatesDisk, "snapshot %s was taken %s, before disk %s (%s) of VM %d was created %s: it cannot contain this disk",
				name, fmtTime(created), dk.Key, dk.Volid, vmid, fmtTime(dk.LVTime*1000))
		}
		out = append(out, DiskSource{Disk: dk, Array: dk.Array, Volume: dk.Volume, Snapshot: name, Created: created})
	}
	for k := range unseen {
		return nil, nil, fmt.Errorf("VM %d has no disk %s", vmid, k)
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("VM %d has no disk on an array volume to restore from %s", vmid, pointID)
	}
	return d, out, nil
}

func (inv *Inventory) snapshotsOf(ctx context.Context, array, volume string) []Snapshot {
	s, _ := inv.Snapshots(ctx, array, volume)
	return s
}

func fmtTime(ms int64) string {
	if ms == 0 {
		return "(unknown)"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
}
