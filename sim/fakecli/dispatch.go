package fakecli

import (
	"path/filepath"
	"strings"
)

// Dispatch routes a command to the emulator of its program.
type Dispatch struct {
	ZFS *ZFS
	LVM *LVM
	// QM answers qm commands; nil answers guest-agent calls like a VM without an agent.
	QM func(argv []string) Result
}

// QMAgentless answers qm guest commands as PVE does for a VM without a running agent.
func QMAgentless(argv []string) Result {
	if len(argv) >= 4 && argv[1] == "guest" && argv[2] == "cmd" {
		return fail(255, "QEMU guest agent is not running")
	}
	return fail(2, "fakecli: qm "+strings.Join(argv[1:], " ")+" not emulated")
}

// Exec answers argv; argv[0] may be a path (the executables are named after their program).
func (d *Dispatch) Exec(argv []string) Result {
	if len(argv) == 0 {
		return fail(127, "fakecli: empty command")
	}
	argv = append([]string{filepath.Base(argv[0])}, argv[1:]...)
	switch argv[0] {
	case "qm":
		if d.QM != nil {
			return d.QM(argv)
		}
		return QMAgentless(argv)
	case "zfs":
		if d.ZFS != nil {
			return d.ZFS.Exec(argv)
		}
	case "lvs", "pvs", "lvcreate", "lvchange", "lvremove", "lvrename":
		if d.LVM != nil {
			return d.LVM.Exec(argv)
		}
	}
	return fail(127, "fakecli: no emulator for "+strings.Join(argv, " "))
}

// Command is Exec with the result spread out, for adapters that take a function (the
// daemon's tests turn it into their runner).
func (d *Dispatch) Command(argv []string) (stdout []byte, stderr string, code int) {
	return d.Exec(argv).spread()
}

// Command is Exec spread out (see Dispatch.Command).
func (z *ZFS) Command(argv []string) (stdout []byte, stderr string, code int) {
	return z.Exec(argv).spread()
}

// Command is Exec spread out (see Dispatch.Command).
func (l *LVM) Command(argv []string) (stdout []byte, stderr string, code int) {
	return l.Exec(argv).spread()
}

func (r Result) spread() ([]byte, string, int) { return r.Stdout, r.Stderr, r.Code }
