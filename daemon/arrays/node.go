package arrays

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// Target is where this node's volumes get connected on an array: the configured host
// group, else the one array host holding the node's initiators.
func Target(ctx context.Context, c *pure.Client, a Array, node NodePaths) (pure.Target, error) {
	if a.HostGroup != "" {
		return pure.Target{HostGroup: a.HostGroup}, nil
	}
	in := node.Initiators()
	hosts, err := c.FindHosts(ctx, in)
	if err != nil {
		return pure.Target{}, fmt.Errorf("array %s: finding this node's host: %w", a.ID, err)
	}
	switch len(hosts) {
	case 0:
		return pure.Target{}, fmt.Errorf("array %s has no host with this node's initiators (%s): create one on the array or set a host group", a.ID, node.describe(in))
	case 1:
		return pure.Target{Host: hosts[0].Name}, nil
	}
	var names []string
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	return pure.Target{}, fmt.Errorf("array %s: this node's initiators are on several hosts (%s): set a host group to choose", a.ID, strings.Join(names, ", "))
}
