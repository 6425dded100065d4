package pure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Ref is a reference to another object ({"name":…,"id":…}; members may be null).
type Ref struct {
	Name string `json:"name,omitempty"`
	ID   string `json:"id,omitempty"`
}

// Array is the array itself.
type Array struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	OS      string `json:"os"`
	Version string `json:"version"`
	// EradicationConfig is nil before REST 2.6.
	EradicationConfig *EradicationConfig `json:"eradication_config"`
}

// EradicationConfig is how the array eradicates destroyed objects (SafeMode).
type EradicationConfig struct {
	// ManualEradication: "all-enabled", "partially-disabled" (some objects, e.g. members of
	// a ratcheted protection group, cannot be eradicated by hand) or "all-disabled".
	ManualEradication string `json:"manual_eradication"`
	EradicationDelay  int64  `json:"eradication_delay"` // ms
	// DisabledDelay and EnabledDelay (ms) are the delays for objects that cannot and can be
	// eradicated by hand (REST 2.26 and later).
	DisabledDelay int64 `json:"disabled_delay"`
	EnabledDelay  int64 `json:"enabled_delay"`
}

// Volume is a FlashArray volume.
type Volume struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Serial          string `json:"serial"`
	Provisioned     int64  `json:"provisioned"`
	Created         int64  `json:"created"` // ms since the epoch
	Destroyed       bool   `json:"destroyed"`
	TimeRemaining   *int64 `json:"time_remaining"`
	ConnectionCount int    `json:"connection_count"`
	Source          *Ref   `json:"source"`
	// Pod and VolumeGroup contain the volume (their names are also in its own: pod::vol,
	// vg/vol, pod::vg/vol); members are null outside them.
	Pod         *Ref `json:"pod"`
	VolumeGroup *Ref `json:"volume_group"`
}

// PodName is the pod the volume is in ("" when none).
func (v Volume) PodName() string {
	if v.Pod != nil {
		return v.Pod.Name
	}
	return ""
}

// VolumeSnapshot is a volume snapshot (also the member snapshots of protection-group snapshots,
// named PG.SUFFIX.VOLUME).
type VolumeSnapshot struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Serial        string `json:"serial"`
	Created       int64  `json:"created"`
	Destroyed     bool   `json:"destroyed"`
	Provisioned   int64  `json:"provisioned"`
	Source        *Ref   `json:"source"`
	Suffix        string `json:"suffix"`
	TimeRemaining *int64 `json:"time_remaining"`
}

// ProtectionGroup is a protection group.
type ProtectionGroup struct {
	Name        string `json:"name"`
	VolumeCount int    `json:"volume_count"`
}

// PGSnapshot is a protection group snapshot.
type PGSnapshot struct {
	Name      string `json:"name"`
	Created   int64  `json:"created"`
	Destroyed bool   `json:"destroyed"`
	Source    *Ref   `json:"source"`
	Suffix    string `json:"suffix"`
}

// Host is a host entry with its initiators.
type Host struct {
	Name            string   `json:"name"`
	IQNs            []string `json:"iqns"`
	NQNs            []string `json:"nqns"`
	WWNs            []string `json:"wwns"`
	HostGroup       *Ref     `json:"host_group"`
	ConnectionCount int      `json:"connection_count"`
	// IsLocal is false for a host of another array or realm that this array lists; nil
	// before REST 2.1.
	IsLocal *bool `json:"is_local"`
	// Destroyed: destroyed with its realm, pending eradication (REST 2.44).
	Destroyed bool `json:"destroyed"`
	// PreferredArrays are the arrays of a stretched pod that give this host active/optimized
	// paths.
	PreferredArrays []Ref `json:"preferred_arrays"`
}

// Usable: a host of this array that volumes can be connected to (cinder keeps only these).
func (h Host) Usable() bool { return (h.IsLocal == nil || *h.IsLocal) && !h.Destroyed }

// GroupName is the host's host group ("" when none).
func (h Host) GroupName() string {
	if h.HostGroup != nil {
		return h.HostGroup.Name
	}
	return ""
}

// HostGroup is a host group.
type HostGroup struct {
	Name      string `json:"name"`
	HostCount int    `json:"host_count"`
}

// Connection connects a volume to a host or host group.
type Connection struct {
	Host      *Ref `json:"host"`
	HostGroup *Ref `json:"host_group"`
	LUN       int  `json:"lun"`
	NSID      int  `json:"nsid,omitempty"`
	Volume    Ref  `json:"volume"`
}

// Arrays returns the array's identity.
func (c *Client) Arrays(ctx context.Context) ([]Array, error) {
	return list[Array](ctx, c, "/arrays", nil)
}

func names(n ...string) url.Values { return url.Values{"names": {strings.Join(n, ",")}} }

// Volumes lists volumes; filter is a Purity filter expression ("" = all).
func (c *Client) Volumes(ctx context.Context, filter string) ([]Volume, error) {
	q := url.Values{}
	if filter != "" {
		q.Set("filter", filter)
	}
	return list[Volume](ctx, c, "/volumes", q)
}

// one reads the object named name of a collection; an empty answer is the array's
// "does not exist" (notFound).
func one[T any](ctx context.Context, c *Client, path, name, notFound string) (T, error) {
	var zero T
	items, err := list[T](ctx, c, path, names(name))
	if err != nil {
		return zero, err
	}
	if len(items) == 0 {
		return zero, &Error{Method: "GET", Path: path, Status: 400, Message: notFound, Context: name}
	}
	return items[0], nil
}

// Volume returns one volume by name (live or destroyed).
func (c *Client) Volume(ctx context.Context, name string) (Volume, error) {
	return one[Volume](ctx, c, "/volumes", name, "Volume does not exist.")
}

var serialRe = regexp.MustCompile(`^[0-9A-F]{24}$`)

// IsSerial reports whether s is a FlashArray volume serial as the array writes it: 24
// upper-case hex digits.
func IsSerial(s string) bool { return serialRe.MatchString(s) }

// VolumesBySerial finds volumes by serial (serials are 24 upper-case hex digits).
func (c *Client) VolumesBySerial(ctx context.Context, serials ...string) ([]Volume, error) {
	var terms []string
	for _, s := range serials {
		s = strings.ToUpper(s)
		if !serialRe.MatchString(s) {
			return nil, fmt.Errorf("%q is not a FlashArray volume serial", s)
		}
		terms = append(terms, "serial='"+s+"'")
	}
	return c.Volumes(ctx, strings.Join(terms, " or "))
}

// CopyVolume copies source (a volume or snapshot) into name; overwrite replaces the data of
// an existing volume while keeping its identity (serial). A new volume is created without
// the default protection of its container (see CreateVolume).
func (c *Client) CopyVolume(ctx context.Context, name, source string, overwrite bool) (Volume, error) {
	q := names(name)
	if overwrite {
		q.Set("overwrite", "true") // the array refuses with_default_protection with it
	} else {
		c.withoutDefaultProtection(ctx, q)
	}
	var out struct{ Items []Volume }
	if _, err := c.call(ctx, http.MethodPost, "/volumes", q, map[string]any{"source": Ref{Name: source}}, &out); err != nil {
		return Volume{}, err
	}
	if len(out.Items) == 0 {
		return Volume{}, fmt.Errorf("array: copy to %s returned no volume", name)
	}
	return out.Items[0], nil
}

// withoutDefaultProtection keeps a volume pvesnap creates out of its container's default
// protection groups (REST 2.16 and later): a temporary copy that joined one would be
// snapshotted on the group's schedule and, in a group under a SafeMode retention lock, could
// never be eradicated before the array's delay.
func (c *Client) withoutDefaultProtection(ctx context.Context, q url.Values) {
	if c.AtLeast(ctx, "2.16") {
		q.Set("with_default_protection", "false")
	}
}

// CreateVolume creates an empty volume of size bytes, outside default protection.
func (c *Client) CreateVolume(ctx context.Context, name string, size int64) (Volume, error) {
	var out struct{ Items []Volume }
	q := names(name)
	c.withoutDefaultProtection(ctx, q)
	if _, err := c.call(ctx, http.MethodPost, "/volumes", q, map[string]any{"provisioned": size}, &out); err != nil {
		return Volume{}, err
	}
	if len(out.Items) == 0 {
		return Volume{}, fmt.Errorf("array: create %s returned no volume", name)
	}
	return out.Items[0], nil
}

// DestroyVolume moves a volume to the destroyed (pending eradication) state.
func (c *Client) DestroyVolume(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodPatch, "/volumes", names(name), map[string]any{"destroyed": true}, nil)
	return err
}

// RecoverVolume undoes DestroyVolume.
func (c *Client) RecoverVolume(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodPatch, "/volumes", names(name), map[string]any{"destroyed": false}, nil)
	return err
}

// EradicateVolume removes a destroyed volume for good.
func (c *Client) EradicateVolume(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodDelete, "/volumes", names(name), nil, nil)
	return err
}

// VolumeSnapshots lists the snapshots of the named volumes (all when none), including the
// member snapshots of protection-group snapshots.
func (c *Client) VolumeSnapshots(ctx context.Context, sources []string, filter string) ([]VolumeSnapshot, error) {
	q := url.Values{}
	if len(sources) > 0 {
		q.Set("source_names", strings.Join(sources, ","))
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	return list[VolumeSnapshot](ctx, c, "/volume-snapshots", q)
}

// CreateVolumeSnapshots snapshots several volumes in one call with one suffix: one point in
// time for all of them.
func (c *Client) CreateVolumeSnapshots(ctx context.Context, sources []string, suffix string) ([]VolumeSnapshot, error) {
	q := url.Values{"source_names": {strings.Join(sources, ",")}}
	var out struct{ Items []VolumeSnapshot }
	_, err := c.call(ctx, http.MethodPost, "/volume-snapshots", q, map[string]any{"suffix": suffix}, &out)
	return out.Items, err
}

// DestroyVolumeSnapshot destroys a snapshot (pending eradication).
func (c *Client) DestroyVolumeSnapshot(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodPatch, "/volume-snapshots", names(name), map[string]any{"destroyed": true}, nil)
	return err
}

// EradicateVolumeSnapshot removes a destroyed snapshot for good.
func (c *Client) EradicateVolumeSnapshot(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodDelete, "/volume-snapshots", names(name), nil, nil)
	return err
}

// ProtectionGroups lists protection groups.
func (c *Client) ProtectionGroups(ctx context.Context) ([]ProtectionGroup, error) {
	return list[ProtectionGroup](ctx, c, "/protection-groups", nil)
}

// ProtectionGroupSnapshots lists snapshots of the named groups (all when none).
func (c *Client) ProtectionGroupSnapshots(ctx context.Context, groups ...string) ([]PGSnapshot, error) {
	q := url.Values{}
	if len(groups) > 0 {
		q.Set("source_names", strings.Join(groups, ","))
	}
	return list[PGSnapshot](ctx, c, "/protection-group-snapshots", q)
}

// Hosts lists hosts.
func (c *Client) Hosts(ctx context.Context) ([]Host, error) {
	return list[Host](ctx, c, "/hosts", nil)
}

// HostGroups lists host groups.
func (c *Client) HostGroups(ctx context.Context) ([]HostGroup, error) {
	return list[HostGroup](ctx, c, "/host-groups", nil)
}

// HostGroupByName reads one host group (ErrNotFound when the array has none of that name).
func (c *Client) HostGroupByName(ctx context.Context, name string) (HostGroup, error) {
	return one[HostGroup](ctx, c, "/host-groups", name, "Host group does not exist.")
}

// FindHosts asks the array for the local hosts holding any of the initiators (an array-side
// filter, so large arrays need not list every host), then matches them locally as well and
// keeps only hosts volumes can be connected to: not another array's or realm's (is_local),
// not destroyed, as cinder does.
func (c *Client) FindHosts(ctx context.Context, in Initiators) ([]Host, error) {
	var terms []string
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "") + "'" }
	if in.IQN != "" {
		terms = append(terms, "iqns="+quote(in.IQN))
	}
	if in.NQN != "" {
		terms = append(terms, "nqns="+quote(in.NQN))
	}
	for _, w := range in.WWPNs {
		terms = append(terms, "wwns="+quote(normWWN(w)))
	}
	if len(terms) == 0 {
		return nil, errors.New("this node has no iSCSI, NVMe or FC initiator to find its array host by")
	}
	hs, err := list[Host](ctx, c, "/hosts", url.Values{"filter": {"(" + strings.Join(terms, " or ") + ") and is_local"}})
	if err != nil {
		return nil, err
	}
	return MatchHosts(hs, in), nil
}

// Initiators are a node's storage identities.
type Initiators struct {
	IQN   string
	NQN   string
	WWPNs []string
}

func normWWN(s string) string {
	return strings.ToUpper(strings.NewReplacer(":", "", "-", "", " ", "", "0x", "", "0X", "").Replace(s))
}

// MatchHosts returns the usable hosts holding any of the initiators (an initiator belongs to
// one local host, but a node may have several initiators on different hosts, and remote or
// destroyed hosts may hold the same ones).
func MatchHosts(hosts []Host, in Initiators) []Host {
	var out []Host
	for _, h := range hosts {
		if !h.Usable() {
			continue
		}
		match := false
		for _, q := range h.IQNs {
			match = match || (in.IQN != "" && strings.EqualFold(q, in.IQN))
		}
		for _, q := range h.NQNs {
			match = match || (in.NQN != "" && strings.EqualFold(q, in.NQN))
		}
		for _, w := range h.WWNs {
			for _, mine := range in.WWPNs {
				match = match || normWWN(w) == normWWN(mine)
			}
		}
		if match {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Target names where a volume is connected: a host or a host group.
type Target struct {
	Host      string
	HostGroup string
}

func (t Target) query() (url.Values, error) {
	switch {
	case t.HostGroup != "" && t.Host == "":
		return url.Values{"host_group_names": {t.HostGroup}}, nil
	case t.Host != "" && t.HostGroup == "":
		return url.Values{"host_names": {t.Host}}, nil
	}
	return nil, errors.New("connection target must be one host or one host group")
}

func (t Target) String() string {
	if t.HostGroup != "" {
		return "host group " + t.HostGroup
	}
	return "host " + t.Host
}

// Connections lists connections of volume (and target when set).
func (c *Client) Connections(ctx context.Context, volume string, t *Target) ([]Connection, error) {
	q := url.Values{}
	if volume != "" {
		q.Set("volume_names", volume)
	}
	if t != nil {
		tq, err := t.query()
		if err != nil {
			return nil, err
		}
		for k, v := range tq {
			q[k] = v
		}
	}
	return list[Connection](ctx, c, "/connections", q)
}

// Connect connects volume to t and returns the connection with its LUN (SCSI) or NSID (NVMe).
// An existing connection is not an error: it is read back (the array returns no items then).
func (c *Client) Connect(ctx context.Context, volume string, t Target) (Connection, error) {
	q, err := t.query()
	if err != nil {
		return Connection{}, err
	}
	q.Set("volume_names", volume)
	var out struct{ Items []Connection }
	_, err = c.call(ctx, http.MethodPost, "/connections", q, nil, &out)
	if err != nil && !errors.Is(err, ErrConnectionExists) {
		return Connection{}, err
	}
	if err == nil && len(out.Items) > 0 {
		return out.Items[0], nil
	}
	cs, lerr := c.Connections(ctx, volume, &t)
	if lerr != nil {
		return Connection{}, lerr
	}
	if len(cs) == 0 {
		return Connection{}, fmt.Errorf("array: volume %s is not connected to %s after connecting", volume, t)
	}
	return cs[0], nil
}

// Disconnect removes the connection; an absent one is not an error.
func (c *Client) Disconnect(ctx context.Context, volume string, t Target) error {
	q, err := t.query()
	if err != nil {
		return err
	}
	q.Set("volume_names", volume)
	_, err = c.call(ctx, http.MethodDelete, "/connections", q, nil, nil)
	if errors.Is(err, ErrNotConnected) || errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
