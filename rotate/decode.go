package rotate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds on what is read from and reported about an answer.
const (
	maxBody        = 64 << 10 // bytes of a body read at most
	maxDrain       = 64 << 10 // bytes discarded after that, so the connection can be reused
	maxMessage     = 200      // bytes of an Outcome error message
	maxCode        = 64       // bytes of an Outcome error code
	maxDetail      = 140      // bytes of the server's text in a message
	maxRetryAfter  = 5 * time.Minute
	redactedMarker = "[redacted]"
)

// ECGrid error codes the client acts on.
const (
	codeInvalidAPIKey     = "InvalidAPIKey"
	codeAccessDenied      = "AccessDenied"
	codeRateLimitExceeded = "RateLimitExceeded"
	codeInternalError     = "InternalError"
)

// Body formats recognized by decodeAnswer.
const (
	formatEnvelope = "envelope" // ECGrid {"success":..., "errorCode":..., "message":..., "data":...}
	formatProblem  = "problem"  // RFC 7807 problem JSON
	formatJSON     = "json"     // other JSON
	formatHTML     = "html"
	formatText     = "text"
	formatEmpty    = "empty"
	formatGarbage  = "garbage"
)

// answer is what decodeAnswer makes of an HTTP answer. Its strings are raw
// (unsanitized, possibly long, possibly holding a secret the server
// echoed); judge scrubs and bounds them.
type answer struct {
	status     int
	format     string
	hasSuccess bool            // envelope: "success" is a boolean
	success    bool            // envelope: its value
	data       json.RawMessage // envelope: "data" as sent
	code       string          // envelope errorCode, or problem title
	text       string          // envelope message, problem detail, HTML title or a text body
	traceID    string          // problem traceId
	location   string          // Location header of a 3xx
}

// envelopeOrProblem lists the members of the JSON bodies we understand.
// Every member is raw so that one of an unexpected type does not spoil the
// others; encoding/json matches names case-insensitively.
type envelopeOrProblem struct {
	Success   json.RawMessage `json:"success"`
	Data      json.RawMessage `json:"data"`
	ErrorCode json.RawMessage `json:"errorCode"`
	Message   json.RawMessage `json:"message"`
	Title     json.RawMessage `json:"title"`
	Detail    json.RawMessage `json:"detail"`
	Type      json.RawMessage `json:"type"`
	TraceID   json.RawMessage `json:"traceId"`
	Errors    json.RawMessage `json:"errors"`
}

// decodeAnswer makes sense of an HTTP answer: an ECGrid envelope, RFC 7807
// problem JSON, HTML, text, nothing or garbage. It never fails and never
// panics; body is at most maxBody bytes.
func decodeAnswer(status int, header http.Header, body []byte) answer {
	a := answer{status: status}
	if status >= 300 && status < 400 {
		a.location = header.Get("Location")
	}
	b := bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
	switch {
	case len(b) == 0:
		a.format = formatEmpty
	case b[0] == '{' || b[0] == '[' || b[0] == '"':
		decodeJSON(&a, b)
	case isHTML(header, b):
		a.format = formatHTML
		a.text = htmlTitle(b)
	case utf8.Valid(b) && mostlyPrintable(b):
		a.format = formatText
		a.text = string(b[:min(len(b), 1024)])
	default:
		a.format = formatGarbage
	}
	return a
}

// canonicalOK are the bytes of the success answer of a change or a reset,
// {"success": true, "data": true}, as the API documents it, and compacted. A
// run gets one per user: these skip encoding/json (2 µs and 9 allocations
// an answer) for the answer decodeJSONFull would give, which
// TestDecodeCanonicalOK pins.
var canonicalOK = [][]byte{
	[]byte(`{"success":true,"data":true}`),
	[]byte(`{"success": true, "data": true}`),
}

// decodeJSON fills a from a body that looks like JSON.
func decodeJSON(a *answer, b []byte) {
	for _, ok := range canonicalOK {
		if bytes.Equal(b, ok) {
			a.format = formatEnvelope
			a.hasSuccess, a.success = true, true
			a.data = json.RawMessage("true")
			return
		}
	}
	decodeJSONFull(a, b)
}

// decodeJSONFull fills a from a body that looks like JSON, with
// encoding/json.
func decodeJSONFull(a *answer, b []byte) {
	var m envelopeOrProblem
	if b[0] != '{' || json.Unmarshal(b, &m) != nil {
		if json.Valid(b) {
			a.format = formatJSON
		} else {
			a.format = formatGarbage
		}
		return
	}
	switch {
	case m.Success != nil || m.ErrorCode != nil:
		a.format = formatEnvelope
		a.hasSuccess, a.success = jsonBool(m.Success)
		a.data = m.Data
		a.code = jsonScalar(m.ErrorCode)
		a.text = jsonScalar(m.Message)
	case m.Title != nil || m.Detail != nil || m.Type != nil:
		a.format = formatProblem
		a.code = jsonScalar(m.Title)
		a.text = jsonScalar(m.Detail)
		if a.text == "" {
			a.text = firstValidationError(m.Errors)
		}
		a.traceID = jsonScalar(m.TraceID)
	default:
		a.format = formatJSON
		a.text = jsonScalar(m.Message)
	}
}

// jsonScalar returns a JSON string's value, a number's or a boolean's text,
// and "" for anything else.
func jsonScalar(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if s, ok := plainJSONString(raw); ok {
		return s
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return strconv.FormatBool(b)
	}
	return ""
}

// jsonBool decodes the "success" member: has is true when it is present and
// decodes as a boolean (null counts, as false, as encoding/json has it).
func jsonBool(raw json.RawMessage) (has, value bool) {
	switch string(raw) {
	case "":
		return false, false
	case "true":
		return true, true
	case "false", "null":
		return true, false
	}
	var ok bool
	if json.Unmarshal(raw, &ok) != nil {
		return false, false
	}
	return true, ok
}

// plainJSONString returns the value of a JSON string without escapes,
// control characters or invalid UTF-8 (what most members are) without
// encoding/json; ok is false for any other raw value.
func plainJSONString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, c := range in {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// firstValidationError returns "field: message" from the "errors" member of
// an ASP.NET validation problem ({"errors": {"Field": ["message"]}}), the
// first field in sorted order, or "".
func firstValidationError(raw json.RawMessage) string {
	var errs map[string][]string
	if json.Unmarshal(raw, &errs) != nil || len(errs) == 0 {
		return ""
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	k := keys[0]
	if len(errs[k]) == 0 {
		return k
	}
	return k + ": " + errs[k][0]
}

// isHTML reports whether an answer is HTML, by its Content-Type or its
// first byte.
func isHTML(header http.Header, b []byte) bool {
	if mt, _, err := mime.ParseMediaType(header.Get("Content-Type")); err == nil &&
		(mt == "text/html" || mt == "application/xhtml+xml") {
		return true
	}
	return b[0] == '<'
}

// htmlTitle returns the text of an HTML document's <title>, entities
// decoded, or "" if there is no complete title element.
func htmlTitle(b []byte) string {
	// Lower ASCII only: bytes.ToLower rewrites invalid UTF-8 as U+FFFD,
	// which changes lengths and so the offsets used to cut b (a fuzzer
	// finding).
	lower := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	i := bytes.Index(lower, []byte("<title"))
	if i < 0 {
		return ""
	}
	j := bytes.IndexByte(lower[i:], '>')
	if j < 0 {
		return ""
	}
	start := i + j + 1
	end := bytes.Index(lower[start:], []byte("</title"))
	if end < 0 {
		return ""
	}
	return html.UnescapeString(string(b[start : start+end]))
}

// mostlyPrintable reports whether at least 90% of the runes of the valid
// UTF-8 text b are printable or white space.
func mostlyPrintable(b []byte) bool {
	var total, bad int
	for _, r := range string(b) {
		total++
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			bad++
		}
	}
	return bad*10 <= total
}

// verdict is what an answer means for a call.
type verdict struct {
	ok       bool
	retry    bool // worth another attempt
	fatal    bool // the whole run must stop
	unknown  bool // the change may have been applied
	throttle bool // the server asks every caller to slow down
	code     string
	msg      string // one safe line, "" when ok
}

// Endpoints, as reported to the Observer.
const (
	endpointMe       = "me"
	endpointPassword = "password"
	endpointReset    = "reset"
	endpointList     = "list"
	endpointKey      = "key"    // GET /v2/users/key/{id}: reads, changes nothing
	endpointKeyGen   = "keygen" // POST /v2/users/key-generate/{id}
)

// isMutating reports whether a call to endpoint changes something on the
// server, so that a lost answer leaves its outcome unknown.
func isMutating(endpoint string) bool {
	return endpoint == endpointPassword || endpoint == endpointReset || endpoint == endpointKeyGen
}

// judge decides what answer a means for a call to endpoint. scrub removes
// secrets from the server's text; it may be nil.
func judge(a answer, endpoint string, scrub func(string) string) verdict {
	if scrub == nil {
		scrub = func(s string) string { return s }
	}
	mutating := isMutating(endpoint)
	if endpoint == endpointKey || endpoint == endpointKeyGen {
		// An answer of the key endpoints may hold a key anywhere (a text
		// body, a message, a title, a header): none of the server's words
		// go into a message, only its status and the body's format.
		a.text, a.traceID, a.location = "", "", ""
		if !isCodeWord(a.code) {
			a.code = ""
		}
	}
	v := verdict{code: clean(scrub(a.code), maxCode)}
	fail := func(detail string) verdict {
		v.msg = httpMessage(a.status, v.code, detail)
		return v
	}
	switch {
	case a.status >= 300 && a.status < 400:
		v.code = ""
		host := "an unnamed location"
		if u, err := url.Parse(strings.TrimSpace(a.location)); err == nil && u.Host != "" {
			host = u.Host
		} else if err == nil && a.location != "" {
			host = "the same host"
		}
		return fail("unexpected redirect to " + clean(scrub(host), maxDetail))
	case a.status == http.StatusUnauthorized || a.status == http.StatusForbidden ||
		v.code == codeInvalidAPIKey || v.code == codeAccessDenied:
		v.fatal = true
		return fail(describe(a, scrub))
	case a.status == http.StatusTooManyRequests || v.code == codeRateLimitExceeded:
		v.retry, v.throttle = true, true
		return fail(describe(a, scrub))
	case a.status >= 500:
		v.retry, v.unknown = true, mutating
		return fail(describe(a, scrub))
	case v.code == codeInternalError:
		v.retry, v.unknown = true, mutating
		return fail(describe(a, scrub))
	case a.status == http.StatusRequestTimeout:
		v.retry = true
		return fail(describe(a, scrub))
	case a.status < 200 || a.status >= 300:
		return fail(describe(a, scrub))
	}
	return judgeSuccess(a, endpoint, v, scrub)
}

// judgeSuccess judges a 2xx answer: its body must be an ECGrid envelope
// saying success, with the data the endpoint gives.
func judgeSuccess(a answer, endpoint string, v verdict, scrub func(string) string) verdict {
	mutating := isMutating(endpoint)
	fail := func(detail string) verdict {
		v.msg = httpMessage(a.status, v.code, detail)
		return v
	}
	if a.format != formatEnvelope || !a.hasSuccess {
		v.retry, v.unknown = true, mutating
		if d := describe(a, scrub); d != "" {
			return fail("no ECGrid answer: " + d)
		}
		return fail("no ECGrid answer")
	}
	if !a.success {
		detail := describe(a, scrub)
		if detail == "" {
			detail = "success: false"
		}
		if v.code == "" {
			// An unexplained refusal: retried like a 5xx, with the same
			// password (the change is idempotent). With an errorCode the
			// server said why: final, as its status says.
			v.retry, v.unknown = true, mutating
			return fail(detail + " (no errorCode)")
		}
		return fail(detail)
	}
	if endpoint == endpointMe {
		if _, err := parseCaller(a.data); err != nil {
			v.retry = true
			return fail("invalid caller data: " + err.Error())
		}
		v.ok, v.code = true, ""
		return v
	}
	if endpoint == endpointKey || endpoint == endpointKeyGen {
		// data is the key itself: never echoed, not even in part.
		if _, err := parseKey(a.data); err != nil {
			v.retry, v.unknown = true, mutating
			return fail("success without a usable key in data: " + err.Error())
		}
		v.ok, v.code = true, ""
		return v
	}
	if endpoint == endpointList {
		// The call's check reads the page.
		v.ok, v.code = true, ""
		return v
	}
	switch d := string(bytes.TrimSpace(a.data)); d {
	case "true":
		v.ok, v.code = true, ""
		return v
	case "false":
		if v.code == "" {
			v.retry, v.unknown = true, true // unexplained, as success: false
			return fail("not applied (data: false, no errorCode)")
		}
		return fail("not applied (data: false)")
	default:
		v.retry, v.unknown = true, true
		if d == "" {
			d = "missing"
		}
		return fail("success without data: true (data: " + clean(scrub(d), 20) + ")")
	}
}

// isCodeWord reports whether code looks like an ECGrid errorCode
// ("ObjectNotFound"): one word of ASCII letters, at most 40. Anything else
// in an answer of the key endpoints (digits, spaces) might be a key.
func isCodeWord(code string) bool {
	if len(code) == 0 || len(code) > 40 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if c := code[i] | 0x20; c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// describe returns the server's own words about an answer, scrubbed and
// bounded, or a description of its format.
func describe(a answer, scrub func(string) string) string {
	text := clean(scrub(a.text), maxDetail)
	switch a.format {
	case formatEnvelope:
		return text
	case formatJSON:
		if text == "" {
			return "unexpected JSON"
		}
		return text
	case formatProblem:
		if trace := clean(scrub(a.traceID), 60); trace != "" {
			return strings.TrimSpace(text + " (trace " + trace + ")")
		}
		return text
	case formatHTML:
		if text == "" {
			text = http.StatusText(a.status)
		}
		return strings.TrimSpace(text + " (html)")
	case formatText:
		if text == "" {
			return "text body"
		}
		return text
	case formatEmpty:
		return strings.TrimSpace(http.StatusText(a.status) + " (empty body)")
	default:
		return strings.TrimSpace(http.StatusText(a.status) + " (unreadable body)")
	}
}

// httpMessage formats "HTTP 400 InvalidParameter: detail" as one line of at
// most maxMessage bytes.
func httpMessage(status int, code, detail string) string {
	msg := "HTTP " + strconv.Itoa(status)
	if code != "" {
		msg += " " + code
	}
	if detail == "" {
		detail = http.StatusText(status)
	}
	if detail != "" && detail != code {
		msg += ": " + detail
	}
	return clean(msg, maxMessage)
}

// clean makes s one line of printable text of at most n bytes: invalid
// UTF-8, control and format characters (including bidi overrides) become
// spaces, runs of spaces collapse, and a longer text is cut at a rune
// boundary and ends in "...".
func clean(s string, n int) string {
	if len(s) > 4*n+64 {
		s = s[:4*n+64] // the rest would be cut anyway
	}
	var b strings.Builder
	space := true // drop leading spaces
	for _, r := range strings.ToValidUTF8(s, " ") {
		if r == utf8.RuneError || !unicode.IsGraphic(r) || unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
			if !space {
				b.WriteByte(' ')
				space = true
			}
			continue
		}
		b.WriteRune(r)
		space = false
	}
	out := strings.TrimRight(b.String(), " ")
	if len(out) <= n {
		return out
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return strings.TrimRight(out[:cut], " ") + "..."
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date
// relative to now. The result is in [0, maxRetryAfter]; ok is false if the
// header is absent or unreadable.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	return max(0, min(d, maxRetryAfter)), true
}

// callerData is the data object of GET /v2/users/me.
type callerData struct {
	UserID    json.RawMessage `json:"userId"`
	AuthLevel json.RawMessage `json:"authLevel"`
}

// parseCaller reads the data object of GET /v2/users/me. It requires a
// positive integer userId and an authLevel; an authLevel that is not a known
// name gives LevelUnknown.
func parseCaller(data json.RawMessage) (Caller, error) {
	var d callerData
	if len(bytes.TrimSpace(data)) == 0 || bytes.TrimSpace(data)[0] != '{' || json.Unmarshal(data, &d) != nil {
		return Caller{}, fmt.Errorf("data is not an object")
	}
	var id int64
	if err := json.Unmarshal(d.UserID, &id); err != nil || id <= 0 || id > 1<<31-1 {
		return Caller{}, fmt.Errorf("no valid userId")
	}
	level := jsonScalar(d.AuthLevel)
	if d.AuthLevel == nil || level == "" {
		return Caller{}, fmt.Errorf("no authLevel")
	}
	level = clean(level, maxCode)
	return Caller{UserID: int(id), Level: ParseAuthLevel(level), LevelName: level}, nil
}
