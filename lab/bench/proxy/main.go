// Command proxy measures what pvesnap in front of pveproxy costs: the latency and throughput
// of calls passed through :8009 against the same calls made to the (simulated) pveproxy
// directly, at 1 and at 64 concurrent clients, and of an owned route (credential and
// permission checked, warm cache) against a pass-through call and pveproxy's own
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
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pvesnap/pvesnap/daemon/config"
	"github.com/pvesnap/pvesnap/daemon/server"
	"github.com/pvesnap/pvesnap/lab/bench/plot"
	simpve "github.com/pvesnap/pvesnap/sim/pve"
)

func main() {
	out := flag.String("out", "", "directory for the histogram PNG")
	clients := flag.Int("clients", 64, "concurrent clients for the loaded cases (the other: 1)")
	dur := flag.Duration("dur", 3*time.Second, "duration of each case")
	flag.DurationVar(&shapedDur, "shaped-dur", 15*time.Second, "duration of each case against the pveproxy-shaped upstream")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (simulator and clients included)")
	worker := flag.String("pveproxy-worker", "", "internal: serve as a worker of the pveproxy-shaped upstream (cert,key,service time) on fd 3")
	flag.Parse()
	if *worker != "" {
		if err := runWorker(*worker); err != nil {
			fmt.Fprintln(os.Stderr, "bench proxy worker:", err)
			os.Exit(1)
		}
		return
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*out, *clients, *dur); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench proxy:", err)
		os.Exit(1)
	}
}

// shapedDur is the duration of the cases against the pveproxy-shaped upstream.
var shapedDur time.Duration

// result is one load case.
type result struct {
	lat []float64 // µs per call, sorted
	rps float64
	cpu float64 // µs of CPU (user + system) per call
}

// cpuTime is this process's CPU time so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func run(out string, clients int, dur time.Duration) error {
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, addr, err := startPvesnap(ctx, sim, filepath.Join(dir, "pvesnap.yaml"), sim.URL("pve1"))
	if err != nil {
		return err
	}
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
	stock, err := stockProxy(cfg, sim.URL("pve1"), pool)
	if err != nil {
		return err
	}
	defer stock.Close()
	// The same, in front of an upstream with pveproxy's shape (see shapedUpstream).
	shaped, err := startPveproxyShaped(cfg, 3, serviceTime)
	if err != nil {
		return err
	}
	defer shaped.Close()
	_, shapedAddr, err := startPvesnap(ctx, sim, filepath.Join(dir, "pvesnap-shaped.yaml"), shaped.URL)
	if err != nil {
		return err
	}
	shapedStock, err := stockProxy(cfg, shaped.URL, pool)
	if err != nil {
		return err
	}
	defer shapedStock.Close()
	// load runs clients concurrent callers for dur after a warm-up, and returns every call's
	// latency (µs, sorted), the calls per second and the CPU time per call of this whole
	// process (clients, pvesnap and the simulated pveproxy).
	load := func(base, path string, clients int, dur time.Duration) (result, error) {
		for i := 0; i < 100; i++ { // warm-up: connections, caches
			if err := get(base, path); err != nil {
				return result{}, err
			}
		}
		cpu0 := cpuTime()
		var mu sync.Mutex
		var lat []float64
		var firstErr atomic.Value
		end := time.Now().Add(dur)
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []float64
				for time.Now().Before(end) {
					t := time.Now()
					if err := get(base, path); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					mine = append(mine, float64(time.Since(t).Microseconds()))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		cpu := cpuTime() - cpu0
		if e, ok := firstErr.Load().(error); ok {
			return result{}, e
		}
		sort.Float64s(lat)
		return result{lat: lat, rps: float64(len(lat)) / dur.Seconds(), cpu: float64(cpu.Microseconds()) / float64(len(lat))}, nil
	}
	type row struct {
		what, peer string
		a, b       float64
		unit       string
		target     string
	}
	var rows []row
	pct := func(l []float64, q float64) float64 { return l[int(q*float64(len(l)-1))] }
	mean := func(l []float64) float64 {
		sum := 0.0
		for _, v := range l {
			sum += v
		}
		return sum / float64(len(l))
	}
	// interleaved loads path at each base in turn, in rounds of dur/rounds each, and merges
	// each base's rounds: the machine's other work (2 shared cores) falls on all alike.
	interleaved := func(bases []string, path string, c int, dur time.Duration) ([]result, error) {
		const rounds = 3
		out := make([]result, len(bases))
		for r := 0; r < rounds; r++ {
			for i, b := range bases {
				res, err := load(b, path, c, dur/rounds)
				if err != nil {
					return nil, err
				}
				calls := float64(len(res.lat))
				out[i].cpu += res.cpu * calls
				out[i].rps += res.rps / rounds
				out[i].lat = append(out[i].lat, res.lat...)
			}
		}
		for i := range out {
			out[i].cpu /= float64(len(out[i].lat))
			sort.Float64s(out[i].lat)
		}
		return out, nil
	}
	// both loads path directly, through pvesnap and through the stock proxy with c clients.
	both := func(path string, c int) (d, v, s result, err error) {
		res, err := interleaved([]string{direct, via, stock.URL}, path, c, dur)
		if err != nil {
			return
		}
		return res[0], res[1], res[2], nil
	}
	throughputTarget := func(c int) string {
		if c == 1 {
			return ""
		}
		return "ratio ≥ 0.90"
	}
	// Pass-through: GET /version, direct vs through pvesnap, at 1 and at many clients.
	var dl, vl []float64
	for _, c := range []int{1, clients} {
		d, v, s, err := both("/version", c)
		if err != nil {
			return err
		}
		if c == 1 {
			dl, vl = d.lat, v.lat
		}
		rows = append(rows,
			row{fmt.Sprintf("GET /version through :8009, %d client(s), median latency", c), "pveproxy directly", pct(v.lat, .5), pct(d.lat, .5), "µs", "added ≤ 300 µs"},
			row{fmt.Sprintf("GET /version through :8009, %d client(s), p99 latency", c), "pveproxy directly", pct(v.lat, .99), pct(d.lat, .99), "µs", ""},
			row{fmt.Sprintf("GET /version through :8009, %d client(s), throughput", c), "pveproxy directly", v.rps, d.rps, "req/s", throughputTarget(c)},
			row{fmt.Sprintf("GET /version through :8009, %d client(s), CPU per call (all processes)", c), "pveproxy directly", v.cpu, d.cpu, "µs", ""},
			row{fmt.Sprintf("GET /version through :8009, %d client(s), throughput", c), stockPeer, v.rps, s.rps, "req/s", ""},
			row{fmt.Sprintf("GET /version through :8009, %d client(s), CPU per call (all processes)", c), stockPeer, v.cpu, s.cpu, "µs", ""})
	}
	// A call pveproxy has to work for (the cluster's resources): here the upstream's own cost
	// weighs as it does against the real pveproxy.
	for _, c := range []int{1, clients} {
		d, v, s, err := both("/cluster/resources", c)
		if err != nil {
			return err
		}
		rows = append(rows, row{fmt.Sprintf("GET /cluster/resources through :8009, %d client(s), throughput", c), "pveproxy directly", v.rps, d.rps, "req/s", throughputTarget(c)},
			row{fmt.Sprintf("GET /cluster/resources through :8009, %d client(s), throughput", c), stockPeer, v.rps, s.rps, "req/s", ""})
	}
	// Against an upstream with pveproxy's shape (3 workers, a call occupying one for
	// serviceTime, keep-alive as pveproxy's): what users feel. The workers, not the CPU,
	// bound the throughput, as on a node.
	// Longer: a client connection ends after pveproxy's 100 calls and the next lands on
	// another worker, so each peer's calls spread over the workers as they do over time.
	for _, c := range []int{1, clients} {
		res, err := interleaved([]string{shaped.URL, "https://" + shapedAddr, shapedStock.URL}, "/version", c, shapedDur)
		if err != nil {
			return err
		}
		d, v, st := res[0], res[1], res[2]
		tput := ""
		if c > 1 {
			tput = "ratio ≥ 0.95"
		}
		rows = append(rows,
			row{fmt.Sprintf("pveproxy-shaped upstream: GET /version through :8009, %d client(s), median latency", c), "pveproxy-shaped upstream directly", pct(v.lat, .5), pct(d.lat, .5), "µs", "added ≤ 300 µs"},
			row{fmt.Sprintf("pveproxy-shaped upstream: GET /version through :8009, %d client(s), mean latency", c), "pveproxy-shaped upstream directly", mean(v.lat), mean(d.lat), "µs", ""},
			row{fmt.Sprintf("pveproxy-shaped upstream: GET /version through :8009, %d client(s), p99 latency", c), "pveproxy-shaped upstream directly", pct(v.lat, .99), pct(d.lat, .99), "µs", ""},
			row{fmt.Sprintf("pveproxy-shaped upstream: GET /version through :8009, %d client(s), throughput", c), "pveproxy-shaped upstream directly", v.rps, d.rps, "req/s", tput},
			row{fmt.Sprintf("pveproxy-shaped upstream: GET /version through :8009, %d client(s), throughput", c), stockPeer, v.rps, st.rps, "req/s", ""},
			row{fmt.Sprintf("pveproxy-shaped upstream: GET /version through :8009, %d client(s), median latency", c), stockPeer, pct(v.lat, .5), pct(st.lat, .5), "µs", ""})
	}
	// An owned route: the credential and privileges checked (against pveproxy, then cached)
	// before pvesnap answers it itself. Peers: a pass-through call through pvesnap, which
	// checks nothing, and pveproxy's own authenticated call.
	owned, err := load(via, "/nodes/pve1/pvesnap", 1, dur)
	if err != nil {
		return err
	}
	qemu, err := load(direct, "/nodes/pve1/qemu", 1, dur)
	if err != nil {
		return err
	}
	ol, pl := owned.lat, qemu.lat
	rows = append(rows,
		row{"GET /nodes/pve1/pvesnap (owned, authenticated, warm cache), median", "GET /version passed through :8009", pct(ol, .5), pct(vl, .5), "µs", "added ≤ 200 µs"},
		row{"GET /nodes/pve1/pvesnap (owned, authenticated, warm cache), median", "pveproxy's GET /nodes/pve1/qemu", pct(ol, .5), pct(pl, .5), "µs", ""})
	fmt.Println("| Measured | Peer | pvesnap | peer | added | ratio | target |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		added := fmt.Sprintf("%+.0f %s", r.a-r.b, r.unit)
		fmt.Printf("| %s | %s | %.0f %s | %.0f %s | %s | %.2f | %s |\n", r.what, r.peer, r.a, r.unit, r.b, r.unit, added, r.a/r.b, r.target)
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
		c := plot.Chart{Title: fmt.Sprintf("GET /version latency, one client for %s (to p99)", dur), XLabel: "latency (µs, 50 µs buckets)",
			YLabel: "calls", Bars: true, Series: []plot.Series{hist("pveproxy directly", dl), hist("through pvesnap :8009", vl)}}
		if err := c.Save(filepath.Join(out, "bench-proxy-latency.png")); err != nil {
			return err
		}
	}
	return nil
}

// startPvesnap runs pvesnap (no modules: the pass-through and its own status route) in front
// of upstream, with the simulated node's certificate and files.
func startPvesnap(ctx context.Context, sim *simpve.Cluster, cfgPath, upstream string) (*config.Config, string, error) {
	p := sim.NodePaths("pve1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("listen: %s\nupstream: %s\nnode: pve1\npveproxy_config: %s\ntimeouts:\n  auth_fail_delay: 0s\npaths:\n  pve: %s\n  tasks: %s\n  state: %s\n  run: %s\n  lock: %s\n",
		addr, upstream, cfgPath+".pveproxy", p.PVE, p.Tasks, p.State, p.Run, p.Lock)), 0o644)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, "", err
	}
	d, err := server.New(cfg, slog.New(slog.DiscardHandler), nil, nil, nil)
	if err != nil {
		return nil, "", err
	}
	if _, err := d.Listen(); err != nil {
		return nil, "", err
	}
	go d.Run(ctx)
	return cfg, addr, nil
}

// stockPeer names the second peer: what any TLS-terminating proxy costs on this machine.
const stockPeer = "Go's stock reverse proxy (net/http/httputil)"

// stockProxy serves net/http/httputil's ReverseProxy to upstream with pvesnap's certificate
// and an upstream connection pool as large as pvesnap's: the same two TLS sessions per call,
// with none of pvesnap's work (routing, intercept decisions, reason phrases).
func stockProxy(cfg *config.Config, upstream string, pool *x509.CertPool) (*httptest.Server, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 256, DisableCompression: true}
	srv := httptest.NewUnstartedServer(rp)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	return srv, nil
}
