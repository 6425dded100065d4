// Package pure is pvesnap's FlashArray REST 2.x client: version negotiation, api-token login
// with one re-login on an expired session, retries with backoff on 429/503 and "Server is
// busy", continuation-token pagination, and errors classified by the array's own messages.
package pure

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MinVersion is the oldest REST version pvesnap uses (Purity 6.1); the client picks the
// highest 2.x the array offers.
const MinVersion = "2.4"

// Client talks to one array.
type Client struct {
	Endpoint  string // https://array
	Token     string // API token
	HTTP      *http.Client
	UserAgent string
	Logger    *slog.Logger
	// Retries bounds retries of 429/503/"Server is busy" (default 5).
	Retries int
	// Backoff is the first wait when the array gives no Retry-After (doubles each time).
	Backoff time.Duration

	mu      sync.Mutex
	version string
	session string
}

// Options configure New.
type Options struct {
	// CAFile pins the array's certificate authority (else the system roots).
	CAFile  string
	Timeout time.Duration
	Logger  *slog.Logger
}

// New makes a client; TLS is always verified.
func New(endpoint, token string, o Options) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("array endpoint %q is not an https:// URL", endpoint)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("array CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("array CA %s: no certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.Timeout == 0 {
		o.Timeout = 90 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{Endpoint: strings.TrimRight(endpoint, "/"), Token: token, Logger: o.Logger, UserAgent: "pvesnap",
		HTTP: &http.Client{Timeout: o.Timeout, Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 8}}}, nil
}

// Error is an error answer of the array.
type Error struct {
	Method, Path string
	Status       int
	Message      string // the array's message, e.g. "Connection already exists."
	Context      string // the object the message is about
}

func (e *Error) Error() string {
	ctx := ""
	if e.Context != "" {
		ctx = " (" + e.Context + ")"
	}
	return fmt.Sprintf("array %s %s: %d %s%s", e.Method, e.Path, e.Status, e.Message, ctx)
}

// Classes of array errors (errors.Is).
var (
	ErrNotFound          = errors.New("does not exist")
	ErrExists            = errors.New("already exists")
	ErrConnectionExists  = errors.New("connection already exists")
	ErrNotConnected      = errors.New("connection does not exist")
	ErrDestroyed         = errors.New("has been destroyed")
	ErrSession           = errors.New("invalid session")
	ErrBusy              = errors.New("array busy")
	ErrEradicateDisabled = errors.New("eradication disabled")
	ErrInUse             = errors.New("in use")
)

// Is classifies by status and message, the way Pure's own clients do.
func (e *Error) Is(target error) bool {
	m := e.Message
	switch target {
	case ErrNotFound:
		return e.Status == 400 && (strings.Contains(m, "does not exist") || strings.Contains(m, "No such volume or snapshot") ||
			strings.Contains(strings.ToLower(m), "not found") || strings.Contains(m, "could not be found"))
	case ErrExists:
		return e.Status == 400 && strings.Contains(m, "already exists")
	case ErrConnectionExists:
		return e.Status == 400 && m == "Connection already exists."
	case ErrNotConnected:
		return e.Status == 400 && m == "Connection does not exist."
	case ErrDestroyed:
		return e.Status == 400 && (strings.Contains(m, "has been destroyed") || strings.Contains(m, "has been deleted"))
	case ErrSession:
		return e.Status == 401
	case ErrBusy:
		return e.Status == 429 || e.Status == 503 || (e.Status == 500 && strings.Contains(m, "Server is busy"))
	case ErrEradicateDisabled:
		return strings.Contains(m, "Eradication is disabled") || strings.Contains(m, "Cannot eradicate")
	case ErrInUse:
		return strings.Contains(m, "already in use") || strings.Contains(m, "cannot be deleted due to existing connections")
	}
	return false
}

// Version returns the negotiated REST version, negotiating on first use.
func (c *Client) Version(ctx context.Context) (string, error) {
	c.mu.Lock()
	v := c.version
	c.mu.Unlock()
	if v != "" {
		return v, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Endpoint+"/api/api_version", nil)
	req.Header.Set("User-Agent", c.UserAgent)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("array %s unreachable: %w", c.Endpoint, err)
	}
	defer resp.Body.Close()
	var body struct {
		Version []string `json:"version"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return "", fmt.Errorf("array %s: GET /api/api_version answered %s", c.Endpoint, resp.Status)
	}
	best := ""
	for _, s := range body.Version {
		if strings.HasPrefix(s, "2.") && compareVersion(s, MinVersion) >= 0 && (best == "" || compareVersion(s, best) > 0) {
			best = s
		}
	}
	if best == "" {
		return "", fmt.Errorf("array %s offers REST %v: pvesnap needs 2.x >= %s (Purity 6.1 or later)", c.Endpoint, body.Version, MinVersion)
	}
	c.mu.Lock()
	c.version = best
	c.mu.Unlock()
	return best, nil
}

// compareVersion compares "2.4" and "2.44" numerically.
func compareVersion(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// AtLeast reports whether the negotiated version is at least v.
func (c *Client) AtLeast(ctx context.Context, v string) bool {
	cur, err := c.Version(ctx)
	return err == nil && compareVersion(cur, v) >= 0
}

func (c *Client) login(ctx context.Context) (string, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.Endpoint+"/api/"+v+"/login", nil)
	req.Header.Set("api-token", c.Token)
	req.Header.Set("User-Agent", c.UserAgent)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("array %s unreachable: %w", c.Endpoint, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	tok := resp.Header.Get("x-auth-token")
	if resp.StatusCode != 200 || tok == "" {
		return "", fmt.Errorf("array %s refused the API token: login answered %s", c.Endpoint, resp.Status)
	}
	c.mu.Lock()
	c.session = tok
	c.mu.Unlock()
	return tok, nil
}

// Logout ends the session (best effort).
func (c *Client) Logout(ctx context.Context) {
	c.mu.Lock()
	s, v := c.session, c.version
	c.session = ""
	c.mu.Unlock()
	if s == "" {
		return
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.Endpoint+"/api/"+v+"/logout", nil)
	req.Header.Set("x-auth-token", s)
	if resp, err := c.HTTP.Do(req); err == nil {
		resp.Body.Close()
	}
}

// call performs one REST call: query parameters, optional JSON body; the answer's JSON is
// decoded into out (when non-nil) and the continuation header is returned.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out any) (http.Header, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return nil, err
	}
	var payload []byte
	if body != nil {
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	retries := c.Retries
	if retries == 0 {
		retries = 5
	}
	backoff := c.Backoff
	if backoff == 0 {
		backoff = 500 * time.Millisecond
	}
	relogged := false
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		session := c.session
		c.mu.Unlock()
		if session == "" {
			if session, err = c.login(ctx); err != nil {
				return nil, err
			}
		}
		u := c.Endpoint + "/api/" + v + path
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		var rb io.Reader
		if payload != nil {
			rb = bytes.NewReader(payload)
		}
		req, _ := http.NewRequestWithContext(ctx, method, u, rb)
		req.Header.Set("x-auth-token", session)
		req.Header.Set("User-Agent", c.UserAgent)
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return nil, fmt.Errorf("array %s unreachable: %w", c.Endpoint, err)
		}
		raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if rerr != nil {
			return nil, fmt.Errorf("array %s: reading answer: %w", c.Endpoint, rerr)
		}
		if resp.StatusCode == 200 || resp.StatusCode == 207 {
			if out != nil && len(raw) > 0 {
				if err := json.Unmarshal(raw, out); err != nil {
					return nil, fmt.Errorf("array %s %s: unreadable answer: %w", method, path, err)
				}
			}
			return resp.Header, nil
		}
		ae := decodeError(method, path, resp.StatusCode, raw)
		switch {
		case resp.StatusCode == 401 && !relogged:
			// The session expired (Pure reports "Invalid session."): log in again, once.
			c.Logger.Debug("array session expired, logging in again", "array", c.Endpoint)
			c.mu.Lock()
			c.session = ""
			c.mu.Unlock()
			relogged = true
			continue
		case errors.Is(ae, ErrBusy) && attempt < retries:
			wait := retryAfter(resp.Header, backoff<<attempt)
			c.Logger.Debug("array busy, retrying", "array", c.Endpoint, "status", resp.StatusCode, "wait", wait)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		return nil, ae
	}
}

// retryAfter honours Retry-After (seconds or HTTP date) and RateLimit-Reset, capped at 60 s.
func retryAfter(h http.Header, def time.Duration) time.Duration {
	for _, k := range []string{"Retry-After", "RateLimit-Reset"} {
		v := h.Get(k)
		if v == "" {
			continue
		}
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return min(time.Duration(n)*time.Second, time.Minute)
		}
		if t, err := http.ParseTime(v); err == nil {
			return min(max(time.Until(t), 0), time.Minute)
		}
	}
	return min(def, time.Minute)
}

func decodeError(method, path string, status int, raw []byte) *Error {
	e := &Error{Method: method, Path: path, Status: status}
	var body struct {
		Errors []struct {
			Message string `json:"message"`
			Context string `json:"context"`
		} `json:"errors"`
		Message string `json:"message"` // the API gateway's form (403/429)
	}
	if json.Unmarshal(raw, &body) == nil {
		if len(body.Errors) > 0 {
			e.Message, e.Context = body.Errors[0].Message, body.Errors[0].Context
		} else {
			e.Message = body.Message
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if e.Message == "" { // a status without a standard text (found by fuzzing)
		e.Message = fmt.Sprintf("HTTP status %d", status)
	}
	return e
}

// list fetches every page of a collection, following continuation tokens.
func list[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, error) {
	q = cloneValues(q)
	if q.Get("limit") == "" {
		q.Set("limit", "500")
	}
	var out []T
	for page := 0; page < 10000; page++ {
		var body struct {
			Items              []T     `json:"items"`
			ContinuationToken  *string `json:"continuation_token"`
			MoreItemsRemaining bool    `json:"more_items_remaining"`
		}
		h, err := c.call(ctx, http.MethodGet, path, q, nil, &body)
		if err != nil {
			return nil, err
		}
		out = append(out, body.Items...)
		tok := ""
		if body.ContinuationToken != nil {
			tok = *body.ContinuationToken
		}
		if tok == "" {
			tok = h.Get("x-next-token")
		}
		if !body.MoreItemsRemaining || tok == "" {
			return out, nil
		}
		q.Set("continuation_token", tok)
	}
	return nil, fmt.Errorf("array %s %s: more than 10000 pages", c.Endpoint, path)
}

func cloneValues(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}
