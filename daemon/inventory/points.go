package inventory

import (
	"cmp"
	"slices"
	"strings"
)

// A restore point must never mix points in time. Snapshots of different array volumes belong
// to one restore point only when the array took them together:
//   - members of one protection-group snapshot (PG.SUFFIX.VOL, one PG.SUFFIX), or
//   - volume snapshots sharing a suffix, created within PointWindow of each other (one
//     multi-volume snapshot call, such as pvesnap's own on-demand snapshot).
//
// Purity's default suffixes are per-volume counters (VOL.1, VOL.2, …), so volA.1 and volB.1
// can be a day apart: such snapshots are separate points, each holding the disks of its own
// volume, and a restore of the whole VM from one of them is refused as incomplete.

// PointWindow is how far apart volume snapshots with one suffix may be created and still be
// one restore point. A multi-volume snapshot call creates every member at the same instant;
// the window only absorbs clock granularity, never separately taken snapshots.
const PointWindow = 10_000 // ms

// snapshotName is what a FlashArray snapshot's name says about its origin. The forms are
// (research C, from cinder's and py-pure-client's use of them):
//
//	VOL.SUFFIX                 a volume snapshot; VOL may be pod::vol or vgroup/vol
//	PG.SUFFIX.VOL              a member of protection-group snapshot PG.SUFFIX; in a pod, PG
//	                           is pod::pg and VOL the volume's name without the pod
//	SRCARRAY:…                 either of the above, replicated from array SRCARRAY
//
// Names of arrays, pods, volume groups, volumes and protection groups never contain dots, and
// suffixes neither, so the dots are the separators; a colon that is not part of "::" ends the
// replication source.
type snapshotName struct {
	From   string // replication source array ("" when taken on this array)
	PGroup string // protection group ("pod::pg" in a pod), "" for a volume snapshot
	Suffix string
	Volume string
}

func parseSnapshotName(name string) (snapshotName, bool) {
	var n snapshotName
	rest := name
	if i := strings.IndexByte(rest, ':'); i > 0 && !strings.HasPrefix(rest[i:], "::") {
		n.From, rest = rest[:i], rest[i+1:]
	}
	parts := strings.Split(rest, ".")
	for _, p := range parts {
		if p == "" {
			return snapshotName{}, false
		}
	}
	switch len(parts) {
	case 2:
		n.Volume, n.Suffix = parts[0], parts[1]
	case 3:
		n.PGroup, n.Suffix, n.Volume = parts[0], parts[1], parts[2]
	default:
		return snapshotName{}, false
	}
	return n, true
}

// pointKey is what the snapshot shares with the other members of its point, as stored in the
// cache: the protection-group snapshot ("[SRC:]PG.SUFFIX") for a member of one, the suffix
// ("[SRC:]SUFFIX") for a volume snapshot, and the whole name for a name of no known form
// (a point of its own).
func pointKey(name string) (pgroup, point string) {
	n, ok := parseSnapshotName(name)
	if !ok {
		return "", name
	}
	from := ""
	if n.From != "" {
		from = n.From + ":"
	}
	if n.PGroup != "" {
		return from + n.PGroup, from + n.PGroup + "." + n.Suffix
	}
	return "", from + n.Suffix
}

// pointGroup is one restore point of a VM: the snapshots of its volumes taken together.
type pointGroup struct {
	array   string
	key     string     // pgroup snapshot or suffix
	pgroup  string     // "" for volume snapshots
	members []Snapshot // at most one per volume
	created int64      // the earliest member
}

// groupPoints groups a VM's snapshots (of its volumes) into restore points: by protection-
// group snapshot, or by suffix and creation within PointWindow. IDs are "<array>:<key>"; when
// the VM has several points with one suffix (counters, or a suffix reused later), each is
// named by its earliest member instead ("<array>:<snapshot name>"), so an ID never silently
// changes what it restores.
func groupPoints(snaps []Snapshot) []pointGroup {
	order, ends := pointRuns(snaps)
	sorted := make([]Snapshot, len(order))
	for i, x := range order {
		sorted[i] = snaps[x]
	}
	groups := make([]pointGroup, 0, len(ends))
	start := 0
	for _, end := range ends {
		first := &sorted[start] // the earliest of its run
		groups = append(groups, pointGroup{array: first.Array, key: first.Point, pgroup: first.PGroup, created: first.Created,
			members: sorted[start:end:end]}) // capacity capped: an append to one group never reaches the next
		start = end
	}
	return groups
}

// countPoints is len(groupPoints(snaps)) without making the groups (the tree counts every
// VM's points on each call).
func countPoints(snaps []Snapshot) int {
	_, ends := pointRuns(snaps)
	return len(ends)
}

// pointRuns orders snaps (by index) so that each restore point's snapshots are adjacent,
// earliest first, and returns where each point's run ends. Protection-group snapshots come
// first, one run per protection-group snapshot; the others by suffix, a run ending where the
// next snapshot is more than PointWindow after the run's first or of a volume already in it.
func pointRuns(snaps []Snapshot) (order []int32, ends []int) {
	order = make([]int32, len(snaps))
	for i := range order {
		order[i] = int32(i)
	}
	noPG := func(s *Snapshot) int {
		if s.PGroup == "" {
			return 1
		}
		return 0
	}
	// Early returns, not cmp.Or: its arguments are all evaluated, and this runs for every
	// VM's snapshots on each tree.
	slices.SortFunc(order, func(x, y int32) int {
		a, b := &snaps[x], &snaps[y]
		if c := noPG(a) - noPG(b); c != 0 {
			return c
		}
		if c := strings.Compare(a.Array, b.Array); c != 0 {
			return c
		}
		if c := strings.Compare(a.Point, b.Point); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Created, b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i := 0; i < len(order); {
		start := &snaps[order[i]]
		j := i + 1
		for ; j < len(order); j++ {
			s := &snaps[order[j]]
			if s.Array != start.Array || s.Point != start.Point || noPG(s) != noPG(start) {
				break
			}
			if start.PGroup == "" && (s.Created-start.Created > PointWindow || hasVolume(snaps, order[i:j], s.Volume)) {
				break
			}
		}
		ends = append(ends, j)
		i = j
	}
	return order, ends
}

// hasVolume reports whether the snapshots at run's indices include one of volume (a point
// holds one snapshot per volume: a few, one per disk).
func hasVolume(snaps []Snapshot, run []int32, volume string) bool {
	for _, x := range run {
		if snaps[x].Volume == volume {
			return true
		}
	}
	return false
}

// namePoints names the groups (see groupPoints).
func namePoints(groups []pointGroup) []string {
	n := map[string]int{}
	for _, g := range groups {
		n[g.array+"\x00"+g.key]++
	}
	ids := make([]string, len(groups))
	for i, g := range groups {
		if g.pgroup != "" || n[g.array+"\x00"+g.key] == 1 {
			ids[i] = g.array + ":" + g.key
			continue
		}
		first := g.members[0]
		for _, m := range g.members[1:] {
			if m.Created < first.Created || (m.Created == first.Created && m.Name < first.Name) {
				first = m
			}
		}
		ids[i] = g.array + ":" + first.Name
	}
	return ids
}
