package rotate

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pwrotate/rotate/secret"
)

const (
	testKey = "k3y-T0p-SECRET-5f0c9a2e"
	testPW  = secret.Password("Pw9!correct-Horse#42")
	// hangBound is a generous bound to catch hangs, not a speed check.
	hangBound = 10 * time.Second
)

// seenRequest is a request as the fake API saw it.
type seenRequest struct {
	method, path, key, ctype string
	body                     []byte
	at                       time.Time
}

// fakeAPI is an httptest server that answers its i-th request with
// replies[min(i, len-1)] and records every request.
type fakeAPI struct {
	srv     *httptest.Server
	replies []http.HandlerFunc
	mu      sync.Mutex
	seen    []seenRequest
	conns   int // connections opened
}

func newFakeAPI(t *testing.T, replies ...http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{replies: replies}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.mu.Lock()
			f.conns++
			f.mu.Unlock()
		}
	}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	i := len(f.seen)
	f.seen = append(f.seen, seenRequest{
		method: r.Method, path: r.URL.Path, key: r.Header.Get("X-API-Key"),
		ctype: r.Header.Get("Content-Type"), body: body, at: time.Now(),
	})
	reply := f.replies[min(i, len(f.replies)-1)]
	f.mu.Unlock()
	reply(w, r)
}

func (f *fakeAPI) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
}

func (f *fakeAPI) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// reply answers with status, body and header pairs.
func reply(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

const (
	okBody = `{"success":true,"data":true}`
	meBody = `{"success":true,"data":{"userId":42,"authLevel":"networkadmin"}}`
)

// fakePacer counts waits and records throttles.
type fakePacer struct {
	mu        sync.Mutex
	waits     int
	throttles []time.Duration
	err       error
}

func (p *fakePacer) Wait(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waits++
	if p.err != nil {
		return p.err
	}
	return ctx.Err()
}

func (p *fakePacer) Throttle(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.throttles = append(p.throttles, d)
}

// observed is one Observer.Call.
type observed struct {
	endpoint string
	status   int
	err      string
}

// fakeObserver records metrics; onCall, if set, runs after each Call.
type fakeObserver struct {
	mu      sync.Mutex
	calls   []observed
	retries int
	onCall  func()
}

func (o *fakeObserver) Call(endpoint string, status int, err error) {
	o.mu.Lock()
	c := observed{endpoint: endpoint, status: status}
	if err != nil {
		c.err = err.Error()
	}
	o.calls = append(o.calls, c)
	hook := o.onCall
	o.mu.Unlock()
	if hook != nil {
		hook()
	}
}

func (o *fakeObserver) Retry(string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.retries++
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testEnv is a client wired to fakes.
type testEnv struct {
	c     *Client
	pacer *fakePacer
	obs   *fakeObserver
	logs  *syncBuffer
}

// newTestClient returns a client of baseURL with small timings; edit
// changes the Config before New.
func newTestClient(t *testing.T, baseURL string, edit func(*Config)) testEnv {
	t.Helper()
	e := testEnv{pacer: &fakePacer{}, obs: &fakeObserver{}, logs: &syncBuffer{}}
	cfg := Config{
		BaseURL:     baseURL,
		APIKey:      testKey,
		Workers:     2,
		Timeout:     2 * time.Second,
		MaxAttempts: 3,
		BackoffBase: time.Millisecond,
		BackoffMax:  5 * time.Millisecond,
		Pacer:       e.pacer,
		Observer:    e.obs,
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	return e
}

// checkSafe fails t if text holds the API key or the test password.
func checkSafe(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range []string{testKey, testPW.Reveal()} {
		if strings.Contains(text, s) {
			t.Errorf("%s holds a secret", what)
		}
	}
}

// checkOutcome checks the invariants of every Outcome and that nothing
// the client produced holds a secret.
func checkOutcome(t *testing.T, e testEnv, out Outcome) {
	t.Helper()
	if out.OK != (out.Err == nil) {
		t.Errorf("OK %v with Err %v", out.OK, out.Err)
	}
	if out.Err != nil {
		checkMessage(t, out.Err.Error())
		checkSafe(t, "error", out.Err.Error())
	}
	checkSafe(t, "error code", out.ErrorCode)
	checkSafe(t, "logs", e.logs.String())
	e.obs.mu.Lock()
	defer e.obs.mu.Unlock()
	if len(e.obs.calls) != out.Attempts {
		t.Errorf("observer saw %d calls, outcome has %d attempts", len(e.obs.calls), out.Attempts)
	}
	for _, c := range e.obs.calls {
		checkSafe(t, "observed error", c.err)
	}
}

func TestChangePasswordAnswers(t *testing.T) {
	type want struct {
		attempts, status   int
		ok, unknown, fatal bool
		code, msg          string // msg: substring of Err
	}
	tests := []struct {
		name  string
		reply http.HandlerFunc
		want  want
	}{
		{"success", reply(200, okBody), want{attempts: 1, status: 200, ok: true}},
		{"data false without errorCode retried", reply(200, `{"success":true,"data":false}`),
			want{attempts: 3, status: 200, unknown: true, msg: "HTTP 200: not applied (data: false, no errorCode)"}},
		{"success false without errorCode retried", reply(200, `{"success":false,"data":false}`),
			want{attempts: 3, status: 200, unknown: true, msg: "HTTP 200: success: false (no errorCode)"}},
		{"data false with errorCode final", reply(200, `{"success":true,"errorCode":"InvalidParameter","data":false}`),
			want{attempts: 1, status: 200, code: "InvalidParameter", msg: "HTTP 200 InvalidParameter: not applied (data: false)"}},
		{"200 success false is final", reply(200, `{"success":false,"errorCode":"InvalidParameter","message":"nope"}`),
			want{attempts: 1, status: 200, code: "InvalidParameter", msg: "HTTP 200 InvalidParameter: nope"}},
		{"200 InternalError retried", reply(200, `{"success":false,"errorCode":"InternalError"}`),
			want{attempts: 3, status: 200, unknown: true, code: "InternalError", msg: "HTTP 200 InternalError"}},
		{"200 RateLimitExceeded retried", reply(200, `{"success":false,"errorCode":"RateLimitExceeded"}`),
			want{attempts: 3, status: 200, code: "RateLimitExceeded", msg: "HTTP 200 RateLimitExceeded"}},
		{"200 InvalidAPIKey fatal", reply(200, `{"success":false,"errorCode":"InvalidAPIKey"}`),
			want{attempts: 1, status: 200, fatal: true, code: "InvalidAPIKey", msg: "HTTP 200 InvalidAPIKey"}},
		{"400 final", reply(400, `{"success":false,"errorCode":"InvalidParameter","message":"password does not meet policy","data":null}`),
			want{attempts: 1, status: 400, code: "InvalidParameter", msg: "HTTP 400 InvalidParameter: password does not meet policy"}},
		{"404 problem final", reply(404, `{"title":"Not Found","detail":"no user","traceId":"t-1"}`, "Content-Type", "application/problem+json"),
			want{attempts: 1, status: 404, code: "Not Found", msg: "HTTP 404 Not Found: no user (trace t-1)"}},
		{"401 fatal", reply(401, ""), want{attempts: 1, status: 401, fatal: true, msg: "HTTP 401: Unauthorized"}},
		{"403 fatal", reply(403, `{"success":false,"errorCode":"AccessDenied","message":"no"}`),
			want{attempts: 1, status: 403, fatal: true, code: "AccessDenied", msg: "HTTP 403 AccessDenied: no"}},
		{"429 retried", reply(429, ""), want{attempts: 3, status: 429, msg: "HTTP 429: Too Many Requests"}},
		{"503 html retried", reply(503, "<html><title>Service Unavailable</title><body>"+strings.Repeat("<p>x</p>", 100)+"</body></html>", "Content-Type", "text/html"),
			want{attempts: 3, status: 503, unknown: true, msg: "HTTP 503: Service Unavailable (html)"}},
		{"500 empty retried", reply(500, ""), want{attempts: 3, status: 500, unknown: true, msg: "HTTP 500: Internal Server Error (empty body)"}},
		{"200 html retried", reply(200, "<html><title>Login</title></html>"), want{attempts: 3, status: 200, unknown: true, msg: "no ECGrid answer: Login (html)"}},
		{"200 empty retried", reply(200, ""), want{attempts: 3, status: 200, unknown: true, msg: "no ECGrid answer: OK (empty body)"}},
		{"200 garbage retried", reply(200, "\x00\x01garbage\xff"), want{attempts: 3, status: 200, unknown: true, msg: "unreadable body"}},
		{"200 huge body", reply(200, strings.Repeat("{", 1<<20)), want{attempts: 3, status: 200, unknown: true, msg: "no ECGrid answer"}},
		{"302 final", reply(302, "", "Location", "https://elsewhere.example/x"),
			want{attempts: 1, status: 302, msg: "HTTP 302: unexpected redirect to elsewhere.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, tt.reply)
			e := newTestClient(t, api.srv.URL, nil)
			out := e.c.ChangePassword(t.Context(), 1042, testPW)
			checkOutcome(t, e, out)
			got := want{attempts: out.Attempts, status: out.HTTPStatus, ok: out.OK, unknown: out.Unknown, fatal: out.Fatal, code: out.ErrorCode, msg: tt.want.msg}
			if got != tt.want || out.Interrupted {
				t.Errorf("outcome %+v\nwant %+v", out, tt.want)
			}
			if tt.want.msg != "" && (out.Err == nil || !strings.Contains(out.Err.Error(), tt.want.msg)) {
				t.Errorf("Err %v, want it to contain %q", out.Err, tt.want.msg)
			}
			reqs := api.requests()
			if len(reqs) != tt.want.attempts {
				t.Errorf("server saw %d requests, want %d", len(reqs), tt.want.attempts)
			}
			for i, r := range reqs {
				if r.method != http.MethodPost || r.path != "/v2/users/password" || r.key != testKey || r.ctype != "application/json" {
					t.Errorf("request %d: %s %s (key sent: %v, type %q)", i, r.method, r.path, r.key == testKey, r.ctype)
				}
			}
			if e.pacer.waits != tt.want.attempts {
				t.Errorf("pacer waited %d times, want %d", e.pacer.waits, tt.want.attempts)
			}
			if e.obs.retries != tt.want.attempts-1 {
				t.Errorf("observer saw %d retries, want %d", e.obs.retries, tt.want.attempts-1)
			}
		})
	}
}

func TestRequestShapes(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v2/users/me" {
			reply(200, meBody)(w, r)
			return
		}
		reply(200, okBody)(w, r)
	})
	e := newTestClient(t, api.srv.URL+"/api/", func(c *Config) { c.APIKey = "  " + testKey + "\n" })
	ctx := t.Context()
	if _, out := e.c.Me(ctx); !out.OK {
		t.Fatalf("Me: %v", out.Err)
	}
	if out := e.c.ChangePassword(ctx, 1042, testPW); !out.OK {
		t.Fatalf("ChangePassword: %v", out.Err)
	}
	if out := e.c.ResetSessions(ctx, 7); !out.OK {
		t.Fatalf("ResetSessions: %v", out.Err)
	}
	reqs := api.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	want := []struct{ method, path, ctype string }{
		{"GET", "/api/v2/users/me", ""},
		{"POST", "/api/v2/users/password", "application/json"},
		{"POST", "/api/v2/users/reset/7", ""},
	}
	for i, w := range want {
		r := reqs[i]
		if r.method != w.method || r.path != w.path || r.ctype != w.ctype || r.key != testKey {
			t.Errorf("request %d: %s %s type %q key ok %v; want %s %s type %q", i, r.method, r.path, r.ctype, r.key == testKey, w.method, w.path, w.ctype)
		}
	}
	var body map[string]any
	if err := json.Unmarshal(reqs[1].body, &body); err != nil {
		t.Fatalf("password body is not JSON: %v", err)
	}
	if len(body) != 2 || body["userId"] != float64(1042) || body["newPassword"] != testPW.Reveal() {
		t.Errorf("password body has keys %d, userId %v, password sent intact %v", len(body), body["userId"], body["newPassword"] == testPW.Reveal())
	}
	if len(reqs[0].body) != 0 || len(reqs[2].body) != 0 {
		t.Error("me or reset sent a body")
	}
}

func TestChangePasswordRefusesBadInput(t *testing.T) {
	api := newFakeAPI(t, reply(200, okBody))
	e := newTestClient(t, api.srv.URL, nil)
	tests := []struct {
		name string
		id   int
		pw   secret.Password
		want string
	}{
		{"zero id", 0, testPW, "user id 0"},
		{"negative id", -4, testPW, "user id -4"},
		{"empty password", 9, "", "empty password"},
		{"invalid UTF-8", 9, "aB3!\xff\xfe", "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := e.c.ChangePassword(t.Context(), tt.id, tt.pw)
			if out.OK || out.Attempts != 0 || out.Err == nil || !strings.Contains(out.Err.Error(), tt.want) {
				t.Fatalf("outcome %+v, want a refusal naming %q", out, tt.want)
			}
		})
	}
	if out := e.c.ResetSessions(t.Context(), 0); out.OK || out.Attempts != 0 {
		t.Errorf("ResetSessions(0) = %+v", out)
	}
	if n := len(api.requests()); n != 0 {
		t.Fatalf("server saw %d requests", n)
	}
}

func TestMe(t *testing.T) {
	tests := []struct {
		name     string
		reply    http.HandlerFunc
		ok       bool
		fatal    bool
		attempts int
		want     Caller
	}{
		{"network admin", reply(200, meBody), true, false, 1, Caller{UserID: 42, Level: LevelNetworkAdmin, LevelName: "networkadmin"}},
		{"root", reply(200, `{"success":true,"data":{"userId":1,"authLevel":"Root","name":"x"}}`), true, false, 1, Caller{UserID: 1, Level: LevelRoot, LevelName: "Root"}},
		{"unknown level", reply(200, `{"success":true,"data":{"userId":5,"authLevel":"SuperUser\n"}}`), true, false, 1, Caller{UserID: 5, Level: LevelUnknown, LevelName: "SuperUser"}},
		{"numeric level", reply(200, `{"success":true,"data":{"userId":5,"authLevel":9}}`), true, false, 1, Caller{UserID: 5, Level: LevelUnknown, LevelName: "9"}},
		{"no data", reply(200, `{"success":true,"data":null}`), false, false, 3, Caller{}},
		{"401", reply(401, `{"success":false,"errorCode":"InvalidAPIKey","message":"unknown key"}`), false, true, 1, Caller{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, tt.reply)
			e := newTestClient(t, api.srv.URL, nil)
			caller, out := e.c.Me(t.Context())
			checkOutcome(t, e, out)
			if out.OK != tt.ok || out.Fatal != tt.fatal || out.Attempts != tt.attempts || out.Unknown {
				t.Errorf("outcome %+v", out)
			}
			if caller != tt.want {
				t.Errorf("caller %+v, want %+v", caller, tt.want)
			}
		})
	}
}

func TestRetryThenSuccessSendsSamePassword(t *testing.T) {
	tests := []struct {
		name   string
		first  http.HandlerFunc
		status string // in the debug log
		reason string // in the debug log
	}{
		{"503 html", reply(503, "<html><title>busy</title></html>"), "status=503", "busy (html)"},
		{"unexplained success false", reply(200, `{"success":false,"data":false}`), "status=200", "success: false (no errorCode)"},
		{"unexplained data false", reply(200, `{"success":true,"data":false}`), "status=200", "data: false, no errorCode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, tt.first, reply(200, okBody))
			e := newTestClient(t, api.srv.URL, nil)
			out := e.c.ChangePassword(t.Context(), 1042, testPW)
			checkOutcome(t, e, out)
			if !out.OK || out.Attempts != 2 || out.HTTPStatus != 200 || out.Unknown || out.ErrorCode != "" {
				t.Fatalf("outcome %+v, want OK after 2 attempts", out)
			}
			reqs := api.requests()
			if len(reqs) != 2 || !bytes.Equal(reqs[0].body, reqs[1].body) || !bytes.Contains(reqs[0].body, []byte(testPW.Reveal())) {
				t.Fatal("the retry did not resend the same password")
			}
			logs := e.logs.String()
			for _, s := range []string{"retrying ECGrid call", "user=1042", "attempt=1", tt.status, "reason=", tt.reason} {
				if !strings.Contains(logs, s) {
					t.Errorf("debug log lacks %q", s)
				}
			}
		})
	}
}

func TestUnknownIsSticky(t *testing.T) {
	api := newFakeAPI(t, reply(502, ""), reply(400, `{"success":false,"errorCode":"InvalidParameter","message":"password was used before"}`))
	e := newTestClient(t, api.srv.URL, nil)
	out := e.c.ChangePassword(t.Context(), 1042, testPW)
	checkOutcome(t, e, out)
	if out.OK || !out.Unknown || out.Attempts != 2 || out.HTTPStatus != 400 || out.ErrorCode != "InvalidParameter" {
		t.Fatalf("outcome %+v: a 502 then a 400 may have applied the password", out)
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		header func() string
		min    time.Duration // lower bound of the Throttle value
		max    time.Duration // upper bound
	}{
		{"429 seconds", 429, "", func() string { return "1" }, time.Second, time.Second},
		{"429 http date", 429, "", func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, 500 * time.Millisecond, 2 * time.Second},
		{"200 RateLimitExceeded", 200, `{"success":false,"errorCode":"RateLimitExceeded"}`, func() string { return "1" }, time.Second, time.Second},
		{"503 seconds", 503, "", func() string { return "1" }, time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			limited := func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", tt.header())
				reply(tt.status, tt.body)(w, r)
			}
			api := newFakeAPI(t, limited, reply(200, okBody))
			e := newTestClient(t, api.srv.URL, nil)
			out := e.c.ChangePassword(t.Context(), 1042, testPW)
			checkOutcome(t, e, out)
			if !out.OK || out.Attempts != 2 {
				t.Fatalf("outcome %+v", out)
			}
			if len(e.pacer.throttles) != 1 {
				t.Fatalf("Throttle called %d times, want 1", len(e.pacer.throttles))
			}
			d := e.pacer.throttles[0]
			if d < tt.min || d > tt.max {
				t.Fatalf("Throttle(%v), want within [%v, %v]", d, tt.min, tt.max)
			}
			reqs := api.requests()
			if gap := reqs[1].at.Sub(reqs[0].at); gap < d-20*time.Millisecond {
				t.Fatalf("retried after %v, before Retry-After %v", gap, d)
			}
		})
	}
}

func TestThrottleWithoutRetryAfter(t *testing.T) {
	api := newFakeAPI(t, reply(429, ""), reply(200, okBody))
	e := newTestClient(t, api.srv.URL, nil)
	out := e.c.ChangePassword(t.Context(), 1042, testPW)
	if !out.OK || len(e.pacer.throttles) != 1 || e.pacer.throttles[0] != 0 {
		t.Fatalf("outcome %+v, throttles %v; want OK and Throttle(0)", out, e.pacer.throttles)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var otherHits int
	var otherKeys []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		otherHits++
		otherKeys = append(otherKeys, r.Header.Get("X-API-Key"))
		mu.Unlock()
		reply(200, okBody)(w, r)
	}))
	t.Cleanup(other.Close)
	otherHost := strings.TrimPrefix(other.URL, "http://")
	followingClient := &http.Client{} // follows redirects by default
	tests := []struct {
		name   string
		client *http.Client
		status int
	}{
		{"default client 307", nil, http.StatusTemporaryRedirect},
		{"default client 302", nil, http.StatusFound},
		{"caller's client 308", followingClient, http.StatusPermanentRedirect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, other.URL+r.URL.Path, tt.status)
			})
			e := newTestClient(t, api.srv.URL, func(c *Config) { c.HTTPClient = tt.client })
			out := e.c.ChangePassword(t.Context(), 1042, testPW)
			checkOutcome(t, e, out)
			if out.OK || out.Attempts != 1 || out.Fatal || out.Unknown || out.HTTPStatus != tt.status {
				t.Errorf("outcome %+v, want a final failure after one attempt", out)
			}
			if out.Err == nil || !strings.Contains(out.Err.Error(), "unexpected redirect to "+otherHost) {
				t.Errorf("Err %v, want it to name %s", out.Err, otherHost)
			}
			_, meOut := e.c.Me(t.Context())
			if meOut.OK {
				t.Error("Me followed a redirect")
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if otherHits != 0 {
		t.Fatalf("the other server got %d requests (key sent: %v)", otherHits, otherKeys)
	}
	if followingClient.CheckRedirect != nil {
		t.Error("New changed the caller's http.Client")
	}
}

func TestTimeoutIsUnknown(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(hangBound):
		}
	})
	e := newTestClient(t, api.srv.URL, func(c *Config) { c.Timeout = 150 * time.Millisecond; c.MaxAttempts = 2 })
	start := time.Now()
	out := e.c.ChangePassword(t.Context(), 1042, testPW)
	checkOutcome(t, e, out)
	if out.OK || !out.Unknown || out.Attempts != 2 || out.HTTPStatus != 0 || out.Interrupted {
		t.Fatalf("outcome %+v, want unknown after 2 attempts", out)
	}
	if out.Err == nil || out.Err.Error() != "outcome unknown: timeout after 150ms" {
		t.Fatalf("Err %v", out.Err)
	}
	if time.Since(start) > hangBound {
		t.Fatal("the timeout did not end the attempt")
	}
	for _, c := range e.obs.calls {
		if c.status != 0 || c.err == "" {
			t.Errorf("observed %+v, want status 0 and an error", c)
		}
	}
	// A GET is never "unknown": it changes nothing.
	_, meOut := e.c.Me(t.Context())
	if meOut.OK || meOut.Unknown || !strings.Contains(meOut.Err.Error(), "timeout after 150ms") {
		t.Fatalf("Me outcome %+v", meOut)
	}
}

func TestDroppedConnectionIsUnknown(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	e := newTestClient(t, api.srv.URL, func(c *Config) { c.MaxAttempts = 1 })
	out := e.c.ChangePassword(t.Context(), 1042, testPW)
	checkOutcome(t, e, out)
	if out.OK || !out.Unknown || out.Attempts != 1 || out.HTTPStatus != 0 {
		t.Fatalf("outcome %+v, want unknown", out)
	}
	if !strings.HasPrefix(out.Err.Error(), "outcome unknown: transport error: ") || strings.Contains(out.Err.Error(), "http://") {
		t.Fatalf("Err %q", out.Err)
	}
}

func TestRefusedConnectionIsNotUnknown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	e := newTestClient(t, "http://"+addr, func(c *Config) { c.MaxAttempts = 2 })
	out := e.c.ChangePassword(t.Context(), 1042, testPW)
	checkOutcome(t, e, out)
	if out.OK || out.Unknown || out.Attempts != 2 || out.HTTPStatus != 0 {
		t.Fatalf("outcome %+v, want a known failure after 2 attempts", out)
	}
	if !strings.HasSuffix(out.Err.Error(), "(request not sent)") {
		t.Fatalf("Err %q", out.Err)
	}
}

// TestCertificateErrorsAreNotRetried: a server certificate that fails
// verification ends the call after one attempt (one TLS handshake), known
// not sent, fatal for the run, with a message naming the certificate
// problem.
func TestCertificateErrorsAreNotRetried(t *testing.T) {
	var handshakes atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("a request went through a certificate that fails verification")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	trusting := srv.Client() // trusts the test CA, whose certificate is not valid for "localhost"
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	tests := []struct {
		name string
		base string
		hc   *http.Client
		want string
	}{
		{"unknown authority", srv.URL, nil, "x509: certificate signed by unknown authority"},
		{"wrong host name", "https://localhost:" + port, trusting, "x509: certificate is valid for"},
	}
	for _, tt := range tests {
		for _, endpoint := range []string{endpointMe, endpointPassword, endpointReset} {
			t.Run(tt.name+"/"+endpoint, func(t *testing.T) {
				handshakes.Store(0)
				e := newTestClient(t, tt.base, func(c *Config) { c.MaxAttempts = 5; c.HTTPClient = tt.hc })
				var out Outcome
				switch endpoint {
				case endpointMe:
					_, out = e.c.Me(t.Context())
				case endpointPassword:
					out = e.c.ChangePassword(t.Context(), 1042, testPW)
				default:
					out = e.c.ResetSessions(t.Context(), 1042)
				}
				checkOutcome(t, e, out)
				if out.OK || out.Unknown || !out.Fatal || out.Interrupted || out.Attempts != 1 || out.HTTPStatus != 0 {
					t.Errorf("outcome %+v, want a fatal failure, known not sent, after 1 attempt", out)
				}
				if n := handshakes.Load(); n != 1 {
					t.Errorf("the server saw %d TLS handshakes, want 1 (certificate errors are not retried)", n)
				}
				if msg := out.Err.Error(); !strings.Contains(msg, "TLS certificate verification failed") || !strings.Contains(msg, tt.want) || !strings.Contains(msg, "not retried") {
					t.Errorf("Err %q, want it to name the certificate problem (%q)", msg, tt.want)
				}
				e.pacer.mu.Lock()
				waits := e.pacer.waits
				e.pacer.mu.Unlock()
				if waits != 1 {
					t.Errorf("pacer waited %d times, want 1", waits)
				}
			})
		}
	}
}

func TestSlowDripBodyEndsAtTimeout(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		_, _ = io.WriteString(w, `{"success":true,`)
		fl.Flush()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				if _, err := io.WriteString(w, " "); err != nil {
					return
				}
				fl.Flush()
			}
		}
	})
	e := newTestClient(t, api.srv.URL, func(c *Config) { c.Timeout = 300 * time.Millisecond; c.MaxAttempts = 1 })
	done := make(chan Outcome, 1)
	go func() { done <- e.c.ChangePassword(context.Background(), 1042, testPW) }()
	select {
	case out := <-done:
		checkOutcome(t, e, out)
		if out.OK || !out.Unknown || out.HTTPStatus != 0 && out.HTTPStatus != 200 {
			t.Fatalf("outcome %+v, want unknown", out)
		}
		if !strings.Contains(out.Err.Error(), "timeout after 300ms") {
			t.Fatalf("Err %q", out.Err)
		}
	case <-time.After(hangBound):
		t.Fatal("a dripping body was read past the timeout")
	}
}

func TestCancelDuringBackoffIsInterrupted(t *testing.T) {
	api := newFakeAPI(t, reply(503, ""))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e := newTestClient(t, api.srv.URL, func(c *Config) { c.BackoffBase = time.Minute; c.BackoffMax = time.Minute })
	retried := make(chan struct{})
	e.obs.onCall = func() {
		// Cancel once the client has started its backoff sleep (or is
		// about to): the first call's answer is in.
		go func() { time.Sleep(50 * time.Millisecond); cancel(); close(retried) }()
		e.obs.onCall = nil
	}
	start := time.Now()
	out := e.c.ChangePassword(ctx, 1042, testPW)
	<-retried
	checkOutcome(t, e, out)
	if !out.Interrupted || out.OK || out.Fatal || out.Attempts != 1 || !out.Unknown || out.HTTPStatus != 503 {
		t.Fatalf("outcome %+v, want interrupted after one (unknown) attempt", out)
	}
	if !errors.Is(out.Err, context.Canceled) || !strings.Contains(out.Err.Error(), "interrupted") {
		t.Fatalf("Err %v", out.Err)
	}
	if e.obs.retries != 1 {
		t.Errorf("%d retries observed, want 1", e.obs.retries)
	}
	if time.Since(start) > hangBound {
		t.Fatal("cancellation did not cut the backoff")
	}
}

func TestCancelledBeforeStart(t *testing.T) {
	api := newFakeAPI(t, reply(200, okBody))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, pacer := range []bool{true, false} {
		e := newTestClient(t, api.srv.URL, func(c *Config) {
			if !pacer {
				c.Pacer = nil
			}
		})
		out := e.c.ChangePassword(ctx, 1042, testPW)
		if !out.Interrupted || out.Attempts != 0 || out.Unknown || !errors.Is(out.Err, context.Canceled) {
			t.Fatalf("pacer %v: outcome %+v", pacer, out)
		}
	}
	if n := len(api.requests()); n != 0 {
		t.Fatalf("server saw %d requests", n)
	}
}

func TestPacerErrorStopsTheCall(t *testing.T) {
	api := newFakeAPI(t, reply(200, okBody))
	e := newTestClient(t, api.srv.URL, nil)
	e.pacer.err = errors.New("rate: Wait(n=1) would exceed context deadline")
	out := e.c.ResetSessions(t.Context(), 7)
	if !out.Interrupted || out.OK || out.Attempts != 0 || e.pacer.waits != 1 {
		t.Fatalf("outcome %+v after %d waits", out, e.pacer.waits)
	}
	if n := len(api.requests()); n != 0 {
		t.Fatalf("server saw %d requests", n)
	}
}

func TestCancelWhileInFlight(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		ok          bool
		interrupted bool
		unknown     bool
	}{
		// The answer to a request in flight is still seen and counts.
		{"success is kept", 200, okBody, true, false, false},
		{"final failure is kept", 400, `{"success":false,"errorCode":"InvalidParameter"}`, false, false, false},
		// A retryable answer: no retry, the call is interrupted.
		{"retryable stops", 500, "", false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
				cancel()
				time.Sleep(50 * time.Millisecond) // let a wrongly cancelled request fail first
				reply(tt.status, tt.body)(w, r)
			})
			e := newTestClient(t, api.srv.URL, nil)
			out := e.c.ChangePassword(ctx, 1042, testPW)
			checkOutcome(t, e, out)
			if out.OK != tt.ok || out.Interrupted != tt.interrupted || out.Unknown != tt.unknown || out.Attempts != 1 || out.HTTPStatus != tt.status {
				t.Fatalf("outcome %+v", out)
			}
			if tt.interrupted && !errors.Is(out.Err, context.Canceled) {
				t.Fatalf("Err %v does not wrap context.Canceled", out.Err)
			}
		})
	}
}

func TestSecretsNeverLeak(t *testing.T) {
	pw, key := testPW.Reveal(), testKey
	echo, _ := json.Marshal("you sent " + pw + " with key " + key)
	htmlEcho := strings.ReplaceAll(pw, "!", "&#33;") + " " + key
	api := newFakeAPI(t,
		reply(503, "plain: "+pw+" "+key),
		reply(503, `{"success":false,"errorCode":"InternalError","message":`+string(echo)+`}`),
		reply(429, `{"title":"`+key+`","detail":`+string(echo)+`,"traceId":"`+pw+`"}`, "Content-Type", "application/problem+json"),
		reply(502, "<html><title>"+htmlEcho+"</title></html>"),
		reply(302, "", "Location", "https://"+key+".example/"+pw),
	)
	e := newTestClient(t, api.srv.URL, func(c *Config) { c.MaxAttempts = 5 })
	out := e.c.ChangePassword(t.Context(), 1042, testPW)
	checkOutcome(t, e, out)
	if out.Attempts != 5 || out.OK {
		t.Fatalf("outcome %+v", out)
	}
	if !strings.Contains(out.Err.Error(), "[redacted]") {
		t.Errorf("Err %q: expected the echoed key to be redacted", out.Err)
	}
	if !strings.Contains(e.logs.String(), "[redacted]") {
		t.Error("logs: expected redacted echoes")
	}
}

func TestConnectionsAreReused(t *testing.T) {
	big := strings.Repeat("x", 100<<10) // more than maxBody, less than maxBody+maxDrain
	api := newFakeAPI(t, reply(400, big))
	e := newTestClient(t, api.srv.URL, nil)
	for range 5 {
		out := e.c.ChangePassword(t.Context(), 1042, testPW)
		if out.OK || out.Attempts != 1 || !strings.HasPrefix(out.Err.Error(), "HTTP 400: xxx") {
			t.Fatalf("outcome %+v", out)
		}
	}
	if n := api.connections(); n != 1 {
		t.Fatalf("%d connections for 5 sequential calls, want 1 (bodies not drained?)", n)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" = accepted
	}{
		{"defaults", func(*Config) {}, ""},
		{"bad url", func(c *Config) { c.BaseURL = "http://example.com" }, "--base-url"},
		{"empty key", func(c *Config) { c.APIKey = " \n" }, "api key: empty"},
		{"key with newline", func(c *Config) { c.APIKey = "abc\ndef-0123456789" }, "api key: character 4"},
		{"short key", func(c *Config) { c.APIKey = "k" }, "too short"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "--timeout"},
		{"negative attempts", func(c *Config) { c.MaxAttempts = -1 }, "--max-attempts"},
		{"negative backoff", func(c *Config) { c.BackoffBase = -1 }, "backoff"},
		{"max below base", func(c *Config) { c.BackoffBase = time.Second; c.BackoffMax = time.Millisecond }, "backoff: max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{BaseURL: "https://rest.ecgrid.io", APIKey: "key-1234567890abcdef"}
			tt.edit(&cfg)
			c, err := New(cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.timeout != DefaultTimeout || c.maxAttempts != DefaultMaxAttempts || c.backoffBase != DefaultBackoffBase || c.backoffMax != DefaultBackoffMax {
					t.Errorf("defaults not applied: %v %d %v %v", c.timeout, c.maxAttempts, c.backoffBase, c.backoffMax)
				}
				tr, ok := c.hc.Transport.(*http.Transport)
				if !ok || tr.MaxIdleConnsPerHost < 1 {
					t.Errorf("default transport not set")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "abc") {
				t.Error("error echoes the key")
			}
		})
	}
}

func TestNewTransport(t *testing.T) {
	for _, n := range []int{0, 1, 8, 500} {
		tr := NewTransport(n)
		if tr.MaxIdleConnsPerHost < max(n, 1) || tr.MaxConnsPerHost != 0 || tr.DisableKeepAlives || !tr.ForceAttemptHTTP2 ||
			tr.Proxy == nil || tr.TLSHandshakeTimeout <= 0 || tr.MaxIdleConns < tr.MaxIdleConnsPerHost {
			t.Errorf("NewTransport(%d) = %+v", n, tr)
		}
	}
}

// TestNoProxyToLoopback: every loopback spelling --base-url accepts is
// reached directly, whatever the environment's proxy says; other hosts get
// the environment's proxy.
func TestNoProxyToLoopback(t *testing.T) {
	proxyURL, _ := url.Parse("http://proxy.example:3128")
	env := func(*http.Request) (*url.URL, error) { return proxyURL, nil }
	proxy := noProxyToLoopback(env)
	tests := []struct {
		url       string
		wantProxy bool
	}{
		{"http://localhost.:8080/v2/users/me", false},
		{"http://LOCALHOST:8080/v2/users/me", false},
		{"http://LocalHost./v2/users/me", false},
		{"http://localhost:8080/v2/users/me", false},
		{"http://127.0.0.1:8080/v2/users/me", false},
		{"http://127.1.2.3:8080/v2/users/me", false},
		{"http://[::1]:8080/v2/users/me", false},
		{"https://localhost.:8443/v2/users/me", false},
		{"https://rest.ecgrid.io/v2/users/me", true},
		{"http://localhost.evil.example/v2/users/me", true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := proxy(req)
			if err != nil {
				t.Fatal(err)
			}
			if (got != nil) != tt.wantProxy {
				t.Errorf("proxy %v, want proxied %v", got, tt.wantProxy)
			}
		})
	}
}

func TestValidateBaseURL(t *testing.T) {
	tests := []struct {
		raw     string
		wantErr string // "" = accepted
	}{
		{"https://rest.ecgrid.io", ""},
		{"https://rest.ecgrid.io/", ""},
		{" https://rest.ecgrid.io:8443/api ", ""},
		{"HTTPS://REST.ECGRID.IO", ""},
		{"http://localhost:8080", ""},
		{"http://LOCALHOST", ""},
		{"http://127.0.0.1:1234", ""},
		{"http://127.9.8.7", ""},
		{"http://[::1]:80/x", ""},
		{"http://rest.ecgrid.io", "http is allowed only to a loopback host"},
		{"http://10.0.0.1", "loopback"},
		{"http://localhost.evil.example", "loopback"},
		{"http://127.0.0.1.nip.io", "loopback"},
		{"http://[::ffff:10.0.0.1]", "loopback"},
		{"ftp://rest.ecgrid.io", `scheme "ftp"`},
		{"rest.ecgrid.io", "absolute URL"},
		{"https://", "absolute URL"},
		{"/v2", "absolute URL"},
		{"mailto:x@y", "absolute URL"},
		{"https://user:hunter2@rest.ecgrid.io", "user info"},
		{"https://rest.ecgrid.io?x=1", "query or fragment"},
		{"https://rest.ecgrid.io/#f", "query or fragment"},
		{"https://rest.ecgrid.io:port", "not a URL"},
		{"", "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			u, err := ValidateBaseURL(tt.raw)
			if tt.wantErr == "" {
				if err != nil || u == nil {
					t.Fatalf("ValidateBaseURL(%q) = %v", tt.raw, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateBaseURL(%q) accepted, want %q", tt.raw, tt.wantErr)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "--base-url") || !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("error %q, want --base-url and %q", msg, tt.wantErr)
			}
			if strings.Contains(msg, "hunter2") {
				t.Fatal("error echoes the credentials")
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	c := &Client{backoffBase: 100 * time.Millisecond, backoffMax: time.Second}
	for _, n := range []int{0, 1, 2, 3, 4, 10, 63, 100} {
		ceiling := time.Second
		if n < 4 {
			ceiling = 100 * time.Millisecond << n
		}
		var top time.Duration
		for range 2000 {
			d := c.backoff(n)
			if d < 0 || d >= ceiling {
				t.Fatalf("backoff(%d) = %v, want in [0, %v)", n, d, ceiling)
			}
			top = max(top, d)
		}
		if top < ceiling/2 {
			t.Errorf("backoff(%d) never above %v in 2000 draws: no jitter up to %v", n, top, ceiling)
		}
	}
}

func TestAuthLevel(t *testing.T) {
	order := []string{"General", "TPUser", "MailboxUser", "MailboxAdmin", "NetworkUser", "NetworkAdmin", "NetOps", "TechOps", "Root"}
	prev := LevelUnknown
	for _, name := range order {
		t.Run(name, func(t *testing.T) {
			l := ParseAuthLevel(name)
			if l <= prev {
				t.Fatalf("%s (%d) is not above %s (%d)", name, l, prev, prev)
			}
			if l.String() != name {
				t.Fatalf("String() = %q", l.String())
			}
			for _, variant := range []string{strings.ToLower(name), strings.ToUpper(name), " " + name + " "} {
				if ParseAuthLevel(variant) != l {
					t.Errorf("ParseAuthLevel(%q) = %v", variant, ParseAuthLevel(variant))
				}
			}
			prev = l
		})
	}
	for _, s := range []string{"", "Admin", "Network Admin", "Root2", "Unknown"} {
		if l := ParseAuthLevel(s); l != LevelUnknown {
			t.Errorf("ParseAuthLevel(%q) = %v, want LevelUnknown", s, l)
		}
	}
	if LevelUnknown.String() != "Unknown" || AuthLevel(99).String() != "Unknown" || AuthLevel(-1).String() != "Unknown" {
		t.Error("out-of-range levels must print Unknown")
	}
	if !(LevelNetworkAdmin > LevelNetworkUser && LevelRoot > LevelTechOps && LevelGeneral > LevelUnknown) {
		t.Error("order broken")
	}
}

// confirmingPacer is a fakePacer that also counts Confirm calls.
type confirmingPacer struct {
	fakePacer
	confirms int
}

func (p *confirmingPacer) Confirm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.confirms++
}

// TestConfirmCountsAcceptedAnswers: an adaptive pacer learns of every
// answer the server gave that was not a throttle (here a 500, then a 200),
// and not of the 429.
func TestConfirmCountsAcceptedAnswers(t *testing.T) {
	api := newFakeAPI(t, reply(429, ""), reply(500, ""), reply(200, okBody))
	p := &confirmingPacer{}
	e := newTestClient(t, api.srv.URL, func(c *Config) { c.Pacer = p; c.MaxAttempts = 5 })
	out := e.c.ChangePassword(t.Context(), 1042, testPW)
	if !out.OK || out.Attempts != 3 {
		t.Fatalf("outcome %+v", out)
	}
	if p.confirms != 2 || len(p.throttles) != 1 {
		t.Fatalf("%d confirms and %d throttles, want 2 (the 500 and the 200) and 1 (the 429)", p.confirms, len(p.throttles))
	}
}
