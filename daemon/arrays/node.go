package arrays

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pvesnap/pvesnap/daemon/pure"
)

// NodePaths locate a node's initiator identities.
type NodePaths struct {
	ISCSI string // /etc/iscsi (initiatorname.iscsi)
	NVMe  string // /etc/nvme (hostnqn)
	Sys   string // /sys (class/fc_host/*/port_name)
}

// Initiators reads the node's IQN, NQN and FC WWPNs; missing ones are simply absent.
func (p NodePaths) Initiators() pure.Initiators {
	var in pure.Initiators
	if f, err := os.Open(filepath.Join(p.ISCSI, "initiatorname.iscsi")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, "InitiatorName="); ok {
				in.IQN = strings.TrimSpace(v)
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(filepath.Join(p.NVMe, "hostnqn")); err == nil {
		in.NQN = strings.TrimSpace(string(b))
	}
	ports, _ := filepath.Glob(filepath.Join(p.Sys, "class", "fc_host", "*", "port_name"))
	for _, port := range ports {
		if b, err := os.ReadFile(port); err == nil {
			in.WWPNs = append(in.WWPNs, strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"))
		}
	}
	return in
}

func (p NodePaths) describe(in pure.Initiators) string {
	var parts []string
	if in.IQN != "" {
		parts = append(parts, "IQN "+in.IQN)
	}
	if in.NQN != "" {
		parts = append(parts, "NQN "+in.NQN)
	}
	for _, w := range in.WWPNs {
		parts = append(parts, "WWPN "+w)
	}
	if len(parts) == 0 {
		return "no initiator (no " + filepath.Join(p.ISCSI, "initiatorname.iscsi") + ", " + filepath.Join(p.NVMe, "hostnqn") + " or FC port)"
	}
	return strings.Join(parts, ", ")
}

// Target is where this node's temporary copies get connected on an array: always the one
// array host that holds the node's initiators, never a host group. A copy of a shared VG's
// volume connected to a host group would appear on every member node, each then seeing a
// second PV with the same PV and VG UUIDs as the storage's own. A configured host group only
// says which group the node's host must be in: that is checked here, before anything is
// connected, instead of surfacing as a device that never appears.
func Target(ctx context.Context, c *pure.Client, a Array, node NodePaths) (pure.Target, error) {
	in := node.Initiators()
	hosts, err := c.FindHosts(ctx, in)
	if err != nil {
		return pure.Target{}, fmt.Errorf("array %s: finding this node's host: %w", a.ID, err)
	}
	if len(hosts) == 0 {
		hint := "create one on the array"
		if a.HostGroup != "" {
			hint += " in host group " + a.HostGroup
		}
		return pure.Target{}, fmt.Errorf("array %s has no host with this node's initiators (%s): %s", a.ID, node.describe(in), hint)
	}
	if a.HostGroup != "" {
		var in, out []string
		for _, h := range hosts {
			if h.GroupName() == a.HostGroup {
				in = append(in, h.Name)
			} else {
				g := h.GroupName()
				if g == "" {
					g = "no host group"
				} else {
					g = "host group " + g
				}
				out = append(out, fmt.Sprintf("%s (in %s)", h.Name, g))
			}
		}
		if len(in) == 0 {
			if _, err := c.HostGroupByName(ctx, a.HostGroup); err != nil {
				return pure.Target{}, fmt.Errorf("array %s: host group %s configured for pvesnap: %w", a.ID, a.HostGroup, err)
			}
			return pure.Target{}, fmt.Errorf("array %s: host group %s does not contain this node's host %s: add the host to the group or correct the array's host group in pvesnap",
				a.ID, a.HostGroup, strings.Join(out, ", "))
		}
		hosts = slices.DeleteFunc(hosts, func(h pure.Host) bool { return h.GroupName() != a.HostGroup })
	}
	if len(hosts) == 1 {
		return pure.Target{Host: hosts[0].Name}, nil
	}
	var names []string
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	return pure.Target{}, fmt.Errorf("array %s: this node's initiators are on several hosts (%s): pvesnap connects its copies to one host only; keep each node's initiators on one host",
		a.ID, strings.Join(names, ", "))
}
