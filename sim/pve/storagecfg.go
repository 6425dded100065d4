package pve

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/pvesnap/pvesnap/sim/pveschema"
)

// storage.cfg as pve-common's SectionConfig.pm parses it and pve-storage's plugins define
// it (Storage/Plugin.pm parse_config, parse_section_header, decode_value; DirPlugin,
// ZFSPoolPlugin, LVMPlugin, LvmThinPlugin options and plugindata).

// Storage is one storage of storage.cfg as PVE reads it.
type Storage struct {
	ID       string
	Type     string
	Props    map[string]string // as written (booleans as given)
	Pool     string            // zfspool
	VGName   string            // lvm, lvmthin
	ThinPool string            // lvmthin
	Nodes    []string
	Content  []string
	Shared   bool
	Disabled bool
}

// OnNode reports whether the storage is configured for node (no nodes list: every node).
func (s *Storage) OnNode(node string) bool {
	return len(s.Nodes) == 0 || slices.Contains(s.Nodes, node)
}

// HasContent reports whether the storage holds content type ct.
func (s *Storage) HasContent(ct string) bool { return slices.Contains(s.Content, ct) }

// storageType is a plugin's options (which keys a section of the type may have; fixed ones
// are required unless optional) and plugindata (the content types it holds, its default).
type storageType struct {
	options        map[string]string // key -> "fixed", "optional" or "fixed,optional"
	content        []string
	defaultContent []string
}

var storageTypes = map[string]storageType{
	"dir": {options: map[string]string{"path": "fixed", "content-dirs": "optional", "nodes": "optional", "shared": "optional",
		"disable": "optional", "prune-backups": "optional", "max-protected-backups": "optional", "content": "optional",
		"format": "optional", "mkdir": "optional", "create-base-path": "optional", "create-subdirs": "optional",
		"is_mountpoint": "optional", "bwlimit": "optional", "preallocation": "optional", "snapshot-as-volume-chain": "optional,fixed"},
		content: []string{"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import"}, defaultContent: []string{"images", "rootdir"}},
	"zfspool": {options: map[string]string{"pool": "fixed", "blocksize": "optional", "sparse": "optional", "nodes": "optional",
		"disable": "optional", "content": "optional", "bwlimit": "optional", "mountpoint": "optional"},
		content: []string{"images", "rootdir"}, defaultContent: []string{"images", "rootdir"}},
	"lvm": {options: map[string]string{"vgname": "fixed", "nodes": "optional", "shared": "optional", "disable": "optional",
		"saferemove": "optional", "saferemove-stepsize": "optional", "saferemove_throughput": "optional", "content": "optional",
		"base": "fixed,optional", "tagged_only": "optional", "bwlimit": "optional", "snapshot-as-volume-chain": "optional"},
		content: []string{"images", "rootdir"}, defaultContent: []string{"images"}},
	"lvmthin": {options: map[string]string{"thinpool": "fixed", "vgname": "fixed", "nodes": "optional", "disable": "optional",
		"content": "optional", "bwlimit": "optional"},
		content: []string{"images", "rootdir"}, defaultContent: []string{"images", "rootdir"}},
}

// sharedTypes are @SHARED_STORAGE: always shared, whatever the section says.
var sharedTypes = map[string]bool{"iscsi": true, "nfs": true, "cifs": true, "rbd": true, "cephfs": true, "iscsidirect": true,
	"zfs": true, "drbd": true, "pbs": true}

var (
	sectionHeaderRe = regexp.MustCompile(`^(\S+):\s*(\S+)\s*$`)
	sectionPropRe   = regexp.MustCompile(`^\s+(\S+)(\s+(.*\S))?\s*$`)
)

// parseStorageConfig parses storage.cfg. The stand-in is stricter than PVE in one way: what
// PVE would only warn about and drop (a value its schema refuses, a missing fixed option)
// is an error here, so that a test notices. Sections of types this stand-in has no plugin
// for are skipped, as PVE skips a type whose plugin is not installed.
func parseStorageConfig(raw []byte, schema map[string]pveschema.Schema) (map[string]*Storage, []string, error) {
	out := map[string]*Storage{}
	var skipped []string
	lines := strings.Split(string(raw), "\n")
	lineno := 0
	next := func() (string, bool) {
		for lineno < len(lines) {
			l := lines[lineno]
			lineno++
			if !regexp.MustCompile(`^\s*#`).MatchString(l) {
				return l, true
			}
		}
		return "", false
	}
	for {
		line, ok := next()
		if !ok {
			break
		}
		if line == "" {
			continue
		}
		where := fmt.Sprintf("file /etc/pve/storage.cfg line %d", lineno)
		m := sectionHeaderRe.FindStringSubmatch(line)
		if m == nil {
			return nil, nil, fmt.Errorf("%s - ignore config line: %s", where, line)
		}
		typ, id := strings.ToLower(m[1]), m[2]
		if err := pveschema.ParseStorageID(id); err != nil {
			return nil, nil, fmt.Errorf("%s (skip section '%s'): %s", where, id, strings.TrimSpace(err.Error()))
		}
		props := map[string]string{}
		var order []string
		for {
			l, ok := next()
			if !ok || l == "" || l == "0" {
				break
			}
			pm := sectionPropRe.FindStringSubmatch(l)
			if pm == nil {
				return nil, nil, fmt.Errorf("file /etc/pve/storage.cfg line %d (section '%s') - ignore config line: %s", lineno, id, l)
			}
			if _, dup := props[pm[1]]; dup {
				return nil, nil, fmt.Errorf("file /etc/pve/storage.cfg line %d (section '%s') - unable to parse value of '%s': duplicate attribute", lineno, id, pm[1])
			}
			props[pm[1]] = pm[3]
			order = append(order, pm[1])
		}
		st, known := storageTypes[typ]
		if !known {
			skipped = append(skipped, fmt.Sprintf("%s (skip section '%s'): unsupported type '%s'", where, id, typ))
			continue
		}
		for _, k := range order {
			v := props[k]
			if _, ok := st.options[k]; !ok {
				return nil, nil, fmt.Errorf("%s (section '%s') - unable to parse value of '%s': unexpected property '%s'", where, id, k, k)
			}
			ps := schema[k]
			if ps == nil {
				continue
			}
			if ps["type"] == "boolean" && v == "" {
				v = "1"
				props[k] = v
			}
			errs := pveschema.Errors{}
			pveschema.CheckProp(v, ps, k, errs)
			if msg, bad := errs[k]; bad {
				return nil, nil, fmt.Errorf("%s (section '%s') - unable to parse value of '%s': %s", where, id, k, strings.TrimRight(msg, "\n"))
			}
		}
		for k, o := range st.options {
			if strings.Contains(o, "fixed") && !strings.Contains(o, "optional") && props[k] == "" {
				return nil, nil, fmt.Errorf("%s (skip section '%s'): missing value for required option '%s'", where, id, k)
			}
		}
		s := &Storage{ID: id, Type: typ, Props: props, Pool: props["pool"], VGName: props["vgname"], ThinPool: props["thinpool"],
			Nodes: pveschema.SplitList(props["nodes"]), Shared: props["shared"] == "1" || sharedTypes[typ],
			Disabled: props["disable"] == "1"}
		if c, ok := props["content"]; ok {
			for _, ct := range pveschema.SplitList(c) {
				if !slices.Contains(st.content, ct) {
					return nil, nil, fmt.Errorf("%s (section '%s') - storage does not support content type '%s'", where, id, ct)
				}
				if ct != "none" {
					s.Content = append(s.Content, ct)
				}
			}
		} else {
			s.Content = st.defaultContent
		}
		sort.Strings(s.Content)
		out[id] = s
	}
	if l := out["local"]; l == nil || l.Type != "dir" || (l.Props["path"] != "" && l.Props["path"] != "/var/lib/vz") {
		out["local"] = &Storage{ID: "local", Type: "dir", Props: map[string]string{"path": "/var/lib/vz"},
			Content: []string{"backup", "images", "iso", "rootdir", "snippets", "vztmpl"}}
	}
	out["local"].Nodes = nil
	return out, skipped, nil
}

// formatStorageConfig writes storage.cfg as SectionConfig's write_config does: the header,
// "disable" first when set, then the required (fixed) options, then the others, each group
// sorted, booleans as 0/1, and a blank line after every section.
func formatStorageConfig(list []*Storage, schema map[string]pveschema.Schema) []byte {
	var b strings.Builder
	for _, s := range list {
		fmt.Fprintf(&b, "%s: %s\n", s.Type, s.ID)
		done := map[string]bool{"disable": true}
		if perlTrue(s.Props["disable"]) {
			b.WriteString("\tdisable\n")
		}
		opts := storageTypes[s.Type].options
		line := func(k string) {
			v := s.Props[k]
			done[k] = true
			if ps := schema[k]; ps != nil && ps["type"] == "boolean" {
				if perlTrue(v) || v == "" {
					v = "1"
				} else {
					v = "0"
				}
			}
			if v != "" {
				fmt.Fprintf(&b, "\t%s %s\n", k, v)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(opts)) {
			if o := opts[k]; strings.Contains(o, "fixed") && !strings.Contains(o, "optional") {
				line(k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(s.Props)) {
			if !done[k] {
				line(k)
			}
		}
		b.WriteString("\n")
	}
	return []byte(b.String())
}
