package pve

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
)

// Members is /etc/pve/.members: the cluster's nodes with their addresses.
type Members struct {
	NodeName string `json:"nodename"`
	Version  int    `json:"version"`
	Cluster  *struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
		Nodes   int    `json:"nodes"`
		Quorate int    `json:"quorate"`
	} `json:"cluster,omitempty"`
	NodeList map[string]Member `json:"nodelist"`
}

// Member is one node entry.
type Member struct {
	ID     int    `json:"id"`
	Online int    `json:"online"`
	IP     string `json:"ip"`
}

// ReadMembers reads <pveRoot>/.members.
func ReadMembers(pveRoot string) (*Members, error) {
	b, err := os.ReadFile(filepath.Join(pveRoot, ".members"))
	if err != nil {
		return nil, err
	}
	var m Members
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf(".members: %w", err)
	}
	return &m, nil
}

// Address returns a node's IP, refusing anything that is not an IP address (the file is
// written by pmxcfs, but an address goes into a URL).
func (m *Members) Address(node string) (string, error) {
	e, ok := m.NodeList[node]
	if !ok {
		return "", fmt.Errorf("hostname lookup '%s' failed - no such cluster node", node)
	}
	if net.ParseIP(e.IP) == nil {
		return "", fmt.Errorf("node '%s' has no valid address in .members (%q)", node, e.IP)
	}
	return e.IP, nil
}

// Nodes lists node names, sorted.
func (m *Members) Nodes() []string {
	var out []string
	for n := range m.NodeList {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
