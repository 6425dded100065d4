package provider

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// KindArchive is the journal's job kind of a restore session.
const KindArchive = "archive-restore"

// sessionSpec is what the journal keeps of a session: enough to know whose it is after a
// daemon restart.
type sessionSpec struct {
	Storage     string `json:"storage"`
	Volname     string `json:"volname"`
	OwnerPID    int    `json:"owner_pid"`
	OwnerPStart uint64 `json:"owner_pstart"`
}

var errNoSession = errors.New("no such restore session")

// session is a restore in progress: the point's disks staged for PVE's qemu-img.
type session struct {
	// cancel stops a staging still running (a cleanup arrives from a worker that gave up
	// waiting); set once, harmless after the staging.
	cancel context.CancelFunc
	// mu serialises the session's calls.
	mu    sync.Mutex
	disks map[string]restore.StagedDisk // by device name
}

// begin registers a session (refusing a second one with the same id).
func (p *Provider) begin(id string, s *session) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sessions == nil {
		p.sessions = map[string]*session{}
	}
	if _, ok := p.sessions[id]; ok {
		return fmt.Errorf("restore session %s exists already", id)
	}
	p.sessions[id] = s
	return nil
}

func (p *Provider) session(id string) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sessions[id]
}

func (p *Provider) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.sessions, id)
}

func (p *Provider) restoreInit(ctx context.Context, c *call) (any, error) {
	var q struct {
		archiveParams
		Session string `json:"session"`
	}
	if err := c.decode(&q); err != nil {
		return nil, err
	}
	if err := restore.CheckJob(q.Session); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	a, err := p.resolve(ctx, q.Storage, q.Volname)
	if err != nil {
		return nil, err
	}
	_, sources, err := p.Inv.Sources(ctx, a.ref.vmid, a.ref.ctime, a.ref.point, a.keys)
	if err != nil {
		return nil, err
	}
	// The session is the calling process's: if it dies without cleaning up (a qmrestore
	// killed), Recover undoes the staging.
	pstart, err := tasks.ProcStartTime(p.procRoot(), c.pid)
	if err != nil {
		return nil, fmt.Errorf("cannot tell the caller's process (pid %d) apart from a later one: %v", c.pid, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{cancel: cancel}
	s.mu.Lock() // before anyone can find it
	defer s.mu.Unlock()
	if err := p.begin(q.Session, s); err != nil {
		return nil, err
	}
	j, err := restore.Begin(ctx, p.DB, q.Session, KindArchive, "archive:"+q.Session,
		sessionSpec{Storage: q.Storage, Volname: q.Volname, OwnerPID: c.pid, OwnerPStart: pstart})
	if err != nil {
		p.forget(q.Session)
		return nil, err
	}
	c.logf("pvesnap: staging %s of VM %d (%s) from %s on this node", disksPhrase(a.keys), a.ref.vmid, a.vm.Name, a.ref.point)
	staged, err := p.Stager.Stage(sctx, j, sources, c.logf)
	if err != nil {
		c.logf("pvesnap: staging failed: %v; undoing it", err)
		uerr := restore.Unwind(context.WithoutCancel(ctx), p.DB, q.Session, p.Stager.Exec, c.logf)
		p.forget(q.Session)
		if uerr != nil {
			return nil, fmt.Errorf("%w; cleanup failed too (the daemon retries it): %v", err, uerr)
		}
		return nil, err
	}
	s.disks = byDevice(staged)
	devices := map[string]any{}
	for dev, sd := range s.disks {
		devices[dev] = map[string]int64{"size": sd.LV.Size}
	}
	return map[string]any{"devices": devices}, nil
}

func byDevice(staged []restore.StagedDisk) map[string]restore.StagedDisk {
	out := map[string]restore.StagedDisk{}
	for _, sd := range staged {
		out[DeviceName(sd.Source.Disk.Key)] = sd
	}
	return out
}

// onDisk runs fn on a staged disk of a live session ({session, device}), under the session's
// lock.
func (p *Provider) onDisk(ctx context.Context, c *call, fn func(dev string, d restore.StagedDisk) (any, error)) (any, error) {
	var q struct {
		Session string `json:"session"`
		Device  string `json:"device"`
	}
	if err := c.decode(&q); err != nil {
		return nil, err
	}
	if err := restore.CheckJob(q.Session); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	s := p.session(q.Session)
	if s == nil {
		var err error
		if s, err = p.reattach(ctx, c, q.Session); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.disks[q.Device]
	if !ok {
		return nil, fmt.Errorf("restore session %s has no device %q", q.Session, q.Device)
	}
	return fn(q.Device, d)
}

// reattach finds a session again that this daemon does not hold (it restarted while a
// qmrestore ran): the session's job is still running, the caller is the process that began
// it, and its disks are where the staging left them.
func (p *Provider) reattach(ctx context.Context, c *call, id string) (*session, error) {
	var kind, state, raw string
	err := p.DB.QueryRowContext(ctx, `SELECT kind, state, spec FROM jobs WHERE id = ?`, id).Scan(&kind, &state, &raw)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (kind != KindArchive || state != restore.StateRunning)) {
		return nil, fmt.Errorf("%w %s (it was cleaned up, or never began): restore again", errNoSession, id)
	}
	if err != nil {
		return nil, err
	}
	var spec sessionSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return nil, fmt.Errorf("restore session %s: %w", id, err)
	}
	if pstart, err := tasks.ProcStartTime(p.procRoot(), c.pid); err != nil || c.pid != spec.OwnerPID || pstart != spec.OwnerPStart {
		return nil, fmt.Errorf("restore session %s belongs to process %d, not to the caller (%d)", id, spec.OwnerPID, c.pid)
	}
	a, err := p.resolve(ctx, spec.Storage, spec.Volname)
	if err != nil {
		return nil, err
	}
	_, sources, err := p.Inv.Sources(ctx, a.ref.vmid, a.ref.ctime, a.ref.point, a.keys)
	if err != nil {
		return nil, err
	}
	staged, err := p.Stager.Staged(ctx, id, sources)
	if err != nil {
		return nil, fmt.Errorf("restore session %s after a daemon restart: %w", id, err)
	}
	c.logf("pvesnap: restore session %s found again after a daemon restart", id)
	s := &session{cancel: func() {}, disks: byDevice(staged)}
	if err := p.begin(id, s); err != nil {
		return p.session(id), nil // a concurrent call found it first
	}
	return s, nil
}

func (p *Provider) volumeInit(ctx context.Context, c *call) (any, error) {
	return p.onDisk(ctx, c, func(dev string, d restore.StagedDisk) (any, error) {
		// No journal step: deactivating the session's VG, an undo of its staging, covers it.
		if err := p.LVM.Activate(ctx, d.VG, d.LV.Name, true); err != nil {
			return nil, fmt.Errorf("activating %s/%s: %w", d.VG, d.LV.Name, err)
		}
		path := d.Path(p.devRoot())
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("staged disk %s: %s is not there after activation: %v", dev, path, err)
		}
		c.logf("pvesnap: %s is %s (%s of %s, LV %s)", dev, path, d.Source.Disk.Key, d.Source.Snapshot, d.LV.UUID)
		return map[string]any{"path": path}, nil
	})
}

func (p *Provider) volumeCleanup(ctx context.Context, c *call) (any, error) {
	return p.onDisk(ctx, c, func(dev string, d restore.StagedDisk) (any, error) {
		if err := p.LVM.Activate(ctx, d.VG, d.LV.Name, false); err != nil {
			return nil, fmt.Errorf("deactivating %s/%s: %w", d.VG, d.LV.Name, err)
		}
		return map[string]any{}, nil
	})
}

func (p *Provider) restoreCleanup(ctx context.Context, c *call) (any, error) {
	var q struct {
		Session string `json:"session"`
	}
	if err := c.decode(&q); err != nil {
		return nil, err
	}
	if err := restore.CheckJob(q.Session); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	return map[string]any{}, p.cleanup(context.WithoutCancel(ctx), q.Session, c.logf)
}

// cleanup ends a session: a staging still running is stopped, then the journal is unwound.
// Only sessions of the provider are touched; an id never begun is nothing to clean.
func (p *Provider) cleanup(ctx context.Context, id string, logf func(string, ...any)) error {
	if s := p.session(id); s != nil {
		s.cancel()
		s.mu.Lock() // the staging has returned (and undone itself, if it was interrupted)
		defer s.mu.Unlock()
		defer p.forget(id)
	}
	// One unwind at a time: a plugin's cleanup and the recovery may meet on the same session.
	p.cleanMu.Lock()
	defer p.cleanMu.Unlock()
	var kind, state string
	err := p.DB.QueryRowContext(ctx, `SELECT kind, state FROM jobs WHERE id = ?`, id).Scan(&kind, &state)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}
	if kind != KindArchive {
		return fmt.Errorf("job %s is not a restore session of the backup provider: not touched", id)
	}
	if state == restore.StateRunning {
		// Staging has no effect to keep: committing only marks that what is left is cleanup.
		j := &restore.Journal{DB: p.DB, Job: id}
		if err := j.Commit(ctx); err != nil {
			return err
		}
	}
	return restore.Unwind(ctx, p.DB, id, p.Stager.Exec, logf)
}

// Recover cleans up after every session whose owner (the process that called restore-init)
// is gone without restore-cleanup: a qmrestore killed, or a daemon restart that lost track.
// It returns how many it cleaned.
func (p *Provider) Recover(ctx context.Context) int {
	jobs, err := restore.Unfinished(ctx, p.DB)
	if err != nil {
		p.logger().Warn("listing restore sessions", "err", err)
		return 0
	}
	n := 0
	for _, jr := range jobs {
		if jr.Kind != KindArchive || jr.State != restore.StateRunning {
			continue // committed or stuck ones are retried by the restore module's recovery
		}
		var spec sessionSpec
		if err := json.Unmarshal([]byte(jr.Spec), &spec); err != nil {
			p.logger().Warn("restore session with unreadable spec", "session", jr.ID, "err", err)
			continue
		}
		if ps, err := tasks.ProcStartTime(p.procRoot(), spec.OwnerPID); err == nil && ps == spec.OwnerPStart {
			continue // its owner lives and will clean up
		}
		log := p.logger().With("session", jr.ID, "archive", spec.Volname, "owner_pid", spec.OwnerPID)
		log.Info("restore session's owner is gone without cleaning up: cleaning up")
		err := p.cleanup(ctx, jr.ID, func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) })
		if err != nil {
			log.Warn("restore session cleanup incomplete; retried later", "err", err)
			continue
		}
		n++
	}
	return n
}

func (p *Provider) procRoot() string {
	if p.Proc == "" {
		return "/proc"
	}
	return p.Proc
}

func (p *Provider) devRoot() string {
	if p.Dev == "" {
		return "/dev"
	}
	return p.Dev
}
