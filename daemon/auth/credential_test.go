package auth

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

// Extract reads what pveproxy's extract_auth_value reads, and nothing else.
func TestExtractAsPveproxy(t *testing.T) {
	for _, c := range []struct {
		cookie, authz   string
		kind            Kind
		raw, ticket, id string
		secret          string
	}{
		{cookie: "PVEAuthCookie=PVE%3Aroot%40pam%3A1::sig", kind: Ticket, raw: "PVE%3Aroot%40pam%3A1::sig", ticket: "PVE:root@pam:1::sig"},
		{cookie: "a=b; PVEAuthCookie=T1", kind: Ticket, raw: "T1", ticket: "T1"},
		// No white space before the name: pveproxy does not see it.
		{cookie: "a=b;PVEAuthCookie=T1", kind: None},
		{cookie: "XPVEAuthCookie=T1", kind: None},
		// The space form, in the Authorization header and in the cookie alike.
		{authz: "PVEAuthCookie T2", kind: Ticket, raw: "T2", ticket: "T2"},
		{cookie: "PVEAuthCookie T3", kind: Ticket, raw: "T3", ticket: "T3"},
		{authz: "PVEAuthCookie=T4; other", kind: Ticket, raw: "T4", ticket: "T4"},
		// Empty and "0" are no value (Perl's truth): the next source is read.
		{cookie: "PVEAuthCookie=", authz: "PVEAPIToken=u@pve!t=s", kind: Token, raw: "u@pve!t=s", id: "u@pve!t", secret: "s"},
		{cookie: "PVEAuthCookie=0", kind: None},
		// Unescaped once: %2541 is %41, never A.
		{authz: "PVEAPIToken=u@pve!t=s%2541", kind: Token, raw: "u@pve!t=s%2541", id: "u@pve!t", secret: "s%41"},
		{authz: "PVEAPIToken u@pve!t=a=b", kind: Token, raw: "u@pve!t=a=b", id: "u@pve!t=a", secret: "b"},
		// '+' stays '+'; a '%' without two hex digits stays.
		{authz: "PVEAPIToken=u@pve!t=a+b%zz%4", kind: Token, raw: "u@pve!t=a+b%zz%4", id: "u@pve!t", secret: "a+b%zz%4"},
		// The cookie wins over the header.
		{cookie: "PVEAuthCookie=T5", authz: "PVEAPIToken=u@pve!t=s", kind: Ticket, raw: "T5", ticket: "T5"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if c.cookie != "" {
			r.Header.Set("Cookie", c.cookie)
		}
		if c.authz != "" {
			r.Header.Set("Authorization", c.authz)
		}
		got := Extract(r)
		if got.Kind != c.kind || got.Raw != c.raw || got.Ticket != c.ticket || got.TokenID != c.id || got.Secret != c.secret {
			t.Errorf("cookie %q authorization %q: %+v", c.cookie, c.authz, got)
		}
	}
}

// PVE::Ticket compares every CSRF signature with the SHA-256 HMAC: the 27-character SHA-1
// form of old is refused, the current one accepted within its lifetime.
func TestCSRF(t *testing.T) {
	key := []byte("-----BEGIN RSA PRIVATE KEY-----\nsecret\n")
	now := time.Unix(1_700_000_000, 0)
	good := MakeCSRF(key, "root@pam", now)
	if !VerifyCSRF(key, "root@pam", good, now.Add(time.Hour)) || VerifyCSRF(key, "alice@pve", good, now) {
		t.Fatal("current form")
	}
	if VerifyCSRF(key, "root@pam", good, now.Add(3*time.Hour)) {
		t.Fatal("expired token accepted")
	}
	ts := fmt.Sprintf("%08X", now.Unix())
	k := sha1.Sum(key)
	h := sha1.Sum([]byte(ts + ":root@pam" + base64.RawStdEncoding.EncodeToString(k[:])))
	legacy := ts + ":" + base64.RawStdEncoding.EncodeToString(h[:])
	if len(legacy) != 9+27 {
		t.Fatalf("legacy form %q", legacy)
	}
	if VerifyCSRF(key, "root@pam", legacy, now) {
		t.Fatal("the legacy SHA-1 CSRF form was accepted; pveproxy refuses it")
	}
}

func TestPeerMark(t *testing.T) {
	key := []byte("cluster secret")
	now := time.Unix(1_700_000_000, 0)
	r := httptest.NewRequest("DELETE", "/api2/json/nodes/pve2/storage/local-zfs/content/vm-100-disk-0?x=1", nil)
	m := PeerMark(key, "pve1", r, now)
	if n, ok := VerifyPeerMark(key, m, r, now.Add(time.Minute)); !ok || n != "pve1" {
		t.Fatalf("own mark refused: %q", m)
	}
	other := httptest.NewRequest("DELETE", "/api2/json/nodes/pve2/storage/local-zfs/content/vm-100-disk-1?x=1", nil)
	for name, ok := range map[string]bool{
		"another request": func() bool { _, ok := VerifyPeerMark(key, m, other, now); return ok }(),
		"another key":     func() bool { _, ok := VerifyPeerMark([]byte("x"), m, r, now); return ok }(),
		"too old":         func() bool { _, ok := VerifyPeerMark(key, m, r, now.Add(10*time.Minute)); return ok }(),
		"a bare name":     func() bool { _, ok := VerifyPeerMark(key, "pve1", r, now); return ok }(),
	} {
		if ok {
			t.Errorf("%s: mark accepted", name)
		}
	}
}
