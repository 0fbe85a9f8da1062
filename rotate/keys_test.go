package rotate

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pwrotate/rotate/ecgridsim"
)

// keySim is a simulator where testKey belongs to NetworkAdmin user 7 and
// user 1042 exists.
func keySim(t *testing.T) (*ecgridsim.Server, string) {
	t.Helper()
	sim := ecgridsim.New()
	sim.AddKey(testKey, 7, "NetworkAdmin")
	sim.AddUser(7, "Old-Passw0rd!")
	sim.AddUser(1042, "Old-Passw0rd!")
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

func TestAPIKeyReadsTheLiveKey(t *testing.T) {
	sim, url := keySim(t)
	e := newTestClient(t, url, nil)
	live, _ := sim.APIKey(1042)
	key, out := e.c.APIKey(context.Background(), 1042)
	checkOutcome(t, e, out)
	if !out.OK || key.Reveal() != live {
		t.Fatalf("APIKey: ok %v, key matches live: %v (%v)", out.OK, key.Reveal() == live, out.Err)
	}
	if n := sim.KeysGenerated(1042); n != 0 {
		t.Errorf("reading the key generated %d keys", n)
	}
}

// TestGenerateAPIKey drives key-generate through the simulator's faults:
// an answer surely not applied is retried; one that may have been applied
// is never retried (a second generation would replace the key again) and
// comes back Unknown; no key ever appears in an error or a log.
func TestGenerateAPIKey(t *testing.T) {
	cases := []struct {
		name          string
		faults        []ecgridsim.Fault
		wantOK        bool
		wantUnknown   bool
		wantAttempts  int
		wantGenerated int
	}{
		{name: "ok", wantOK: true, wantAttempts: 1, wantGenerated: 1},
		{name: "429 then ok", faults: []ecgridsim.Fault{{Kind: ecgridsim.TooManyRequests, RetryAfter: "0"}},
			wantOK: true, wantAttempts: 2, wantGenerated: 1},
		{name: "applied, answer dropped", faults: []ecgridsim.Fault{{Kind: ecgridsim.ApplyThenDrop}},
			wantUnknown: true, wantAttempts: 1, wantGenerated: 1},
		{name: "applied, answer too late", faults: []ecgridsim.Fault{{Kind: ecgridsim.ApplyThenHold, Hold: 3 * time.Second}},
			wantUnknown: true, wantAttempts: 1, wantGenerated: 1},
		{name: "500, not applied but unknown to us", faults: []ecgridsim.Fault{{Kind: ecgridsim.ServerError}},
			wantUnknown: true, wantAttempts: 1, wantGenerated: 0},
		{name: "404 is final", faults: []ecgridsim.Fault{{Kind: ecgridsim.Envelope, Status: 404, Code: "ObjectNotFound"}},
			wantAttempts: 1, wantGenerated: 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim, url := keySim(t)
			old, _ := sim.APIKey(1042)
			for _, f := range c.faults {
				f.Endpoint = "keygen"
				sim.Inject(f)
			}
			e := newTestClient(t, url, func(cfg *Config) { cfg.Timeout = time.Second })
			key, _, out := e.c.GenerateAPIKey(context.Background(), 1042)
			checkOutcome(t, e, out)
			live, _ := sim.APIKey(1042)
			if out.OK != c.wantOK || out.Unknown != c.wantUnknown || out.Attempts != c.wantAttempts {
				t.Errorf("ok %v unknown %v attempts %d, want %v %v %d (%v)", out.OK, out.Unknown, out.Attempts,
					c.wantOK, c.wantUnknown, c.wantAttempts, out.Err)
			}
			if n := sim.KeysGenerated(1042); n != c.wantGenerated {
				t.Errorf("the server generated %d keys, want %d", n, c.wantGenerated)
			}
			if out.OK && key.Reveal() != live {
				t.Error("the key returned is not the live one")
			}
			if !out.OK && !key.Empty() {
				t.Error("a key is returned with a failed outcome")
			}
			for _, k := range []string{old, live} {
				if out.Err != nil && strings.Contains(out.Err.Error(), k) {
					t.Error("the error holds an API key")
				}
				if strings.Contains(e.logs.String(), k) {
					t.Error("the logs hold an API key")
				}
			}
		})
	}
}

func TestParseKeyNeverEchoesData(t *testing.T) {
	for _, data := range []string{`123`, `""`, `"has space"`, `"` + strings.Repeat("k", 600) + `"`, `{"key":"abcdefabcdefabcdef"}`, `"tab\tkey"`} {
		_, err := parseKey([]byte(data))
		if err == nil {
			t.Errorf("parseKey(%.20s…) accepted", data)
			continue
		}
		if strings.Contains(err.Error(), "kkkk") || strings.Contains(err.Error(), "abcdef") || strings.Contains(err.Error(), "space\"") {
			t.Errorf("parseKey error echoes the data: %v", err)
		}
	}
	if k, err := parseKey([]byte(`"0123456789abcdef0123456789abcdef"`)); err != nil || k.Reveal() != "0123456789abcdef0123456789abcdef" {
		t.Errorf("parseKey of a good key: %v", err)
	}
}

// TestKeyAnswersNeverEchoTheServer: the key endpoints answer with the key
// (or text holding it) in a form that does not parse: a text body, a
// message, a problem title, an errorCode. No part of it reaches the
// error, the error code, the observer or the logs; a key-generate success
// whose body holds no key that parses comes back Unknown with the body as
// received (bounded), to be sealed.
func TestKeyAnswersNeverEchoTheServer(t *testing.T) {
	const key = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
	cases := []struct {
		name        string
		status      int
		ctype, body string
		wantUnread  bool // key-generate returns the body as unread
	}{
		{"200 text body", 200, "text/plain", key + "\n", true},
		{"200 other JSON", 200, "application/json", `{"apiKey":"` + key + `"}`, true},
		{"200 success without a usable key", 200, "application/json", `{"success":true,"data":{"key":"` + key + `"},"message":"new key ` + key + `"}`, true},
		{"200 refusal with the key in the message", 200, "application/json", `{"success":false,"message":"key ` + key + `"}`, true},
		{"200 key in errorCode", 200, "application/json", `{"success":false,"errorCode":"` + key + `","message":"` + key + `"}`, true},
		{"400 key in the message", 400, "application/json", `{"success":false,"errorCode":"InvalidParameter","message":"key ` + key + `"}`, false},
		{"404 problem with the key in the title", 404, "application/problem+json", `{"title":"` + key + `","detail":"` + key + `","traceId":"` + key + `"}`, false},
		{"500 text", 500, "text/plain", "key " + key, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.ctype)
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			}))
			t.Cleanup(srv.Close)
			e := newTestClient(t, srv.URL, func(cfg *Config) { cfg.MaxAttempts = 1 })
			_, out := e.c.APIKey(context.Background(), 1042)
			gkey, unread, gout := e.c.GenerateAPIKey(context.Background(), 1042)
			for _, o := range []Outcome{out, gout} {
				if o.OK {
					t.Fatalf("%s: OK", c.name)
				}
				if strings.Contains(o.Err.Error(), key[:12]) || strings.Contains(o.ErrorCode, key[:12]) {
					t.Errorf("the outcome holds the key: %q (code %q)", o.Err, o.ErrorCode)
				}
			}
			if strings.Contains(e.logs.String(), key[:12]) {
				t.Errorf("the logs hold the key")
			}
			e.obs.mu.Lock()
			for _, call := range e.obs.calls {
				if strings.Contains(call.err, key[:12]) {
					t.Errorf("the observer saw the key: %q", call.err)
				}
			}
			e.obs.mu.Unlock()
			if !gkey.Empty() {
				t.Errorf("a key is returned with a failed outcome")
			}
			if got := !unread.Empty(); got != c.wantUnread {
				t.Errorf("unread body returned: %v, want %v", got, c.wantUnread)
			}
			if c.wantUnread {
				if !gout.Unknown || unread.Reveal() != c.body {
					t.Errorf("unknown %v, unread is the body as received: %v", gout.Unknown, unread.Reveal() == c.body)
				}
			}
		})
	}
	t.Run("unread body is bounded", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, strings.Repeat("k", 40<<10))
		}))
		t.Cleanup(srv.Close)
		e := newTestClient(t, srv.URL, nil)
		_, unread, o := e.c.GenerateAPIKey(context.Background(), 1042)
		if !o.Unknown || len(unread.Reveal()) != maxUnreadKey {
			t.Errorf("unknown %v, unread %d bytes, want %d", o.Unknown, len(unread.Reveal()), maxUnreadKey)
		}
	})
}
