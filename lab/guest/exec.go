package guest

import "os/exec"

// execCommand is exec.Command: lab helpers run tools directly (the guest is a test machine).
func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
