// Command proxy measures what pvesnap in front of pveproxy costs: the latency and throughput
// of calls passed through :8009 against the same calls made to the (simulated) pveproxy
// directly, and of an owned route (permission check included) against pveproxy's own
// authenticated call. It prints the figures and a markdown table and writes a latency
// histogram PNG.
//
//	go run ./lab/bench/proxy -out docs/img
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/server"
	"github.com/pvesnap/pvesnap/lab/bench/plot"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

func main() {
	out := flag.String("out", "", "directory for the histogram PNG")
	n := flag.Int("n", 3000, "sequential calls per case")
	clients := flag.Int("clients", 16, "concurrent clients for the throughput cases")
	dur := flag.Duration("dur", 3*time.Second, "duration of each throughput case")
	flag.Parse()
	if err := run(*out, *n, *clients, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "bench proxy:", err)
		os.Exit(1)
	}
}

func run(out string, n, clients int, dur time.Duration) error {
	dir, err := os.MkdirTemp("", "pvesnap-bench-proxy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sim, err := simpve.Start(simpve.Options{Dir: filepath.Join(dir, "sim"), AuthFailDelay: time.Millisecond, PvestatdInterval: time.Hour})
	if err != nil {
		return err
	}
	defer sim.Close()
	p := sim.NodePaths("pve1")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cfgPath := filepath.Join(dir, "pvesnap.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("listen: %s\nupstream: %s\nnode: pve1\ntimeouts:\n  auth_fail_delay: 0s\npaths:\n  pve: %s\n  tasks: %s\n  state: %s\n  run: %s\n  lock: %s\n",
		addr, sim.URL("pve1"), p.PVE, p.Tasks, p.State, p.Run, p.Lock)), 0o644)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	d, err := server.New(cfg, slog.New(slog.DiscardHandler), nil, nil, nil)
	if err != nil {
		return err
	}
	if _, err := d.Listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	ca, _ := os.ReadFile(sim.CAFile())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: clients + 4}}
	ticket, _, err := sim.Ticket("root@pam")
	if err != nil {
		return err
	}
	get := func(base, path string) error {
		req, _ := http.NewRequest("GET", base+"/api2/json"+path, nil)
		req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: ticket})
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s%s: %s", base, path, resp.Status)
		}
		return nil
	}
	direct, via := sim.URL("pve1"), "https://"+addr
	seq := func(base, path string) ([]float64, error) {
		lat := make([]float64, 0, n)
		for i := 0; i < n+100; i++ {
			t := time.Now()
			if err := get(base, path); err != nil {
				return nil, err
			}
			if i >= 100 { // warm-up
				lat = append(lat, float64(time.Since(t).Microseconds()))
			}
		}
		sort.Float64s(lat)
		return lat, nil
	}
	par := func(base, path string) (float64, error) {
		var count atomic.Int64
		var firstErr atomic.Value
		end := time.Now().Add(dur)
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					if err := get(base, path); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					count.Add(1)
				}
			}()
		}
		wg.Wait()
		if e, ok := firstErr.Load().(error); ok {
			return 0, e
		}
		return float64(count.Load()) / dur.Seconds(), nil
	}
	type row struct {
		what, peer string
		a, b       float64
		unit       string
	}
	var rows []row
	pct := func(l []float64, q float64) float64 { return l[int(q*float64(len(l)-1))] }
	// Pass-through: GET /version (authenticated), direct vs through pvesnap.
	dl, err := seq(direct, "/version")
	if err != nil {
		return err
	}
	vl, err := seq(via, "/version")
	if err != nil {
		return err
	}
	rows = append(rows,
		row{"GET /version through :8009, median latency", "pveproxy directly", pct(vl, .5), pct(dl, .5), "µs"},
		row{"GET /version through :8009, p99 latency", "pveproxy directly", pct(vl, .99), pct(dl, .99), "µs"})
	dt, err := par(direct, "/cluster/resources")
	if err != nil {
		return err
	}
	vt, err := par(via, "/cluster/resources")
	if err != nil {
		return err
	}
	rows = append(rows, row{fmt.Sprintf("GET /cluster/resources through :8009, %d clients", clients), "pveproxy directly", vt, dt, "req/s"})
	// An owned route (credential and privilege checked against pveproxy, cached) against
	// pveproxy's own authenticated call.
	ol, err := seq(via, "/nodes/pve1/pvesnap")
	if err != nil {
		return err
	}
	pl, err := seq(direct, "/nodes/pve1/qemu")
	if err != nil {
		return err
	}
	rows = append(rows, row{"GET /nodes/pve1/pvesnap (owned, permission checked), median", "pveproxy's GET /nodes/pve1/qemu", pct(ol, .5), pct(pl, .5), "µs"})
	fmt.Println("| Measured | Peer | pvesnap | peer | ratio |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %.0f %s | %.0f %s | %.2f |\n", r.what, r.peer, r.a, r.unit, r.b, r.unit, r.a/r.b)
	}
	if out != "" {
		hist := func(name string, l []float64) plot.Series {
			const bucket = 50.0
			counts := map[int]int{}
			for _, v := range l {
				counts[int(v/bucket)]++
			}
			var s plot.Series
			s.Name = name
			for b := 0; b <= int(pct(l, .99)/bucket)+1; b++ {
				s.X = append(s.X, float64(b)*bucket)
				s.Y = append(s.Y, float64(counts[b]))
			}
			return s
		}
		c := plot.Chart{Title: fmt.Sprintf("GET /version latency, %d sequential calls (to p99)", n), XLabel: "latency (µs, 50 µs buckets)",
			YLabel: "calls", Bars: true, Series: []plot.Series{hist("pveproxy directly", dl), hist("through pvesnap :8009", vl)}}
		if err := c.Save(filepath.Join(out, "bench-proxy-latency.png")); err != nil {
			return err
		}
	}
	return nil
}
