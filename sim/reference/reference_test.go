package reference

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestSubsetsAreCurrent re-extracts every committed subset from the full reference files and
// fails when they differ, so the subsets can never drift from the real definitions.
func TestSubsetsAreCurrent(t *testing.T) {
	dir := SharedDir()
	if dir == "" {
		t.Skip("SKIP: full reference files not found (set PVESNAP_SHARED_REFERENCE); the committed subsets are used as they are")
	}
	for _, v := range PVEVersions {
		fresh, err := ExtractPVE(filepath.Join(dir, "pve-api-schema-"+v+".json"))
		if err != nil {
			t.Fatal(err)
		}
		have, err := Embedded("pve-schema-" + v + ".json.gz")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, have) {
			t.Errorf("pve-schema-%s.json.gz is stale: run go run ./sim/reference/gen", v)
		}
	}
	for _, v := range FAVersions {
		fresh, err := ExtractFA(filepath.Join(dir, "purity-fa-rest-"+v+".oas3.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		have, err := Embedded("fa-spec-" + v + ".json.gz")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, have) {
			t.Errorf("fa-spec-%s.json.gz is stale: run go run ./sim/reference/gen", v)
		}
	}
}

func TestSubsetsCoverTheirPaths(t *testing.T) {
	for _, v := range PVEVersions {
		s, err := PVE(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range PVEPaths {
			if _, ok := s[p]; !ok {
				t.Errorf("%s: %s missing from the subset", v, p)
			}
		}
	}
	for _, v := range FAVersions {
		s, err := FA(v)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range FAPaths {
			if _, ok := s["/"+p]; !ok {
				t.Errorf("FA %s: /%s missing from the subset", v, p)
			}
		}
	}
}

func TestValidatorCatchesMismatches(t *testing.T) {
	schema := map[string]any{"type": "object", "properties": map[string]any{
		"pid":    map[string]any{"type": "integer"},
		"status": map[string]any{"type": "string", "enum": []any{"running", "stopped"}},
		"net[n]": map[string]any{"type": "string", "optional": 1},
		"extra":  map[string]any{"type": "boolean", "optional": 1},
	}}
	good := map[string]any{"pid": float64(12), "status": "running", "net0": "virtio", "extra": float64(1)}
	if errs := Validate(PVEDialect, schema, good); len(errs) != 0 {
		t.Fatalf("good value rejected: %v", errs)
	}
	bad := map[string]any{"pid": "12", "status": "sleeping", "unknown": 1, "extra": float64(2)}
	errs := Validate(PVEDialect, schema, bad)
	if len(errs) != 4 {
		t.Fatalf("want 4 errors (string pid, enum, unknown property, boolean 2), got %v", errs)
	}
}

// The request and answer checks catch what a wrong client or simulator would do.
func TestFAChecksCatchMismatches(t *testing.T) {
	spec, err := FA("2.4")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		"unknown path":       CheckFARequest(spec, "GET", "/volume", nil, nil, nil),
		"param of 2.9+":      CheckFARequest(spec, "GET", "/connections", map[string][]string{"volume_ids": {"x"}}, nil, nil),
		"bool param":         CheckFARequest(spec, "POST", "/volumes", map[string][]string{"names": {"a"}, "overwrite": {"yes"}}, nil, nil),
		"body field":         CheckFARequest(spec, "PATCH", "/volumes", map[string][]string{"names": {"a"}}, nil, []byte(`{"source":{"name":"s"}}`)),
		"nsid before 2.27":   CheckFAResponse(spec, "GET", "/connections", 200, []byte(`{"items":[{"nsid":1}]}`)),
		"string for integer": CheckFAResponse(spec, "GET", "/volumes", 200, []byte(`{"items":[{"provisioned":"1"}]}`)),
		"error shape":        CheckFAResponse(spec, "GET", "/volumes", 400, []byte(`{"error":"x"}`)),
	}
	for name, errs := range cases {
		if len(errs) == 0 {
			t.Errorf("%s: not caught", name)
		}
	}
	if errs := CheckFARequest(spec, "POST", "/volumes", map[string][]string{"names": {"a"}, "overwrite": {"true"}}, nil, []byte(`{"source":{"name":"s"}}`)); len(errs) > 0 {
		t.Errorf("a valid request refused: %v", errs)
	}
}
