package provider

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/inventory"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/restore"
	"github.com/pvesnap/pvesnap/daemon/store"
)

// Stager is pvesnap's restore staging (daemon/restore), declared where it is consumed.
type Stager interface {
	Stage(ctx context.Context, j *restore.Journal, sources []inventory.DiskSource, logf func(string, ...any)) ([]restore.StagedDisk, error)
	// Staged finds a job's staged disks again (after a daemon restart).
	Staged(ctx context.Context, job string, sources []inventory.DiskSource) ([]restore.StagedDisk, error)
	// Exec runs one journaled undo (restore.Unwind's executor).
	Exec(ctx context.Context, a restore.Action) error
}

// Activator switches a staged LV on and off (lvm.LVM).
type Activator interface {
	Activate(ctx context.Context, vg, name string, on bool) error
}

// Provider serves the plugin's socket.
type Provider struct {
	Socket  string // path of the Unix socket (<run>/provider.sock)
	Inv     *inventory.Inventory
	Storage *pve.StorageConfig
	DB      *store.DB
	Stager  Stager
	LVM     Activator
	Dev     string // /dev: where staged LVs appear
	Proc    string // /proc: the liveness of a session's owner
	// PeerUID is the only user id allowed to connect (0, root, in production).
	PeerUID int
	// RecoverEvery is how often sessions whose owner died are cleaned up (default 10 s).
	RecoverEvery time.Duration
	// RequestTimeout bounds the wait for a caller's request line (default 10 s).
	RequestTimeout time.Duration
	DaemonVersion  string
	Logger         *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session
	cleanMu  sync.Mutex
	ln       *net.UnixListener
}

// Routes: the provider has no HTTP routes.
func (p *Provider) Routes() []*api.Route { return nil }

// Start opens the socket, serves it until ctx ends and cleans up after dead sessions.
func (p *Provider) Start(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(p.Socket), 0o755); err != nil {
		return err
	}
	// A socket left by a daemon that died; anything else at that path is not ours to remove.
	if fi, err := os.Lstat(p.Socket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s exists and is not a socket: refusing to replace it", p.Socket)
		}
		os.Remove(p.Socket)
	}
	// Connecting needs write permission on the socket: with the unit's umask 0022 it is
	// root's alone from the start, and 0600 just after. Every caller's uid is checked anyway.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.Socket, Net: "unix"})
	if err != nil {
		return fmt.Errorf("plugin socket: %w", err)
	}
	if err := os.Chmod(p.Socket, 0o600); err != nil {
		ln.Close()
		return err
	}
	p.ln = ln
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go p.accept(ctx, ln)
	go func() {
		every := p.RecoverEvery
		if every == 0 {
			every = 10 * time.Second
		}
		for {
			p.Recover(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	}()
	return nil
}

func (p *Provider) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

func (p *Provider) accept(ctx context.Context, ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			p.logger().Warn("plugin socket accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go p.serve(ctx, c)
	}
}

// peer is the connecting process's credentials.
func peer(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

func (p *Provider) serve(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	reply := func(r Response) {
		r.Version = Version
		b, _ := json.Marshal(r)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		c.Write(append(b, '\n'))
	}
	cred, err := peer(c)
	if err != nil {
		reply(Response{Error: fmt.Sprintf("cannot identify the caller: %v", err)})
		return
	}
	if int(cred.Uid) != p.PeerUID {
		p.logger().Warn("plugin socket: caller refused", "uid", cred.Uid, "pid", cred.Pid)
		reply(Response{Error: fmt.Sprintf("refused: uid %d may not use pvesnap's plugin socket (only PVE's own daemons, as root)", cred.Uid)})
		return
	}
	wait := p.RequestTimeout
	if wait == 0 {
		wait = 10 * time.Second
	}
	c.SetReadDeadline(time.Now().Add(wait))
	line, err := bufio.NewReaderSize(c, MaxRequest).ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			reply(Response{Error: fmt.Sprintf("request longer than %d bytes", MaxRequest)})
		} else {
			reply(Response{Error: fmt.Sprintf("no request line: %v", err)})
		}
		return
	}
	c.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		reply(Response{Error: fmt.Sprintf("request is not JSON: %v", err)})
		return
	}
	if req.Version != Version {
		reply(Response{Error: fmt.Sprintf("protocol version %d is not spoken here: this pvesnap daemon speaks version %d (install the same pvesnap release on the node)", req.Version, Version)})
		return
	}
	var m *Method
	for _, x := range p.Methods() {
		if x.Name == req.Method {
			m = &x
			break
		}
	}
	if m == nil {
		reply(Response{Error: fmt.Sprintf("unknown method %q", req.Method)})
		return
	}
	// The call is canceled when the caller goes away (PVE's worker interrupted by a signal):
	// the request has been read, so a read returns only at its close.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var b [1]byte
		c.Read(b[:])
		cancel()
	}()
	cl := &call{pid: int(cred.Pid), params: req.Params}
	start := time.Now()
	res, err := m.run(cctx, cl)
	p.logger().Debug("plugin call", "method", m.Name, "pid", cred.Pid, "duration", time.Since(start), "err", err)
	if err != nil {
		reply(Response{Error: err.Error(), Log: cl.log})
		return
	}
	reply(Response{Result: res, Log: cl.log})
}
