package runner

import (
	"context"
	"errors"
	"testing"
)

// An emulator's non-zero exit status reaches callers as the *ExecError a real program's would.
func TestEmulatorExitStatus(t *testing.T) {
	e := Emulator(func(argv []string) ([]byte, string, int) {
		if argv[1] == "ok" {
			return []byte("out\n"), "", 0
		}
		return []byte("partial\n"), "  Volume group \"x\" not found\n", 5
	})
	out, err := e.Run(context.Background(), []string{"lvs", "ok"})
	if err != nil || string(out) != "out\n" {
		t.Fatalf("exit 0: %q %v", out, err)
	}
	out, err = e.Run(context.Background(), []string{"lvs", "x"})
	var xe *ExecError
	if !errors.As(err, &xe) || xe.ExitCode != 5 || xe.Stderr != "  Volume group \"x\" not found\n" || xe.Argv[1] != "x" || string(out) != "partial\n" {
		t.Fatalf("exit 5: %q %#v", out, err)
	}
}
