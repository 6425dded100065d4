package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary stand in for the pvesnap binary in tests that run it as a
// program: under a tool's name (zfs, qm, … of a simulated node), or with pvesnap's own
// command line (sim node, --config … serve, and the task workers serve starts).
func TestMain(m *testing.M) {
	if code, ok := simTool(os.Args); ok {
		os.Exit(code)
	}
	if len(os.Args) > 1 && (os.Args[1] == "--config" || os.Args[1] == "sim") {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
