package pve

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/pvesnap/pvesnap/sim/pveschema"
)

// VM configs as qemu-server reads and writes them (QemuServer.pm parse_vm_config in strict
// mode, check_type, write_vm_config), each value checked against the property schema of
// GET /nodes/{node}/qemu/{vmid}/config. PVE itself only warns about a bad line and drops it;
// the stand-in refuses the whole config, so that whatever wrote it fails its test.

type vmConfig struct {
	props       map[string]string
	description string
	pending     map[string]string
	snapshots   map[string]map[string]string
	digest      string
}

var (
	pendingRe  = regexp.MustCompile(`(?i)^\[PENDING\]\s*$`)
	specialRe  = regexp.MustCompile(`(?i)^\[special:(cloudinit|fleecing)\]\s*$`)
	snapHeadRe = regexp.MustCompile(`(?i)^\[([a-z][a-z0-9_\-]+)\]\s*$`)
	anyHeadRe  = regexp.MustCompile(`^\[([^\]]*)\]\s*$`)
	descLineRe = regexp.MustCompile(`^(description):\s*(.*\S)\s*$`)
	argsLineRe = regexp.MustCompile(`^(args):\s*(.*\S)\s*$`)
	deleteRe   = regexp.MustCompile(`^delete:\s*(.*\S)\s*$`)
	keyLineRe  = regexp.MustCompile(`^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$`)
	snapstRe   = regexp.MustCompile(`snapstate:\s*(prepare|delete)\s*$`)
)

// decodeText is PVE::Tools::decode_text (uri_unescape).
func decodeText(s string) string {
	if v, err := url.PathUnescape(s); err == nil {
		return v
	}
	return s
}

// encodeText is encode_text: control and high-bit characters, ':' and '%' escaped.
func encodeText(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e || c == ':' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// parseVMConfig is parse_vm_config in strict mode.
func (c *Cluster) parseVMConfig(vmid int64, raw []byte) (*vmConfig, error) {
	h := sha1.Sum(raw)
	cfg := &vmConfig{props: map[string]string{}, snapshots: map[string]map[string]string{}, digest: hex.EncodeToString(h[:])}
	fail := func(format string, args ...any) error {
		return httpErr(500, "vm %d - "+format, append([]any{vmid}, args...)...)
	}
	cur := cfg.props
	section := "main"
	var descr *string
	finish := func() {
		if descr != nil {
			d := strings.TrimRight(*descr, " \t\r\n")
			if section == "main" {
				cfg.description = d
			}
		}
		descr = nil
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		switch {
		case pendingRe.MatchString(line):
			finish()
			if cfg.pending != nil {
				return nil, fail("duplicate section: pending")
			}
			cur, section = map[string]string{}, "pending"
			cfg.pending = cur
			continue
		case specialRe.MatchString(line):
			finish()
			cur, section = map[string]string{}, "special"
			continue
		case snapHeadRe.MatchString(line):
			finish()
			name := snapHeadRe.FindStringSubmatch(line)[1]
			if _, dup := cfg.snapshots[name]; dup {
				return nil, fail("duplicate snapshot section: %s", name)
			}
			cur, section = map[string]string{}, "snapshot"
			cfg.snapshots[name] = cur
			continue
		case anyHeadRe.MatchString(line):
			return nil, fail("skipping unknown section: '%s'", anyHeadRe.FindStringSubmatch(line)[1])
		}
		if strings.HasPrefix(line, "#") {
			if descr == nil {
				descr = new(string)
			}
			*descr += decodeText(line[1:]) + "\n"
			continue
		}
		switch {
		case descLineRe.MatchString(line):
			if descr == nil {
				descr = new(string)
			}
			*descr += decodeText(descLineRe.FindStringSubmatch(line)[2])
		case snapstRe.MatchString(line):
			cur["snapstate"] = snapstRe.FindStringSubmatch(line)[1]
		case argsLineRe.MatchString(line):
			cur["args"] = argsLineRe.FindStringSubmatch(line)[2]
		case deleteRe.MatchString(line):
			if section != "pending" {
				return nil, fail("property 'delete' is only allowed in [PENDING]")
			}
			cur["delete"] = deleteRe.FindStringSubmatch(line)[1]
		case keyLineRe.MatchString(line):
			m := keyLineRe.FindStringSubmatch(line)
			key, value := m[1], m[2]
			if section == "special" {
				cur[key] = value
				continue
			}
			if err := c.checkConfigValue(key, value); err != nil {
				return nil, fail("unable to parse value of '%s' - %s", key, err.Error())
			}
			if key == "cdrom" {
				key = "ide2"
			}
			if pveschema.IsDriveName(key) {
				if !driveFileOK(c.driveFile(key, value)) {
					return nil, fail("unable to parse value of '%s'", key)
				}
			}
			cur[key] = value
		default:
			return nil, fail("unable to parse config: %s", line)
		}
	}
	finish()
	delete(cfg.props, "snapstate")
	return cfg, nil
}

// confDesc is qemu-server's $confdesc: the properties of the config schema.
func (c *Cluster) confDesc() map[string]pveschema.Schema {
	return c.vmProps
}

// checkConfigValue is check_type for one config line.
func (c *Cluster) checkConfigValue(key, value string) error {
	props := concreteProps(c.confDesc(), map[string]any{key: value})
	s, ok := props[key]
	if !ok || key == "digest" {
		return pveschema.Die(fmt.Sprintf("unknown setting '%s'\n", key))
	}
	if strings.ContainsAny(value, "\r\n") {
		return pveschema.Die("property contains a line feed\n")
	}
	switch s["type"] {
	case "boolean":
		switch strings.ToLower(value) {
		case "1", "0", "on", "yes", "true", "off", "no", "false":
			return nil
		}
		return pveschema.Die(fmt.Sprintf("type check ('boolean') failed - got '%s'\n", value))
	case "integer":
		if regexp.MustCompile(`^\d+$`).MatchString(value) {
			return nil
		}
		return pveschema.Die(fmt.Sprintf("type check ('integer') failed - got '%s'\n", value))
	case "number":
		if regexp.MustCompile(`^(\d+)(\.\d+)?$`).MatchString(value) {
			return nil
		}
		return pveschema.Die(fmt.Sprintf("type check ('number') failed - got '%s'\n", value))
	}
	if f := s["format"]; f != nil {
		return pveschema.CheckFormat(f, value, "")
	}
	return nil
}

// driveFile returns the file of a drive value ("" when it does not parse).
func (c *Cluster) driveFile(key, value string) string {
	d, err := c.parseDrive(key, value)
	if err != nil {
		return ""
	}
	f, _ := d["file"].(string)
	return f
}

// driveFileOK is filename_to_volume_id's test: none, cdrom, a /dev path, a volume ID, or a
// bare file name (which PVE places on 'local').
func driveFileOK(f string) bool {
	return f != "" && (f == "none" || f == "cdrom" || strings.HasPrefix(f, "/dev/") ||
		regexp.MustCompile(`^([^:]+):(.+)$`).MatchString(f) || !strings.Contains(f, "/"))
}

// parseDrive parses a drive value with its property-string format (parse_drive).
func (c *Cluster) parseDrive(key, value string) (map[string]any, error) {
	props := concreteProps(c.confDesc(), map[string]any{key: value})
	s, ok := props[key]
	if !ok {
		return nil, fmt.Errorf("invalid drive key: %s", key)
	}
	f, ok := s["format"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("no drive format for %s", key)
	}
	fm := map[string]pveschema.Schema{}
	for k, v := range f {
		if sm, ok := v.(map[string]any); ok {
			fm[k] = sm
		}
	}
	return pveschema.ParsePropertyString(fm, value, key)
}

// disk is one drive of a VM config that lives on a storage.
type disk struct {
	key, storage, volume string
	opts                 map[string]any
}

// disks lists the config's drives on storages (CD-ROMs, passthrough and "none" excluded).
func (c *Cluster) disks(props map[string]string) []disk {
	var out []disk
	for _, k := range slices.Sorted(maps.Keys(props)) {
		if !pveschema.IsDriveName(k) && !strings.HasPrefix(k, "unused") {
			continue
		}
		d, err := c.parseDrive(k, props[k])
		if err != nil || d["media"] == "cdrom" {
			continue
		}
		f, _ := d["file"].(string)
		sid, vol, ok := strings.Cut(f, ":")
		if !ok || vol == "" || pveschema.ParseStorageID(sid) != nil {
			continue
		}
		out = append(out, disk{key: k, storage: sid, volume: vol, opts: d})
	}
	return out
}

// format writes the config as write_vm_config does: description as '#' lines, keys sorted,
// then [PENDING] and the snapshots.
func (cfg *vmConfig) format() []byte {
	var b strings.Builder
	section := func(props map[string]string, desc string) {
		if desc != "" {
			for _, l := range strings.Split(desc, "\n") {
				b.WriteString("#" + encodeText(l) + "\n")
			}
		}
		for _, k := range slices.Sorted(maps.Keys(props)) {
			fmt.Fprintf(&b, "%s: %s\n", k, props[k])
		}
	}
	section(cfg.props, cfg.description)
	if len(cfg.pending) > 0 {
		b.WriteString("\n[PENDING]\n")
		section(cfg.pending, "")
	}
	names := make([]string, 0, len(cfg.snapshots))
	for n := range cfg.snapshots {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "\n[%s]\n", n)
		section(cfg.snapshots[n], "")
	}
	return []byte(b.String())
}

// typedValue is a config value as the GET config API returns it: integers and booleans as
// JSON numbers, the rest as strings.
func (c *Cluster) typedValue(key, v string) any {
	props := concreteProps(c.confDesc(), map[string]any{key: v})
	switch props[key]["type"] {
	case "integer":
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	case "boolean":
		switch strings.ToLower(v) {
		case "1", "on", "yes", "true":
			return 1
		case "0", "off", "no", "false":
			return 0
		}
	}
	return v
}
