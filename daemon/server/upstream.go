package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/pvesnap/pvesnap/daemon/api"
	"github.com/pvesnap/pvesnap/daemon/proxy"
	"github.com/pvesnap/pvesnap/daemon/tasks"
)

// UpstreamGet performs r's GET against pveproxy with the caller's own credential and returns
// the body of a 200 answer; any other answer is an *api.Error with pveproxy's status and
// reason, and an unreachable pveproxy is api.ErrUpstream.
func (d *Daemon) UpstreamGet(ctx context.Context, r *http.Request) ([]byte, error) {
	u := d.Upstream.JoinPath(r.URL.Path)
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for _, h := range []string{"Cookie", "Authorization", "CSRFPreventionToken"} {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	resp, err := d.Auth.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pveproxy unreachable: %v: %w", err, api.ErrUpstream)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading pveproxy's answer: %v: %w", err, api.ErrUpstream)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &api.Error{Code: resp.StatusCode, Message: proxy.ReasonOf(resp)}
	}
	return b, nil
}

// UpstreamTaskList is pveproxy's task list for the same call.
func (d *Daemon) UpstreamTaskList(ctx context.Context, r *http.Request) ([]tasks.ListItem, int, error) {
	b, err := d.UpstreamGet(ctx, r)
	if err != nil {
		return nil, 0, err
	}
	var env struct {
		Data  []tasks.ListItem `json:"data"`
		Total int              `json:"total"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, 0, fmt.Errorf("pveproxy's task list: %v: %w", err, api.ErrUpstream)
	}
	return env.Data, env.Total, nil
}
