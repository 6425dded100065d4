// Package server wires pvesnap's daemon together: the TLS listener with pveproxy's
// certificate, CORS for the GUI on :8006, the owned routes and the pass-through to pveproxy,
// systemd readiness and watchdog, reload on SIGHUP and a graceful drain on SIGTERM.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/auth"
	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/httpd"
	"github.com/pvesnap/pvesnap/daemon/proxy"
	"github.com/pvesnap/pvesnap/daemon/pve"
)

// Version is set at build time.
var Version = "dev"

// Module contributes routes and background work to the daemon.
type Module interface {
	Routes() []*api.Route
}

// Starter is a Module with background work (refresh loops, recovery at start).
type Starter interface {
	Start(ctx context.Context) error
}

// Static serves non-API paths pvesnap owns: the panel's assets, and the streams between
// nodes of a module that is a Static itself.
type Static interface {
	// Prefix is the path prefix served, e.g. "/pvesnap/ui/".
	Prefix() string
	http.Handler
}

// Daemon is a configured pvesnap daemon.
type Daemon struct {
	Cfg      *config.Config
	Logger   *slog.Logger
	Upstream *url.URL
	certs    *certStore
	Proxy    *proxy.Proxy
	peers    *proxy.Proxy
	Auth     *auth.Authenticator
	Mux      *api.Mux
	modules  []Module
	statics  []Static
	srv      *httpd.Server
	started  time.Time
	mu       sync.Mutex
	ln       net.Listener
	// pveproxy's client-address policy and the listener's TLS settings, replaced on SIGHUP.
	policy atomic.Pointer[pve.ProxyDefaults]
	tlsCfg atomic.Pointer[tls.Config]
}

// New builds the daemon: certificates, upstream proxy, authenticator and the route table
// (the daemon's own routes plus those of every module). It fails on any configuration problem.
func New(cfg *config.Config, logger *slog.Logger, modules []Module, statics []Static, inject func([]byte) []byte) (*Daemon, error) {
	up, err := url.Parse(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	d := &Daemon{Cfg: cfg, Logger: logger, Upstream: up, modules: modules, statics: append([]Static(nil), statics...), started: time.Now()}
	for _, m := range modules {
		if s, ok := m.(Static); ok {
			d.statics = append(d.statics, s)
		}
	}
	certFile, keyFile := cfg.TLS.Cert, cfg.TLS.Key
	if cfg.TLS.Disable {
		certFile, keyFile = "", ""
	}
	if d.certs, err = newCertStore(certFile, keyFile, cfg.UpstreamCA); err != nil {
		return nil, err
	}
	if err := d.applyPveproxy(cfg.Pveproxy); err != nil {
		return nil, err
	}
	d.Proxy = proxy.New(proxy.Options{Upstream: up, TLSConfig: d.certs.clientConfig,
		ResponseHeaderTimeout: cfg.Timeouts.Upstream.D(), Logger: logger.With("component", "proxy")})
	if cfg.GUIInjection() {
		d.Proxy.InjectHTML = inject
	}
	d.Proxy.AuthFailure = d.authFailure
	d.peers = proxy.New(proxy.Options{TLSConfig: d.certs.clientConfig, ResponseHeaderTimeout: cfg.Timeouts.Upstream.D(),
		Logger: logger.With("component", "peers")})
	d.Auth = &auth.Authenticator{Upstream: up, WWWKey: cfg.Paths.PVE + "/pve-www.key",
		FailDelay: cfg.Timeouts.AuthFailDelay.D(), Cache: auth.NewCache(cfg.Auth.CacheTTL.D(), cfg.Auth.CacheSize),
		Access: pve.NewAccessConfig(cfg.Paths.PVE), Logger: logger.With("component", "auth"),
		Client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			// Idle connections go before pveproxy's 5 s keep-alive timeout closes them.
			TLSClientConfig: d.certs.clientConfig(up.Hostname()), MaxIdleConnsPerHost: 64, IdleConnTimeout: 4 * time.Second}}}
	routes := d.ownRoutes()
	for _, m := range modules {
		routes = append(routes, m.Routes()...)
	}
	d.Mux, err = api.NewMux(routes, api.Options{Authz: d.Auth, PassThrough: d.Proxy, Peer: d, Mark: "pvesnap",
		LocalNode: cfg.Node, Logger: logger.With("component", "api")})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// applyPveproxy puts pveproxy's settings (see config.Config.PveproxyConfig) into effect for
// the next connections: the client-address policy and the TLS versions and ciphers.
func (d *Daemon) applyPveproxy(p *pve.ProxyDefaults) error {
	t, err := tlsFromPveproxy(p)
	if err != nil {
		return fmt.Errorf("%s: %w", d.Cfg.PveproxyConfig, err)
	}
	for _, w := range t.warnings {
		d.Logger.Warn("pveproxy setting not applied as written", "file", d.Cfg.PveproxyConfig, "reason", w)
	}
	if p == nil {
		p = &pve.ProxyDefaults{Policy: "allow"}
	}
	d.policy.Store(p)
	d.tlsCfg.Store(d.certs.serverConfig(t))
	return nil
}

// allowed is the listener's peer policy: pveproxy's ALLOW_FROM, DENY_FROM and POLICY.
func (d *Daemon) allowed(a netip.Addr) bool { return d.policy.Load().Allowed(a) }

// Forward implements api.Peer: a call for another node goes to that node's pvesnap, verified
// against the cluster CA, with the caller's credential unchanged.
func (d *Daemon) Forward(w http.ResponseWriter, r *http.Request, node string) error {
	m, err := pve.ReadMembers(d.Cfg.Paths.PVE)
	if err != nil {
		return api.Errorf(http.StatusInternalServerError, "cannot resolve node '%s': %v", node, err)
	}
	ip, err := m.Address(node)
	if err != nil {
		return api.Errorf(http.StatusInternalServerError, "%v", err)
	}
	_, port, _ := net.SplitHostPort(d.Cfg.Listen)
	scheme := "https"
	if d.Cfg.TLS.Disable {
		scheme = "http"
	}
	target := &url.URL{Scheme: scheme, Host: net.JoinHostPort(ip, port)}
	if r.GetBody != nil {
		r.Body, _ = r.GetBody()
	}
	key, err := os.ReadFile(d.Auth.WWWKey)
	if err != nil {
		return api.Errorf(http.StatusInternalServerError, "cannot mark the call for node '%s': %v", node, err)
	}
	mark := auth.PeerMark(key, d.Cfg.Node, r, time.Now())
	if err := d.peers.Forward(w, r, target, http.Header{api.ForwardedHeader: {mark}}); err != nil {
		d.Logger.Warn("forward to peer failed", "node", node, "addr", target.Host, "err", err)
		return fmt.Errorf("pvesnap on node '%s' (%s) unreachable: %v: %w", node, target.Host, err, api.ErrUpstream)
	}
	return nil
}

// authFailure logs what pveproxy refused on a passed-through call, with the caller's real
// address (pveproxy sees 127.0.0.1): a presented ticket or token, or a login. Calls without
// any credential are not failures: every first visit makes one.
func (d *Daemon) authFailure(r *http.Request, reason string) {
	c := auth.Extract(r)
	user := c.User()
	if r.Method == http.MethodPost && api.PathOf(r.URL.Path) == "/access/ticket" {
		user = loginUser(r)
	} else if c.Kind == auth.None {
		return
	}
	d.Auth.LogFailure(r, user, reason)
}

// loginUser is the user a login names (username, with realm when given apart, as PVE's
// create_ticket joins them).
func loginUser(r *http.Request) string {
	body, err := api.BufferBody(r)
	if err != nil {
		return ""
	}
	p, err := api.RequestParams(r, body)
	if err != nil {
		return ""
	}
	user, _ := p["username"].(string)
	if realm, _ := p["realm"].(string); realm != "" && !strings.Contains(user, "@") {
		user += "@" + realm
	}
	return user
}

// ServeHTTP is the listener's handler: CORS, the panel's assets, then the API mux (which
// passes everything it does not own to pveproxy).
func (d *Daemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if mark := r.Header.Get(api.ForwardedHeader); mark != "" {
		key, _ := os.ReadFile(d.Auth.WWWKey) // no key: no mark verifies
		if _, ok := auth.VerifyPeerMark(key, mark, r, time.Now()); !ok {
			// A client's header, not a node's: it must change nothing.
			r.Header.Del(api.ForwardedHeader)
		}
	}
	if origin := r.Header.Get("Origin"); origin != "" && d.corsAllowed(origin) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
			h.Set("Access-Control-Allow-Headers", "CSRFPreventionToken, Content-Type, Authorization, X-Requested-With")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	for _, s := range d.statics {
		if strings.HasPrefix(r.URL.Path, s.Prefix()) {
			s.ServeHTTP(w, r)
			return
		}
	}
	d.Mux.ServeHTTP(w, r)
}

// OwnRoutes are the routes of the daemon itself (for docs; handlers need a running daemon).
func (d *Daemon) OwnRoutes() []*api.Route { return d.ownRoutes() }

func (d *Daemon) ownRoutes() []*api.Route {
	return []*api.Route{{
		Method: "GET", Path: "/nodes/{node}/pvesnap", Name: "status",
		Description: "pvesnap daemon status on the node: version, uptime and the settings that matter.",
		Permission:  api.Permission{Path: "/nodes/{node}", Privs: []string{"Sys.Audit"}},
		Params:      []api.Param{{Name: "node", Type: api.String, Format: "pve-node", Check: pve.CheckNode, Description: "The cluster node name."}},
		Returns: api.Returns{Type: "object", Properties: map[string]string{"version": "string", "node": "string",
			"uptime": "integer", "upstream": "string", "listen": "string"}},
		ProxyTo: "node",
		Handler: func(c *api.Call) (any, error) {
			return map[string]any{"version": Version, "node": d.Cfg.Node, "uptime": int64(time.Since(d.started).Seconds()),
				"upstream": d.Cfg.Upstream, "listen": d.Cfg.Listen}, nil
		},
	}}
}

// Listen opens the listener (separate from Run so callers and tests can learn the address).
// Without a host in the listen setting, pveproxy's LISTEN_IP applies.
func (d *Daemon) Listen() (net.Listener, error) {
	addr := d.Cfg.Listen
	if host, port, _ := net.SplitHostPort(addr); host == "" && d.policy.Load().ListenIP != "" {
		addr = net.JoinHostPort(d.policy.Load().ListenIP, port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.ln = ln
	d.mu.Unlock()
	return ln, nil
}

// Addr is the listener's address once listening.
func (d *Daemon) Addr() net.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ln == nil {
		return nil
	}
	return d.ln.Addr()
}

// Run serves until ctx ends or SIGTERM/SIGINT arrives, then drains; SIGHUP reloads TLS
// material. It reports readiness, status and watchdog pings to systemd when run under it.
func (d *Daemon) Run(ctx context.Context) error {
	ln := d.ln
	if ln == nil {
		var err error
		if ln, err = d.Listen(); err != nil {
			return err
		}
	}
	tlsCfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return d.tlsCfg.Load(), nil }}
	if d.Cfg.TLS.Disable {
		tlsCfg = nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.srv = &httpd.Server{Handler: d, TLSConfig: tlsCfg, ReadHeaderTimeout: d.Cfg.Timeouts.ReadHeader.D(),
		IdleTimeout: d.Cfg.Timeouts.Idle.D(), InactivityTimeout: d.Cfg.Timeouts.Inactivity.D(), MaxConns: d.Cfg.MaxConnections,
		Allow: d.allowed, Logger: d.Logger.With("component", "http"), BaseContext: ctx}
	for _, m := range d.modules {
		if s, ok := m.(Starter); ok {
			if err := s.Start(ctx); err != nil {
				return err
			}
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- d.srv.Serve(ln) }()
	d.Logger.Info("pvesnap listening", "addr", ln.Addr().String(), "node", d.Cfg.Node, "upstream", d.Cfg.Upstream, "version", Version)
	daemon.SdNotify(false, daemon.SdNotifyReady)
	daemon.SdNotify(false, "STATUS=serving on "+ln.Addr().String())
	if iv, err := daemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		go d.watchdog(ctx, iv/3)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-errc:
			if errors.Is(err, httpd.ErrServerClosed) {
				return nil
			}
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			return d.drain(cancel)
		case <-ctx.Done():
			return d.drain(cancel)
		}
	}
}

func (d *Daemon) reload() {
	daemon.SdNotify(false, daemon.SdNotifyReloading)
	// Certificates first: the listener's configuration made next names the cluster CA the
	// certificates were just read with (the issuer another node's pvesnap is asked for).
	if err := d.certs.Reload(); err != nil {
		d.Logger.Error("reload failed, keeping previous certificates", "err", err)
	} else {
		d.Proxy.CloseIdle()
		d.peers.CloseIdle()
		d.Logger.Info("reloaded TLS certificates", "cert", d.Cfg.TLS.Cert)
	}
	if p, err := pve.ReadProxyDefaults(d.Cfg.PveproxyConfig); err != nil {
		d.Logger.Error("reload failed, keeping pveproxy's previous settings", "err", err)
	} else if err := d.applyPveproxy(p); err != nil {
		d.Logger.Error("reload failed, keeping pveproxy's previous settings", "err", err)
	} else {
		if d.Cfg.Pveproxy != nil && p.ListenIP != d.Cfg.Pveproxy.ListenIP {
			d.Logger.Warn("LISTEN_IP changed: it applies after a restart", "file", d.Cfg.PveproxyConfig)
		}
		d.Logger.Info("reloaded pveproxy's settings", "file", d.Cfg.PveproxyConfig)
	}
	daemon.SdNotify(false, daemon.SdNotifyReady)
}

func (d *Daemon) drain(cancel context.CancelFunc) error {
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	daemon.SdNotify(false, "STATUS=draining in-flight requests")
	d.Logger.Info("shutting down: draining in-flight requests", "timeout", d.Cfg.Timeouts.Shutdown.D())
	sctx, scancel := context.WithTimeout(context.Background(), d.Cfg.Timeouts.Shutdown.D())
	defer scancel()
	err := d.srv.Shutdown(sctx)
	cancel()
	return err
}

func (d *Daemon) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}
