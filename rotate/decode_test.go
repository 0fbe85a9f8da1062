package rotate

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestJudgeAnswers(t *testing.T) {
	type want struct {
		ok, retry, fatal, unknown, throttle bool
		code                                string
		msg                                 string // exact message; "" when ok
	}
	tests := []struct {
		name     string
		endpoint string
		status   int
		ctype    string
		body     string
		want     want
	}{
		{"success", endpointPassword, 200, "application/json", `{"success":true,"data":true}`, want{ok: true}},
		{"success 204-style 201", endpointReset, 201, "", ` {"success": true, "data": true, "message": null} `, want{ok: true}},
		{"success with BOM and odd case", endpointPassword, 200, "", "\ufeff{\"Success\":true,\"Data\":true}", want{ok: true}},
		{"data false no code retried", endpointPassword, 200, "", `{"success":true,"data":false}`,
			want{retry: true, unknown: true, msg: "HTTP 200: not applied (data: false, no errorCode)"}},
		{"data false with code final", endpointPassword, 200, "", `{"success":true,"errorCode":"ObjectNotFound","data":false}`,
			want{code: "ObjectNotFound", msg: "HTTP 200 ObjectNotFound: not applied (data: false)"}},
		{"data null", endpointPassword, 200, "", `{"success":true,"data":null}`,
			want{retry: true, unknown: true, msg: "HTTP 200: success without data: true (data: null)"}},
		{"data missing", endpointPassword, 200, "", `{"success":true}`,
			want{retry: true, unknown: true, msg: "HTTP 200: success without data: true (data: missing)"}},
		{"200 success false final", endpointPassword, 200, "", `{"success":false,"errorCode":"InvalidParameter","message":"password does not meet policy","data":null}`,
			want{code: "InvalidParameter", msg: "HTTP 200 InvalidParameter: password does not meet policy"}},
		{"200 success false no code retried", endpointPassword, 200, "", `{"success":false}`,
			want{retry: true, unknown: true, msg: "HTTP 200: success: false (no errorCode)"}},
		{"200 success false null code and message retried", endpointPassword, 200, "", `{"success":false,"errorCode":null,"message":"try again","data":false}`,
			want{retry: true, unknown: true, msg: "HTTP 200: try again (no errorCode)"}},
		{"200 success false empty code retried", endpointReset, 200, "", `{"success":false,"errorCode":""}`,
			want{retry: true, unknown: true, msg: "HTTP 200: success: false (no errorCode)"}},
		{"me 200 success false no code retried, not unknown", endpointMe, 200, "", `{"success":false}`,
			want{retry: true, msg: "HTTP 200: success: false (no errorCode)"}},
		{"200 success false ObjectNotFound final", endpointPassword, 200, "", `{"success":false,"errorCode":"ObjectNotFound","message":"no user"}`,
			want{code: "ObjectNotFound", msg: "HTTP 200 ObjectNotFound: no user"}},
		{"200 rate limit", endpointPassword, 200, "", `{"success":false,"errorCode":"RateLimitExceeded","message":"slow down"}`,
			want{retry: true, throttle: true, code: "RateLimitExceeded", msg: "HTTP 200 RateLimitExceeded: slow down"}},
		{"200 internal error", endpointPassword, 200, "", `{"success":false,"errorCode":"InternalError","message":"oops"}`,
			want{retry: true, unknown: true, code: "InternalError", msg: "HTTP 200 InternalError: oops"}},
		{"200 invalid key", endpointPassword, 200, "", `{"success":false,"errorCode":"InvalidAPIKey","message":"bad key"}`,
			want{fatal: true, code: "InvalidAPIKey", msg: "HTTP 200 InvalidAPIKey: bad key"}},
		{"400 envelope", endpointPassword, 400, "application/json", `{"success":false,"errorCode":"InvalidParameter","message":"password does not meet policy","data":null}`,
			want{code: "InvalidParameter", msg: "HTTP 400 InvalidParameter: password does not meet policy"}},
		{"404 envelope", endpointPassword, 404, "", `{"success":false,"errorCode":"ObjectNotFound","message":"no user 1042"}`,
			want{code: "ObjectNotFound", msg: "HTTP 404 ObjectNotFound: no user 1042"}},
		{"404 problem", endpointPassword, 404, "application/problem+json", `{"type":"https://tools.ietf.org/html/rfc7231#section-6.5.4","title":"Not Found","status":404,"detail":"user 1042 does not exist","traceId":"00-abc-01"}`,
			want{code: "Not Found", msg: "HTTP 404 Not Found: user 1042 does not exist (trace 00-abc-01)"}},
		{"400 validation problem", endpointPassword, 400, "application/problem+json", `{"title":"One or more validation errors occurred.","status":400,"errors":{"NewPassword":["too short"],"UserId":["bad"]}}`,
			want{code: "One or more validation errors occurred.", msg: "HTTP 400 One or more validation errors occurred.: NewPassword: too short"}},
		{"401 empty", endpointPassword, 401, "", ``,
			want{fatal: true, msg: "HTTP 401: Unauthorized (empty body)"}},
		{"403 envelope", endpointMe, 403, "", `{"success":false,"errorCode":"AccessDenied","message":"not allowed"}`,
			want{fatal: true, code: "AccessDenied", msg: "HTTP 403 AccessDenied: not allowed"}},
		{"429", endpointPassword, 429, "text/plain", "Too Many Requests\n",
			want{retry: true, throttle: true, msg: "HTTP 429: Too Many Requests"}},
		{"503 html", endpointPassword, 503, "text/html", "<html><head><TITLE>\n Service\tUnavailable </TITLE></head><body>x</body></html>",
			want{retry: true, unknown: true, msg: "HTTP 503: Service Unavailable (html)"}},
		{"502 html without title", endpointPassword, 502, "", "<html><body><h1>nginx</h1></body></html>",
			want{retry: true, unknown: true, msg: "HTTP 502: Bad Gateway (html)"}},
		{"html entities", endpointPassword, 500, "text/html", "<title>A &amp; B &lt;x&gt;</title>",
			want{retry: true, unknown: true, msg: "HTTP 500: A & B <x> (html)"}},
		{"500 empty", endpointPassword, 500, "", "",
			want{retry: true, unknown: true, msg: "HTTP 500: Internal Server Error (empty body)"}},
		{"503 rate limit not unknown", endpointPassword, 503, "", `{"success":false,"errorCode":"RateLimitExceeded","message":"busy"}`,
			want{retry: true, throttle: true, code: "RateLimitExceeded", msg: "HTTP 503 RateLimitExceeded: busy"}},
		{"me 503 not unknown", endpointMe, 503, "", "", want{retry: true, msg: "HTTP 503: Service Unavailable (empty body)"}},
		{"502 garbage", endpointPassword, 502, "", "\x00\x01\x02\xff\xfe",
			want{retry: true, unknown: true, msg: "HTTP 502: Bad Gateway (unreadable body)"}},
		{"200 html", endpointPassword, 200, "text/html", "<html><title>Sign in</title></html>",
			want{retry: true, unknown: true, msg: "HTTP 200: no ECGrid answer: Sign in (html)"}},
		{"200 empty", endpointPassword, 200, "", "",
			want{retry: true, unknown: true, msg: "HTTP 200: no ECGrid answer: OK (empty body)"}},
		{"200 garbage", endpointPassword, 200, "", "{not json",
			want{retry: true, unknown: true, msg: "HTTP 200: no ECGrid answer: OK (unreadable body)"}},
		{"200 other JSON", endpointPassword, 200, "", `[1,2]`,
			want{retry: true, unknown: true, msg: "HTTP 200: no ECGrid answer: unexpected JSON"}},
		{"200 problem", endpointPassword, 200, "", `{"title":"odd"}`,
			want{retry: true, unknown: true, code: "odd", msg: "HTTP 200 odd: no ECGrid answer"}},
		{"408", endpointReset, 408, "", "", want{retry: true, msg: "HTTP 408: Request Timeout (empty body)"}},
		{"409 final", endpointPassword, 409, "", "conflict", want{msg: "HTTP 409: conflict"}},
		{"redirect", endpointPassword, 307, "", "", want{msg: "HTTP 307: unexpected redirect to evil.example:8443"}},
		{"relative redirect", endpointPassword, 302, "", "", want{msg: "HTTP 302: unexpected redirect to the same host"}},
		{"me ok", endpointMe, 200, "", `{"success":true,"data":{"userId":7,"authLevel":"NetworkAdmin"}}`, want{ok: true}},
		{"me no data", endpointMe, 200, "", `{"success":true,"data":true}`,
			want{retry: true, msg: "HTTP 200: invalid caller data: data is not an object"}},
		{"me bad id", endpointMe, 200, "", `{"success":true,"data":{"userId":"x","authLevel":"Root"}}`,
			want{retry: true, msg: "HTTP 200: invalid caller data: no valid userId"}},
		{"me no level", endpointMe, 200, "", `{"success":true,"data":{"userId":7}}`,
			want{retry: true, msg: "HTTP 200: invalid caller data: no authLevel"}},
		{"control chars", endpointPassword, 400, "", "{\"errorCode\":\"Bad\\u0000Code\",\"message\":\"line1\\nline2\\r\\u202e evil\"}",
			want{code: "Bad Code", msg: "HTTP 400 Bad Code: line1 line2 evil"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.ctype != "" {
				h.Set("Content-Type", tt.ctype)
			}
			switch tt.name {
			case "redirect":
				h.Set("Location", "https://evil.example:8443/steal")
			case "relative redirect":
				h.Set("Location", "/elsewhere")
			}
			v := judge(decodeAnswer(tt.status, h, []byte(tt.body)), tt.endpoint, nil)
			got := want{ok: v.ok, retry: v.retry, fatal: v.fatal, unknown: v.unknown, throttle: v.throttle, code: v.code, msg: v.msg}
			if got != tt.want {
				t.Errorf("judge =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestJudgeScrubsSecrets(t *testing.T) {
	const pw = "Sekr1t!Pass"
	scrub := strings.NewReplacer(pw, redactedMarker).Replace
	bodies := []struct {
		name, ctype, body string
		status            int
	}{
		{"envelope", "", `{"success":false,"errorCode":"InvalidParameter","message":"password Sekr1t!Pass is weak"}`, 400},
		{"escaped JSON", "", `{"success":false,"errorCode":"X","message":"password Sekr1t\u0021Pass is weak"}`, 400},
		{"problem", "", `{"title":"Sekr1t!Pass","detail":"Sekr1t!Pass","traceId":"Sekr1t!Pass"}`, 400},
		{"html entity", "text/html", `<title>Sekr1t&#33;Pass</title>`, 503},
		{"text", "", `you sent Sekr1t!Pass`, 400},
		{"long echo", "", `{"success":false,"message":"` + strings.Repeat("x", 130) + `Sekr1t!Pass"}`, 400},
	}
	for _, tt := range bodies {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {tt.ctype}}
			v := judge(decodeAnswer(tt.status, h, []byte(tt.body)), endpointPassword, scrub)
			if strings.Contains(v.msg, "Sekr1t") || strings.Contains(v.code, "Sekr1t") {
				t.Fatalf("secret leaked: msg %q code %q", v.msg, v.code)
			}
		})
	}
}

func TestCleanBoundsText(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"  a \n\t b  ", 50, "a b"},
		{"abcdefghij", 10, "abcdefghij"},
		{"abcdefghijk", 10, "abcdefg..."},
		{"ééééé", 8, "éé..."}, // 2-byte runes are never split
		{"bad\xffutf8", 50, "bad utf8"},
		{"bidi\u202eover\u200bride", 50, "bidi over ride"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := clean(tt.in, tt.n); got != tt.want {
				t.Errorf("clean(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"86400", maxRetryAfter, true},
		{"99999999999999999999999", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{now.Add(time.Hour).Format(http.TimeFormat), maxRetryAfter, true},
		{"Sunday, 01-Mar-26 12:00:09 GMT", 9 * time.Second, true}, // RFC 850
		{"soon", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// FuzzDecodeAnswer checks that no answer makes the decoder panic, and that
// every verdict's message is one printable line of at most 200 bytes that
// never contains a scrubbed secret.
func FuzzDecodeAnswer(f *testing.F) {
	f.Add(200, "application/json", []byte(`{"success":true,"data":true}`))
	f.Add(400, "application/problem+json", []byte(`{"title":"Bad","detail":"x","traceId":"t"}`))
	f.Add(503, "text/html", []byte(`<html><title>Service Unavailable</title></html>`))
	f.Add(502, "text/plain", []byte(`bad gateway`))
	f.Add(200, "application/json", []byte(`{"success":true,"data":[{"userId":7,"login":"a"}]}`))
	const sec = "Zq9#Secret"
	scrub := strings.NewReplacer(sec, redactedMarker).Replace
	f.Fuzz(func(t *testing.T, status int, ctype string, body []byte) {
		if len(body) > maxBody {
			body = body[:maxBody]
		}
		h := http.Header{}
		h.Set("Content-Type", ctype)
		h.Set("Location", string(body[:min(len(body), 100)]))
		// The client reads answers into pooled buffers: what decodeAnswer
		// returns must not share the body's bytes.
		pooled := bytes.Clone(body)
		a := decodeAnswer(status, h, pooled)
		for i := range pooled {
			pooled[i] = 'x'
		}
		if fresh := decodeAnswer(status, h, body); !reflect.DeepEqual(a, fresh) {
			t.Fatalf("the answer changed when its body's buffer was reused: %+v, then %+v", fresh, a)
		}
		for _, ep := range []string{endpointMe, endpointPassword, endpointReset} {
			v := judge(a, ep, scrub)
			if v.ok {
				if v.msg != "" {
					t.Fatalf("%s: ok with message %q", ep, v.msg)
				}
				continue
			}
			checkMessage(t, v.msg)
			if len(v.code) > maxCode || !utf8.ValidString(v.code) {
				t.Fatalf("%s: code %q too long or invalid", ep, v.code)
			}
			if strings.Contains(v.msg, sec) || strings.Contains(v.code, sec) {
				t.Fatalf("%s: secret in %q / %q", ep, v.msg, v.code)
			}
		}
	})
}

// checkMessage fails t unless msg is a non-empty printable line of at most
// maxMessage bytes.
func checkMessage(t *testing.T, msg string) {
	t.Helper()
	if msg == "" {
		t.Fatal("empty message for a failure")
	}
	if len(msg) > maxMessage {
		t.Fatalf("message is %d bytes: %q", len(msg), msg)
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("message is not UTF-8: %q", msg)
	}
	for _, r := range msg {
		if r != ' ' && (!unicode.IsGraphic(r) || unicode.IsSpace(r) || unicode.Is(unicode.Cf, r)) {
			t.Fatalf("message has %U: %q", r, msg)
		}
	}
}

// TestDecodeCanonicalOK: the canonical success answers, decoded without
// encoding/json, give exactly what encoding/json gives, and are judged a
// success; a near miss still goes through encoding/json.
func TestDecodeCanonicalOK(t *testing.T) {
	bodies := append([][]byte{}, canonicalOK...)
	bodies = append(bodies,
		[]byte(`{"success":true,"data":false}`),
		[]byte(`{"success":true,"data":true,"errorCode":"X"}`),
		[]byte(`{"data":true,"success":true}`),
	)
	for _, body := range bodies {
		t.Run(string(body), func(t *testing.T) {
			got := decodeAnswer(200, http.Header{}, body)
			want := answer{status: 200}
			decodeJSONFull(&want, body)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("decodeAnswer = %+v, encoding/json gives %+v", got, want)
			}
		})
	}
	for _, body := range canonicalOK {
		a := decodeAnswer(200, http.Header{}, body)
		for _, ep := range []string{endpointPassword, endpointReset} {
			if v := judge(a, ep, func(s string) string { return s }); !v.ok {
				t.Errorf("%s: %s judged %+v, want a success", body, ep, v)
			}
		}
	}
}
