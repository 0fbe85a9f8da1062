package ecgridsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	adminKey   = "sim-test-admin-key-5f2c"
	rootKey    = "sim-test-root-key-77ab"
	lowKey     = "sim-test-networkuser-key-0d1e"
	oddKey     = "sim-test-odd-level-key-91aa"
	oldPw      = "Old-passw0rd!"
	newPw      = "N3w-Secret_pw!xyz"
	adminID    = 500
	lowID      = 501
	targetUser = 1042
)

// hangGuard bounds every client call; it only catches hangs.
const hangGuard = 30 * time.Second

// newSim returns a simulator with keys and users 7, 8 and 1042, served by
// an httptest server that is closed at the end of the test.
func newSim(t testing.TB) (*Server, *httptest.Server) {
	t.Helper()
	s := New()
	s.AddKey(adminKey, adminID, "NetworkAdmin")
	s.AddKey(rootKey, 1, "Root")
	s.AddKey(lowKey, lowID, "NetworkUser")
	s.AddKey(oddKey, 502, "Overlord")
	for _, id := range []int{7, 8, targetUser} {
		s.AddUser(id, oldPw)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

// freshClient opens a new connection per request, so that a dropped
// connection is never retried transparently by the transport, and never
// follows redirects.
func freshClient() *http.Client {
	return &http.Client{
		Timeout:   hangGuard,
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

type result struct {
	status int
	header http.Header
	body   []byte
	err    error // transport error or body read error
}

// env is the ECGrid envelope as a client decodes it.
type env struct {
	Success   bool            `json:"success"`
	ErrorCode string          `json:"errorCode"`
	Message   string          `json:"message"`
	Data      json.RawMessage `json:"data"`
}

func (r result) env(t *testing.T) env {
	t.Helper()
	var e env
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("body is not an envelope: %v: %.200q", err, r.body)
	}
	return e
}

func do(ctx context.Context, c *http.Client, method, url, key, ctype, body string) result {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return result{err: err}
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func pwBody(id int, pw string) string {
	return fmt.Sprintf(`{"userId":%d,"newPassword":%q}`, id, pw)
}

func changePw(c *http.Client, base, key string, id int, pw string) result {
	return do(context.Background(), c, http.MethodPost, base+pathPassword, key, "application/json", pwBody(id, pw))
}

func wantEnvelope(t *testing.T, r result, status int, code string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("request failed: %v", r.err)
	}
	if r.status != status {
		t.Fatalf("status = %d, want %d (body %.200q)", r.status, status, r.body)
	}
	e := r.env(t)
	if code == "" {
		if !e.Success || string(e.Data) != "true" {
			t.Fatalf("body = %s, want success with data true", r.body)
		}
		return
	}
	if e.Success || e.ErrorCode != code || string(e.Data) != "null" || e.Message == "" {
		t.Fatalf("body = %s, want failure envelope %s", r.body, code)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q", ct)
	}
}

func TestMe(t *testing.T) {
	_, ts := newSim(t)
	c := ts.Client()
	tests := []struct {
		name, method, key string
		status            int
		code              string
		wantUser          int
		wantLevel         string
	}{
		{"admin", http.MethodGet, adminKey, 200, "", adminID, "NetworkAdmin"},
		{"low level may ask who it is", http.MethodGet, lowKey, 200, "", lowID, "NetworkUser"},
		{"missing key", http.MethodGet, "", 401, "InvalidAPIKey", 0, ""},
		{"unknown key", http.MethodGet, "nope", 401, "InvalidAPIKey", 0, ""},
		{"wrong method", http.MethodPost, adminKey, 405, "MethodNotAllowed", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(context.Background(), c, tt.method, ts.URL+pathMe, tt.key, "", "")
			if tt.code != "" {
				wantEnvelope(t, r, tt.status, tt.code)
				return
			}
			if r.err != nil || r.status != tt.status {
				t.Fatalf("status %d err %v", r.status, r.err)
			}
			var got struct {
				Success bool
				Data    struct {
					UserID    int    `json:"userId"`
					AuthLevel string `json:"authLevel"`
				}
			}
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatal(err)
			}
			if !got.Success || got.Data.UserID != tt.wantUser || got.Data.AuthLevel != tt.wantLevel {
				t.Fatalf("body = %s", r.body)
			}
		})
	}
}

func TestPasswordChange(t *testing.T) {
	big := `{"userId":1042,"newPassword":"` + strings.Repeat("a", MaxBody) + `"}`
	tests := []struct {
		name, method, key, ctype, body string
		status                         int
		code                           string
		applied                        bool
	}{
		{"ok", "POST", adminKey, "application/json", pwBody(targetUser, newPw), 200, "", true},
		{"ok root, charset param", "POST", rootKey, "application/json; charset=utf-8", pwBody(targetUser, newPw), 200, "", true},
		{"missing key", "POST", "", "application/json", pwBody(targetUser, newPw), 401, "InvalidAPIKey", false},
		{"unknown key", "POST", "bogus", "application/json", pwBody(targetUser, newPw), 401, "InvalidAPIKey", false},
		{"below NetworkAdmin", "POST", lowKey, "application/json", pwBody(targetUser, newPw), 403, "AccessDenied", false},
		{"unknown level is too low", "POST", oddKey, "application/json", pwBody(targetUser, newPw), 403, "AccessDenied", false},
		{"bad JSON", "POST", adminKey, "application/json", `{"userId":1042,`, 400, "InvalidParameter", false},
		{"trailing garbage", "POST", adminKey, "application/json", pwBody(targetUser, newPw) + "x", 400, "InvalidParameter", false},
		{"userId missing", "POST", adminKey, "application/json", `{"newPassword":"` + newPw + `"}`, 400, "InvalidParameter", false},
		{"userId zero", "POST", adminKey, "application/json", pwBody(0, newPw), 400, "InvalidParameter", false},
		{"userId too big", "POST", adminKey, "application/json", pwBody(2147483648, newPw), 400, "InvalidParameter", false},
		{"userId a string", "POST", adminKey, "application/json", `{"userId":"1042","newPassword":"` + newPw + `"}`, 400, "InvalidParameter", false},
		{"userId fractional", "POST", adminKey, "application/json", `{"userId":1042.5,"newPassword":"` + newPw + `"}`, 400, "InvalidParameter", false},
		{"password missing", "POST", adminKey, "application/json", `{"userId":1042}`, 400, "InvalidParameter", false},
		{"no lowercase", "POST", adminKey, "application/json", pwBody(targetUser, "N3W-SECRET_PW!"), 400, "InvalidParameter", false},
		{"no uppercase", "POST", adminKey, "application/json", pwBody(targetUser, "n3w-secret_pw!"), 400, "InvalidParameter", false},
		{"no digit", "POST", adminKey, "application/json", pwBody(targetUser, "New-Secret_pw!"), 400, "InvalidParameter", false},
		{"no symbol", "POST", adminKey, "application/json", pwBody(targetUser, "N3wSecretPwXyz"), 400, "InvalidParameter", false},
		{"body too large", "POST", adminKey, "application/json", big, 400, "InvalidParameter", false},
		{"not JSON content type", "POST", adminKey, "text/plain", pwBody(targetUser, newPw), 415, "InvalidParameter", false},
		{"unknown user", "POST", adminKey, "application/json", pwBody(99, newPw), 404, "ObjectNotFound", false},
		{"wrong method", "GET", adminKey, "", "", 405, "MethodNotAllowed", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			r := do(context.Background(), ts.Client(), tt.method, ts.URL+pathPassword, tt.key, tt.ctype, tt.body)
			wantEnvelope(t, r, tt.status, tt.code)
			for _, bad := range []string{newPw, "N3W-SECRET_PW!", "n3w-secret_pw!", "New-Secret_pw!", "N3wSecretPwXyz", adminKey} {
				if bytes.Contains(r.body, []byte(bad)) {
					t.Fatalf("answer echoes a secret: %s", r.body)
				}
			}
			want := oldPw
			if tt.applied {
				want = newPw
			}
			if got, ok := s.Password(targetUser); !ok || got != want {
				t.Fatalf("password changed = %v, want %v", got == newPw, tt.applied)
			}
			if tt.status == 405 && r.header.Get("Allow") != http.MethodPost {
				t.Fatalf("Allow = %q", r.header.Get("Allow"))
			}
		})
	}
}

func TestReset(t *testing.T) {
	tests := []struct {
		name, method, key, id string
		status                int
		code                  string
		resets                int
	}{
		{"ok", "POST", adminKey, "1042", 200, "", 1},
		{"missing key", "POST", "", "1042", 401, "InvalidAPIKey", 0},
		{"below NetworkAdmin", "POST", lowKey, "1042", 403, "AccessDenied", 0},
		{"unknown user", "POST", adminKey, "99", 404, "ObjectNotFound", 0},
		{"not a number", "POST", adminKey, "abc", 400, "InvalidParameter", 0},
		{"zero", "POST", adminKey, "0", 400, "InvalidParameter", 0},
		{"signed", "POST", adminKey, "+1042", 400, "InvalidParameter", 0},
		{"too big", "POST", adminKey, "2147483648", 400, "InvalidParameter", 0},
		{"wrong method", "GET", adminKey, "1042", 405, "MethodNotAllowed", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			r := do(context.Background(), ts.Client(), tt.method, ts.URL+pathReset+tt.id, tt.key, "", "")
			wantEnvelope(t, r, tt.status, tt.code)
			if got := s.Resets(targetUser); got != tt.resets {
				t.Fatalf("Resets = %d, want %d", got, tt.resets)
			}
			if pw, _ := s.Password(targetUser); pw != oldPw {
				t.Fatal("a reset changed the password")
			}
		})
	}
	t.Run("counts add up", func(t *testing.T) {
		s, ts := newSim(t)
		for range 3 {
			wantEnvelope(t, do(context.Background(), ts.Client(), "POST", ts.URL+pathReset+"7", adminKey, "", ""), 200, "")
		}
		if s.Resets(7) != 3 || s.Resets(8) != 0 || s.Count("reset") != 3 {
			t.Fatalf("Resets(7)=%d Resets(8)=%d Count=%d", s.Resets(7), s.Resets(8), s.Count("reset"))
		}
	})
}

func TestAutoCreate(t *testing.T) {
	s, ts := newSim(t)
	const id = 123456
	wantEnvelope(t, changePw(ts.Client(), ts.URL, adminKey, id, newPw), 404, "ObjectNotFound")
	if _, ok := s.Password(id); ok {
		t.Fatal("user exists without auto-create")
	}
	s.SetAutoCreate(true)
	if pw, ok := s.Password(id); !ok || pw != "" {
		t.Fatalf("auto-created user: ok=%v, password known=%v", ok, pw != "")
	}
	if _, ok := s.Password(0); ok {
		t.Fatal("user 0 exists")
	}
	wantEnvelope(t, changePw(ts.Client(), ts.URL, adminKey, id, newPw), 200, "")
	wantEnvelope(t, do(context.Background(), ts.Client(), "POST", ts.URL+pathReset+"2147483647", adminKey, "", ""), 200, "")
	if pw, _ := s.Password(id); pw != newPw {
		t.Fatal("password not set")
	}
	if s.Resets(MaxUserID) != 1 {
		t.Fatal("reset not counted")
	}
	s.SetAutoCreate(false)
	if _, ok := s.Password(id); !ok {
		t.Fatal("a changed user disappeared")
	}
}

func TestUnknownRoute(t *testing.T) {
	s, ts := newSim(t)
	wantEnvelope(t, do(context.Background(), ts.Client(), "GET", ts.URL+"/v2/users", adminKey, "", ""), 404, "NotFound")
	wantEnvelope(t, do(context.Background(), ts.Client(), "GET", ts.URL+"/v2/users", "", "", ""), 401, "InvalidAPIKey")
	if s.Count("other") != 2 || s.Count("me") != 0 || s.Count("bogus") != 0 {
		t.Fatalf("counts: other=%d me=%d", s.Count("other"), s.Count("me"))
	}
}

func TestFaults(t *testing.T) {
	httpDate := time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		fault      Fault
		key        string
		applied    bool
		callStatus int
		check      func(t *testing.T, r result)
	}{
		{"TooManyRequests", Fault{Kind: TooManyRequests}, adminKey, false, 429, func(t *testing.T, r result) {
			wantEnvelope(t, r, 429, "RateLimitExceeded")
			if r.header.Get("Retry-After") != "1" {
				t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
			}
		}},
		{"TooManyRequests seconds", Fault{Kind: TooManyRequests, RetryAfter: "2"}, adminKey, false, 429, func(t *testing.T, r result) {
			if r.status != 429 || r.header.Get("Retry-After") != "2" {
				t.Fatalf("status %d Retry-After %q", r.status, r.header.Get("Retry-After"))
			}
		}},
		{"TooManyRequests date", Fault{Kind: TooManyRequests, RetryAfter: httpDate}, adminKey, false, 429, func(t *testing.T, r result) {
			if r.status != 429 || r.header.Get("Retry-After") != httpDate {
				t.Fatalf("status %d Retry-After %q", r.status, r.header.Get("Retry-After"))
			}
		}},
		{"ServerError", Fault{Kind: ServerError}, adminKey, false, 500, func(t *testing.T, r result) {
			wantEnvelope(t, r, 500, "InternalError")
		}},
		{"ServerError before auth", Fault{Kind: ServerError}, "", false, 500, func(t *testing.T, r result) {
			wantEnvelope(t, r, 500, "InternalError")
		}},
		{"HTMLError", Fault{Kind: HTMLError}, adminKey, false, 503, func(t *testing.T, r result) {
			if r.status != 503 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !bytes.Contains(r.body, []byte("<html>")) {
				t.Fatalf("status %d type %q body %.100q", r.status, r.header.Get("Content-Type"), r.body)
			}
		}},
		{"Problem", Fault{Kind: Problem}, adminKey, false, 500, func(t *testing.T, r result) { wantProblem(t, r, 500) }},
		{"Problem 502", Fault{Kind: Problem, Status: 502}, adminKey, false, 502, func(t *testing.T, r result) { wantProblem(t, r, 502) }},
		{"SuccessFalse", Fault{Kind: SuccessFalse}, adminKey, false, 200, func(t *testing.T, r result) {
			wantEnvelope(t, r, 200, "InternalError")
		}},
		{"SuccessFalse code", Fault{Kind: SuccessFalse, Code: "ObjectNotFound"}, adminKey, false, 200, func(t *testing.T, r result) {
			wantEnvelope(t, r, 200, "ObjectNotFound")
		}},
		{"Envelope default", Fault{Kind: Envelope}, adminKey, false, 500, func(t *testing.T, r result) {
			wantEnvelope(t, r, 500, "InternalError")
		}},
		{"Envelope 404", Fault{Kind: Envelope, Status: 404, Code: "ObjectNotFound"}, adminKey, false, 404, func(t *testing.T, r result) {
			wantEnvelope(t, r, 404, "ObjectNotFound")
		}},
		{"Envelope 401", Fault{Kind: Envelope, Status: 401, Code: "InvalidAPIKey"}, adminKey, false, 401, func(t *testing.T, r result) {
			wantEnvelope(t, r, 401, "InvalidAPIKey")
		}},
		{"ApplyThenDrop", Fault{Kind: ApplyThenDrop}, adminKey, true, 0, wantTransportError},
		{"ApplyThenDrop without key applies nothing", Fault{Kind: ApplyThenDrop}, "", false, 0, wantTransportError},
		{"ApplyThenHold", Fault{Kind: ApplyThenHold, Hold: 50 * time.Millisecond}, adminKey, true, 200, func(t *testing.T, r result) {
			wantEnvelope(t, r, 200, "")
		}},
		{"ApplyThenHold keeps the normal answer", Fault{Kind: ApplyThenHold, Hold: time.Millisecond}, lowKey, false, 403, func(t *testing.T, r result) {
			wantEnvelope(t, r, 403, "AccessDenied")
		}},
		{"DropBeforeApply", Fault{Kind: DropBeforeApply}, adminKey, false, 0, wantTransportError},
		{"Empty", Fault{Kind: Empty}, adminKey, false, 502, func(t *testing.T, r result) { wantEmpty(t, r, 502) }},
		{"Empty 500", Fault{Kind: Empty, Status: 500}, adminKey, false, 500, func(t *testing.T, r result) { wantEmpty(t, r, 500) }},
		{"InvalidJSON", Fault{Kind: InvalidJSON}, adminKey, false, 200, func(t *testing.T, r result) {
			if r.err != nil || r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") || json.Valid(r.body) {
				t.Fatalf("status %d type %q err %v valid JSON %v", r.status, r.header.Get("Content-Type"), r.err, json.Valid(r.body))
			}
		}},
		{"DataFalse", Fault{Kind: DataFalse}, adminKey, false, 200, func(t *testing.T, r result) {
			if r.err != nil || r.status != 200 {
				t.Fatalf("status %d err %v", r.status, r.err)
			}
			if e := r.env(t); !e.Success || string(e.Data) != "false" {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"Refusal", Fault{Kind: Refusal}, adminKey, false, 200, func(t *testing.T, r result) {
			if r.err != nil || r.status != 200 {
				t.Fatalf("status %d err %v", r.status, r.err)
			}
			if e := r.env(t); e.Success || e.ErrorCode != "" || e.Message != "" || string(e.Data) != "false" || bytes.Contains(r.body, []byte("errorCode")) {
				t.Fatalf("body %s", r.body)
			}
		}},
		{"HugeBody", Fault{Kind: HugeBody}, adminKey, false, 200, func(t *testing.T, r result) {
			if r.err != nil || r.status != 200 || len(r.body) != 20<<20 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
				t.Fatalf("status %d err %v len %d type %q", r.status, r.err, len(r.body), r.header.Get("Content-Type"))
			}
			if !bytes.HasPrefix(r.body, []byte("<html>")) || !bytes.HasSuffix(r.body, []byte("</html>\n")) {
				t.Fatal("not an HTML page")
			}
		}},
		{"SlowDrip", Fault{Kind: SlowDrip, Hold: 350 * time.Millisecond}, adminKey, false, 0, func(t *testing.T, r result) {
			if r.status != 200 || r.err == nil {
				t.Fatalf("status %d, body error %v: want 200 headers and a body that never completes", r.status, r.err)
			}
			if len(r.body) == 0 || !bytes.HasPrefix(dripBody, r.body) {
				t.Fatalf("dripped %q", r.body)
			}
		}},
		{"Redirect", Fault{Kind: Redirect, Location: "https://elsewhere.example/v2/users/password"}, adminKey, false, 307, func(t *testing.T, r result) {
			if r.err != nil || r.status != 307 || r.header.Get("Location") != "https://elsewhere.example/v2/users/password" {
				t.Fatalf("status %d err %v Location %q", r.status, r.err, r.header.Get("Location"))
			}
		}},
		{"Redirect default", Fault{Kind: Redirect}, adminKey, false, 307, func(t *testing.T, r result) {
			if r.status != 307 || r.header.Get("Location") != defaultLocation {
				t.Fatalf("status %d Location %q", r.status, r.header.Get("Location"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ts := newSim(t)
			s.Inject(tt.fault)
			r := changePw(freshClient(), ts.URL, tt.key, targetUser, newPw)
			tt.check(t, r)
			want := oldPw
			if tt.applied {
				want = newPw
			}
			if got, _ := s.Password(targetUser); got != want {
				t.Fatalf("applied = %v, want %v", got == newPw, tt.applied)
			}
			ts.Close() // waits for the handler, so the call's status is final
			calls := s.Calls()
			if len(calls) != 1 {
				t.Fatalf("%d calls, want 1", len(calls))
			}
			c := calls[0]
			if c.Fault != tt.fault.Kind || c.Status != tt.callStatus || c.Endpoint != "password" || c.UserID != targetUser {
				t.Fatalf("call = %+v, want fault %v status %d", c, tt.fault.Kind, tt.callStatus)
			}
			if s.PendingFaults() != 0 {
				t.Fatal("fault not consumed")
			}
		})
	}
}

func wantTransportError(t *testing.T, r result) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("got an answer (status %d), want a transport error", r.status)
	}
}

func wantEmpty(t *testing.T, r result, status int) {
	t.Helper()
	if r.err != nil || r.status != status || len(r.body) != 0 {
		t.Fatalf("status %d err %v body %q", r.status, r.err, r.body)
	}
}

func wantProblem(t *testing.T, r result, status int) {
	t.Helper()
	if r.err != nil || r.status != status || !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("status %d err %v type %q", r.status, r.err, r.header.Get("Content-Type"))
	}
	var p struct {
		Type, Title, Detail, TraceID string
		Status                       int
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Type == "" || p.Title == "" || p.Detail == "" || p.TraceID == "" || p.Status != status {
		t.Fatalf("problem = %s", r.body)
	}
}

// TestDropOverHTTP2 covers drop without Hijack (HTTP/2 resets the stream).
func TestDropOverHTTP2(t *testing.T) {
	s := New()
	s.AddKey(adminKey, adminID, "Root")
	s.AddUser(targetUser, oldPw)
	ts := httptest.NewUnstartedServer(s)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	s.Inject(Fault{Kind: ApplyThenDrop})
	r := changePw(ts.Client(), ts.URL, adminKey, targetUser, newPw)
	if r.err == nil {
		t.Fatalf("got status %d, want a transport error", r.status)
	}
	if pw, _ := s.Password(targetUser); pw != newPw {
		t.Fatal("not applied")
	}
	wantEnvelope(t, changePw(ts.Client(), ts.URL, adminKey, targetUser, oldPw), 200, "")
}

func TestApplyThenHoldClientGivesUp(t *testing.T) {
	s, ts := newSim(t)
	s.Inject(Fault{Kind: ApplyThenHold, Hold: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r := do(ctx, freshClient(), "POST", ts.URL+pathPassword, adminKey, "application/json", pwBody(targetUser, newPw))
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, status %d: want the client's deadline", r.err, r.status)
	}
	if pw, _ := s.Password(targetUser); pw != newPw {
		t.Fatal("not applied")
	}
	closeWithin(t, ts)
	if c := s.Calls()[0]; c.Status != 0 || c.Fault != ApplyThenHold {
		t.Fatalf("call = %+v", c)
	}
}

// closeWithin closes ts, failing if a handler is still stuck long after its
// client left.
func closeWithin(t *testing.T, ts *httptest.Server) {
	t.Helper()
	done := make(chan struct{})
	go func() { ts.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatal("handler did not notice the client leaving")
	}
}

func TestLatency(t *testing.T) {
	t.Run("delays", func(t *testing.T) {
		s, ts := newSim(t)
		s.SetLatency(30*time.Millisecond, 40*time.Millisecond)
		start := time.Now()
		wantEnvelope(t, changePw(ts.Client(), ts.URL, adminKey, targetUser, newPw), 200, "")
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Fatalf("answered after %v, want at least the minimum latency", d)
		}
		s.SetLatency(0, 0)
		wantEnvelope(t, changePw(ts.Client(), ts.URL, adminKey, targetUser, oldPw), 200, "")
	})
	t.Run("respects the client leaving", func(t *testing.T) {
		s, ts := newSim(t)
		s.SetLatency(time.Hour, time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		r := do(ctx, freshClient(), "POST", ts.URL+pathPassword, adminKey, "application/json", pwBody(targetUser, newPw))
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline", r.err)
		}
		closeWithin(t, ts)
		if pw, _ := s.Password(targetUser); pw != oldPw {
			t.Fatal("applied although the client left during the latency")
		}
		if c := s.Calls()[0]; c.Status != 0 {
			t.Fatalf("call = %+v", c)
		}
	})
}

func TestFaultMatching(t *testing.T) {
	t.Run("endpoint, user and times", func(t *testing.T) {
		s, ts := newSim(t)
		c := ts.Client()
		s.Inject(Fault{Endpoint: "password", UserID: 7, Times: 2, Kind: ServerError})
		s.Inject(Fault{Endpoint: "password", Kind: Envelope, Status: 404, Code: "ObjectNotFound"})
		wantEnvelope(t, do(context.Background(), c, "POST", ts.URL+pathReset+"7", adminKey, "", ""), 200, "")
		wantEnvelope(t, changePw(c, ts.URL, adminKey, 8, newPw), 404, "ObjectNotFound") // second fault, any user
		wantEnvelope(t, changePw(c, ts.URL, adminKey, 8, newPw), 200, "")
		wantEnvelope(t, changePw(c, ts.URL, adminKey, 7, newPw), 500, "InternalError")
		wantEnvelope(t, changePw(c, ts.URL, adminKey, 7, newPw), 500, "InternalError")
		wantEnvelope(t, changePw(c, ts.URL, adminKey, 7, newPw), 200, "")
		if s.PendingFaults() != 0 {
			t.Fatalf("%d faults left", s.PendingFaults())
		}
		var kinds []string
		for _, call := range s.Calls() {
			kinds = append(kinds, fmt.Sprintf("%s/%d/%v/%d", call.Endpoint, call.UserID, call.Fault, call.Status))
		}
		want := "reset/7/NoFault/200 password/8/Envelope/404 password/8/NoFault/200 " +
			"password/7/ServerError/500 password/7/ServerError/500 password/7/NoFault/200"
		if got := strings.Join(kinds, " "); got != want {
			t.Fatalf("calls:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("in order, Times 0 means once", func(t *testing.T) {
		s, ts := newSim(t)
		s.Inject(Fault{Kind: ServerError})
		s.Inject(Fault{Kind: HTMLError})
		for _, want := range []int{500, 503, 200} {
			if r := changePw(ts.Client(), ts.URL, adminKey, targetUser, newPw); r.status != want {
				t.Fatalf("status %d, want %d", r.status, want)
			}
		}
	})
	t.Run("me matches the caller", func(t *testing.T) {
		s, ts := newSim(t)
		s.Inject(Fault{Endpoint: "me", UserID: adminID, Kind: ServerError})
		if r := do(context.Background(), ts.Client(), "GET", ts.URL+pathMe, lowKey, "", ""); r.status != 200 {
			t.Fatalf("other caller: status %d", r.status)
		}
		if r := do(context.Background(), ts.Client(), "GET", ts.URL+pathMe, adminKey, "", ""); r.status != 500 {
			t.Fatalf("matching caller: status %d", r.status)
		}
	})
	t.Run("any endpoint", func(t *testing.T) {
		s, ts := newSim(t)
		s.Inject(Fault{Kind: Empty, Times: 3})
		for _, url := range []string{pathMe, pathReset + "7", "/v2/nowhere"} {
			if r := do(context.Background(), ts.Client(), "GET", ts.URL+url, adminKey, "", ""); r.status != 502 {
				t.Fatalf("%s: status %d", url, r.status)
			}
		}
	})
}

func TestRateLimit(t *testing.T) {
	s, ts := newSim(t)
	s.SetRateLimit(3)
	var statuses []int
	limited := 0
	for i := range 10 {
		r := do(context.Background(), ts.Client(), "GET", ts.URL+pathMe, adminKey, "", "")
		statuses = append(statuses, r.status)
		if r.status == 429 {
			limited++
			wantEnvelope(t, r, 429, "RateLimitExceeded")
			if r.header.Get("Retry-After") != "1" {
				t.Fatalf("Retry-After = %q", r.header.Get("Retry-After"))
			}
		} else if r.status != 200 {
			t.Fatalf("request %d: status %d", i, r.status)
		}
	}
	if statuses[0] != 200 || statuses[1] != 200 || statuses[2] != 200 || limited == 0 {
		t.Fatalf("statuses %v: want the first 3 admitted and later ones limited", statuses)
	}

	// A limited request neither applies a change nor consumes a fault.
	s.SetRateLimit(1)
	wantEnvelope(t, changePw(ts.Client(), ts.URL, adminKey, targetUser, oldPw), 200, "")
	s.Inject(Fault{Kind: ServerError})
	wantEnvelope(t, changePw(ts.Client(), ts.URL, adminKey, targetUser, newPw), 429, "RateLimitExceeded")
	if pw, _ := s.Password(targetUser); pw != oldPw || s.PendingFaults() != 1 {
		t.Fatalf("limited request applied=%v, faults left %d", pw == newPw, s.PendingFaults())
	}

	s.SetRateLimit(0)
	for range 10 {
		if r := do(context.Background(), ts.Client(), "GET", ts.URL+pathMe, adminKey, "", ""); r.status == 429 {
			t.Fatal("limited after SetRateLimit(0)")
		}
	}
}

func TestCallsNeverHoldSecrets(t *testing.T) {
	s, ts := newSim(t)
	c := freshClient()
	s.Inject(Fault{Endpoint: "password", Kind: ApplyThenDrop})
	s.Inject(Fault{Endpoint: "password", Kind: SuccessFalse})
	changePw(c, ts.URL, adminKey, targetUser, newPw)
	changePw(c, ts.URL, adminKey, targetUser, newPw)
	changePw(c, ts.URL, adminKey, targetUser, newPw)
	changePw(c, ts.URL, adminKey, targetUser, "nodigits-here!X") // rejected password
	changePw(c, ts.URL, lowKey, 7, newPw)
	do(context.Background(), c, "GET", ts.URL+pathMe, adminKey, "", "")
	do(context.Background(), c, "POST", ts.URL+pathReset+"8", rootKey, "", "")
	closeWithin(t, ts)

	calls := s.Calls()
	if len(calls) != 7 {
		t.Fatalf("%d calls, want 7", len(calls))
	}
	dump := fmt.Sprintf("%+v %#v", calls, calls)
	for _, secret := range []string{newPw, oldPw, "nodigits-here!X", adminKey, lowKey, rootKey} {
		if strings.Contains(dump, secret) {
			t.Fatal("Calls holds a password or an API key")
		}
	}
	wantEP := []string{"password", "password", "password", "password", "password", "me", "reset"}
	wantUser := []int{targetUser, targetUser, targetUser, targetUser, 7, adminID, 8}
	for i, call := range calls {
		if call.Endpoint != wantEP[i] || call.UserID != wantUser[i] || call.At.IsZero() {
			t.Fatalf("call %d = %+v", i, call)
		}
		if i > 0 && call.At.Before(calls[i-1].At) {
			t.Fatal("calls not in arrival order")
		}
	}
	if s.Count("password") != 5 || s.Count("me") != 1 || s.Count("reset") != 1 {
		t.Fatal("counts wrong")
	}
}

func TestSetCallLimit(t *testing.T) {
	s, ts := newSim(t)
	s.SetCallLimit(2)
	for range 5 {
		do(context.Background(), ts.Client(), "GET", ts.URL+pathMe, adminKey, "", "")
	}
	if len(s.Calls()) != 2 || s.Count("me") != 5 {
		t.Fatalf("kept %d calls, counted %d", len(s.Calls()), s.Count("me"))
	}
	s.SetCallLimit(-1)
	do(context.Background(), ts.Client(), "GET", ts.URL+pathMe, adminKey, "", "")
	if len(s.Calls()) != 3 {
		t.Fatalf("kept %d calls", len(s.Calls()))
	}
}

func TestConcurrentUse(t *testing.T) {
	s, ts := newSim(t)
	s.SetAutoCreate(true)
	const workers, each = 8, 25
	stop := make(chan struct{})
	var side sync.WaitGroup
	side.Go(func() { // configure and inspect while requests are served
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.Inject(Fault{Endpoint: "reset", UserID: 1, Kind: ServerError})
			_ = s.Calls()
			_, _ = s.Password(1001)
			_ = s.Count("password")
			s.SetLatency(0, time.Millisecond)
			s.AddUser(5, oldPw)
			time.Sleep(time.Millisecond)
		}
	})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := 1000 + w*each + i
				if r := changePw(ts.Client(), ts.URL, adminKey, id, newPw+strconv.Itoa(id)); r.status != 200 {
					t.Errorf("user %d: status %d err %v", id, r.status, r.err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	side.Wait()
	if s.Count("password") != workers*each {
		t.Fatalf("Count = %d", s.Count("password"))
	}
	for id := 1000; id < 1000+workers*each; id++ {
		if pw, _ := s.Password(id); pw != newPw+strconv.Itoa(id) {
			t.Fatalf("user %d has the wrong password", id)
		}
	}
}

func TestListenLoopback(t *testing.T) {
	s := New()
	s.AddKey(adminKey, adminID, "Root")
	base, srv, err := s.ListenLoopback()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("base URL %q", base)
	}
	c := freshClient()
	if r := do(context.Background(), c, "GET", base+pathMe, adminKey, "", ""); r.status != 200 {
		t.Fatalf("status %d err %v", r.status, r.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if r := do(context.Background(), c, "GET", base+pathMe, adminKey, "", ""); r.err == nil {
		t.Fatal("still serving after Shutdown")
	}
}

func TestFaultKindString(t *testing.T) {
	seen := map[string]bool{}
	for k := NoFault; k <= Redirect; k++ {
		name := k.String()
		if name == "" || strings.HasPrefix(name, "FaultKind(") || seen[name] {
			t.Fatalf("kind %d has name %q", int(k), name)
		}
		seen[name] = true
	}
	if ApplyThenDrop.String() != "ApplyThenDrop" || FaultKind(99).String() != "FaultKind(99)" {
		t.Fatal("names wrong")
	}
}

func BenchmarkPasswordChange(b *testing.B) {
	s, ts := newSim(b)
	s.SetAutoCreate(true)
	s.SetCallLimit(0)
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: hangGuard}
	body := []byte(pwBody(targetUser, newPw))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest("POST", ts.URL+pathPassword, bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("X-API-Key", adminKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
