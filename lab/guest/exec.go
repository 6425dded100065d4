package guest

import (
	"fmt"
	"os/exec"
	"strings"
)

// execCommand is exec.Command: lab helpers run tools directly (the guest is a test machine).
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }

// Output runs a command and returns its standard output only (LVM prints warnings on stderr).
func Output(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", name, err, stderr.String())
	}
	return string(out), nil
}
