package restore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/pvesnap/pvesnap/daemon/arrays"
	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
)

// Every array volume a restore creates is named for its cluster, node and job:
//
//	pvesnap-<cluster>-<node>-<job>-<i>
//
// <cluster> is 8 hex digits of the SHA-256 of the cluster's root CA (/etc/pve/pve-root-ca.pem,
// made when the cluster was created and shared by every node that joins it), <node> 6 hex
// digits of the SHA-256 of the node's name, <job> the restore job. The name is given in the
// one call that creates the volume, so an object is recognisable even when its creator lost
// power the instant after; 37 characters stay within Purity's 63.
//
// A sweep removes the temporary volumes of this cluster whose job no journal knows (a node's
// database lost with its disk) or whose job ended without removing them, once they are older
// than a grace period: this node's own, and those of nodes that left the cluster. Volumes of
// other clusters and of nodes still members (they sweep their own) are never touched.

var tempVolumeRe = regexp.MustCompile(`^pvesnap-([0-9a-f]{8})-([0-9a-f]{6})-([a-z0-9]{6,16})-(\d+)$`)

// Identity is what names this node's objects on arrays.
type Identity struct {
	Cluster string // 8 hex digits
	Node    string // 6 hex digits
}

// NewIdentity reads the cluster's root CA (the cluster's name when there is none) and hashes
// the node's name.
func NewIdentity(pveRoot, node string) (Identity, error) {
	b, err := os.ReadFile(filepath.Join(pveRoot, "pve-root-ca.pem"))
	if errors.Is(err, os.ErrNotExist) {
		if m, merr := pve.ReadMembers(pveRoot); merr == nil && m.Cluster != nil && m.Cluster.Name != "" {
			b, err = []byte("cluster "+m.Cluster.Name), nil
		}
	}
	if err != nil {
		return Identity{}, fmt.Errorf("cluster identity for pvesnap's array objects: %w", err)
	}
	return Identity{Cluster: hashHex(b, 8), Node: NodeTag(node)}, nil
}

// NodeTag is the part of a temporary volume's name that names its node.
func NodeTag(node string) string { return hashHex([]byte(node), 6) }

func hashHex(b []byte, n int) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])[:n]
}

// TempVolume names a restore's i-th temporary volume.
func (id Identity) TempVolume(job string, i int) string {
	return fmt.Sprintf("pvesnap-%s-%s-%s-%d", id.Cluster, id.Node, job, i)
}

// Swept is one temporary volume a sweep found, and what it did with it.
type Swept struct {
	Array   string `json:"array"`
	Volume  string `json:"volume"`
	Serial  string `json:"serial"`
	Node    string `json:"node"` // the node that made it ("" when it is no member any more)
	Job     string `json:"job"`
	Created int64  `json:"created"` // ms
	Reason  string `json:"reason"`
	Removed bool   `json:"removed"`
	Error   string `json:"error,omitempty"`
}

// SweepGrace is how old an unknown temporary volume must be before a sweep removes it: far
// longer than the moment between a journal row and the array call it precedes.
const SweepGrace = time.Hour

// Sweep finds the leftover temporary volumes on every configured array and, unless dryRun,
// removes them (devices of this node first, then every connection, then the volume). log
// gets one line per object.
func (r *Restorer) Sweep(ctx context.Context, dryRun bool, grace time.Duration, log func(string, ...any)) ([]Swept, error) {
	id, err := NewIdentity(r.VMs.PVE, r.Node)
	if err != nil {
		return nil, err
	}
	members := map[string]string{} // node tag -> node
	if m, err := pve.ReadMembers(r.VMs.PVE); err == nil {
		for n := range m.NodeList {
			members[NodeTag(n)] = n
		}
	}
	members[id.Node] = r.Node
	ctx = context.WithValue(ctx, logKey{}, log)
	now := time.Now()
	var out []Swept
	found, err := r.clusterTemps(ctx, id)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, at := range found {
		if at.err != nil {
			errs = append(errs, at.err)
			continue
		}
		a, c := at.array, at.client
		for _, tv := range at.vols {
			v, m := tv.Volume, tv.match
			if v.Destroyed {
				// Destroyed already; the array eradicates it in time (SafeMode refused it).
				if v.TimeRemaining != nil {
					log("array %s: %s is destroyed, pending eradication by the array on %s", a.ID, v.Name, eradicationDate(now, *v.TimeRemaining))
				}
				continue
			}
			s := Swept{Array: a.ID, Volume: v.Name, Serial: v.Serial, Node: members[m[2]], Job: m[3], Created: v.Created}
			if s.Node != "" && s.Node != r.Node {
				continue // a member's: it sweeps its own
			}
			if s.Node == r.Node {
				state, err := r.jobState(ctx, s.Job)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				switch state {
				case StateRunning, StateCommitted, StateStuck:
					continue // its job's own cleanup or recovery removes it
				case "":
					s.Reason = "no journal of this node knows restore job " + s.Job
				default:
					s.Reason = "restore job " + s.Job + " ended (" + state + ") without removing it"
				}
			} else {
				s.Reason = "made by a node that is no member of the cluster any more"
			}
			age := now.Sub(time.UnixMilli(v.Created))
			if age < grace {
				log("array %s: %s (%s) is only %s old: left for now", a.ID, v.Name, s.Reason, age.Round(time.Second))
				continue
			}
			if dryRun {
				log("array %s: %s, serial %s, created %s: %s: would be removed", a.ID, v.Name, v.Serial, time.UnixMilli(v.Created).UTC().Format(time.RFC3339), s.Reason)
				out = append(out, s)
				continue
			}
			log("array %s: removing %s, serial %s, created %s: %s", a.ID, v.Name, v.Serial, time.UnixMilli(v.Created).UTC().Format(time.RFC3339), s.Reason)
			if err := r.removeTemp(ctx, c, a.ID, s); err != nil {
				s.Error = err.Error()
				log("  failed: %v", err)
				errs = append(errs, fmt.Errorf("array %s: %s: %w", a.ID, v.Name, err))
			} else {
				s.Removed = true
			}
			out = append(out, s)
		}
	}
	return out, errors.Join(errs...)
}

// arrayTemps are the volumes of one array named as this cluster's temporary volumes (or why
// the array could not be asked).
type arrayTemps struct {
	array  arrays.Array
	client *pure.Client
	vols   []tempVol
	err    error
}

type tempVol struct {
	pure.Volume
	match []string // tempVolumeRe's: cluster, node tag, job, index
}

// clusterTemps lists, on every enabled array, the volumes (live and destroyed) named as this
// cluster's temporary volumes; an array that cannot be asked has its err set.
func (r *Restorer) clusterTemps(ctx context.Context, id Identity) ([]arrayTemps, error) {
	arrs, err := r.Inv.Arrays.List()
	if err != nil {
		return nil, err
	}
	var out []arrayTemps
	for _, a := range arrs {
		if a.Disable {
			continue // a disabled array is not used, not even to sweep it
		}
		at := arrayTemps{array: a}
		if at.client, at.err = r.Inv.Client(a); at.err == nil {
			var vols []pure.Volume
			vols, at.err = at.client.Volumes(ctx, "name='pvesnap-*'")
			for _, v := range vols {
				if m := tempVolumeRe.FindStringSubmatch(v.Name); m != nil && m[1] == id.Cluster {
					at.vols = append(at.vols, tempVol{Volume: v, match: m})
				}
			}
		}
		if at.err != nil {
			at.err = fmt.Errorf("array %s: %w", a.ID, at.err)
		}
		out = append(out, at)
	}
	return out, nil
}

// removeTemp removes a leftover temporary volume: its devices on this node (when it is this
// node's), every connection, then the volume, with the same actions a job's cleanup runs.
func (r *Restorer) removeTemp(ctx context.Context, c *pure.Client, array string, s Swept) error {
	if s.Node == r.Node && s.Serial != "" {
		if err := r.Exec(ctx, Action{Kind: "host-remove-devices", Args: map[string]string{"serial": s.Serial}}); err != nil {
			return err
		}
	}
	conns, err := c.Connections(ctx, s.Volume, nil)
	if err != nil {
		return err
	}
	for _, cn := range conns {
		t := pure.Target{}
		switch {
		case cn.HostGroup != nil && cn.HostGroup.Name != "":
			t.HostGroup = cn.HostGroup.Name
		case cn.Host != nil:
			t.Host = cn.Host.Name
		}
		if err := c.Disconnect(ctx, s.Volume, t); err != nil {
			return err
		}
		if t.HostGroup != "" && s.Serial != "" {
			if err := r.RequestPeerCleanup(s.Serial, array, s.Volume, t.HostGroup); err != nil {
				return err
			}
		}
	}
	if s.Node == r.Node && s.Serial != "" {
		if err := r.Host.Gone(ctx, s.Serial, 30*time.Second, logf(ctx)); err != nil {
			return err
		}
	}
	return r.Exec(ctx, Action{Kind: "array-destroy-volume", Args: map[string]string{"array": array, "volume": s.Volume}})
}

func (r *Restorer) jobState(ctx context.Context, job string) (string, error) {
	var state string
	err := r.DB.QueryRowContext(ctx, `SELECT state FROM jobs WHERE id = ?`, job).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return state, err
}
