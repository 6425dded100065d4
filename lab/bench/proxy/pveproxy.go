package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pvesnap/pvesnap/daemon/config"
)

// serviceTime is how long a call occupies a worker of the pveproxy-shaped upstream: the low
// milliseconds a real pveproxy worker spends on an API call (Perl, pmxcfs, a call to
// pvedaemon), as a wait, so that the stand-in's own CPU does not compete with what is
// measured.
const serviceTime = 2 * time.Millisecond

// shapedUpstream is an upstream shaped like pveproxy: worker processes on one listening
// socket (as pveproxy's, which fork and take turns at accept), each single-threaded and
// serving one call at a time; a connection stays with the worker that accepted it;
// keep-alive for 100 calls per connection and 5 s idle (pveproxy's keep_alive and timeout);
// HTTP/1.1 over TLS with the node's certificate. It answers GET /api2/json/version with a
// body of pveproxy's size and headers.
type shapedUpstream struct {
	URL   string
	ln    net.Listener
	procs []*exec.Cmd
}

func startPveproxyShaped(cfg *config.Config, workers int, service time.Duration) (*shapedUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		ln.Close()
		return nil, err
	}
	defer f.Close()
	exe, err := os.Executable()
	if err != nil {
		ln.Close()
		return nil, err
	}
	u := &shapedUpstream{URL: "https://" + ln.Addr().String(), ln: ln}
	for i := 0; i < workers; i++ {
		cmd := exec.Command(exe, "-pveproxy-worker", strings.Join([]string{cfg.TLS.Cert, cfg.TLS.Key, service.String()}, ","))
		cmd.ExtraFiles = []*os.File{f}
		cmd.Stderr = os.Stderr
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1") // one thread, as a Perl worker
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			u.Close()
			return nil, err
		}
		u.procs = append(u.procs, cmd)
	}
	// Ready when it answers.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := c.Get(u.URL + "/api2/json/version")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			u.Close()
			return nil, fmt.Errorf("pveproxy-shaped upstream not answering: %v", err)
		}
	}
	c.CloseIdleConnections()
	return u, nil
}

// Close stops the workers.
func (u *shapedUpstream) Close() {
	for _, p := range u.procs {
		p.Process.Kill()
		p.Wait()
	}
	u.ln.Close()
}

// runWorker is one worker process: fd 3 is the shared listening socket.
func runWorker(arg string) error {
	f := strings.Split(arg, ",")
	if len(f) != 3 {
		return fmt.Errorf("want cert,key,service time: %q", arg)
	}
	service, err := time.ParseDuration(f[2])
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(f[0], f[1])
	if err != nil {
		return err
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(1)
	var busy sync.Mutex // one call at a time in this worker
	type calls struct{ n int }
	type key struct{}
	body := []byte(`{"data":{"release":"9.1","repoid":"b4b4a8c5b9c6a1e3","version":"9.1.1"}}`)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			busy.Lock()
			time.Sleep(service)
			busy.Unlock()
			st := r.Context().Value(key{}).(*calls)
			st.n++
			hd := w.Header()
			hd.Set("Content-Type", "application/json;charset=UTF-8")
			hd.Set("Cache-Control", "max-age=0")
			hd.Set("Pragma", "no-cache")
			hd.Set("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")
			hd.Set("Server", "pve-api-daemon/3.0")
			if st.n >= 100 {
				hd.Set("Connection", "close")
			}
			w.Write(body)
		}),
		IdleTimeout:  5 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1 only
		ConnContext:  func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, key{}, &calls{}) },
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}},
	}
	return srv.ServeTLS(ln, "", "")
}
