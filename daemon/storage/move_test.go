package storage

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A receiving task that died before its stream came leaves its socket; a later move removes
// it once it is older than any task waits, and leaves younger ones (a task may wait on it).
func TestRemoveStaleSockets(t *testing.T) {
	dir := t.TempDir()
	for name, age := range map[string]time.Duration{"old.sock": 2 * time.Hour, "new.sock": time.Minute, "other.txt": 2 * time.Hour} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, time.Now().Add(-age), time.Now().Add(-age))
	}
	removeStaleSockets(dir, time.Now().Add(-time.Hour))
	for name, want := range map[string]bool{"old.sock": false, "new.sock": true, "other.txt": true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s: present %v, want %v", name, err == nil, want)
		}
	}
}

// The socket of a ticket is named after its hash (not the ticket), short enough for a Unix
// socket's path, and different for different tickets.
func TestSocketPath(t *testing.T) {
	m := &Module{RunDir: "/run/pvesnap"}
	a, b := m.socketPath(randomHex(32)), m.socketPath(randomHex(32))
	if a == b || len(a) > 107 || filepath.Dir(a) != "/run/pvesnap/streams" {
		t.Fatalf("%s %s", a, b)
	}
	tk := randomHex(32)
	if p := m.socketPath(tk); p != m.socketPath(tk) || filepath.Base(p) == tk+".sock" {
		t.Fatalf("%s for ticket %s", p, tk)
	}
}
