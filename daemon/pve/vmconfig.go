package pve

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// VMConfig is a qemu-server config: the current section, pending changes, special sections
// ([special:cloudinit], [special:fleecing]) and snapshots, each with its own description.
type VMConfig struct {
	Description string
	Props       map[string]string
	Order       []string
	Pending     map[string]string
	Snapshots   map[string]map[string]string
	Special     map[string]map[string]string
	// SectionDescriptions are the descriptions ('#' lines) of the other sections, by
	// "PENDING", the snapshot name, or "special:NAME", decoded as Description is.
	SectionDescriptions map[string]string
	// Raw is the file as read (for remembered VMs and digests).
	Raw []byte
}

// The line forms of qemu-server's parse_vm_config.
var (
	// Keys as qemu-server's parse_vm_config takes them: letters, '_' and '-' (allow-ksm,
	// amd-sev, intel-tdx), an optional index.
	cfgLineRe     = regexp.MustCompile(`^([a-z][a-z_\-]*\d*):\s*(.*?)\s*$`)
	cfgPendingRe  = regexp.MustCompile(`(?i)^\[PENDING\]\s*$`)
	cfgSpecialRe  = regexp.MustCompile(`(?i)^\[special:(cloudinit|fleecing)\]\s*$`)
	cfgSnapshotRe = regexp.MustCompile(`(?i)^\[([a-z][a-z0-9_\-]+)\]\s*$`)
	cfgUnknownRe  = regexp.MustCompile(`^\[([^\]]*)\]\s*$`)
	diskKeyRe     = regexp.MustCompile(`^(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|efidisk0|tpmstate0|unused\d+)$`)
	netKeyRe      = regexp.MustCompile(`^net\d+$`)
)

// ParseVMConfig parses "key: value" lines, '#' description lines and [section] blocks as
// qemu-server does: descriptions belong to the section they are in, and the lines of a
// section of unknown kind are skipped (qemu-server warns and skips them too).
func ParseVMConfig(b []byte) (*VMConfig, error) {
	c := &VMConfig{Props: map[string]string{}, Pending: map[string]string{}, Snapshots: map[string]map[string]string{},
		Special: map[string]map[string]string{}, SectionDescriptions: map[string]string{}, Raw: b}
	cur := c.Props
	section := "" // "" is the main section
	var desc []string
	finish := func() {
		if len(desc) > 0 {
			if section == "" {
				c.Description = strings.Join(desc, "\n")
			} else {
				c.SectionDescriptions[section] = strings.Join(desc, "\n")
			}
		}
		desc = nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		if m := cfgPendingRe.FindStringSubmatch(line); m != nil {
			finish()
			section, cur = "PENDING", c.Pending
			continue
		}
		if m := cfgSpecialRe.FindStringSubmatch(line); m != nil {
			finish()
			name := strings.ToLower(m[1])
			section, cur = "special:"+name, map[string]string{}
			c.Special[name] = cur
			continue
		}
		if m := cfgSnapshotRe.FindStringSubmatch(line); m != nil {
			finish()
			section, cur = m[1], map[string]string{}
			c.Snapshots[m[1]] = cur
			continue
		}
		if cfgUnknownRe.MatchString(line) {
			finish()
			section, cur = "", nil // skipped up to the next known section
			continue
		}
		if cur == nil {
			continue
		}
		if d, ok := strings.CutPrefix(line, "#"); ok {
			desc = append(desc, decodeText(d))
			continue
		}
		m := cfgLineRe.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("vm config line %d: cannot parse %q", n, line)
		}
		if section == "" {
			if _, dup := cur[m[1]]; !dup {
				c.Order = append(c.Order, m[1])
			}
		}
		cur[m[1]] = m[2]
	}
	finish()
	return c, sc.Err()
}

// Format writes the whole config back as qemu-server lays it out: the current section, then
// [PENDING], the special sections and the snapshots, each with its description.
func (c *VMConfig) Format() []byte {
	b := FormatVMConfig(c.Description, c.Order, c.Props)
	section := func(header, name string, props map[string]string) {
		b = append(b, "\n["+header+"]\n"...)
		b = append(b, FormatVMConfig(c.SectionDescriptions[name], nil, props)...)
	}
	if len(c.Pending) > 0 {
		section("PENDING", "PENDING", c.Pending)
	}
	for _, name := range sortedKeys(c.Special) {
		section("special:"+name, "special:"+name, c.Special[name])
	}
	for _, name := range sortedKeys(c.Snapshots) {
		section(name, name, c.Snapshots[name])
	}
	return b
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Digest is PVE's config digest: the SHA-1 of the raw file in hex.
func (c *VMConfig) Digest() string { return Digest(c.Raw) }

// Digest is the SHA-1 in hex that PVE uses to detect concurrent changes of a config file.
func Digest(b []byte) string {
	h := sha1.Sum(b)
	return hex.EncodeToString(h[:])
}

// Meta returns the parsed "meta:" property (creation-qemu, ctime).
func (c *VMConfig) Meta() map[string]string { return ParsePropertyString(c.Props["meta"], "") }

// CTime is the VM's creation time from "meta: ctime=", 0 when absent (PVE < 7).
func (c *VMConfig) CTime() int64 {
	n, _ := strconv.ParseInt(c.Meta()["ctime"], 10, 64)
	return n
}

// IsDiskKey reports whether key names a disk (ide, sata, scsi, virtio, efidisk, tpmstate, unused).
func IsDiskKey(key string) bool { return diskKeyRe.MatchString(key) }

// IsNetKey reports whether key is net<N>.
func IsNetKey(key string) bool { return netKeyRe.MatchString(key) }

// Disk is one disk entry of a VM config.
type Disk struct {
	Key   string // scsi0
	Volid Volid
	Opts  map[string]string
	Media string // "cdrom" for CD drives
}

// Disks returns the config's disks on storages (CD-ROMs and passthrough devices excluded),
// sorted by key.
func (c *VMConfig) Disks() []Disk {
	var out []Disk
	for k, v := range c.Props {
		if !IsDiskKey(k) {
			continue
		}
		opts := ParsePropertyString(v, "file")
		if opts["media"] == "cdrom" {
			continue
		}
		vid, err := ParseVolid(opts["file"])
		if err != nil {
			continue // /dev/… passthrough or "none"
		}
		out = append(out, Disk{Key: k, Volid: vid, Opts: opts, Media: opts["media"]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// ParsePropertyString parses "a=1,b=2" property strings; a leading value without '=' is
// stored under defaultKey.
func ParsePropertyString(s, defaultKey string) map[string]string {
	out := map[string]string{}
	if s == "" {
		return out
	}
	for i, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			if i == 0 && defaultKey != "" {
				out[defaultKey] = part
			} else {
				out[part] = "1"
			}
			continue
		}
		out[k] = v
	}
	return out
}

// FormatVMConfig writes the main section of a config (description first, then keys in
// order), as qemu-server writes it.
func FormatVMConfig(desc string, order []string, props map[string]string) []byte {
	var b bytes.Buffer
	if desc != "" {
		for _, l := range strings.Split(desc, "\n") {
			b.WriteString("#" + encodeText(l) + "\n")
		}
	}
	done := map[string]bool{}
	for _, k := range order {
		if v, ok := props[k]; ok && !done[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
			done[k] = true
		}
	}
	rest := make([]string, 0, len(props))
	for k := range props {
		if !done[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		fmt.Fprintf(&b, "%s: %s\n", k, props[k])
	}
	return b.Bytes()
}

// encodeText is PVE::Tools::encode_text for description lines: control and non-ASCII bytes,
// '%' and ':' written as %XX, so that a line reads back as written.
func encodeText(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e || c == '%' || c == ':' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// decodeText is decode_text: %XX sequences decoded, anything else kept as it is.
func decodeText(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
