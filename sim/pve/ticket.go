package pve

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Tickets and CSRF tokens as pve-common's PVE/Ticket.pm and pve-access-control's
// AccessControl.pm make and check them:
//
//	ticket  "PVE:" uri_escape(user, ':') ":" <8 hex digits epoch> "::" base64(RSA-SHA256 signature)
//	        signed with priv/authkey.key, checked with authkey.pub; valid from 5 minutes in the
//	        future to 2 hours old, and never older than the key is (plus 5 minutes).
//	CSRF    <8 hex digits epoch> ":" base64_nopad(HMAC-SHA256(key=S, "<epoch>:<user>")), where
//	        S = base64_nopad(HMAC-SHA256(key="", contents of pve-www.key)); same age window.

const (
	ticketLifetime = 2 * time.Hour
	authGrace      = 5 * time.Minute
)

type ticketKeys struct {
	dir string // the cluster filesystem
	mu  sync.Mutex
	key *rsa.PrivateKey
}

func (k *ticketKeys) private() (*rsa.PrivateKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key != nil {
		return k.key, nil
	}
	b, err := os.ReadFile(filepath.Join(k.dir, "priv", "authkey.key"))
	if err != nil {
		return nil, err
	}
	p, _ := pem.Decode(b)
	if p == nil {
		return nil, errors.New("priv/authkey.key: no PEM block")
	}
	key, err := x509.ParsePKCS1PrivateKey(p.Bytes)
	if err != nil {
		return nil, err
	}
	k.key = key
	return key, nil
}

// public reads authkey.pub and its modification time (the key's age bounds tickets).
func (k *ticketKeys) public() (*rsa.PublicKey, time.Time, error) {
	p := filepath.Join(k.dir, "authkey.pub")
	fi, err := os.Stat(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, time.Time{}, errors.New("authkey.pub: no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, time.Time{}, err
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, time.Time{}, errors.New("authkey.pub: not an RSA key")
	}
	return rk, fi.ModTime(), nil
}

// makeTicket is assemble_ticket at time at.
func (k *ticketKeys) makeTicket(user string, at time.Time) (string, error) {
	key, err := k.private()
	if err != nil {
		return "", err
	}
	plain := fmt.Sprintf("PVE:%s:%08X", strings.ReplaceAll(user, ":", "%3A"), at.Unix())
	h := sha256.Sum256([]byte(plain))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		return "", err
	}
	return plain + "::" + base64.StdEncoding.EncodeToString(sig), nil
}

var (
	ticketRe      = regexp.MustCompile(`^(PVE:\S+)::([^:\s]+)$`)
	ticketPlainRe = regexp.MustCompile(`^PVE:(?:(\S+):)?([A-Z0-9]{8})$`)
	csrfTokenRe   = regexp.MustCompile(`^([A-Z0-9]{8}):(\S+)$`)
)

// verifyTicket is verify_ticket (with get_ticket_age_range for a key that was not rotated).
func (k *ticketKeys) verifyTicket(ticket string, now time.Time) (string, error) {
	bad := &apiError{Code: http.StatusUnauthorized, Message: "permission denied - invalid PVE ticket\n"}
	m := ticketRe.FindStringSubmatch(ticket)
	if m == nil {
		return "", bad
	}
	pub, mtime, err := k.public()
	if err != nil {
		return "", bad
	}
	sig, err := base64.StdEncoding.DecodeString(m[2])
	if err != nil {
		return "", bad
	}
	h := sha256.Sum256([]byte(m[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) != nil {
		return "", bad
	}
	pm := ticketPlainRe.FindStringSubmatch(m[1])
	if pm == nil || pm[1] == "" {
		return "", bad
	}
	ts, _ := strconv.ParseInt(pm[2], 16, 64)
	age := now.Unix() - ts
	keyAge := max(now.Unix()-mtime.Unix(), 0)
	minAge, maxAge := -int64(authGrace.Seconds()), int64(ticketLifetime.Seconds())
	if keyAge < int64(ticketLifetime.Seconds()) {
		maxAge = keyAge + int64(authGrace.Seconds())
	}
	if age <= minAge || age >= maxAge {
		return "", bad
	}
	user, err := url.PathUnescape(pm[1])
	if err != nil || verifyUsername(user) != nil {
		return "", bad
	}
	return user, nil
}

func (k *ticketKeys) csrfSecret() (string, error) {
	b, err := os.ReadFile(filepath.Join(k.dir, "pve-www.key"))
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, nil)
	m.Write(b)
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil)), nil
}

func csrfDigest(secret, ts, user string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + ":" + user))
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// makeCSRF is assemble_csrf_prevention_token at time at.
func (k *ticketKeys) makeCSRF(user string, at time.Time) (string, error) {
	secret, err := k.csrfSecret()
	if err != nil {
		return "", err
	}
	ts := fmt.Sprintf("%08X", at.Unix())
	return ts + ":" + csrfDigest(secret, ts, user), nil
}

// verifyCSRF is verify_csrf_prevention_token. A 27-character (SHA-1 era) signature is
// checked against the legacy secret with the same HMAC-SHA256 and so never matches: PVE
// refuses such tokens too.
func (k *ticketKeys) verifyCSRF(user, token string, now time.Time) *apiError {
	bad := &apiError{Code: http.StatusUnauthorized, Message: "Permission denied - invalid csrf token\n"}
	m := csrfTokenRe.FindStringSubmatch(token)
	if m == nil {
		return bad
	}
	secret, err := k.csrfSecret()
	if err != nil {
		return asAPIError(err)
	}
	ts, _ := strconv.ParseInt(m[1], 16, 64)
	age := now.Unix() - ts
	if !hmac.Equal([]byte(csrfDigest(secret, m[1], user)), []byte(m[2])) ||
		age <= -int64(authGrace.Seconds()) || age >= int64(ticketLifetime.Seconds()) {
		return bad
	}
	return nil
}
