package runner

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// Func adapts a function to Runner (emulators in tests and the simulator).
type Func func(ctx context.Context, argv []string) ([]byte, error)

// Run calls f.
func (f Func) Run(ctx context.Context, argv []string, opts ...Option) ([]byte, error) {
	return f(ctx, argv)
}

// Step is one expected command of a Script and what it answers.
type Step struct {
	Argv   []string
	Stdout string
	Err    error
}

// Script is a recording runner for tests: it answers the expected commands in order and fails
// the test (through Fail) on any command it did not expect.
type Script struct {
	mu    sync.Mutex
	steps []Step
	Calls [][]string
	Fail  func(format string, args ...any)
}

// NewScript returns a Script expecting steps in order.
func NewScript(fail func(string, ...any), steps ...Step) *Script {
	return &Script{steps: steps, Fail: fail}
}

// Run answers the next step if argv matches it.
func (s *Script) Run(ctx context.Context, argv []string, opts ...Option) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Calls = append(s.Calls, append([]string(nil), argv...))
	if len(s.steps) == 0 {
		s.Fail("unexpected command: %s", strings.Join(argv, " "))
		return nil, fmt.Errorf("unexpected command %v", argv)
	}
	st := s.steps[0]
	if strings.Join(st.Argv, "\x00") != strings.Join(argv, "\x00") {
		s.Fail("command mismatch:\n got  %s\n want %s", strings.Join(argv, " "), strings.Join(st.Argv, " "))
		return nil, fmt.Errorf("unexpected command %v", argv)
	}
	s.steps = s.steps[1:]
	return []byte(st.Stdout), st.Err
}

// Done reports steps that were expected but never run.
func (s *Script) Done() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.steps) > 0 {
		return fmt.Errorf("%d expected commands not run, first: %s", len(s.steps), strings.Join(s.steps[0].Argv, " "))
	}
	return nil
}

// Emulator adapts an in-process command emulator to Runner: given argv it answers what the
// program would print on stdout and stderr and its exit status (the simulator's zfs, LVM and
// qm, sim/fakecli). A non-zero status is an *ExecError, as from Exec.
type Emulator func(argv []string) (stdout []byte, stderr string, code int)

// Run calls the emulator.
func (e Emulator) Run(ctx context.Context, argv []string, opts ...Option) ([]byte, error) {
	out, stderr, code := e(argv)
	if code != 0 {
		return out, &ExecError{Argv: argv, ExitCode: code, Stderr: stderr}
	}
	return out, nil
}
