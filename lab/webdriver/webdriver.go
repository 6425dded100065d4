// Package webdriver is a small W3C WebDriver client (standard library only) for the panel's
// browser tests: it starts chromedriver with Debian's headless Chromium, navigates, runs
// scripts in the page, sets cookies and takes screenshots.
package webdriver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Paths of Debian's packages chromium and chromium-driver.
const (
	Chromium     = "/usr/bin/chromium"
	ChromeDriver = "/usr/bin/chromedriver"
)

// Available tells whether the browser and its driver are installed (and why not).
func Available() error {
	for _, p := range []string{Chromium, ChromeDriver} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing (apt-get install chromium chromium-driver): %w", p, err)
		}
	}
	return nil
}

// Session is a browser session.
type Session struct {
	base    string
	id      string
	driver  *exec.Cmd
	profile string
}

// Options of a session.
type Options struct {
	Width, Height int
	// TrustSPKI, when set, is the only certificates the browser accepts besides those its
	// CA store vouches for: base64 SHA-256 digests of their public keys (SubjectPublicKeyInfo,
	// as Chromium's --ignore-certificate-errors-spki-list takes them). A site with any other
	// certificate fails as for a user who never accepted it. Unset, every certificate is
	// accepted.
	TrustSPKI []string
}

// Start runs chromedriver and opens a headless session of width x height that accepts every
// certificate.
func Start(width, height int) (*Session, error) {
	return StartWith(Options{Width: width, Height: height})
}

// StartWith runs chromedriver and opens a headless session.
func StartWith(o Options) (*Session, error) {
	width, height := o.Width, o.Height
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	profile, err := os.MkdirTemp("", "pvesnap-chromium-")
	if err != nil {
		return nil, err
	}
	drv := exec.Command(ChromeDriver, "--port="+strconv.Itoa(port))
	drv.Env = append(os.Environ(), "TZ=UTC")
	if err := drv.Start(); err != nil {
		return nil, err
	}
	s := &Session{base: fmt.Sprintf("http://127.0.0.1:%d", port), driver: drv, profile: profile}
	for i := 0; ; i++ {
		if resp, err := http.Get(s.base + "/status"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			s.Close()
			return nil, errors.New("chromedriver did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--user-data-dir=" + profile,
		fmt.Sprintf("--window-size=%d,%d", width, height)}
	if len(o.TrustSPKI) > 0 {
		args = append(args, "--ignore-certificate-errors-spki-list="+strings.Join(o.TrustSPKI, ","))
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":         "chrome",
		"acceptInsecureCerts": len(o.TrustSPKI) == 0,
		"goog:chromeOptions":  map[string]any{"binary": Chromium, "args": args},
	}}}
	var out struct {
		SessionID string `json:"sessionId"`
	}
	if err := s.call("POST", "/session", caps, &out); err != nil {
		s.Close()
		return nil, err
	}
	s.id = out.SessionID
	return s, nil
}

// SPKI is the digest of a certificate's public key for Options.TrustSPKI.
func SPKI(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Close ends the session and the driver.
func (s *Session) Close() {
	if s.id != "" {
		s.call("DELETE", "/session/"+s.id, nil, nil)
	}
	if s.driver != nil && s.driver.Process != nil {
		s.driver.Process.Kill()
		s.driver.Wait()
	}
	os.RemoveAll(s.profile)
}

func (s *Session) call(method, path string, body, out any) error {
	var rb io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rb = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, s.base+path, rb)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		Value     json.RawMessage `json:"value"`
		SessionID string          `json:"sessionId"`
	}
	json.Unmarshal(raw, &env)
	if resp.StatusCode != 200 {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		json.Unmarshal(env.Value, &e)
		return fmt.Errorf("webdriver %s %s: %s: %s", method, path, e.Error, e.Message)
	}
	if out != nil {
		if path == "/session" {
			// W3C: {"value": {"sessionId": …}}
			return json.Unmarshal(env.Value, out)
		}
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

// Navigate opens url.
func (s *Session) Navigate(url string) error {
	return s.call("POST", "/session/"+s.id+"/url", map[string]string{"url": url}, nil)
}

// SetCookie sets a cookie for the current page's site.
func (s *Session) SetCookie(name, value string) error {
	return s.call("POST", "/session/"+s.id+"/cookie", map[string]any{"cookie": map[string]any{"name": name, "value": value, "path": "/", "secure": true}}, nil)
}

// Eval runs a script (a function body; arguments in `arguments`) and decodes its result.
func (s *Session) Eval(script string, out any, args ...any) error {
	if args == nil {
		args = []any{}
	}
	return s.call("POST", "/session/"+s.id+"/execute/sync", map[string]any{"script": script, "args": args}, out)
}

// WaitFor evaluates script until it returns true or within passes.
func (s *Session) WaitFor(script string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		var ok bool
		if last = s.Eval(script, &ok); last == nil && ok {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last != nil {
		return fmt.Errorf("waiting for %q: %w", script, last)
	}
	return fmt.Errorf("waiting for %q: still false after %s", script, within)
}

// Screenshot saves a PNG of the viewport.
func (s *Session) Screenshot(path string) error {
	var b64 string
	if err := s.call("GET", "/session/"+s.id+"/screenshot", nil, &b64); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}
