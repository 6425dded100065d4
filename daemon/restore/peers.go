package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pvesnap/pvesnap/daemon/pure"
	"github.com/pvesnap/pvesnap/daemon/pve"
)

// A temporary copy connected to a whole host group (as pvesnap did before it connected copies
// to the node's own host only, and as a leftover found by a sweep may be) has devices on
// every member node. Once it is disconnected, those devices are stale on every node, and only
// each node can remove its own. The disconnecting node asks its peers through the cluster
// filesystem, in the root-only part of /etc/pve that every node sees:
//
//	priv/pvesnap/stale-devices/<serial>/request      what was disconnected, by whom, when
//	priv/pvesnap/stale-devices/<serial>/done-<node>  that node has no device of it any more
//
// Every node's daemon looks there with its recovery pass (CleanStaleDevices); the request
// goes when every member of the cluster is done, or after a week.

// staleRequest is one request to the peers.
type staleRequest struct {
	Array     string `json:"array"`
	Volume    string `json:"volume"`
	HostGroup string `json:"hostgroup"`
	Node      string `json:"node"`
	Time      int64  `json:"time"`
}

// StaleRequestMaxAge is how long a request waits for members that never answer it.
const StaleRequestMaxAge = 7 * 24 * time.Hour

func (r *Restorer) staleDir() string {
	return filepath.Join(r.VMs.PVE, "priv", "pvesnap", "stale-devices")
}

// RequestPeerCleanup asks every node to remove its devices of serial, a temporary volume that
// was connected to host group hostgroup and is disconnected now.
func (r *Restorer) RequestPeerCleanup(serial, array, volume, hostgroup string) error {
	serial = strings.ToUpper(serial)
	if !pure.IsSerial(serial) {
		return fmt.Errorf("asking the peers to remove the devices of %s: %q is not a FlashArray serial", volume, serial)
	}
	dir := filepath.Join(r.staleDir(), serial)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(staleRequest{Array: array, Volume: volume, HostGroup: hostgroup, Node: r.Node, Time: time.Now().Unix()})
	return os.WriteFile(filepath.Join(dir, "request"), b, 0o600)
}

// CleanStaleDevices removes this node's devices of the volumes its peers disconnected from
// host groups, once the array confirms it presents them to this node no more; it marks each
// request done for this node and drops requests every member is done with. log gets a line
// per device removed.
func (r *Restorer) CleanStaleDevices(ctx context.Context, log func(string, ...any)) error {
	es, err := os.ReadDir(r.staleDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	members := map[string]bool{r.Node: true}
	if m, err := pve.ReadMembers(r.VMs.PVE); err == nil {
		for n := range m.NodeList {
			members[n] = true
		}
	}
	var errs []error
	for _, e := range es {
		serial, dir := e.Name(), filepath.Join(r.staleDir(), e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "request"))
		var req staleRequest
		if err != nil || json.Unmarshal(b, &req) != nil || !pure.IsSerial(serial) {
			continue // being written, or not a request
		}
		if _, err := os.Stat(filepath.Join(dir, "done-"+r.Node)); errors.Is(err, os.ErrNotExist) {
			if err := r.cleanStale(ctx, serial, req, log); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, "done-"+r.Node), nil, 0o600); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		done := true
		for n := range members {
			if _, err := os.Stat(filepath.Join(dir, "done-"+n)); err != nil {
				done = false
			}
		}
		if done || time.Since(time.Unix(req.Time, 0)) > StaleRequestMaxAge {
			os.RemoveAll(dir)
		}
	}
	return errors.Join(errs...)
}

// cleanStale removes this node's devices of one requested serial. Only a temporary volume of
// pvesnap's qualifies, and only when the array presents no live volume of that serial to a
// host of this node: a request can never take away a device in use.
func (r *Restorer) cleanStale(ctx context.Context, serial string, req staleRequest, log func(string, ...any)) error {
	if !tempVolumeRe.MatchString(req.Volume) {
		return fmt.Errorf("stale-device request for serial %s names %q, not a temporary volume of pvesnap: ignored", serial, req.Volume)
	}
	if r.Host.Find(serial) == "" {
		return nil
	}
	c, err := r.client(req.Array)
	if err != nil {
		return err
	}
	vols, err := c.VolumesBySerial(ctx, serial)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if v.Destroyed {
			continue
		}
		conns, err := c.Connections(ctx, v.Name, nil)
		if err != nil {
			return err
		}
		hosts, err := c.FindHosts(ctx, r.NodePaths.Initiators())
		if err != nil && len(conns) > 0 {
			return err
		}
		for _, cn := range conns {
			for _, h := range hosts {
				if cn.Host != nil && cn.Host.Name == h.Name {
					return fmt.Errorf("array %s still presents %s (serial %s) to this node's host %s: its devices stay", req.Array, v.Name, serial, h.Name)
				}
			}
		}
	}
	log("removing this node's devices of %s (serial %s), disconnected from host group %s by node %s", req.Volume, serial, req.HostGroup, req.Node)
	return r.Host.Gone(ctx, serial, 10*time.Second, log)
}

// serialOf reads a volume's serial (for journals that did not record it).
func serialOf(ctx context.Context, c *pure.Client, volume string) string {
	v, err := c.Volume(ctx, volume)
	if err != nil {
		return ""
	}
	return v.Serial
}
