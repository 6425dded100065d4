package flasharray

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Containers: pods and volume groups. Purity writes what contains an object into its name
// (research C §2.2; cinder, LXD and PHIF build these names):
//
//	pod::vol          a volume in pod "pod"
//	vg/vol            a volume in volume group "vg"
//	pod::vg/vol       a volume in volume group "pod::vg", which is in pod "pod"
//	pod::pg           a protection group in pod "pod"
//
// Snapshot names append ".SUFFIX" to the volume's full name; a protection-group snapshot's
// members are "PG.SUFFIX.VOL" where VOL is the volume's name without its pod (the pod is
// already in PG).
//
// A pod can be stretched over two arrays (ActiveCluster): its volumes, snapshots and
// protection groups are then the same objects, with the same ids and serials, on both.

type pod struct {
	id, name  string
	created   time.Time
	destroyed time.Time
	// peer is the other array of a stretched pod (nil: the pod is on this array only).
	peer *Array
	// defaultProtection are the protection groups a volume created in the pod joins unless
	// it opts out (with_default_protection=false).
	defaultProtection []string
}

type volumeGroup struct {
	id, name string
	pod      string
}

// qualName is a volume's or protection group's full name taken apart.
type qualName struct {
	pod    string // "" outside pods
	vgroup string // the group's full name ("pod::vg" in a pod), "" outside groups
	leaf   string
}

func splitQual(full string) qualName {
	var q qualName
	rest := full
	if p, r, ok := strings.Cut(rest, "::"); ok {
		q.pod, rest = p, r
	}
	if g, l, ok := strings.Cut(rest, "/"); ok {
		q.vgroup, rest = g, l
		if q.pod != "" {
			q.vgroup = q.pod + "::" + g
		}
	}
	q.leaf = rest
	return q
}

// withoutPod is a volume's name as a protection-group snapshot member names it.
func withoutPod(name string) string {
	if _, rest, ok := strings.Cut(name, "::"); ok {
		return rest
	}
	return name
}

// checkVolumeName checks a volume's full name: each part by Purity's rules, and its pod and
// volume group exist.
func (a *Array) checkVolumeName(full string) *Error {
	q := splitQual(full)
	if q.pod != "" {
		if e := checkName("pod", q.pod); e != nil {
			return e
		}
		if p := a.pods[q.pod]; p == nil || !p.destroyed.IsZero() {
			return bad(msgPodNotExist, q.pod)
		}
	}
	if q.vgroup != "" {
		if e := checkName("volume group", withoutPod(q.vgroup)); e != nil {
			return e
		}
		if _, ok := a.vgroups[q.vgroup]; !ok {
			return bad(msgVGNotExist, q.vgroup)
		}
	}
	if strings.Count(full, "::") > 1 || strings.Count(full, "/") > 1 {
		return bad("Invalid volume name.", full)
	}
	return checkName("volume", q.leaf)
}

// CreatePod makes an (unstretched) pod.
func (a *Array) CreatePod(name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := checkName("pod", name); e != nil {
		return e
	}
	if _, ok := a.pods[name]; ok {
		return bad("Pod already exists.", name)
	}
	a.pods[name] = &pod{id: uuid.NewString(), name: name, created: a.now()}
	return nil
}

// CreateVolumeGroup makes a volume group; "pod::vg" makes it in a pod.
func (a *Array) CreateVolumeGroup(name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	podName, _, inPod := strings.Cut(name, "::")
	if !inPod {
		podName = ""
	} else if _, ok := a.pods[podName]; !ok {
		return bad(msgPodNotExist, podName)
	}
	if e := checkName("volume group", withoutPod(name)); e != nil {
		return e
	}
	if _, ok := a.vgroups[name]; ok {
		return bad("Volume group already exists.", name)
	}
	g := &volumeGroup{id: uuid.NewString(), name: name, pod: podName}
	a.vgroups[name] = g
	if p := a.pods[podName]; p != nil && p.peer != nil {
		p.peer.vgroups[name] = g
	}
	return nil
}

// Pair joins two arrays as an ActiveCluster pair, so that pods can be stretched over them.
// The two then serve their APIs under one lock (what changes in a stretched pod changes on
// both at once, as synchronous replication makes it) and must share one data plane: a
// stretched volume's bytes are the same on both. Pair before serving either.
func Pair(a, b *Array) error {
	if a.Data != b.Data {
		return fmt.Errorf("arrays %s and %s must share one data plane to be paired", a.Name, b.Name)
	}
	b.mu = a.mu
	a.pairs = append(a.pairs, b)
	b.pairs = append(b.pairs, a)
	return nil
}

// StretchPod stretches pod name of a over its paired array peer: the pod, its volume groups,
// volumes, snapshots and protection groups appear on peer with the same ids and serials, and
// from then on what is created or eradicated in the pod on either array is on both.
func (a *Array) StretchPod(name string, peer *Array) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	paired := false
	for _, p := range a.pairs {
		paired = paired || p == peer
	}
	if !paired {
		return fmt.Errorf("arrays %s and %s are not paired", a.Name, peer.Name)
	}
	p := a.pods[name]
	if p == nil {
		return bad(msgPodNotExist, name)
	}
	if p.peer != nil {
		return bad("Pod is already stretched.", name)
	}
	if _, ok := peer.pods[name]; ok {
		return bad("Pod already exists.", name)
	}
	p.peer = peer
	peer.pods[name] = &pod{id: p.id, name: p.name, created: p.created, peer: a, defaultProtection: p.defaultProtection}
	for n, g := range a.vgroups {
		if g.pod == name {
			peer.vgroups[n] = g
		}
	}
	for n, v := range a.volumes {
		if splitQual(n).pod == name {
			peer.volumes[n] = v
		}
	}
	for n, s := range a.snapshots {
		if splitQual(s.source.name).pod == name {
			peer.snapshots[n] = s
		}
	}
	for n, g := range a.pgroups {
		if splitQual(n).pod == name {
			peer.pgroups[n] = g
		}
	}
	for n, s := range a.pgsnaps {
		if splitQual(s.source).pod == name {
			peer.pgsnaps[n] = s
		}
	}
	return nil
}

// peerOf is the other array of the stretched pod an object named full is in (nil when
// none).
func (a *Array) peerOf(full string) *Array {
	if p := a.pods[splitQual(full).pod]; p != nil {
		return p.peer
	}
	return nil
}

// The object tables change through these, so a stretched pod's objects change on both
// arrays.

func (a *Array) putVolume(v *volume) {
	a.volumes[v.name] = v
	if peer := a.peerOf(v.name); peer != nil {
		peer.volumes[v.name] = v
	}
}

func (a *Array) dropVolume(name string) {
	if peer := a.peerOf(name); peer != nil {
		delete(peer.volumes, name)
	}
	delete(a.volumes, name)
}

func (a *Array) putSnapshot(s *snapshot) {
	a.snapshots[s.name] = s
	if peer := a.peerOf(s.source.name); peer != nil {
		peer.snapshots[s.name] = s
	}
}

func (a *Array) dropSnapshot(s *snapshot) {
	if peer := a.peerOf(s.source.name); peer != nil {
		delete(peer.snapshots, s.name)
	}
	delete(a.snapshots, s.name)
}

func (a *Array) putPGroup(g *pgroup) {
	a.pgroups[g.name] = g
	if peer := a.peerOf(g.name); peer != nil {
		peer.pgroups[g.name] = g
	}
}

func (a *Array) putPGSnap(s *pgsnap) {
	a.pgsnaps[s.name] = s
	if peer := a.peerOf(s.source); peer != nil {
		peer.pgsnaps[s.name] = s
	}
}

// podRef and vgroupRef are an object's containers as the API references them.
func (a *Array) podRef(full string) obj {
	if p := a.pods[splitQual(full).pod]; p != nil {
		return obj{"name": p.name, "id": p.id}
	}
	return nullRef()
}

func (a *Array) vgroupRef(full string) obj {
	if g := a.vgroups[splitQual(full).vgroup]; g != nil {
		return obj{"name": g.name, "id": g.id}
	}
	return nullRef()
}

// connectionsOf counts a volume's connections on this array and, in a stretched pod, on the
// other: a volume connected anywhere cannot be destroyed.
func (a *Array) connectionsAnywhere(v *volume) int {
	n := a.connectionCount(v)
	if peer := a.peerOf(v.name); peer != nil {
		n += peer.connectionCount(v)
	}
	return n
}
