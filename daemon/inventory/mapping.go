// Package inventory knows what can be restored from array snapshots: which LVM storages sit on
// which array volumes, every VM incarnation of the cluster (deleted ones too) with its disks'
// identities, and the snapshots of each array volume, cached in SQLite. It refuses a snapshot
// that cannot hold a disk because it was taken before the disk existed.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/runner"
	"github.com/pvesnap/pvesnap/daemon/store"
	"github.com/pvesnap/pvesnap/daemon/tasks"
	"github.com/pvesnap/pvesnap/lvm"
)

// Mapping states of a storage.
const (
	Mapped           = "mapped"
	SeveralPVs       = "several-pvs"
	NoArrayVolume    = "no-array-volume"
	ArrayUnreachable = "array-unreachable"
	Unavailable      = "unavailable"
	// VolumeChain: a disk of a storage that is mapped, but a qcow2 volume chain (PVE 9's
	// snapshot-as-volume-chain on LVM): its data is spread over several LVs that reference
	// each other by name, and copying one of them would restore a layer, not the disk.
	VolumeChain = "volume-chain"
	// Ambiguous: several arrays report the serial (a pod stretched over an ActiveCluster
	// pair) and pvesnap cannot tell which one serves this node.
	Ambiguous = "ambiguous"
)

// StorageMap tells how an LVM storage maps to an array volume.
type StorageMap struct {
	Storage  string   `json:"storage"`
	VG       string   `json:"vg"`
	PVs      []string `json:"pvs,omitempty"`
	Serial   string   `json:"serial,omitempty"`
	Identity string   `json:"identity,omitempty"` // the device identity the serial came from
	Array    string   `json:"array,omitempty"`
	Volume   string   `json:"volume,omitempty"` // pod::vol, vg/vol and pod::vg/vol in pods and volume groups
	Pod      string   `json:"pod,omitempty"`
	State    string   `json:"state"`
	Reason   string   `json:"reason,omitempty"`
	// Choice says why Array was chosen when several arrays have the volume (ActiveCluster).
	Choice string `json:"choice,omitempty"`
}

// Inventory is one node's view.
type Inventory struct {
	Node    string
	PVE     string // cluster filesystem root
	Storage *pve.StorageConfig
	Arrays  *arrays.Config
	LVM     *lvm.LVM
	Roots   Roots
	DB      *store.DB
	// Tasks is this node's task directory, searched for qmcreate tasks of VMs whose config
	// has no creation time.
	Tasks  *tasks.Dir
	Logger *slog.Logger
	Now    func() time.Time
	// Run runs qm for guest-agent calls.
	Run runner.Runner
	// ClientOptions configure array clients (timeouts).
	ClientOptions pure.Options
	// NodePaths locate this node's initiators, to find its hosts on the arrays.
	NodePaths arrays.NodePaths

	mu      sync.Mutex
	clients map[string]*arrayClient
	maps    []StorageMap
	mapsAt  time.Time
	mapsKey string
	files   map[string]fileStamp // VM config path -> what was last read
	scanned bool                 // the database has seen one full scan by this process
}

type arrayClient struct {
	token string
	c     *pure.Client
}

func (inv *Inventory) now() time.Time {
	if inv.Now != nil {
		return inv.Now()
	}
	return time.Now()
}

func (inv *Inventory) logger() *slog.Logger {
	if inv.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return inv.Logger
}

// Client returns a (cached) client for an array; a changed token or endpoint makes a new one.
// A disabled array gets none, cached or not: disabling it stops its use at once.
func (inv *Inventory) Client(a arrays.Array) (*pure.Client, error) {
	key := a.ID + "\x00" + a.Endpoint + "\x00" + a.CA
	if a.Disable {
		inv.mu.Lock()
		ac := inv.clients[key]
		delete(inv.clients, key)
		inv.mu.Unlock()
		if ac != nil { // its session goes too (best effort, briefly: it may be unreachable)
			lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ac.c.Logout(lctx)
			cancel()
		}
		return nil, fmt.Errorf("array %s is disabled", a.ID)
	}
	tok, err := inv.Arrays.Token(a.ID)
	if err != nil {
		return nil, err
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.clients == nil {
		inv.clients = map[string]*arrayClient{}
	}
	if ac := inv.clients[key]; ac != nil && ac.token == tok {
		return ac.c, nil
	}
	o := inv.ClientOptions
	o.CAFile = a.CA
	o.Logger = inv.logger()
	c, err := pure.New(a.Endpoint, tok, o)
	if err != nil {
		return nil, err
	}
	inv.clients[key] = &arrayClient{token: tok, c: c}
	return c, nil
}

// Map works out, for every LVM storage of this node, VG → PV → device → serial → array
// volume, with the reason wherever the chain breaks.
func (inv *Inventory) Map(ctx context.Context) ([]StorageMap, error) {
	key := inv.configKey()
	all, err := inv.Storage.All()
	if err != nil {
		return nil, err
	}
	var out []StorageMap
	var pvs []lvm.PV
	pvsLoaded := false
	for _, id := range slices.Sorted(maps.Keys(all)) {
		st := all[id]
		if st.Type != "lvm" || !st.OnNode(inv.Node) || st.Disabled || !st.HasContent("images") {
			continue
		}
		m := StorageMap{Storage: id, VG: st.VGName}
		if !pvsLoaded {
			if pvs, err = inv.LVM.PVs(ctx, ""); err != nil {
				return nil, fmt.Errorf("listing physical volumes: %w", err)
			}
			pvsLoaded = true
		}
		for _, pv := range pvs {
			if pv.VG == m.VG {
				m.PVs = append(m.PVs, pv.Name)
			}
		}
		switch len(m.PVs) {
		case 0:
			m.State, m.Reason = Unavailable, fmt.Sprintf("volume group %s is not visible on node %s", m.VG, inv.Node)
		case 1:
			serial, how, err := inv.Roots.SerialOf(m.PVs[0])
			if err != nil {
				m.State, m.Reason = NoArrayVolume, err.Error()
			} else {
				m.Serial, m.Identity = serial, how
			}
		default:
			m.State, m.Reason = SeveralPVs, fmt.Sprintf("volume group %s has %d physical volumes (%s): an array snapshot of one of them would hold only part of it, so pvesnap restores only single-PV volume groups",
				m.VG, len(m.PVs), strings.Join(m.PVs, ", "))
		}
		out = append(out, m)
	}
	if err := inv.findVolumes(ctx, out); err != nil {
		return nil, err
	}
	inv.mu.Lock()
	inv.maps, inv.mapsAt, inv.mapsKey = out, inv.now(), key
	inv.mu.Unlock()
	return out, nil
}

// configKey changes whenever storage.cfg or arrays.cfg does: a cached mapping is stale then.
func (inv *Inventory) configKey() string {
	k := inv.Arrays.Digest()
	if st, err := os.Stat(filepath.Join(inv.PVE, "storage.cfg")); err == nil {
		k += fmt.Sprintf("/%d/%d", st.ModTime().UnixNano(), st.Size())
	}
	return k
}

// findVolumes looks the serials up on every enabled array, one call per array. A serial
// found on several arrays is a volume of a pod stretched over them (ActiveCluster):
// chooseArray decides which one serves this node.
func (inv *Inventory) findVolumes(ctx context.Context, maps []StorageMap) error {
	var serials []string
	for _, m := range maps {
		if m.Serial != "" {
			serials = append(serials, m.Serial)
		}
	}
	if len(serials) == 0 {
		return nil
	}
	arrs, err := inv.Arrays.List()
	if err != nil {
		return err
	}
	found := map[string][]candidate{}
	var unreachable, searched, disabled []string
	for _, a := range arrs {
		if a.Disable {
			disabled = append(disabled, a.ID)
			continue
		}
		searched = append(searched, a.ID)
		c, err := inv.Client(a)
		if err == nil {
			var vols []pure.Volume
			if vols, err = c.VolumesBySerial(ctx, serials...); err == nil {
				for _, v := range vols {
					if !v.Destroyed {
						s := strings.ToUpper(v.Serial)
						found[s] = append(found[s], candidate{array: a, client: c, volume: v})
					}
				}
				continue
			}
		}
		unreachable = append(unreachable, fmt.Sprintf("%s: %v", a.ID, err))
	}
	for i := range maps {
		m := &maps[i]
		if m.Serial == "" {
			continue
		}
		cands := found[m.Serial]
		switch {
		case len(cands) > 1:
			chosen, why := inv.chooseArray(ctx, m.Serial, cands)
			if chosen == nil {
				m.State, m.Reason = Ambiguous, why
				continue
			}
			m.Array, m.Volume, m.Pod, m.State, m.Choice = chosen.array.ID, chosen.volume.Name, chosen.volume.PodName(), Mapped, why
		case len(cands) == 1:
			m.Array, m.Volume, m.Pod, m.State = cands[0].array.ID, cands[0].volume.Name, cands[0].volume.PodName(), Mapped
		case len(unreachable) > 0:
			m.State, m.Reason = ArrayUnreachable, fmt.Sprintf("serial %s not found; unreachable: %s", m.Serial, strings.Join(unreachable, "; "))
		case len(searched) == 0 && len(disabled) == 1:
			m.State, m.Reason = NoArrayVolume, fmt.Sprintf("serial %s was not looked up: array %s is disabled", m.Serial, disabled[0])
		case len(searched) == 0 && len(disabled) > 1:
			m.State, m.Reason = NoArrayVolume, fmt.Sprintf("serial %s was not looked up: arrays %s are disabled", m.Serial, strings.Join(disabled, ", "))
		case len(searched) == 0:
			m.State, m.Reason = NoArrayVolume, fmt.Sprintf("serial %s: no array is configured (pvesnap arrays add)", m.Serial)
		default:
			m.State, m.Reason = NoArrayVolume, fmt.Sprintf("serial %s is on none of the configured arrays (%s)", m.Serial, strings.Join(searched, ", "))
			if len(disabled) > 0 {
				m.Reason += "; not looked up on the disabled " + strings.Join(disabled, ", ")
			}
		}
	}
	return nil
}

// candidate is an array that reports a serial.
type candidate struct {
	array  arrays.Array
	client *pure.Client
	volume pure.Volume
}

// chooseArray picks, among the arrays that report one serial, the one where this node has a
// host the volume is connected to: that is the array the node reaches the volume through, so
// the array that can connect a copy to it. Several such arrays (uniform ActiveCluster
// access) are told apart by the host's preferred array, the one giving it active/optimized
// paths. Otherwise nothing is chosen: a copy made on an array the node has no path to
// would never appear on it, and a guess could make it on the wrong one. why explains the
// choice or the refusal.
func (inv *Inventory) chooseArray(ctx context.Context, serial string, cands []candidate) (chosen *candidate, why string) {
	in := inv.NodePaths.Initiators()
	var ids, notes []string
	var withPath, preferred []int
	for i, c := range cands {
		ids = append(ids, c.array.ID)
		hosts, err := c.client.FindHosts(ctx, in)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", c.array.ID, err))
			continue
		}
		if len(hosts) == 0 {
			notes = append(notes, fmt.Sprintf("%s has no host with this node's initiators", c.array.ID))
			continue
		}
		conns, err := c.client.Connections(ctx, c.volume.Name, nil)
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", c.array.ID, err))
			continue
		}
		var connected []string
		for _, h := range hosts {
			for _, cn := range conns {
				if cn.Host != nil && cn.Host.Name == h.Name {
					connected = append(connected, h.Name)
					break
				}
			}
		}
		if len(connected) == 0 {
			notes = append(notes, fmt.Sprintf("%s: %s is not connected to this node's host %s", c.array.ID, c.volume.Name, hosts[0].Name))
			continue
		}
		withPath = append(withPath, i)
		self, err := c.client.Arrays(ctx)
		prefers := false
		for _, h := range hosts {
			for _, p := range h.PreferredArrays {
				prefers = prefers || (err == nil && len(self) == 1 && (p.ID == self[0].ID || p.Name == self[0].Name))
			}
		}
		note := fmt.Sprintf("%s: this node's host %s is connected to %s", c.array.ID, connected[0], c.volume.Name)
		if prefers {
			preferred = append(preferred, i)
			note += " and prefers this array"
		}
		notes = append(notes, note)
	}
	pod := ""
	if p := cands[0].volume.PodName(); p != "" {
		pod = " (pod " + p + " stretched over them)"
	}
	head := fmt.Sprintf("serial %s is on arrays %s%s", serial, strings.Join(ids, ", "), pod)
	detail := strings.Join(notes, "; ")
	switch {
	case len(withPath) == 1:
		return &cands[withPath[0]], fmt.Sprintf("%s; %s chosen, the only one with a path to this node: %s", head, cands[withPath[0]].array.ID, detail)
	case len(withPath) > 1 && len(preferred) == 1:
		return &cands[preferred[0]], fmt.Sprintf("%s; %s chosen, the preferred array of this node's host: %s", head, cands[preferred[0]].array.ID, detail)
	case len(withPath) > 1:
		return nil, fmt.Sprintf("%s and this node has a path through more than one of them (%s): pvesnap will not guess which array to copy on; set this node's host's preferred array on the arrays, or disable all but one of them in pvesnap",
			head, detail)
	}
	return nil, fmt.Sprintf("%s, and none of them connects it to a host of this node (%s): pvesnap cannot tell which array serves it", head, detail)
}

// MapMaxAge is how long a mapping is reused: devices come and go without a config change.
const MapMaxAge = time.Minute

// Maps returns the last mapping, mapping again when there is none, when it is older than
// maxAge or when storage.cfg or arrays.cfg changed since.
func (inv *Inventory) Maps(ctx context.Context, maxAge time.Duration) ([]StorageMap, error) {
	inv.mu.Lock()
	maps, at, key := inv.maps, inv.mapsAt, inv.mapsKey
	inv.mu.Unlock()
	if maps != nil && inv.now().Sub(at) <= maxAge && key == inv.configKey() {
		return maps, nil
	}
	return inv.Map(ctx)
}

// ErrPredatesDisk marks a snapshot taken before a disk existed (HTTP 409 at the API).
var ErrPredatesDisk = errors.New("snapshot predates disk")
