package pve

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Client is a minimal Proxmox API client for tests and demo seeding: ticket or token auth,
// form or JSON bodies, the raw status line kept.
type Client struct {
	Base   string // https://host:port
	Ticket string
	CSRF   string
	Token  string // user@realm!id=secret
	JSON   bool   // send bodies as JSON (like go-proxmox) instead of forms
	Format string // "json" (default) or "extjs"
	HTTP   *http.Client
}

// NewClient trusts the cluster CA in caFile.
func NewClient(base, caFile string) (*Client, error) {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(b)
	return &Client{Base: base, HTTP: &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}}}, nil
}

// Response is an API answer.
type Response struct {
	Code   int
	Status string // the whole status line after the code: PVE's message
	Data   json.RawMessage
	Total  int
	Raw    []byte
	Errors map[string]string
	Header http.Header
}

// Login obtains a ticket with a password.
func (c *Client) Login(user, password string) error {
	r, err := c.Do("POST", "/access/ticket", url.Values{"username": {user}, "password": {password}})
	if err != nil {
		return err
	}
	if r.Code != 200 {
		return fmt.Errorf("login %s: %d %s", user, r.Code, r.Status)
	}
	var d struct {
		Ticket string `json:"ticket"`
		CSRF   string `json:"CSRFPreventionToken"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return err
	}
	c.Ticket, c.CSRF = d.Ticket, d.CSRF
	return nil
}

// Do calls path (relative to /api2/json) with params in the query (GET, DELETE) or body.
func (c *Client) Do(method, path string, params url.Values) (*Response, error) {
	format := c.Format
	if format == "" {
		format = "json"
	}
	u := c.Base + "/api2/" + format + path
	var body io.Reader
	ct := ""
	if method == "GET" || method == "DELETE" {
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
	} else if len(params) > 0 {
		if c.JSON {
			m := map[string]any{}
			for k, v := range params {
				m[k] = v[0]
			}
			b, _ := json.Marshal(m)
			body, ct = bytes.NewReader(b), "application/json"
		} else {
			body, ct = strings.NewReader(params.Encode()), "application/x-www-form-urlencoded"
		}
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "PVEAPIToken="+c.Token)
	} else if c.Ticket != "" {
		req.AddCookie(&http.Cookie{Name: "PVEAuthCookie", Value: url.PathEscape(c.Ticket)})
		if method != "GET" {
			req.Header.Set("CSRFPreventionToken", c.CSRF)
		}
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := &Response{Code: resp.StatusCode, Status: strings.TrimSpace(strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode))), Raw: raw, Header: resp.Header}
	if len(raw) > 0 {
		var env struct {
			Data   json.RawMessage   `json:"data"`
			Total  int               `json:"total"`
			Errors map[string]string `json:"errors"`
		}
		if json.Unmarshal(raw, &env) == nil {
			r.Data, r.Total, r.Errors = env.Data, env.Total, env.Errors
		}
	}
	return r, nil
}

// Must calls Do and requires a 200, returning the data.
func (c *Client) Must(method, path string, params url.Values) (json.RawMessage, error) {
	r, err := c.Do(method, path, params)
	if err != nil {
		return nil, err
	}
	if r.Code != 200 {
		return nil, fmt.Errorf("%s %s: %d %s %s", method, path, r.Code, r.Status, r.Errors)
	}
	return r.Data, nil
}

// WaitTask polls a task until it stops and returns its exit status.
func (c *Client) WaitTask(upid string, timeout time.Duration) (string, error) {
	f := strings.Split(upid, ":")
	if len(f) < 3 || f[0] != "UPID" {
		return "", fmt.Errorf("not a UPID: %q", upid)
	}
	node := f[1]
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		d, err := c.Must("GET", "/nodes/"+node+"/tasks/"+upid+"/status", nil)
		if err != nil {
			return "", err
		}
		var s struct{ Status, Exitstatus string }
		json.Unmarshal(d, &s)
		if s.Status == "stopped" {
			return s.Exitstatus, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("task %s still running after %s", upid, timeout)
}

// UPID decodes a string result.
func UPIDOf(d json.RawMessage) string {
	var s string
	json.Unmarshal(d, &s)
	return s
}
