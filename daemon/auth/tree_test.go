package auth

import "testing"

// The effective tree as pveproxy lists it: VM.Audit propagating from /vms, a non-propagating
// grant on /vms/200 (from a pool), and /vms/300 listed without it (NoAccess).
func TestGrantedOn(t *testing.T) {
	flat := map[string]bool{"/": false, "/vms": true, "/vms/200": false, "\x00/vms/300": false, "\x00/storage": false}
	for path, want := range map[string]bool{
		"/vms/100": true, "/vms/200": true, "/vms/300": false, "/vms": true,
		"/storage/san1": false, "/nodes/pve1": false, "/": true,
	} {
		if got := grantedOn(flat, path); got != want {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
	only := map[string]bool{"/vms/100": false, "\x00/vms": false, "\x00/": false}
	if grantedOn(only, "/vms/101") || !grantedOn(only, "/vms/100") {
		t.Error("a grant on one VM leaked to another")
	}
}
