package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pvesnap/pvesnap/sim/flasharray"
)

// run runs the CLI in-process and returns its stdout and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r, w, _ := os.Pipe()
	old := os.Stdout
	os.Stdout = w
	err := app().Run(append([]string{"pvesnap"}, args...))
	w.Close()
	os.Stdout = old
	out, _ := io.ReadAll(r)
	return string(out), err
}

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return exitFailure
	}
	return 0
}

func TestArraysCLI(t *testing.T) {
	dir := t.TempDir()
	pveDir, iscsi := filepath.Join(dir, "pve"), filepath.Join(dir, "iscsi")
	os.MkdirAll(iscsi, 0o755)
	os.WriteFile(filepath.Join(iscsi, "initiatorname.iscsi"), []byte("InitiatorName=iqn.1993-08.org.debian:01:cli\n"), 0o644)
	cfg := filepath.Join(dir, "pvesnap.yaml")
	os.WriteFile(cfg, []byte("node: pve1\npaths:\n  pve: "+pveDir+"\n  iscsi: "+iscsi+"\n  state: "+dir+"\n"), 0o644)

	fa := flasharray.New("fa-cli", nil)
	fa.CreateHost("cli-host", []string{"iqn.1993-08.org.debian:01:cli"}, nil, nil)
	srv, err := flasharray.Listen(fa, "127.0.0.1:0", filepath.Join(dir, "fa"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	out, err := run(t, "--config", cfg, "arrays", "add", "--endpoint", srv.URL, "--ca", srv.CAFile, "--token-file", srv.TokenFile, "fa1")
	if err != nil || !strings.Contains(out, "this node's volumes connect to host cli-host") || !strings.Contains(out, "array fa1 added") {
		t.Fatalf("add: %v\n%s", err, out)
	}
	// A token on the command line would be visible to every user in the process list.
	if _, err := run(t, "--config", cfg, "arrays", "add", "--endpoint", srv.URL, "--token", "x", "fa2"); exitCode(err) != exitUsage {
		t.Fatalf("--token accepted: %v", err)
	}
	bad := filepath.Join(dir, "bad-token")
	os.WriteFile(bad, []byte("not-the-token\n"), 0o600)
	if _, err := run(t, "--config", cfg, "arrays", "add", "--endpoint", srv.URL, "--ca", srv.CAFile, "--token-file", bad, "fa3"); err == nil ||
		!strings.Contains(err.Error(), "refused the API token") {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := run(t, "--config", cfg, "arrays", "add", "--endpoint", srv.URL, "--token-file", srv.TokenFile, "Bad/ID"); exitCode(err) != exitUsage {
		t.Fatalf("bad id: %v", err)
	}
	out, err = run(t, "--config", cfg, "arrays", "list", "--json")
	var list []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0]["array"] != "fa1" {
		t.Fatalf("list: %v %s", err, out)
	}
	tok, _ := os.ReadFile(srv.TokenFile)
	if strings.Contains(out, strings.TrimSpace(string(tok))) {
		t.Fatal("list shows the token")
	}
	if _, err := run(t, "--config", cfg, "arrays", "add", "fa4", "--endpoint", srv.URL); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "options go before") {
		t.Fatalf("option after the ID: %v", err)
	}
	if out, err = run(t, "--config", cfg, "arrays", "test", "fa1"); err != nil || !strings.Contains(out, "fa-cli") || !strings.Contains(out, "REST 2.44") {
		t.Fatalf("test: %v %s", err, out)
	}
	if _, err = run(t, "--config", cfg, "arrays", "remove", "fa1"); err != nil {
		t.Fatal(err)
	}
	if _, err = run(t, "--config", cfg, "arrays", "test", "fa1"); err == nil || !strings.Contains(err.Error(), "no such array") {
		t.Fatalf("test after remove: %v", err)
	}
}
