package tasks

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a task worker and as a minimal "daemon" that starts one, so the
// tests run real processes in their own sessions, as pvesnap does.
func TestMain(m *testing.M) {
	switch os.Getenv("PVESNAP_TEST_ROLE") {
	case "worker":
		os.Exit(RunWorker(WorkerEnv{Dir: &Dir{Root: os.Getenv("PVESNAP_TEST_TASKS")}, Node: "pve1",
			Handlers: testHandlers(), Stdin: os.Stdin, Handshake: os.NewFile(3, "handshake")}))
	case "daemon":
		// Start a worker, print its UPID, then wait to be killed.
		s := testSpawner(os.Getenv("PVESNAP_TEST_TASKS"))
		st, err := s.Start(Job{Type: "pvesnaptest", ID: "100", User: "root@pam", Kind: "sleep", Spec: json.RawMessage(`{"steps":30}`)})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println(st.UPID)
		time.Sleep(time.Minute)
		os.Exit(0)
	case "daemon-spare":
		// Keep a spare worker, print its pid, then wait to be killed.
		s := testSpawner(os.Getenv("PVESNAP_TEST_TASKS"))
		s.KeepSpare(context.Background())
		fmt.Println(waitSpare(s, 10*time.Second))
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testHandlers() map[string]Handler {
	return map[string]Handler{
		"sleep": func(ctx context.Context, t *Task, spec json.RawMessage) error {
			var p struct{ Steps int }
			json.Unmarshal(spec, &p)
			for i := 1; i <= p.Steps; i++ {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(50 * time.Millisecond):
				}
				t.Logf("step %d of %d", i, p.Steps)
			}
			return nil
		},
		"stubborn": func(ctx context.Context, t *Task, spec json.RawMessage) error {
			signalIgnore()
			t.Logf("ignoring stop requests")
			time.Sleep(30 * time.Second)
			return nil
		},
		"fail": func(ctx context.Context, t *Task, spec json.RawMessage) error {
			t.Logf("about to fail")
			return errors.New("disk 'scsi0' is\nbroken")
		},
		"warn": func(ctx context.Context, t *Task, spec json.RawMessage) error {
			t.Warnf("first")
			t.Warnf("second")
			return nil
		},
	}
}

func signalIgnore() { signalIgnoreTerm() }

func testSpawner(root string) *Spawner {
	exe, _ := os.Executable()
	return &Spawner{Exe: exe, Dir: &Dir{Root: root},
		Env: []string{"PVESNAP_TEST_ROLE=worker", "PVESNAP_TEST_TASKS=" + root}}
}

func waitStopped(t *testing.T, d *Dir, upid string, within time.Duration) *Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		s, err := d.Status(upid)
		if err != nil {
			t.Fatal(err)
		}
		if s.Status == "stopped" {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("task %s still running after %s", upid, within)
	return nil
}

func TestWorkerLifecycle(t *testing.T) {
	root := t.TempDir()
	s := testSpawner(root)
	st, err := s.Start(Job{Type: "pvesnaptest", ID: "100", User: "csi@pve!tok", Kind: "sleep", Spec: json.RawMessage(`{"steps":8}`)})
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUPID(st.UPID)
	if err != nil {
		t.Fatal(err)
	}
	if u.PID != st.PID || u.Node != "pve1" || u.Type != "pvesnaptest" || u.ID != "100" || u.User != "csi@pve!tok" {
		t.Fatalf("UPID %s does not describe the worker %d", st.UPID, st.PID)
	}
	ps, _ := ProcStartTime("/proc", st.PID)
	if ps != u.PStart {
		t.Fatalf("pstart %d, /proc says %d", u.PStart, ps)
	}
	// Registered in "active" as running, log file in <last hex digit>/ with mode 0640.
	act, _ := s.Dir.Active()
	if len(act) != 1 || act[0].UPID != st.UPID || act[0].EndTime != 0 {
		t.Fatalf("active list %+v", act)
	}
	p, _ := s.Dir.LogPath(st.UPID)
	if filepath.Base(filepath.Dir(p)) != fmt.Sprintf("%X", u.StartTime&0xf) {
		t.Fatalf("log dir %s", p)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("log file %v %v", fi, err)
	}
	// The log grows while it runs.
	s1, err := s.Dir.Status(st.UPID)
	if err != nil || s1.Status != "running" || s1.ExitStatus != "" {
		t.Fatalf("status while running: %+v %v", s1, err)
	}
	var sawPartial bool
	for i := 0; i < 100 && !sawPartial; i++ {
		lines, total, _ := s.Dir.ReadLog(st.UPID, 0, 0)
		if total >= 2 && total < 9 && !strings.HasPrefix(lines[len(lines)-1].T, "TASK") {
			sawPartial = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawPartial {
		t.Error("never saw the log while the task ran")
	}
	<-st.Done()
	fin := waitStopped(t, s.Dir, st.UPID, 5*time.Second)
	if fin.ExitStatus != "OK" || fin.User != "csi@pve" || fin.TokenID != "tok" {
		t.Fatalf("final status %+v", fin)
	}
	lines, total, _ := s.Dir.ReadLog(st.UPID, 0, 0)
	if total != 9 || lines[0].N != 1 || lines[0].T != "step 1 of 8" || lines[8].T != "TASK OK" {
		t.Fatalf("log %v total %d", lines, total)
	}
	// Archived into index by the exit hook (ActiveWorkers).
	var archived []Entry
	s.Dir.Archive(func(e Entry) bool { archived = append(archived, e); return true })
	if len(archived) != 1 || archived[0].Status != "OK" || archived[0].EndTime == 0 {
		t.Fatalf("index %+v", archived)
	}
}

func TestFailureAndWarnings(t *testing.T) {
	s := testSpawner(t.TempDir())
	for kind, want := range map[string]string{"fail": "disk 'scsi0' is broken", "warn": "WARNINGS: 2"} {
		st, err := s.Start(Job{Type: "pvesnaptest", User: "root@pam", Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		<-st.Done()
		if got := waitStopped(t, s.Dir, st.UPID, 5*time.Second).ExitStatus; got != want {
			t.Errorf("%s: exit status %q, want %q", kind, got, want)
		}
	}
}

func TestUnknownJobKindRefusedBeforeRegistration(t *testing.T) {
	s := testSpawner(t.TempDir())
	_, err := s.Start(Job{Type: "pvesnaptest", User: "root@pam", Kind: "nope"})
	if err == nil || !strings.Contains(err.Error(), `unknown job kind "nope"`) {
		t.Fatalf("err %v", err)
	}
	if act, _ := s.Dir.Active(); len(act) != 0 {
		t.Fatalf("a refused job left a task behind: %+v", act)
	}
}

func TestStop(t *testing.T) {
	s := testSpawner(t.TempDir())
	st, err := s.Start(Job{Type: "pvesnaptest", User: "root@pam", Kind: "sleep", Spec: json.RawMessage(`{"steps":400}`)})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	running, err := s.Dir.Stop(st.UPID, "root@pam", 5*time.Second)
	if err != nil || !running {
		t.Fatalf("stop: %v %v", running, err)
	}
	fin := waitStopped(t, s.Dir, st.UPID, 5*time.Second)
	if fin.ExitStatus != "interrupted by stop request" {
		t.Fatalf("exit status %q", fin.ExitStatus)
	}
	lines, _, _ := s.Dir.ReadLog(st.UPID, 0, 0)
	text := fmt.Sprint(lines)
	if !strings.Contains(text, "stop requested by root@pam") || !strings.Contains(text, "received interrupt") {
		t.Fatalf("log does not say who stopped it: %s", text)
	}
	<-st.Done() // the spawner archives the task after the worker exits, in the test's directory
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	s := testSpawner(t.TempDir())
	st, err := s.Start(Job{Type: "pvesnaptest", User: "root@pam", Kind: "stubborn"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := s.Dir.Stop(st.UPID, "root@pam", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	fin := waitStopped(t, s.Dir, st.UPID, 5*time.Second)
	if fin.ExitStatus != "killed after stop request" {
		t.Fatalf("exit status %q", fin.ExitStatus)
	}
	lines, _, _ := s.Dir.ReadLog(st.UPID, 0, 0)
	if !strings.Contains(fmt.Sprint(lines), "sent SIGKILL") {
		t.Fatalf("log %v", lines)
	}
	<-st.Done() // as in TestStop: the archiving writes into the test's directory
}

// TestWorkerSurvivesDaemonKill starts a worker from a separate "daemon" process, kills that
// process with SIGKILL, and checks the task runs on to completion with a correct log and
// status.
func TestWorkerSurvivesDaemonKill(t *testing.T) {
	root := t.TempDir()
	cmd, line := startTestDaemon(t, "daemon", root)
	upid := strings.TrimSpace(line)
	if !strings.HasPrefix(upid, "UPID:") {
		t.Fatalf("daemon said %q", line)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	d := &Dir{Root: root}
	s, err := d.Status(upid)
	if err != nil || s.Status != "running" {
		t.Fatalf("after the daemon died: %+v %v", s, err)
	}
	fin := waitStopped(t, d, upid, 10*time.Second)
	if fin.ExitStatus != "OK" {
		t.Fatalf("exit status %q", fin.ExitStatus)
	}
	lines, total, _ := d.ReadLog(upid, 0, 0)
	if total != 31 || lines[29].T != "step 30 of 30" {
		t.Fatalf("log total %d last %v", total, lines[len(lines)-1])
	}
	// Nobody reaped it into index yet (the daemon died); the next ActiveWorkers pass does, as
	// pvestatd would.
	if _, err := d.ActiveWorkers(""); err != nil {
		t.Fatal(err)
	}
	var archived []Entry
	d.Archive(func(e Entry) bool { archived = append(archived, e); return true })
	if len(archived) != 1 || archived[0].UPID != upid || archived[0].Status != "OK" {
		t.Fatalf("index %+v", archived)
	}
}

// startTestDaemon runs the test binary as a "daemon" of the given role on task directory
// root and returns it with the first line it prints.
func startTestDaemon(t *testing.T, role, root string) (*exec.Cmd, string) {
	t.Helper()
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "PVESNAP_TEST_ROLE="+role, "PVESNAP_TEST_TASKS="+root)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	return cmd, line
}

// waitSpare returns the pid of s's spare worker once there is one (0 after d).
func waitSpare(s *Spawner, d time.Duration) int {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		w := s.spare
		s.mu.Unlock()
		if w != nil {
			return w.d.PID
		}
	}
	return 0
}

// gone waits up to d for process pid to end.
func gone(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(b), ") Z ") {
			return true
		}
	}
	return false
}

// The spare worker takes the next job: the task runs in the process started before it was
// asked for (its UPID names that process), and another spare is started behind it. When the
// daemon stops, the spare exits without a task.
func TestSpareWorker(t *testing.T) {
	s := testSpawner(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.KeepSpare(ctx)
	first := waitSpare(s, 10*time.Second)
	if first == 0 {
		t.Fatal("no spare worker after 10 s")
	}
	time.Sleep(100 * time.Millisecond)
	if act, _ := s.Dir.Active(); len(act) != 0 {
		t.Fatalf("a waiting spare registered a task: %+v", act)
	}
	st, err := s.Start(Job{Type: "pvesnaptest", User: "root@pam", Kind: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := ParseUPID(st.UPID)
	if st.PID != first || u.PID != first {
		t.Fatalf("the task ran in %d (UPID %s), not in the spare %d", st.PID, st.UPID, first)
	}
	if ps, _ := ProcStartTime("/proc", first); ps != u.PStart {
		t.Fatalf("UPID pstart %d, the spare's is %d", u.PStart, ps)
	}
	<-st.Done()
	if got := waitStopped(t, s.Dir, st.UPID, 5*time.Second).ExitStatus; got != "WARNINGS: 2" {
		t.Fatalf("exit status %q", got)
	}
	second := waitSpare(s, 10*time.Second)
	if second == 0 || second == first {
		t.Fatalf("no new spare after the first was used (%d)", second)
	}
	cancel()
	if !gone(second, 5*time.Second) {
		t.Fatalf("spare %d still running after its daemon stopped", second)
	}
	act, _ := s.Dir.Active()
	if _, err := s.Dir.ActiveWorkers(""); err != nil {
		t.Fatal(err)
	}
	var archived []Entry
	s.Dir.Archive(func(e Entry) bool { archived = append(archived, e); return true })
	if len(act) > 1 || len(archived) != 1 || archived[0].UPID != st.UPID {
		t.Fatalf("tasks after the spare was dismissed: active %+v, index %+v", act, archived)
	}
}

// A spare that died while waiting has run nothing: a fresh worker takes the job.
func TestDeadSpareReplaced(t *testing.T) {
	s := testSpawner(t.TempDir())
	dead, err := (&Spawner{Exe: "/bin/true"}).launch()
	if err != nil {
		t.Fatal(err)
	}
	<-dead.d.Done()
	s.spare = dead // died, not noticed yet
	st, err := s.Start(Job{Type: "pvesnaptest", User: "root@pam", Kind: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	if st.PID == dead.d.PID {
		t.Fatal("the task claims the dead spare's pid")
	}
	<-st.Done()
	if got := waitStopped(t, s.Dir, st.UPID, 5*time.Second).ExitStatus; got != "WARNINGS: 2" {
		t.Fatalf("exit status %q", got)
	}
	// Without a spare to fall back from, a worker that dies before registering is an error.
	s.Exe = "/bin/true"
	if _, err := s.Start(Job{Type: "pvesnaptest", User: "root@pam", Kind: "warn"}); err == nil || !strings.Contains(err.Error(), "exited before registering") {
		t.Fatalf("worker that never registered: %v", err)
	}
}

// A daemon killed outright closes its end of the spare's stdin: the spare exits, no task.
func TestSpareExitsWithItsDaemon(t *testing.T) {
	root := t.TempDir()
	cmd, line := startTestDaemon(t, "daemon-spare", root)
	var pid int
	if _, err := fmt.Sscan(line, &pid); err != nil || pid == 0 {
		t.Fatalf("daemon said %q", line)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if !gone(pid, 5*time.Second) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("spare %d outlived its daemon", pid)
	}
	if act, _ := (&Dir{Root: root}).Active(); len(act) != 0 {
		t.Fatalf("the dismissed spare left a task: %+v", act)
	}
}
