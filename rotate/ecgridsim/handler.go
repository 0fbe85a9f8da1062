package ecgridsim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxBody bounds a request body; a larger body is 400 InvalidParameter.
const MaxBody = 64 << 10

// endpoint is the kind of request, as Call.Endpoint names it.
type endpoint int

const (
	epOther endpoint = iota
	epMe
	epPassword
	epReset
	epList
	epKey
	epKeyGen
	numEndpoints
)

var endpointNames = [numEndpoints]string{"other", "me", "password", "reset", "list", "key", "keygen"}

func (e endpoint) String() string { return endpointNames[e] }

// Route paths.
const (
	pathMe       = "/v2/users/me"
	pathPassword = "/v2/users/password"
	pathReset    = "/v2/users/reset/"
	pathList     = "/v2/users/list"
	pathKey      = "/v2/users/key/"
	pathKeyGen   = "/v2/users/key-generate/"
)

// authLevels ranks the ECGrid AuthLevels; an unknown name ranks 0.
var authLevels = map[string]int{
	"Root":         9,
	"TechOps":      8,
	"NetOps":       7,
	"NetworkAdmin": 6,
	"NetworkUser":  5,
	"MailboxAdmin": 4,
	"MailboxUser":  3,
	"TPUser":       2,
	"General":      1,
}

// Shared header values (never mutated).
var (
	ctJSON    = []string{"application/json; charset=utf-8"}
	ctProblem = []string{"application/problem+json; charset=utf-8"}
	ctHTML    = []string{"text/html; charset=utf-8"}
)

// response is a complete answer, built before it is written.
type response struct {
	status     int
	ctype      []string
	body       []byte
	retryAfter string
	location   string
	allow      string
}

// Canned answers.
var (
	okResponse   = response{status: http.StatusOK, ctype: ctJSON, body: []byte(`{"success":true,"data":true}`)}
	respNoKey    = errResponse(http.StatusUnauthorized, "InvalidAPIKey", "The API key is missing or invalid.")
	respDenied   = errResponse(http.StatusForbidden, "AccessDenied", "This operation requires AuthLevel NetworkAdmin or higher.")
	respNoRoute  = errResponse(http.StatusNotFound, "NotFound", "No such endpoint.")
	respNoUser   = errResponse(http.StatusNotFound, "ObjectNotFound", "The user was not found.")
	respLimited  = response{status: http.StatusTooManyRequests, ctype: ctJSON, body: envelope("RateLimitExceeded", "Rate limit exceeded; retry later."), retryAfter: "1"}
	respBadJSON  = errResponse(http.StatusBadRequest, "InvalidParameter", "The request body is not valid JSON.")
	respTooBig   = errResponse(http.StatusBadRequest, "InvalidParameter", "The request body is too large.")
	respBadID    = errResponse(http.StatusBadRequest, "InvalidParameter", "userId must be an integer between 1 and 2147483647.")
	respBadPw    = errResponse(http.StatusBadRequest, "InvalidParameter", "newPassword does not meet the password policy.")
	respBadCType = errResponse(http.StatusUnsupportedMediaType, "InvalidParameter", "Content-Type must be application/json.")
)

func errResponse(status int, code, msg string) response {
	return response{status: status, ctype: ctJSON, body: envelope(code, msg)}
}

// envelope returns the ECGrid error envelope.
func envelope(code, msg string) []byte {
	b, err := json.Marshal(struct {
		Success   bool      `json:"success"`
		ErrorCode string    `json:"errorCode"`
		Message   string    `json:"message"`
		Data      *struct{} `json:"data"`
	}{ErrorCode: code, Message: msg})
	if err != nil {
		panic("ecgridsim: encoding envelope: " + err.Error()) // cannot happen: plain strings
	}
	return b
}

// problemBody returns RFC 7807 problem JSON for status.
func problemBody(status int) []byte {
	b, err := json.Marshal(struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Status  int    `json:"status"`
		Detail  string `json:"detail"`
		TraceID string `json:"traceId"`
	}{
		Type:    "https://tools.ietf.org/html/rfc9110#section-15.6.1",
		Title:   "An error occurred while processing your request.",
		Status:  status,
		Detail:  "The server encountered an unexpected condition.",
		TraceID: "00-" + hex64(rand.Uint64()) + hex64(rand.Uint64()) + "-" + hex64(rand.Uint64()) + "-00",
	})
	if err != nil {
		panic("ecgridsim: encoding problem: " + err.Error()) // cannot happen
	}
	return b
}

func hex64(v uint64) string {
	s := strconv.FormatUint(v, 16)
	return strings.Repeat("0", 16-len(s)) + s
}

// request is what the handler parsed from an HTTP request.
type request struct {
	ep       endpoint
	methodOK bool
	allow    string // the method the endpoint wants
	key      string
	userID   int        // 0 when unknown or invalid
	password string     // password endpoint only
	list     *listQuery // list endpoint only
	bad      *response
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// parse classifies r and, for a password change, reads and checks its body.
func parse(r *http.Request) request {
	req := request{key: r.Header.Get("X-API-Key")}
	p := r.URL.Path
	switch {
	case p == pathMe:
		req.ep, req.allow = epMe, http.MethodGet
	case p == pathPassword:
		req.ep, req.allow = epPassword, http.MethodPost
	case strings.HasPrefix(p, pathReset):
		req.ep, req.allow = epReset, http.MethodPost
	case strings.HasPrefix(p, pathKey):
		req.ep, req.allow = epKey, http.MethodGet
	case strings.HasPrefix(p, pathKeyGen):
		req.ep, req.allow = epKeyGen, http.MethodPost
	case p == pathList:
		req.ep, req.allow = epList, http.MethodPost
	default:
		return req
	}
	req.methodOK = r.Method == req.allow
	if !req.methodOK {
		return req
	}
	switch req.ep {
	case epReset, epKey, epKeyGen:
		id, ok := parseID(p[strings.LastIndexByte(p, '/')+1:])
		if !ok {
			req.bad = &respBadID
		}
		req.userID = id
	case epPassword:
		parsePasswordBody(r, &req)
	case epList:
		parseListBody(r, &req)
	}
	return req
}

// parseID parses a decimal user ID in 1..MaxUserID.
func parseID(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > MaxUserID {
		return 0, false
	}
	return n, true
}

// readJSONBody checks the Content-Type and reads a body of at most MaxBody
// bytes; on failure it returns the answer to give.
func readJSONBody(r *http.Request) ([]byte, *response) {
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
		return nil, &respBadCType
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, &respBadJSON
	}
	if len(b) > MaxBody {
		return nil, &respTooBig
	}
	return b, nil
}

func parsePasswordBody(r *http.Request, req *request) {
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
		req.bad = &respBadCType
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 2*MaxBody {
			buf.Reset()
			bufPool.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, MaxBody+1)); err != nil {
		req.bad = &respBadJSON
		return
	}
	if buf.Len() > MaxBody {
		req.bad = &respTooBig
		return
	}
	var body struct {
		UserID      *int64  `json:"userId"`
		NewPassword *string `json:"newPassword"`
	}
	if err := json.Unmarshal(buf.Bytes(), &body); err != nil {
		req.bad = &respBadJSON
		return
	}
	if body.UserID == nil || *body.UserID < 1 || *body.UserID > MaxUserID {
		req.bad = &respBadID
		return
	}
	req.userID = int(*body.UserID)
	if body.NewPassword == nil || !validPassword(*body.NewPassword) {
		req.bad = &respBadPw
		return
	}
	req.password = *body.NewPassword
}

// validPassword reports whether p has a lowercase letter, an uppercase
// letter, a digit and a character outside [a-zA-Z0-9].
func validPassword(p string) bool {
	var lower, upper, digit, other bool
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case 'a' <= c && c <= 'z':
			lower = true
		case 'A' <= c && c <= 'Z':
			upper = true
		case '0' <= c && c <= '9':
			digit = true
		default:
			other = true
		}
	}
	return lower && upper && digit && other
}

// ServeHTTP serves the ECGrid endpoints: rate limit and injected faults
// first (like a proxy in front of the API), then authentication, then the
// endpoint itself.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := parse(r)
	idx, delay, limited, f := s.arrive(&req)
	ctx := r.Context()
	if delay > 0 && !sleep(ctx, delay) {
		s.finish(idx, 0)
		return
	}
	switch {
	case limited:
		s.write(w, idx, respLimited)
	case f == nil:
		s.write(w, idx, s.process(&req))
	case f.Kind == ApplyThenDrop:
		s.process(&req)
		s.finish(idx, 0)
		drop(w)
	case f.Kind == ApplyThenHold:
		resp := s.process(&req)
		if !sleep(ctx, orDuration(f.Hold, defaultHold)) {
			s.finish(idx, 0)
			return
		}
		s.write(w, idx, resp)
	case f.Kind == DropBeforeApply:
		s.finish(idx, 0)
		drop(w)
	case f.Kind == HugeBody:
		s.finish(idx, http.StatusOK)
		writeHuge(w)
	case f.Kind == SlowDrip:
		s.finish(idx, 0)
		slowDrip(ctx, w, orDuration(f.Hold, defaultDripHold))
	default:
		s.write(w, idx, fixedResponse(f))
	}
}

// process authenticates req and carries it out.
func (s *Server) process(req *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[req.key]
	if !ok || req.key == "" {
		return respNoKey
	}
	if req.ep == epOther {
		return respNoRoute
	}
	if !req.methodOK {
		resp := errResponse(http.StatusMethodNotAllowed, "MethodNotAllowed", "Use "+req.allow+".")
		resp.allow = req.allow
		return resp
	}
	if req.ep == epMe {
		return meResponse(k)
	}
	if authLevels[k.authLevel] < authLevels["NetworkAdmin"] {
		return respDenied
	}
	if req.bad != nil {
		return *req.bad
	}
	if req.ep == epList {
		return s.listPageLocked(req.list)
	}
	u, exists := s.lookupLocked(req.userID)
	if !exists {
		return respNoUser
	}
	switch req.ep {
	case epPassword:
		u.password = req.password
	case epReset:
		u.resets++
	case epKey:
		s.ensureKeyLocked(req.userID, &u)
		s.users[req.userID] = u
		return keyResponse(u.apiKey)
	case epKeyGen:
		s.ensureKeyLocked(req.userID, &u)
		delete(s.keys, u.apiKey)
		u.apiKey = newAPIKey()
		u.generated++
		s.keys[u.apiKey] = apiKey{userID: req.userID, authLevel: u.keyLevel}
		s.users[req.userID] = u
		return keyResponse(u.apiKey)
	}
	s.users[req.userID] = u
	return okResponse
}

func meResponse(k apiKey) response {
	type me struct {
		UserID    int    `json:"userId"`
		LoginName string `json:"loginName"`
		Name      string `json:"name"`
		NetworkID int    `json:"networkId"`
		MailboxID int    `json:"mailboxId"`
		AuthLevel string `json:"authLevel"`
		Status    string `json:"status"`
	}
	b, err := json.Marshal(struct {
		Success bool `json:"success"`
		Data    me   `json:"data"`
	}{true, me{
		UserID:    k.userID,
		LoginName: "api-user-" + strconv.Itoa(k.userID),
		Name:      "Simulated API user",
		NetworkID: 1,
		AuthLevel: k.authLevel,
		Status:    "Active",
	}})
	if err != nil {
		return errResponse(http.StatusInternalServerError, defaultCode, "Encoding failed.")
	}
	return response{status: http.StatusOK, ctype: ctJSON, body: b}
}

// write records resp's status for call idx, then sends resp.
func (s *Server) write(w http.ResponseWriter, idx int, resp response) {
	h := w.Header()
	if resp.ctype != nil {
		h["Content-Type"] = resp.ctype
	}
	if resp.retryAfter != "" {
		h.Set("Retry-After", resp.retryAfter)
	}
	if resp.location != "" {
		h.Set("Location", resp.location)
	}
	if resp.allow != "" {
		h.Set("Allow", resp.allow)
	}
	s.finish(idx, resp.status)
	w.WriteHeader(resp.status)
	if len(resp.body) > 0 {
		_, _ = w.Write(resp.body) // a client that went away is not our error
	}
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_ = conn.Close()
		return
	}
	panic(http.ErrAbortHandler) // HTTP/2: reset the stream instead
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func randDuration(n time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(n)))
}

// hugeChunk is 64 KiB of HTML filler for HugeBody.
var hugeChunk = sync.OnceValue(func() []byte {
	line := []byte("<p>upstream error page filler: the quick brown fox jumps over the lazy dog</p>\n")
	b := make([]byte, 0, 64<<10)
	for len(b) < cap(b) {
		b = append(b, line[:min(len(line), cap(b)-len(b))]...)
	}
	return b
})

// writeHuge sends 200 with a hugeBodySize HTML body.
func writeHuge(w http.ResponseWriter) {
	const head, tail = "<html><body>\n", "</body></html>\n"
	h := w.Header()
	h["Content-Type"] = ctHTML
	h.Set("Content-Length", strconv.Itoa(hugeBodySize))
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, head); err != nil {
		return
	}
	chunk := hugeChunk()
	for left := hugeBodySize - len(head) - len(tail); left > 0; {
		n := min(left, len(chunk))
		if _, err := w.Write(chunk[:n]); err != nil {
			return
		}
		left -= n
	}
	_, _ = io.WriteString(w, tail)
}

// slowDrip sends 200 headers, then dripBody one byte every dripInterval for
// hold, then cuts the connection so that the body never completes.
func slowDrip(ctx context.Context, w http.ResponseWriter, hold time.Duration) {
	w.Header()["Content-Type"] = ctJSON
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	tick := time.NewTicker(dripInterval)
	defer tick.Stop()
	n := max(int(hold/dripInterval), 1)
	for i := 0; i < n; i++ {
		select {
		case <-ctx.Done():
			panic(http.ErrAbortHandler)
		case <-tick.C:
		}
		b := byte(' ')
		if i < len(dripBody) {
			b = dripBody[i]
		}
		if _, err := w.Write([]byte{b}); err != nil {
			panic(http.ErrAbortHandler)
		}
		_ = rc.Flush()
	}
	panic(http.ErrAbortHandler)
}
