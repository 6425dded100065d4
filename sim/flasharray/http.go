package flasharray

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// ServeHTTP serves the REST API: /api/api_version, and /api/<2.x>/… for the offered versions.
func (a *Array) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := r.Header.Get("X-Request-ID")
	if rid == "" {
		rid = uuid.NewString()
	}
	w.Header().Set("X-Request-ID", rid)
	if r.URL.Path == "/api/api_version" && r.Method == http.MethodGet {
		writeJSON(w, 200, obj{"version": a.Offered})
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		writeError(w, &Error{Status: 404, Message: "Not found."})
		return
	}
	ver, path, _ := strings.Cut(rest, "/")
	vw, ok := parseView(ver)
	if !ok || vw.major != 2 || !slices.Contains(a.Offered, ver) {
		writeError(w, &Error{Status: 404, Message: "Not found."})
		return
	}
	path = "/" + path
	switch path {
	case "/login":
		a.login(w, r)
		return
	case "/logout":
		a.mu.Lock()
		delete(a.sessions, r.Header.Get("x-auth-token"))
		a.mu.Unlock()
		w.WriteHeader(200)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[r.Header.Get("x-auth-token")]
	if !ok || (!s.expires.IsZero() && a.now().After(s.expires)) {
		delete(a.sessions, r.Header.Get("x-auth-token"))
		writeError(w, &Error{Status: 401, Message: msgInvalidSession})
		return
	}
	a.requests++
	if a.rateLimited(w, r.Header.Get("x-auth-token")) || a.fault(w, r.Method+" "+path) {
		return
	}
	a.reap()
	var body obj
	if r.Body != nil && (r.Method == http.MethodPost || r.Method == http.MethodPatch) {
		raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &body); err != nil {
				writeError(w, bad("Invalid JSON body.", ""))
				return
			}
		}
	}
	q := r.URL.Query()
	rq := &request{a: a, vw: vw, q: q, body: body, w: w}
	h, ok := a.routes()[r.Method+" "+path]
	if !ok {
		writeError(w, &Error{Status: 404, Message: "Not found."})
		return
	}
	if e := h(rq); e != nil {
		writeError(w, e)
	}
}

// fault answers the first queued fault that applies to route, if any (the lock is held).
func (a *Array) fault(w http.ResponseWriter, route string) bool {
	for i := range a.faults {
		f := a.faults[i]
		if f.Route != "" && f.Route != route {
			continue
		}
		if a.faults[i].Count--; a.faults[i].Count <= 0 {
			a.faults = append(a.faults[:i], a.faults[i+1:]...)
		}
		a.writeFault(w, f)
		return true
	}
	return false
}

func (a *Array) writeFault(w http.ResponseWriter, f Fault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	switch f.Status {
	case 429:
		// The API gateway answers rate limits in its own shape.
		writeJSON(w, 429, obj{"message": "API rate limit exceeded"})
	case 503:
		writeError(w, &Error{Status: 503, Message: "Service unavailable."})
	case 400:
		writeError(w, &Error{Status: 400, Message: f.Message})
	default:
		writeError(w, &Error{Status: f.Status, Message: "Server is busy. Please try again later."})
	}
}

func (a *Array) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, &Error{Status: 404, Message: "Not found."})
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Only faults bound to the login itself answer it: an overloaded array or gateway
	// refuses logins as it refuses any call.
	for _, f := range a.faults {
		if f.Route == "POST /login" {
			a.fault(w, "POST /login")
			return
		}
	}
	user, ok := a.Tokens[r.Header.Get("api-token")]
	if !ok || r.Header.Get("api-token") == "" {
		writeError(w, &Error{Status: 401, Message: msgBadCredentials})
		return
	}
	tok := uuid.NewString()
	s := session{user: user}
	if a.SessionTTL > 0 {
		s.expires = a.now().Add(a.SessionTTL)
	}
	a.sessions[tok] = s
	w.Header().Set("x-auth-token", tok)
	writeJSON(w, 200, obj{"items": []obj{{"username": user}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, e *Error) {
	var ctx any
	if e.Context != "" {
		ctx = e.Context
	}
	writeJSON(w, e.Status, obj{"errors": []obj{{"context": ctx, "message": e.Message}}})
}

// request is one API call being served (the array's lock is held).
type request struct {
	a    *Array
	vw   view
	q    url.Values
	body obj
	w    http.ResponseWriter
}

func (rq *request) list(name string) []string {
	v := rq.q.Get(name)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func (rq *request) flag(name string) bool { return strings.EqualFold(rq.q.Get(name), "true") }

// destroyedFilter applies the tri-state destroyed parameter.
func (rq *request) destroyedOK(destroyed bool) bool {
	switch strings.ToLower(rq.q.Get("destroyed")) {
	case "true":
		return destroyed
	case "false":
		return !destroyed
	}
	return true
}

// items answers a POST or PATCH.
func (rq *request) items(items []obj) *Error {
	if items == nil {
		items = []obj{}
	}
	writeJSON(rq.w, 200, obj{"items": items})
	return nil
}

func (rq *request) ok() *Error {
	rq.w.WriteHeader(200)
	return nil
}

// page answers a GET collection: filter, sort, then a page by offset or continuation token.
func (rq *request) page(items []obj) *Error {
	if f := rq.q.Get("filter"); f != "" {
		expr, err := parseFilter(f)
		if err != nil {
			return bad("Invalid filter: "+f, "")
		}
		var kept []obj
		for _, it := range items {
			if expr.eval(it) {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	srt := rq.q.Get("sort")
	if srt != "" {
		keys := strings.Split(srt, ",")
		for i := len(keys) - 1; i >= 0; i-- { // stable sorts, last key first
			sortObjs(items, keys[i])
		}
	}
	sig := rq.signature()
	off := 0
	if t := rq.q.Get("continuation_token"); t != "" {
		raw, err := base64.RawURLEncoding.DecodeString(t)
		s, n, ok := strings.Cut(string(raw), ":")
		if err != nil || !ok || s != sig {
			return bad("Invalid continuation token.", "")
		}
		off, _ = strconv.Atoi(n)
	} else if o := rq.q.Get("offset"); o != "" {
		n, err := strconv.Atoi(o)
		if err != nil || n < 0 {
			return bad("Invalid offset.", "")
		}
		off = n
	}
	limit := rq.a.MaxLimit
	if l := rq.q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return bad("Invalid limit.", "")
		}
		limit = min(n, rq.a.MaxLimit)
	}
	total := len(items)
	off = min(off, total)
	end := min(off+limit, total)
	pg := items[off:end]
	if pg == nil {
		pg = []obj{}
	}
	env := obj{"items": pg, "more_items_remaining": end < total, "total_item_count": nil, "continuation_token": nil}
	if rq.flag("total_item_count") {
		env["total_item_count"] = total
	}
	if end < total && srt == "" {
		tok := base64.RawURLEncoding.EncodeToString([]byte(sig + ":" + strconv.Itoa(end)))
		env["continuation_token"] = tok
		rq.w.Header().Set("x-next-token", tok)
	}
	writeJSON(rq.w, 200, env)
	return nil
}

// signature ties a continuation token to the query it continues.
func (rq *request) signature() string {
	var keys []string
	for k := range rq.q {
		if k != "continuation_token" && k != "limit" && k != "offset" {
			keys = append(keys, k+"="+strings.Join(rq.q[k], ","))
		}
	}
	sort.Strings(keys)
	h := sha256.Sum256([]byte(strings.Join(keys, "&")))
	return hex.EncodeToString(h[:6])
}

type handler func(*request) *Error

func (a *Array) routes() map[string]handler {
	return map[string]handler{
		"GET /arrays":                       func(rq *request) *Error { return rq.page([]obj{a.arrayObj(rq.vw)}) },
		"GET /pods":                         getPods,
		"GET /volume-groups":                getVolumeGroups,
		"GET /volumes":                      getVolumes,
		"POST /volumes":                     postVolumes,
		"PATCH /volumes":                    patchVolumes,
		"DELETE /volumes":                   deleteVolumes,
		"GET /volume-snapshots":             getSnapshots,
		"POST /volume-snapshots":            postSnapshots,
		"PATCH /volume-snapshots":           patchSnapshots,
		"DELETE /volume-snapshots":          deleteSnapshots,
		"GET /protection-groups":            getPGroups,
		"GET /protection-groups/volumes":    getPGroupVolumes,
		"GET /volumes/protection-groups":    getPGroupVolumes,
		"GET /protection-group-snapshots":   getPGSnaps,
		"POST /protection-group-snapshots":  postPGSnaps,
		"PATCH /protection-group-snapshots": patchPGSnaps,
		"GET /hosts":                        getHosts,
		"POST /hosts":                       postHosts,
		"DELETE /hosts":                     deleteHosts,
		"GET /host-groups":                  getHostGroups,
		"GET /host-groups/hosts":            getHostGroupMembers,
		"GET /hosts/host-groups":            getHostGroupMembers,
		"GET /connections":                  getConnections,
		"POST /connections":                 postConnections,
		"DELETE /connections":               deleteConnections,
	}
}

// ---- volumes

func getVolumes(rq *request) *Error {
	a := rq.a
	var out []obj
	if names := rq.list("names"); names != nil {
		for _, n := range names {
			v, ok := a.volumes[n]
			if !ok || !rq.destroyedOK(!v.destroyed.IsZero()) {
				return bad(msgVolNotExist, n)
			}
			out = append(out, a.volumeObj(v, rq.vw))
		}
		return rq.page(out)
	}
	for _, n := range slices.Sorted(maps.Keys(a.volumes)) {
		if v := a.volumes[n]; rq.destroyedOK(!v.destroyed.IsZero()) {
			out = append(out, a.volumeObj(v, rq.vw))
		}
	}
	return rq.page(out)
}

func postVolumes(rq *request) *Error {
	a := rq.a
	names := rq.list("names")
	if len(names) == 0 {
		return bad("Missing names.", "")
	}
	var src *ref
	var srcSerial string
	var srcSize int64
	if s, ok := rq.body["source"].(map[string]any); ok {
		sn, _ := s["name"].(string)
		sid, _ := s["id"].(string)
		switch {
		case a.volumes[sn] != nil && a.volumes[sn].destroyed.IsZero():
			v := a.volumes[sn]
			src, srcSerial, srcSize = &ref{v.name, v.id}, v.serial, v.size
		case a.snapshots[sn] != nil && a.snapshots[sn].destroyed.IsZero():
			s := a.snapshots[sn]
			src, srcSerial, srcSize = &ref{s.source.name, s.source.id}, s.serial, s.size
		case sid != "" && a.volumeByID(sid) != nil:
			v := a.volumeByID(sid)
			src, srcSerial, srcSize = &ref{v.name, v.id}, v.serial, v.size
		default:
			return bad(msgNoSuchSnap, sn)
		}
	}
	withDefault := true
	if v := rq.q.Get("with_default_protection"); v != "" {
		if !rq.vw.atLeast("2.16") {
			return bad("Invalid query parameter: with_default_protection.", "")
		}
		if rq.flag("overwrite") {
			return bad("with_default_protection cannot be used when overwrite is true.", "")
		}
		withDefault = !strings.EqualFold(v, "false")
	}
	if rq.flag("overwrite") && rq.q.Get("add_to_protection_group_names") != "" {
		return bad("add_to_protection_group_names cannot be used when overwrite is true.", "")
	}
	var out []obj
	for _, n := range names {
		if cur, exists := a.volumes[n]; exists {
			if src == nil || !rq.flag("overwrite") {
				return bad(msgVolExists, n)
			}
			if !cur.destroyed.IsZero() {
				return bad(msgVolDestroyed, n)
			}
			// Overwrite keeps the volume's identity (id, serial, connections) and replaces
			// its bytes and size.
			if err := a.Data.Clone(cur.serial, srcSerial, srcSize); err != nil {
				return &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: n}
			}
			cur.size, cur.source = srcSize, src
			out = append(out, a.volumeObj(cur, rq.vw))
			continue
		}
		size := int64(minSize)
		if src != nil {
			size = srcSize
		} else if p, ok := rq.body["provisioned"].(float64); ok {
			size = int64(p)
		}
		if e := a.checkVolumeName(n); e != nil {
			return e
		}
		if size < minSize || size > maxSize || size%512 != 0 {
			return bad(msgSize, n)
		}
		v := &volume{id: uuid.NewString(), name: n, serial: a.nextSerial(), size: size, created: a.now(), source: src}
		var err error
		if src != nil {
			err = a.Data.Clone(v.serial, srcSerial, size)
		} else {
			err = a.Data.Create(v.serial, size)
		}
		if err != nil {
			return &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: n}
		}
		a.putVolume(v)
		if withDefault {
			a.joinDefaultProtection(v)
		}
		for _, g := range rq.list("add_to_protection_group_names") {
			if pg, ok := a.pgroups[g]; ok && !slices.Contains(pg.volumes, n) {
				pg.volumes = append(pg.volumes, n)
			}
		}
		out = append(out, a.volumeObj(v, rq.vw))
	}
	return rq.items(out)
}

func patchVolumes(rq *request) *Error {
	a := rq.a
	names := rq.list("names")
	if len(names) == 0 {
		return bad("Missing names.", "")
	}
	d, hasD := rq.body["destroyed"].(bool)
	newName, hasName := rq.body["name"].(string)
	size, hasSize := rq.body["provisioned"].(float64)
	if !hasD && !hasName && !hasSize {
		return bad(msgNoAttribute, "")
	}
	var out []obj
	for _, n := range names {
		v, ok := a.volumes[n]
		if !ok {
			return bad(msgVolNotExist, n)
		}
		if hasD {
			switch {
			case d && !v.destroyed.IsZero():
				return bad(msgVolDeleted, n)
			case d && a.connectionsAnywhere(v) > 0:
				return bad(msgVolConnected, n)
			case d:
				v.destroyed = a.now()
			default:
				v.destroyed = timeZero
			}
		}
		if hasSize {
			s := int64(size)
			if s < minSize || s > maxSize || s%512 != 0 {
				return bad(msgSize, n)
			}
			if s < v.size && !rq.flag("truncate") {
				return bad("Implicit truncation not permitted.", n)
			}
			if err := a.Data.Resize(v.serial, s); err != nil {
				return &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: n}
			}
			v.size = s
		}
		if hasName && newName != n {
			if e := a.checkVolumeName(newName); e != nil {
				return e
			}
			if _, taken := a.volumes[newName]; taken {
				return bad(msgVolExists, newName)
			}
			a.dropVolume(n)
			v.name = newName
			a.putVolume(v)
		}
		out = append(out, a.volumeObj(v, rq.vw))
	}
	return rq.items(out)
}

func deleteVolumes(rq *request) *Error {
	a := rq.a
	for _, n := range rq.list("names") {
		v, ok := a.volumes[n]
		switch {
		case !ok:
			return bad(msgVolNotExist, n)
		case !a.manualEradication(n, ""):
			// Array-wide SafeMode, or a member of a ratcheted protection group (the message
			// for the latter is not verified on a real array).
			return bad(msgEradicateOff, n)
		case v.destroyed.IsZero():
			return bad(msgNotDestroyed, n)
		}
		a.Data.Remove(v.serial)
		a.dropVolume(n)
	}
	return rq.ok()
}

// ---- volume snapshots

func getSnapshots(rq *request) *Error {
	a := rq.a
	var out []obj
	if names := rq.list("names"); names != nil {
		for _, n := range names {
			s, ok := a.snapshots[n]
			if !ok || !rq.destroyedOK(!s.destroyed.IsZero()) {
				return bad(msgNoSuchSnap, n)
			}
			out = append(out, a.snapshotObj(s, rq.vw))
		}
		return rq.page(out)
	}
	sources := rq.list("source_names")
	for _, n := range sources {
		if _, ok := a.volumes[n]; !ok {
			return bad(msgVolNotExist, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(a.snapshots)) {
		s := a.snapshots[n]
		if !rq.destroyedOK(!s.destroyed.IsZero()) || (sources != nil && !slices.Contains(sources, s.source.name)) {
			continue
		}
		out = append(out, a.snapshotObj(s, rq.vw))
	}
	return rq.page(out)
}

func postSnapshots(rq *request) *Error {
	a := rq.a
	sources := rq.list("source_names")
	if len(sources) == 0 {
		return bad("Missing source_names.", "")
	}
	suffix, _ := rq.body["suffix"].(string)
	snaps, e := a.snapshotVolumes(sources, suffix, "")
	if e != nil {
		return e
	}
	var out []obj
	for _, s := range snaps {
		out = append(out, a.snapshotObj(s, rq.vw))
	}
	return rq.items(out)
}

func patchSnapshots(rq *request) *Error {
	a := rq.a
	d, hasD := rq.body["destroyed"].(bool)
	if !hasD {
		return bad(msgNoAttribute, "")
	}
	var out []obj
	for _, n := range rq.list("names") {
		s, ok := a.snapshots[n]
		switch {
		case !ok:
			return bad(msgNoSuchSnap, n)
		case d && !s.destroyed.IsZero():
			return bad(msgSnapDestroyed, n)
		case d:
			s.destroyed = a.now()
		default:
			s.destroyed = timeZero
		}
		out = append(out, a.snapshotObj(s, rq.vw))
	}
	return rq.items(out)
}

func deleteSnapshots(rq *request) *Error {
	a := rq.a
	for _, n := range rq.list("names") {
		s, ok := a.snapshots[n]
		switch {
		case !ok:
			return bad(msgNoSuchSnap, n)
		case a.SafeMode || (s.pgsnap != "" && !a.manualEradication("", s.pgsnap)):
			return bad(msgEradicateOff, n)
		case s.destroyed.IsZero():
			return bad(msgSnapNotDestroyed, n)
		}
		a.Data.Remove(s.serial)
		a.dropSnapshot(s)
	}
	return rq.ok()
}

// ---- protection groups

func getPGroups(rq *request) *Error {
	return named(rq, rq.a.pgroups, msgPGNotExist, nil, rq.a.pgroupObj)
}

func getPGroupVolumes(rq *request) *Error {
	a := rq.a
	groups, members := rq.list("group_names"), rq.list("member_names")
	var out []obj
	for _, n := range slices.Sorted(maps.Keys(a.pgroups)) {
		g := a.pgroups[n]
		if groups != nil && !slices.Contains(groups, n) {
			continue
		}
		for _, m := range g.volumes {
			v, ok := a.volumes[m]
			if !ok || (members != nil && !slices.Contains(members, m)) {
				continue
			}
			gr, mr := obj{"name": g.name}, obj{"name": v.name}
			if rq.vw.atLeast("2.26") { // 2.4 names members without ids; 2.26 has them
				gr["id"], mr["id"] = g.id, v.id
			}
			out = append(out, obj{"group": gr, "member": mr})
		}
	}
	return rq.page(out)
}

func getPGSnaps(rq *request) *Error {
	a := rq.a
	names, sources := rq.list("names"), rq.list("source_names")
	for _, n := range names {
		if _, ok := a.pgsnaps[n]; !ok {
			return bad("Protection group snapshot does not exist.", n)
		}
	}
	for _, n := range sources {
		if _, ok := a.pgroups[n]; !ok {
			return bad(msgPGNotExist, n)
		}
	}
	var out []obj
	for _, n := range slices.Sorted(maps.Keys(a.pgsnaps)) {
		s := a.pgsnaps[n]
		if (names != nil && !slices.Contains(names, n)) || (sources != nil && !slices.Contains(sources, s.source)) ||
			!rq.destroyedOK(!s.destroyed.IsZero()) {
			continue
		}
		out = append(out, a.pgsnapObj(s, rq.vw))
	}
	return rq.page(out)
}

func postPGSnaps(rq *request) *Error {
	a := rq.a
	suffix, _ := rq.body["suffix"].(string)
	var out []obj
	for _, g := range rq.list("source_names") {
		s, e := a.snapshotPG(g, suffix)
		if e != nil {
			return e
		}
		out = append(out, a.pgsnapObj(s, rq.vw))
	}
	return rq.items(out)
}

func patchPGSnaps(rq *request) *Error {
	a := rq.a
	d, hasD := rq.body["destroyed"].(bool)
	if !hasD {
		return bad(msgNoAttribute, "")
	}
	var out []obj
	for _, n := range rq.list("names") {
		s, ok := a.pgsnaps[n]
		if !ok {
			return bad("Protection group snapshot does not exist.", n)
		}
		t := timeZero
		if d {
			t = a.now()
		}
		s.destroyed = t
		for _, vs := range a.snapshots {
			if vs.pgsnap == n {
				vs.destroyed = t
			}
		}
		out = append(out, a.pgsnapObj(s, rq.vw))
	}
	return rq.items(out)
}

// ---- hosts

func getHosts(rq *request) *Error {
	// Versions without the field do not show destroyed hosts.
	shown := func(h *host) bool { return h.destroyed.IsZero() || rq.vw.atLeast(hostDestroyedSince) }
	return named(rq, rq.a.hosts, msgHostNotExist, shown, rq.a.hostObj)
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := []string{}
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func postHosts(rq *request) *Error {
	a := rq.a
	var out []obj
	for _, n := range rq.list("names") {
		if e := a.createHost(n, strList(rq.body["iqns"]), strList(rq.body["nqns"]), strList(rq.body["wwns"])); e != nil {
			return e
		}
		out = append(out, a.hostObj(a.hosts[n], rq.vw))
	}
	return rq.items(out)
}

func deleteHosts(rq *request) *Error {
	a := rq.a
	for _, n := range rq.list("names") {
		h, ok := a.hosts[n]
		if !ok {
			return bad(msgHostNotExist, n)
		}
		for _, c := range a.connections {
			if c.host == n {
				return bad(msgHostConnected, n)
			}
		}
		if h.group != "" {
			return bad("Host cannot be deleted while it is a member of a host group.", n)
		}
		delete(a.hosts, n)
	}
	return rq.ok()
}

func getHostGroups(rq *request) *Error {
	return named(rq, rq.a.hostGroups, msgHGNotExist, nil, rq.a.hostGroupObj)
}

func getHostGroupMembers(rq *request) *Error {
	a := rq.a
	groups, members := rq.list("group_names"), rq.list("member_names")
	var out []obj
	for _, n := range slices.Sorted(maps.Keys(a.hosts)) {
		h := a.hosts[n]
		if h.group == "" || (groups != nil && !slices.Contains(groups, h.group)) || (members != nil && !slices.Contains(members, n)) {
			continue
		}
		out = append(out, obj{"group": obj{"name": h.group}, "member": obj{"name": n}})
	}
	return rq.page(out)
}

// ---- connections

func (rq *request) target() (hostName, group string, e *Error) {
	hosts, groups := rq.list("host_names"), rq.list("host_group_names")
	switch {
	case len(hosts) == 1 && len(groups) == 0:
		if !rq.a.hosts[hosts[0]].usable() {
			return "", "", bad(msgHostNotExist, hosts[0])
		}
		return hosts[0], "", nil
	case len(groups) == 1 && len(hosts) == 0:
		if _, ok := rq.a.hostGroups[groups[0]]; !ok {
			return "", "", bad(msgHGNotExist, groups[0])
		}
		return "", groups[0], nil
	}
	return "", "", bad("Exactly one of host_names and host_group_names is required.", "")
}

func getConnections(rq *request) *Error {
	a := rq.a
	vols, hosts, groups := rq.list("volume_names"), rq.list("host_names"), rq.list("host_group_names")
	for _, n := range vols {
		if _, ok := a.volumes[n]; !ok {
			return bad(msgVolNotExist, n)
		}
	}
	var out []obj
	for _, c := range a.connections {
		v := a.volumeByID(c.volume)
		if vols != nil && !slices.Contains(vols, v.name) {
			continue
		}
		if groups != nil && !slices.Contains(groups, c.hostGroup) {
			continue
		}
		for _, o := range a.connectionObjs(c, rq.vw) {
			if hosts != nil && !slices.Contains(hosts, o["host"].(obj)["name"].(string)) {
				continue
			}
			out = append(out, o)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i]["volume"].(obj)["name"].(string) < out[j]["volume"].(obj)["name"].(string)
	})
	return rq.page(out)
}

func postConnections(rq *request) *Error {
	a := rq.a
	hostName, group, e := rq.target()
	if e != nil {
		return e
	}
	var out []obj
	for _, n := range rq.list("volume_names") {
		v, e := a.liveVolume(n)
		if e != nil {
			return e
		}
		c := &connection{volume: v.id, host: hostName, hostGroup: group}
		reach := a.hostsOf(c)
		for _, x := range a.connections {
			if x.volume != v.id {
				continue
			}
			for _, h := range a.hostsOf(x) {
				for _, r := range reach {
					if h == r {
						return bad(msgConnExists, n)
					}
				}
			}
		}
		for _, h := range reach {
			c.nvme = c.nvme || (len(h.nqns) > 0 && len(h.iqns) == 0 && len(h.wwns) == 0)
		}
		if _, ok := rq.body["lun"]; ok && c.nvme {
			return bad(msgNVMeLUN, n) // "Should not be used together with an NVMe host or host group."
		}
		if l, ok := rq.body["lun"].(float64); ok {
			c.lun = int(l)
			if c.lun < 1 || c.lun > 4095 || a.usedLUNs(reach)[c.lun] {
				return bad("LUN is already in use or out of range.", n)
			}
		} else if c.lun = assignLUN(a.usedLUNs(reach), group != ""); c.lun == 0 {
			return bad("LUN limit reached.", n)
		}
		for i, h := range reach {
			if err := a.Data.Connect(v.serial, h.name, c.lun, v.size); err != nil {
				for _, back := range reach[:i] {
					a.Data.Disconnect(v.serial, back.name, c.lun)
				}
				return &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: n}
			}
		}
		a.connections = append(a.connections, c)
		out = append(out, a.connectionObjs(c, rq.vw)...)
	}
	return rq.items(out)
}

func deleteConnections(rq *request) *Error {
	a := rq.a
	hostName, group, e := rq.target()
	if e != nil {
		return e
	}
	for _, n := range rq.list("volume_names") {
		v, ok := a.volumes[n]
		if !ok {
			return bad(msgVolNotExist, n)
		}
		if !v.destroyed.IsZero() {
			return bad(msgVolDestroyed, n)
		}
		found := -1
		for i, c := range a.connections {
			if c.volume == v.id && c.host == hostName && c.hostGroup == group {
				found = i
			}
		}
		if found < 0 {
			return bad(msgConnNotExist, n)
		}
		c := a.connections[found]
		for _, h := range a.hostsOf(c) {
			if err := a.Data.Disconnect(v.serial, h.name, c.lun); err != nil {
				return &Error{Status: 500, Message: "Data plane: " + err.Error(), Context: n}
			}
		}
		a.connections = append(a.connections[:found], a.connections[found+1:]...)
	}
	return rq.ok()
}

// String describes the array for logs.
func (a *Array) String() string { return fmt.Sprintf("FlashArray %s (%s)", a.Name, a.ID) }

// ---- pods and volume groups

func getPods(rq *request) *Error {
	return named(rq, rq.a.pods, msgPodNotExist, func(p *pod) bool { return rq.destroyedOK(!p.destroyed.IsZero()) }, rq.a.podObj)
}

func getVolumeGroups(rq *request) *Error {
	return named(rq, rq.a.vgroups, msgVGNotExist, nil, rq.a.vgroupObj)
}

// named answers a GET of a collection addressed by name: each name asked for must exist
// (else notExist), then the objects asked for (all when none), in name order, that keep
// allows.
func named[T any](rq *request, all map[string]T, notExist string, keep func(T) bool, render func(T, view) obj) *Error {
	names := rq.list("names")
	for _, n := range names {
		if _, ok := all[n]; !ok {
			return bad(notExist, n)
		}
	}
	var out []obj
	for _, n := range slices.Sorted(maps.Keys(all)) {
		if (names == nil || slices.Contains(names, n)) && (keep == nil || keep(all[n])) {
			out = append(out, render(all[n], rq.vw))
		}
	}
	return rq.page(out)
}
