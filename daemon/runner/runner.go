// Package runner is the one place pvesnap starts external programs. Commands are argv only
// (never a shell), resolved to absolute paths in a fixed search path, run with LC_ALL=C under
// a context with a timeout, with stdout and stderr captured separately.
package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Runner runs a command and returns its stdout; a failure is an *ExecError.
type Runner interface {
	Run(ctx context.Context, argv []string, opts ...Option) ([]byte, error)
}

// Option adjusts one command.
type Option func(*call)

type call struct {
	stdin   io.Reader
	timeout time.Duration
	env     []string
}

// Stdin feeds data to the command.
func Stdin(b []byte) Option { return func(c *call) { c.stdin = bytes.NewReader(b) } }

// Timeout overrides the default timeout for one command.
func Timeout(d time.Duration) Option { return func(c *call) { c.timeout = d } }

// Env adds KEY=VALUE pairs to the command's environment.
func Env(kv ...string) Option { return func(c *call) { c.env = append(c.env, kv...) } }

// ExecError is a failed command: argv, exit code (-1 when it did not run or was killed) and
// stderr. Its message is for logs and task logs; API answers summarise it.
type ExecError struct {
	Argv     []string
	ExitCode int
	Stderr   string
	Err      error
}

func (e *ExecError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if len(msg) > 2000 {
		msg = msg[:2000] + "…"
	}
	return fmt.Sprintf("command '%s' failed: exit code %d: %s", strings.Join(e.Argv, " "), e.ExitCode, msg)
}

func (e *ExecError) Unwrap() error { return e.Err }

// ErrNotFound is returned when a program is not in the search path.
var ErrNotFound = errors.New("program not found")

// DefaultSearch is where programs are looked up when no Bin directories are configured.
var DefaultSearch = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// Exec runs real programs.
type Exec struct {
	// Search lists directories to look programs up in, in order.
	Search []string
	// Timeout applies to every command without its own.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Resolve returns the absolute path of name ("zfs" → "/usr/sbin/zfs"). Names must be plain
// program names: a path or anything starting with '-' is refused.
func (e *Exec) Resolve(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") || strings.HasPrefix(name, "-") {
		if filepath.IsAbs(name) && !strings.ContainsAny(name, " \t\n") {
			return name, nil
		}
		return "", fmt.Errorf("refusing program name %q", name)
	}
	dirs := e.Search
	if len(dirs) == 0 {
		dirs = DefaultSearch
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w in %s", name, ErrNotFound, strings.Join(dirs, ":"))
}

// Run runs argv[0] (resolved) with the rest as arguments.
func (e *Exec) Run(ctx context.Context, argv []string, opts ...Option) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("runner: empty argv")
	}
	c := call{timeout: e.Timeout}
	for _, o := range opts {
		o(&c)
	}
	path, err := e.Resolve(argv[0])
	if err != nil {
		return nil, &ExecError{Argv: argv, ExitCode: -1, Err: err}
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, path, argv[1:]...)
	cmd.Env = append([]string{"LC_ALL=C", "LANG=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, c.env...)
	cmd.Stdin = c.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	log := e.logger().With("argv", argv, "duration", time.Since(start))
	if err != nil {
		xe := &ExecError{Argv: argv, ExitCode: -1, Stderr: stderr.String(), Err: err}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			xe.ExitCode = ee.ExitCode()
		}
		if ctx.Err() != nil {
			xe.Err = fmt.Errorf("%w (after %s)", ctx.Err(), time.Since(start).Round(time.Millisecond))
			if xe.Stderr == "" {
				xe.Stderr = xe.Err.Error()
			}
		}
		log.Debug("command failed", "exit", xe.ExitCode, "stderr", strings.TrimSpace(stderr.String()))
		return stdout.Bytes(), xe
	}
	log.Debug("command ok")
	return stdout.Bytes(), nil
}

func (e *Exec) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Detached is a started background process (a task worker).
type Detached struct {
	PID  int
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Wait blocks until the process exits.
func (d *Detached) Wait() error { <-d.done; return d.err }

// Done is closed when the process has exited.
func (d *Detached) Done() <-chan struct{} { return d.done }

// StartDetached starts exe in a new session (setsid), so it is the leader of its own process
// group and keeps running when the caller exits or restarts. stdin is written to it; extra
// files become fds 3, 4, …; stdout and stderr go to /dev/null. stdin is read by the process
// itself when it is an *os.File (a pipe the caller writes later), else copied in.
func StartDetached(exe string, args []string, env []string, stdin io.Reader, extra []*os.File) (*Detached, error) {
	if !filepath.IsAbs(exe) {
		return nil, fmt.Errorf("refusing relative worker path %q", exe)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &Detached{PID: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	return d, nil
}
