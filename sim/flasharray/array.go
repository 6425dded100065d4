// Package flasharray simulates a Pure Storage FlashArray's REST 2.x API closely enough that a
// client passing against it has met the real thing's rules: the envelope and pagination of
// the OpenAPI spec, the filter language, serial formation, LUN numbering, the destroyed /
// eradicated life cycle, session expiry, rate limiting, and the array's own error strings
// (../shared/research/C_pure_rest.md). Volume bytes live in a pluggable data plane: sparse
// files for unit tests and the demo, LIO LUNs in the lab so that a connected volume appears
// on the SCSI bus with the serial a real FlashArray volume reports.
package flasharray

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Array is one simulated FlashArray. Its exported methods seed and inspect state (as an
// administrator on the array's CLI would); Handler serves the REST API.
type Array struct {
	ID      string
	Name    string
	Purity  string   // "6.5.8"
	Offered []string // REST versions announced by /api/api_version (ascending)
	// Tokens maps API tokens to the array user they log in as.
	Tokens map[string]string
	// SessionTTL is how long a session lives after login (0: forever).
	SessionTTL time.Duration
	// EradicationDelay is how long destroyed objects stay recoverable (24 h by default).
	EradicationDelay time.Duration
	// DisabledDelay is how long destroyed objects that cannot be eradicated by hand stay
	// (SafeMode; 0: EradicationDelay).
	DisabledDelay time.Duration
	// SafeMode refuses every manual eradication ("Eradication is disabled."); see
	// protection.go for retention locks, which refuse it for some objects only.
	SafeMode bool
	// RateLimit is the API gateway's limit per session (see ratelimit.go).
	RateLimit RateLimit
	// MaxLimit is the largest page the array returns (a request's limit is capped to it).
	MaxLimit int
	Data     DataPlane
	Now      func() time.Time

	mu          *sync.Mutex // shared with a paired array (Pair)
	counter     uint32
	volumes     map[string]*volume // by name, live and destroyed
	snapshots   map[string]*snapshot
	pgroups     map[string]*pgroup
	pgsnaps     map[string]*pgsnap
	hosts       map[string]*host
	hostGroups  map[string]*hostGroup
	connections []*connection
	sessions    map[string]session
	faults      []Fault
	snapSeq     map[string]int // next numeric suffix per volume / group
	requests    int
	pods        map[string]*pod
	vgroups     map[string]*volumeGroup
	pairs       []*Array
	// defaultProtection are the array's default protection groups (SetDefaultProtection).
	defaultProtection []string
	rates             map[string]*rateWindows // per session
}

var timeZero time.Time

type session struct {
	user    string
	expires time.Time
}

type volume struct {
	id, name, serial string
	size             int64
	created          time.Time
	destroyed        time.Time // zero while live
	source           *ref
}

type snapshot struct {
	id, name, serial, suffix string
	size                     int64
	created, destroyed       time.Time
	source                   ref // the volume
	pgsnap                   string
}

type pgroup struct {
	id, name      string
	volumes       []string
	retentionLock bool // ratcheted (SafeMode)
}

type pgsnap struct {
	name, suffix       string
	created, destroyed time.Time
	source             string // the protection group ("SRC:pg" when replicated from array SRC)
}

type host struct {
	name             string
	iqns, nqns, wwns []string
	group            string
	// remote: a host of another array or realm that this array lists (is_local false).
	remote bool
	// destroyed: destroyed with its realm, pending eradication.
	destroyed time.Time
	// preferred are the arrays of a stretched pod this host prefers (their names).
	preferred []string
}

type hostGroup struct{ name string }

type connection struct {
	volume    string // volume id
	host      string // private connection
	hostGroup string // shared connection
	lun       int
	nvme      bool // the host speaks NVMe: the number is a namespace id
}

type ref struct{ name, id string }

// Fault makes the next authenticated requests fail like an overloaded array.
type Fault struct {
	Status     int    // 429, 503, 500, or 400 with Message
	RetryAfter string // Retry-After header value ("" = none)
	Count      int
	Route      string // "DELETE /connections": only that call fails ("" = any call)
	Message    string // a 400's message
}

// New makes an empty array with a fresh identity.
func New(name string, data DataPlane) *Array {
	if data == nil {
		data = Discard{}
	}
	a := &Array{ID: uuid.NewString(), Name: name, Purity: "6.5.8", Tokens: map[string]string{},
		EradicationDelay: 24 * time.Hour, MaxLimit: 1000, Data: data, Now: time.Now,
		mu: &sync.Mutex{}, volumes: map[string]*volume{}, snapshots: map[string]*snapshot{}, pgroups: map[string]*pgroup{},
		pgsnaps: map[string]*pgsnap{}, hosts: map[string]*host{}, hostGroups: map[string]*hostGroup{},
		sessions: map[string]session{}, snapSeq: map[string]int{}, pods: map[string]*pod{}, vgroups: map[string]*volumeGroup{},
		rates: map[string]*rateWindows{}}
	for i := 0; i <= 19; i++ {
		a.Offered = append(a.Offered, fmt.Sprintf("1.%d", i))
	}
	for i := 0; i <= 44; i++ {
		a.Offered = append(a.Offered, fmt.Sprintf("2.%d", i))
	}
	return a
}

// Error is an error answer: status and the array's message about an object.
type Error struct {
	Status  int
	Message string
	Context string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s (%s)", e.Status, e.Message, e.Context) }

func bad(msg, ctx string) *Error { return &Error{Status: 400, Message: msg, Context: ctx} }

// The array's messages. Those marked verified are quoted from real arrays or from clients
// that match them exactly (research C §3.4); the others contain the substrings clients
// classify by ("does not exist", "already exists", "already in use") with wording that has
// not been seen on a real array.
const (
	msgInvalidSession   = "Invalid session."                                                                                                // verified
	msgConnExists       = "Connection already exists."                                                                                      // verified
	msgConnNotExist     = "Connection does not exist."                                                                                      // verified
	msgVolDestroyed     = "Volume has been destroyed."                                                                                      // verified (DELETE /connections)
	msgVolDeleted       = "Volume has been deleted."                                                                                        // verified (PATCH destroyed twice)
	msgEradicateOff     = "Eradication is disabled."                                                                                        // verified
	msgNoSuchSnap       = "No such volume or snapshot."                                                                                     // verified
	msgSnapDestroyed    = "Volume snapshot has been destroyed. It can be recovered by purevol recover and eradicated by purevol eradicate." // verified
	msgHostExists       = "Host already exists."                                                                                            // verified
	msgSize             = "Volume size must be between 1 MB and 4 PB"                                                                       // verified (PHIF comment)
	msgNoAttribute      = "No attribute specified."                                                                                         // verified
	msgVolNotExist      = "Volume does not exist."
	msgVolExists        = "Volume already exists."
	msgHostNotExist     = "Host does not exist."
	msgHGNotExist       = "Host group does not exist."
	msgPGNotExist       = "Protection group does not exist."
	msgInitiatorInUse   = "Initiator is already in use by another host."
	msgVolConnected     = "Volume cannot be destroyed while it has host connections."
	msgNotDestroyed     = "Volume must be destroyed before it can be eradicated."
	msgSnapNotDestroyed = "Volume snapshot must be destroyed before it can be eradicated."
	msgSnapExists       = "Volume snapshot already exists."
	msgBadCredentials   = "Invalid credentials."
	msgHostConnected    = "Host cannot be deleted due to existing connections."
	msgPodNotExist      = "Pod does not exist."
	msgVGNotExist       = "Volume group does not exist."
	msgNVMeLUN          = "A LUN cannot be specified for an NVMe host or host group."
)

const (
	minSize = 1 << 20
	maxSize = 4 << 50
)

var nameRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

func checkName(kind, n string) *Error {
	if !nameRe.MatchString(n) || strings.Trim(n, "0123456789") == "" {
		return bad(fmt.Sprintf("Invalid %s name. Names are 1-63 characters: letters, digits and '-', beginning and ending with a letter or digit.", kind), n)
	}
	return nil
}

func (a *Array) now() time.Time { return a.Now() }

// nextSerial forms a serial the way real arrays do: the first 16 hex digits of the array id
// and an 8-digit counter, upper case.
func (a *Array) nextSerial() string {
	a.counter++
	return strings.ToUpper(strings.ReplaceAll(a.ID, "-", "")[:16]) + fmt.Sprintf("%08X", a.counter)
}

// AddToken lets token log in as user.
func (a *Array) AddToken(token, user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Tokens[token] = user
}

// ExpireSessions ends every session, as the array does when a session times out.
func (a *Array) ExpireSessions() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions = map[string]session{}
}

// Inject queues faults answered before any real work.
func (a *Array) Inject(f Fault) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults = append(a.faults, f)
}

// ClearFaults drops the faults not yet answered.
func (a *Array) ClearFaults() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults = nil
}

// Requests counts authenticated API requests served (faults included).
func (a *Array) Requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

// CreateVolume creates an empty volume.
func (a *Array) CreateVolume(name string, size int64) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, err := a.createVolume(name, size, nil)
	if err != nil {
		return "", err
	}
	return v.serial, nil
}

func (a *Array) createVolume(name string, size int64, src *ref) (*volume, *Error) {
	if e := a.checkVolumeName(name); e != nil {
		return nil, e
	}
	if _, ok := a.volumes[name]; ok {
		return nil, bad(msgVolExists, name)
	}
	if size < minSize || size > maxSize {
		return nil, bad(msgSize, name)
	}
	v := &volume{id: uuid.NewString(), name: name, serial: a.nextSerial(), size: size, created: a.now(), source: src}
	if err := a.Data.Create(v.serial, size); err != nil {
		return nil, &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: name}
	}
	a.putVolume(v)
	a.joinDefaultProtection(v)
	return v, nil
}

// SnapshotVolumes snapshots volumes with one suffix ("" = the next number).
func (a *Array) SnapshotVolumes(suffix string, vols ...string) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	snaps, err := a.snapshotVolumes(vols, suffix, "")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range snaps {
		out = append(out, s.name)
	}
	return out, nil
}

func (a *Array) snapshotVolumes(vols []string, suffix, pg string) ([]*snapshot, *Error) {
	var srcs []*volume
	for _, n := range vols {
		v, e := a.liveVolume(n)
		if e != nil {
			return nil, e
		}
		srcs = append(srcs, v)
	}
	var out []*snapshot
	at := a.now() // one point in time for all of them
	for _, v := range srcs {
		sfx := suffix
		if sfx == "" {
			a.snapSeq[v.name]++
			sfx = fmt.Sprint(a.snapSeq[v.name])
		} else if e := checkName("suffix", sfx); e != nil {
			return nil, e
		}
		name := v.name + "." + sfx
		if pg != "" {
			name = pg + "." + withoutPod(v.name)
		}
		if _, ok := a.snapshots[name]; ok {
			return nil, bad(msgSnapExists, name)
		}
		s := &snapshot{id: uuid.NewString(), name: name, serial: a.nextSerial(), suffix: sfx, size: v.size, created: at,
			source: ref{name: v.name, id: v.id}}
		if pg != "" {
			s.pgsnap, s.suffix = pg, pg[strings.IndexByte(pg, '.')+1:]
		}
		if err := a.Data.Clone(s.serial, v.serial, v.size); err != nil {
			return nil, &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: name}
		}
		a.putSnapshot(s)
		out = append(out, s)
	}
	return out, nil
}

func (a *Array) liveVolume(name string) (*volume, *Error) {
	v, ok := a.volumes[name]
	if !ok {
		return nil, bad(msgVolNotExist, name)
	}
	if !v.destroyed.IsZero() {
		return nil, bad(msgVolDestroyed, name)
	}
	return v, nil
}

// CreateProtectionGroup makes a group of volumes.
func (a *Array) CreateProtectionGroup(name string, vols ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := splitQual(name)
	if e := checkName("protection group", q.leaf); e != nil || q.vgroup != "" {
		return bad("Invalid protection group name.", name)
	}
	if q.pod != "" && a.pods[q.pod] == nil {
		return bad(msgPodNotExist, q.pod)
	}
	if _, ok := a.pgroups[name]; ok {
		return bad("Protection group already exists.", name)
	}
	for _, v := range vols {
		if _, e := a.liveVolume(v); e != nil {
			return e
		}
		if splitQual(v).pod != q.pod { // a group in a pod protects only that pod's volumes
			return bad("Volume is not in the protection group's pod.", v)
		}
	}
	a.putPGroup(&pgroup{id: uuid.NewString(), name: name, volumes: append([]string(nil), vols...)})
	return nil
}

// SnapshotProtectionGroup takes a group snapshot PG.SUFFIX with member snapshots
// PG.SUFFIX.VOL, all at one point in time.
func (a *Array) SnapshotProtectionGroup(name, suffix string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, e := a.snapshotPG(name, suffix)
	if e != nil {
		return "", e
	}
	return s.name, nil
}

func (a *Array) snapshotPG(name, suffix string) (*pgsnap, *Error) {
	g, ok := a.pgroups[name]
	if !ok {
		return nil, bad(msgPGNotExist, name)
	}
	if suffix == "" {
		a.snapSeq["pg:"+name]++
		suffix = fmt.Sprint(a.snapSeq["pg:"+name])
	} else if e := checkName("suffix", suffix); e != nil {
		return nil, e
	}
	full := name + "." + suffix
	if _, ok := a.pgsnaps[full]; ok {
		return nil, bad("Protection group snapshot already exists.", full)
	}
	if _, e := a.snapshotVolumes(g.volumes, suffix, full); e != nil {
		return nil, e
	}
	s := &pgsnap{name: full, suffix: suffix, created: a.snapshots[full+"."+withoutPod(g.volumes[0])].created, source: name}
	a.putPGSnap(s)
	return s, nil
}

// CreateHost registers a host with its initiators.
func (a *Array) CreateHost(name string, iqns, nqns, wwns []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return errOrNil(a.createHost(name, iqns, nqns, wwns))
}

func errOrNil(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}

func (a *Array) createHost(name string, iqns, nqns, wwns []string) *Error {
	if e := checkName("host", name); e != nil {
		return e
	}
	if _, ok := a.hosts[name]; ok {
		return bad(msgHostExists, name)
	}
	for i, w := range wwns {
		wwns[i] = strings.ToUpper(strings.NewReplacer(":", "", "-", "").Replace(w))
	}
	for _, h := range a.hosts {
		if h.remote || !h.destroyed.IsZero() {
			continue // another array's or realm's, or going: its initiators may be used here
		}
		for _, pair := range [][2][]string{{h.iqns, iqns}, {h.nqns, nqns}, {h.wwns, wwns}} {
			for _, x := range pair[0] {
				for _, y := range pair[1] {
					if strings.EqualFold(x, y) {
						return bad(msgInitiatorInUse, y)
					}
				}
			}
		}
	}
	a.hosts[name] = &host{name: name, iqns: orEmpty(iqns), nqns: orEmpty(nqns), wwns: orEmpty(wwns)}
	return nil
}

func orEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return append([]string(nil), l...)
}

// AddRemoteHost lists a host of another array or realm (is_local false); its initiators may
// also be on a host of this array.
func (a *Array) AddRemoteHost(name string, iqns, nqns, wwns []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.createHost(name, iqns, nqns, wwns); e != nil {
		return e
	}
	a.hosts[name].remote = true
	return nil
}

// DestroyHost destroys a host with its realm: it stays listed, destroyed, for the
// eradication delay.
func (a *Array) DestroyHost(name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, ok := a.hosts[name]
	if !ok {
		return bad(msgHostNotExist, name)
	}
	h.destroyed = a.now()
	return nil
}

// SetPreferredArrays sets the arrays (by name) a host prefers for stretched pods.
func (a *Array) SetPreferredArrays(host string, arrays ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, ok := a.hosts[host]
	if !ok {
		return bad(msgHostNotExist, host)
	}
	h.preferred = append([]string(nil), arrays...)
	return nil
}

// usable: a host this array can connect volumes to.
func (h *host) usable() bool { return h != nil && !h.remote && h.destroyed.IsZero() }

// CreateHostGroup makes a host group of existing hosts.
func (a *Array) CreateHostGroup(name string, hosts ...string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := checkName("host group", name); e != nil {
		return e
	}
	if _, ok := a.hostGroups[name]; ok {
		return bad("Host group already exists.", name)
	}
	for _, h := range hosts {
		if _, ok := a.hosts[h]; !ok {
			return bad(msgHostNotExist, h)
		}
	}
	a.hostGroups[name] = &hostGroup{name: name}
	for _, h := range hosts {
		a.hosts[h].group = name
	}
	return nil
}

// Serial returns a volume's or snapshot's serial ("" when there is none).
func (a *Array) Serial(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.volumes[name]; ok {
		return v.serial
	}
	if s, ok := a.snapshots[name]; ok {
		return s.serial
	}
	return ""
}

// VolumeNames lists volume names (live and destroyed), sorted.
func (a *Array) VolumeNames() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for n := range a.volumes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// membersOf returns the hosts of a group.
func (a *Array) membersOf(group string) []*host {
	var out []*host
	for _, h := range a.hosts {
		if h.group == group {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// hostsOf are the hosts a connection reaches.
func (a *Array) hostsOf(c *connection) []*host {
	if c.host != "" {
		return []*host{a.hosts[c.host]}
	}
	return a.membersOf(c.hostGroup)
}

// usedLUNs are the numbers already visible to any of the hosts.
func (a *Array) usedLUNs(hs []*host) map[int]bool {
	used := map[int]bool{}
	for _, c := range a.connections {
		for _, ch := range a.hostsOf(c) {
			for _, h := range hs {
				if ch == h {
					used[c.lun] = true
				}
			}
		}
	}
	return used
}

// assignLUN numbers a new connection: private connections count up from 1, shared (host
// group) ones down from 254 and then up from 255 (Pure's ConnectionPost rules).
func assignLUN(used map[int]bool, shared bool) int {
	if shared {
		for n := 254; n >= 1; n-- {
			if !used[n] {
				return n
			}
		}
		for n := 255; n <= 4095; n++ {
			if !used[n] {
				return n
			}
		}
		return 0
	}
	for n := 1; n <= 4095; n++ {
		if !used[n] {
			return n
		}
	}
	return 0
}

func (a *Array) volumeByID(id string) *volume {
	for _, v := range a.volumes {
		if v.id == id {
			return v
		}
	}
	return nil
}

func (a *Array) connectionCount(v *volume) int {
	n := 0
	for _, c := range a.connections {
		if c.volume == v.id {
			n += len(a.hostsOf(c))
		}
	}
	return n
}

// timeRemaining is what is left of an eradication delay, in ms.
func (a *Array) timeRemaining(destroyed time.Time, delay time.Duration) *int64 {
	if destroyed.IsZero() {
		return nil
	}
	ms := max(delay-a.now().Sub(destroyed), 0).Milliseconds()
	return &ms
}

// reap eradicates what has outlived the eradication delay.
func (a *Array) reap() {
	now := a.now()
	for _, n := range slices.Sorted(maps.Keys(a.volumes)) {
		if v := a.volumes[n]; !v.destroyed.IsZero() && now.Sub(v.destroyed) >= a.volumeDelay(v) {
			a.Data.Remove(v.serial)
			a.dropVolume(n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(a.snapshots)) {
		if s := a.snapshots[n]; !s.destroyed.IsZero() && now.Sub(s.destroyed) >= a.snapshotDelay(s) {
			a.Data.Remove(s.serial)
			a.dropSnapshot(s)
		}
	}
	for n, h := range a.hosts {
		if !h.destroyed.IsZero() && now.Sub(h.destroyed) >= a.EradicationDelay {
			delete(a.hosts, n)
		}
	}
}

// ReplicateProtectionGroupSnapshot receives protection-group snapshot name of array src, as
// asynchronous replication does: on this array it is "SRC:PG.SUFFIX" with member snapshots
// "SRC:PG.SUFFIX.VOL" (SRC the source array's name), their source the volume on the source
// array ("SRC:VOL"), with serials of this array. The bytes are copied when both arrays keep
// them in files.
func (a *Array) ReplicateProtectionGroupSnapshot(src *Array, name string) (string, error) {
	type member struct {
		name, volName, volID, serial string
		size                         int64
		created                      time.Time
	}
	src.mu.Lock()
	ps, ok := src.pgsnaps[name]
	var members []member
	if ok {
		for _, n := range slices.Sorted(maps.Keys(src.snapshots)) {
			if s := src.snapshots[n]; s.pgsnap == name && s.destroyed.IsZero() {
				members = append(members, member{s.name, s.source.name, s.source.id, s.serial, s.size, s.created})
			}
		}
	}
	var pg pgsnap
	if ok {
		pg = *ps
	}
	srcName, srcData := src.Name, src.Data
	src.mu.Unlock()
	if !ok {
		return "", bad("Protection group snapshot does not exist.", name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	full := srcName + ":" + pg.name
	if _, ok := a.pgsnaps[full]; ok {
		return "", bad("Protection group snapshot already exists.", full)
	}
	for _, m := range members {
		s := &snapshot{id: uuid.NewString(), name: srcName + ":" + m.name, serial: a.nextSerial(), suffix: pg.suffix, size: m.size,
			created: m.created, source: ref{name: srcName + ":" + withoutPod(m.volName), id: m.volID}, pgsnap: full}
		if err := copyBetween(a.Data, s.serial, srcData, m.serial, m.size); err != nil {
			return "", &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: s.name}
		}
		a.snapshots[s.name] = s
	}
	a.pgsnaps[full] = &pgsnap{name: full, suffix: pg.suffix, created: pg.created, source: srcName + ":" + pg.source}
	return full, nil
}
