package itest

import (
	"encoding/json"
	"fmt"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/pve"
	"github.com/pvesnap/pvesnap/daemon/server"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// selftest is a test-only route that starts a slow task through pvesnap's API, so task
// handling can be tested before the product's long jobs exist in the simulator.
type selftest struct {
	node string
	ts   *tasks.Service
}

func testModules(node string, ts *tasks.Service) []server.Module {
	return []server.Module{&selftest{node: node, ts: ts}}
}

func (s *selftest) Routes() []*api.Route {
	return []*api.Route{{Method: "POST", Path: "/nodes/{node}/pvesnap/itest-sleep", Name: "itest_sleep",
		Description: "test only: a task that logs a line every 100 ms",
		Permission:  api.Permission{Path: "/nodes/{node}", Privs: []string{"Sys.Modify"}},
		Params: []api.Param{{Name: "node", Type: api.String, Check: pve.CheckNode},
			{Name: "steps", Type: api.Integer, Minimum: api.Min(1), Maximum: api.Max(1000)}},
		ProxyTo: "node",
		Handler: func(c *api.Call) (any, error) {
			spec, _ := json.Marshal(map[string]int64{"steps": c.Params.Int("steps")})
			st, err := s.ts.Start(c.Ctx, tasks.Job{Type: "pvesnaptest", ID: "100", User: c.Auth.Name(), Kind: "itest-sleep", Spec: spec})
			if err != nil {
				return nil, fmt.Errorf("starting task: %w", err)
			}
			return st.UPID, nil
		}}}
}
