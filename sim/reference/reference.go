// Package reference holds the parts of the real API definitions that pvesnap's simulators and
// clients are held to: the Proxmox VE API schema (from pve-docs' apidata.js, PVE 8 and 9) and
// Pure's FlashArray REST OpenAPI specs (2.4 and 2.44). The subsets committed here are
// extracted from the full files by ./gen; a test re-extracts them when the full files are
// available and fails if they differ.
package reference

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed *.json.gz
var files embed.FS

// PVEVersions and FAVersions are the reference versions.
var (
	PVEVersions = []string{"pve8", "pve9"}
	FAVersions  = []string{"2.4", "2.26", "2.44"}
)

// PVEPaths are the PVE API paths pvesnap implements, intercepts or calls.
var PVEPaths = []string{
	"/version", "/cluster/status", "/cluster/resources", "/cluster/nextid", "/cluster/tasks", "/nodes",
	"/nodes/{node}/qemu", "/nodes/{node}/qemu/{vmid}", "/nodes/{node}/qemu/{vmid}/config",
	"/nodes/{node}/qemu/{vmid}/status/current", "/nodes/{node}/qemu/{vmid}/status/start",
	"/nodes/{node}/qemu/{vmid}/status/stop", "/nodes/{node}/qemu/{vmid}/resize", "/nodes/{node}/qemu/{vmid}/unlink",
	"/nodes/{node}/qemu/{vmid}/agent/fsfreeze-freeze", "/nodes/{node}/qemu/{vmid}/agent/fsfreeze-thaw",
	"/nodes/{node}/qemu/{vmid}/agent/ping",
	"/storage", "/storage/{storage}", "/nodes/{node}/storage", "/nodes/{node}/storage/{storage}/status",
	"/nodes/{node}/storage/{storage}/content", "/nodes/{node}/storage/{storage}/content/{volume}",
	"/nodes/{node}/tasks", "/nodes/{node}/tasks/{upid}", "/nodes/{node}/tasks/{upid}/status",
	"/nodes/{node}/tasks/{upid}/log", "/access/ticket", "/access/permissions",
}

// FAPaths are the FlashArray REST paths (after /api/2.X) pvesnap uses.
var FAPaths = []string{
	"login", "logout", "arrays", "volumes", "volume-snapshots", "protection-groups", "protection-groups/volumes",
	"protection-group-snapshots", "hosts", "host-groups", "hosts/host-groups", "host-groups/hosts", "connections",
	"volumes/protection-groups", "pods", "volume-groups",
}

// SharedDir finds the full reference files: $PVESNAP_SHARED_REFERENCE, else a "shared/reference"
// beside the repository or one of its parents ("" when none is found).
func SharedDir() string {
	if d := os.Getenv("PVESNAP_SHARED_REFERENCE"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for i := 0; i < 6; i++ {
		c := filepath.Join(dir, "shared", "reference")
		if _, err := os.Stat(filepath.Join(c, "pve-api-schema-pve9.json")); err == nil {
			return c
		}
		dir = filepath.Dir(dir)
	}
	return ""
}

// ExtractPVE reads a full apidata JSON and returns {path: {METHOD: info}} for PVEPaths.
func ExtractPVE(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var tree []map[string]any
	if err := json.Unmarshal(b, &tree); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	want := map[string]bool{}
	for _, p := range PVEPaths {
		want[p] = true
	}
	out := map[string]any{}
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		if p, _ := n["path"].(string); want[p] {
			out[p] = n["info"]
		}
		if ch, ok := n["children"].([]any); ok {
			for _, c := range ch {
				if m, ok := c.(map[string]any); ok {
					walk(m)
				}
			}
		}
	}
	for _, n := range tree {
		walk(n)
	}
	return json.MarshalIndent(out, "", " ")
}

// ExtractFA reads a full OpenAPI yaml and returns the operations of FAPaths with every $ref
// resolved and allOf merged: {path: {method: {params, body, response}}}, paths written
// without the version prefix ("/volumes").
func ExtractFA(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	paths, _ := doc["paths"].(map[string]any)
	r := &resolver{doc: doc}
	out := map[string]any{}
	for p, item := range paths {
		rel := ""
		switch {
		case p == "/api/api_version":
			rel = "/api_version"
		case strings.HasPrefix(p, "/api/2."):
			rest := p[len("/api/2."):]
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				rel = rest[i:]
			}
		}
		if rel == "" || !(rel == "/api_version" || slices.Contains(FAPaths, strings.TrimPrefix(rel, "/"))) {
			continue
		}
		ops := map[string]any{}
		for method, op := range item.(map[string]any) {
			o, ok := op.(map[string]any)
			if !ok {
				continue
			}
			var params []any
			if ps, ok := o["parameters"].([]any); ok {
				for _, p := range ps {
					pm := r.resolve(p, 0).(map[string]any)
					params = append(params, map[string]any{"name": pm["name"], "in": pm["in"], "required": pm["required"] == true,
						"schema": pm["schema"]})
				}
			}
			entry := map[string]any{"params": params}
			if rb, ok := o["requestBody"].(map[string]any); ok {
				entry["body"] = r.resolve(dig(rb, "content", "application/json", "schema"), 0)
			}
			if resp := dig(o, "responses", "200", "content", "application/json", "schema"); resp != nil {
				entry["response"] = r.resolve(resp, 0)
			}
			ops[method] = entry
		}
		out[rel] = ops
	}
	return json.Marshal(out)
}

func dig(m any, keys ...string) any {
	for _, k := range keys {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

type resolver struct{ doc map[string]any }

// resolve inlines $ref and merges allOf, dropping descriptions to keep the subset small.
func (r *resolver) resolve(v any, depth int) any {
	if depth > 30 {
		return map[string]any{}
	}
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok {
			parts := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
			return r.resolve(dig(r.doc, parts...), depth+1)
		}
		if all, ok := x["allOf"].([]any); ok {
			merged := map[string]any{"type": "object", "properties": map[string]any{}}
			var required []any
			for _, s := range all {
				rs, _ := r.resolve(s, depth+1).(map[string]any)
				for k, v := range rs {
					switch k {
					case "properties":
						for pk, pv := range v.(map[string]any) {
							merged["properties"].(map[string]any)[pk] = pv
						}
					case "required":
						required = append(required, v.([]any)...)
					default:
						merged[k] = v
					}
				}
			}
			if len(required) > 0 {
				merged["required"] = required
			}
			return merged
		}
		out := map[string]any{}
		for k, val := range x {
			if k == "description" || k == "example" || k == "title" || strings.HasPrefix(k, "x-") {
				continue
			}
			out[k] = r.resolve(val, depth+1)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.resolve(e, depth+1)
		}
		return out
	}
	return v
}

// WriteGz writes b gzip-compressed (deterministic: no name or time in the header).
func WriteGz(path string, b []byte) error {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func readGz(name string) ([]byte, error) {
	f, err := files.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// Embedded returns the committed subset file's content (uncompressed).
func Embedded(name string) ([]byte, error) { return readGz(name) }

// PVEMethod is one method of a PVE API path as apidata.js describes it.
type PVEMethod struct {
	Name        string         `json:"name"`
	Method      string         `json:"method"`
	Parameters  PVEParameters  `json:"parameters"`
	Returns     map[string]any `json:"returns"`
	Permissions map[string]any `json:"permissions"`
	ProxyTo     string         `json:"proxyto"`
	AllowToken  int            `json:"allowtoken"`
}

// PVEParameters are a method's parameters.
type PVEParameters struct {
	Properties map[string]map[string]any `json:"properties"`
}

// PVESchema maps path -> METHOD -> method.
type PVESchema map[string]map[string]*PVEMethod

// PVE loads the subset schema of a PVE version ("pve9").
func PVE(version string) (PVESchema, error) {
	b, err := readGz("pve-schema-" + version + ".json.gz")
	if err != nil {
		return nil, err
	}
	var s PVESchema
	return s, json.Unmarshal(b, &s)
}

// FAOp is one FlashArray REST operation with its schemas resolved.
type FAOp struct {
	Params   []FAParam      `json:"params"`
	Body     map[string]any `json:"body"`
	Response map[string]any `json:"response"`
}

// FAParam is a query or header parameter.
type FAParam struct {
	Name     string         `json:"name"`
	In       string         `json:"in"`
	Required bool           `json:"required"`
	Schema   map[string]any `json:"schema"`
}

// FASpec maps "/volumes" -> "get" -> operation.
type FASpec map[string]map[string]*FAOp

// FA loads the subset spec of a REST version ("2.44").
func FA(version string) (FASpec, error) {
	b, err := readGz("fa-spec-" + version + ".json.gz")
	if err != nil {
		return nil, err
	}
	var s FASpec
	return s, json.Unmarshal(b, &s)
}

// SortedKeys returns a map's keys sorted.
func SortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
