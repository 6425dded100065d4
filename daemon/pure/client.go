// Package pure is pvesnap's FlashArray REST 2.x client: version negotiation capped at the
// newest version pvesnap is tested against, api-token login with one re-login on an expired
// session, an X-Request-ID on every request (logged, and named in every error), retries with
// backoff on 429 (honouring Retry-After and the gateway's X-RateLimit-* counters), 503 and
// "Server is busy", retries of GETs on transport errors, continuation-token pagination, and
// errors classified by the array's own messages.
package pure

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MinVersion is the oldest REST version pvesnap uses (Purity 6.1); the client picks the
// highest 2.x the array offers up to MaxVersion.
const MinVersion = "2.4"

// MaxVersion is the newest REST version pvesnap is tested against (its contract tests run
// against the specs of TestedVersions): a newer array is spoken to in this version, which it
// keeps offering, rather than in one whose answers pvesnap has never been checked against.
const MaxVersion = "2.44"

// TestedVersions are the REST versions whose published specs pvesnap's requests and its
// simulator's answers are checked against (docs/arrays.md lists them).
var TestedVersions = []string{"2.4", "2.26", "2.44"}

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
	// RequestID is the X-Request-ID of the request, which the array's audit and the
	// gateway's logs carry too: the key to find it there.
	RequestID string
	// RateLimit is the gateway's X-RateLimit-* counters of a 429, "" otherwise.
	RateLimit string
}

func (e *Error) Error() string {
	ctx := ""
	if e.Context != "" {
		ctx = " (" + e.Context + ")"
	}
	if e.RateLimit != "" {
		ctx += " [" + e.RateLimit + "]"
	}
	if e.RequestID != "" {
		ctx += " [X-Request-ID " + e.RequestID + "]"
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
	resp, raw, id, err := c.send(ctx, http.MethodGet, c.Endpoint+"/api/api_version", nil, nil)
	if err != nil {
		return "", err
	}
	var body struct {
		Version []string `json:"version"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(raw, &body) != nil {
		return "", fmt.Errorf("array %s: GET /api/api_version answered %s [X-Request-ID %s]", c.Endpoint, resp.Status, id)
	}
	best, newest := "", ""
	for _, s := range body.Version {
		if !strings.HasPrefix(s, "2.") {
			continue
		}
		if newest == "" || compareVersion(s, newest) > 0 {
			newest = s
		}
		if compareVersion(s, MinVersion) >= 0 && compareVersion(s, MaxVersion) <= 0 && (best == "" || compareVersion(s, best) > 0) {
			best = s
		}
	}
	if best == "" {
		return "", fmt.Errorf("array %s offers REST %v: pvesnap needs 2.x >= %s (Purity 6.1 or later) and speaks up to %s, the newest it is tested against",
			c.Endpoint, body.Version, MinVersion, MaxVersion)
	}
	if newest != best {
		c.Logger.Debug("array offers a newer REST version than pvesnap is tested against", "array", c.Endpoint, "offered", newest, "using", best)
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
	var tok string
	for attempt := 0; ; attempt++ {
		resp, raw, id, err := c.send(ctx, http.MethodPost, c.Endpoint+"/api/"+v+"/login", nil, http.Header{"api-token": {c.Token}})
		if err != nil {
			return "", err
		}
		tok = resp.Header.Get("x-auth-token")
		if resp.StatusCode == 200 && tok != "" {
			break
		}
		ae := decodeError(http.MethodPost, "/login", resp, raw, id)
		switch {
		case errors.Is(ae, ErrBusy) && attempt < c.retries():
			// An overloaded array or a rate-limiting gateway refuses a login like any call:
			// that says nothing about the token.
			if err := c.pause(ctx, resp, attempt, ae); err != nil {
				return "", err
			}
			continue
		case errors.Is(ae, ErrBusy):
			return "", fmt.Errorf("array %s is busy and turned the login away before judging the API token: %w", c.Endpoint, ae)
		case resp.StatusCode == 400 || resp.StatusCode == 401 || resp.StatusCode == 403:
			return "", fmt.Errorf("array %s refused the API token: %w", c.Endpoint, ae)
		}
		return "", fmt.Errorf("array %s: login failed: %w", c.Endpoint, ae)
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
	// Best effort: a session left behind expires on the array by itself.
	c.send(ctx, http.MethodPost, c.Endpoint+"/api/"+v+"/logout", nil, http.Header{"x-auth-token": {s}}) //nolint:errcheck
}

func (c *Client) retries() int {
	if c.Retries == 0 {
		return 5
	}
	return c.Retries
}

func (c *Client) backoff(attempt int) time.Duration {
	b := c.Backoff
	if b == 0 {
		b = 500 * time.Millisecond
	}
	return b << attempt
}

// newRequestID makes an X-Request-ID: 16 random bytes in hex.
func newRequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// transportRetries bounds the repeats of a GET after transport errors: enough for a pooled
// connection the array closed or a blip in the network, short when the array is down (a
// mapping or refresh must not wait long on one unreachable array).
const transportRetries = 2

// send performs one HTTP exchange with an X-Request-ID of its own, reading the whole answer.
// A GET that fails in transport (connection refused or reset, a timeout) is sent again, with
// backoff, up to transportRetries times: GETs change nothing, so a repeat cannot do anything
// twice. Other methods are never repeated after a transport error: the array may have acted.
func (c *Client) send(ctx context.Context, method, u string, body []byte, h http.Header) (*http.Response, []byte, string, error) {
	for attempt := 0; ; attempt++ {
		id := newRequestID()
		var rb io.Reader
		if body != nil {
			rb = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rb)
		if err != nil {
			return nil, nil, id, err
		}
		for k, v := range h {
			req.Header[http.CanonicalHeaderKey(k)] = v
		}
		req.Header.Set("X-Request-ID", id)
		req.Header.Set("User-Agent", c.UserAgent)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		start := time.Now()
		resp, err := c.HTTP.Do(req)
		var raw []byte
		if err == nil {
			raw, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			resp.Body.Close()
		}
		path := req.URL.Path
		if err != nil {
			c.Logger.Debug("array request failed", "array", c.Endpoint, "method", method, "path", path, "request_id", id, "err", err)
			if method == http.MethodGet && transient(err) && ctx.Err() == nil && attempt < transportRetries {
				select {
				case <-ctx.Done():
				case <-time.After(c.backoff(attempt)):
				}
				continue
			}
			return nil, nil, id, fmt.Errorf("array %s unreachable (%s %s, X-Request-ID %s): %w", c.Endpoint, method, path, id, err)
		}
		c.Logger.Debug("array request", "array", c.Endpoint, "method", method, "path", path, "status", resp.StatusCode,
			"request_id", id, "duration", time.Since(start))
		return resp, raw, id, nil
	}
}

// transient: a transport failure a repeat may not meet (refused, reset or cut connections,
// timeouts, temporary DNS failures), unlike a certificate that does not verify.
func transient(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) {
		return false
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTemporary || dns.IsTimeout
	}
	var ne net.Error
	var op *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.As(err, &op) || (errors.As(err, &ne) && ne.Timeout())
}

// pause waits before retrying a busy answer: as long as Retry-After (or RateLimit-Reset)
// says; else a full second when the gateway's per-second counter is spent and a minute when
// the per-minute one is (py-pure-client's rule); else the backoff. ctx ends the wait.
func (c *Client) pause(ctx context.Context, resp *http.Response, attempt int, ae *Error) error {
	wait := retryAfter(resp.Header, c.backoff(attempt))
	c.Logger.Debug("array busy, retrying", "array", c.Endpoint, "status", resp.StatusCode, "wait", wait,
		"request_id", ae.RequestID, "rate_limit", ae.RateLimit)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
		return nil
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
		resp, raw, id, err := c.send(ctx, method, u, payload, http.Header{"x-auth-token": {session}})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == 200 || resp.StatusCode == 207 {
			if out != nil && len(raw) > 0 {
				if err := json.Unmarshal(raw, out); err != nil {
					return nil, fmt.Errorf("array %s %s: unreadable answer [X-Request-ID %s]: %w", method, path, id, err)
				}
			}
			return resp.Header, nil
		}
		ae := decodeError(method, path, resp, raw, id)
		switch {
		case resp.StatusCode == 401 && !relogged:
			// The session expired (Pure reports "Invalid session."): log in again, once.
			c.Logger.Debug("array session expired, logging in again", "array", c.Endpoint, "request_id", id)
			c.mu.Lock()
			c.session = ""
			c.mu.Unlock()
			relogged = true
			continue
		case errors.Is(ae, ErrBusy) && attempt < c.retries():
			if err := c.pause(ctx, resp, attempt, ae); err != nil {
				return nil, err
			}
			continue
		}
		c.Logger.Debug("array error", "array", c.Endpoint, "method", method, "path", path, "status", resp.StatusCode,
			"message", ae.Message, "request_id", id)
		return nil, ae
	}
}

// retryAfter honours Retry-After (seconds or HTTP date) and RateLimit-Reset, then the
// gateway's spent X-RateLimit-Remaining-* counters; capped at 60 s.
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
	switch {
	case h.Get("X-RateLimit-Remaining-minute") == "0":
		return time.Minute
	case h.Get("X-RateLimit-Remaining-second") == "0":
		return time.Second
	}
	return min(def, time.Minute)
}

// rateLimit summarises the gateway's counters ("" when it sent none).
func rateLimit(h http.Header) string {
	var parts []string
	for _, w := range []string{"second", "minute"} {
		if l := h.Get("X-RateLimit-Limit-" + w); l != "" {
			parts = append(parts, fmt.Sprintf("%s of %s requests per %s left", orUnknown(h.Get("X-RateLimit-Remaining-"+w)), l, w))
		}
	}
	return strings.Join(parts, ", ")
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

func decodeError(method, path string, resp *http.Response, raw []byte, requestID string) *Error {
	status := resp.StatusCode
	e := &Error{Method: method, Path: path, Status: status, RequestID: requestID}
	if status == 429 {
		e.RateLimit = rateLimit(resp.Header)
	}
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
