// Package ecgridsim is an in-process simulator of the ECGrid REST v2 API
// endpoints that pwrotate uses (GET /v2/users/me, POST /v2/users/password,
// POST /v2/users/reset/{id}, POST /v2/users/list, GET /v2/users/key/{id}
// and POST /v2/users/key-generate/{id}), with scripted faults and a user
// directory (see directory.go) that is the truth exports are compared
// against.
//
// It serves the job's tests (through httptest), `pwrotate run --demo` (on
// loopback) and load benchmarks, so the handler does no per-request logging
// and keeps its state in mutex-guarded maps. Nothing it records (Calls)
// holds a password or an API key.
package ecgridsim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// MaxUserID is the largest valid ECGrid user ID.
const MaxUserID = 2147483647

// DefaultCallLimit is how many calls Calls keeps by default.
const DefaultCallLimit = 1 << 20

// Call is one request the simulator saw. It never holds a password or key.
type Call struct {
	// At is when the request arrived.
	At time.Time
	// Endpoint is "me", "password", "reset", "list", "key", "keygen" or
	// "other".
	Endpoint string
	// UserID is the user the request was about (for "me", the caller); 0
	// when unknown or invalid.
	UserID int
	// Status is the HTTP status answered; 0 if no complete answer was given
	// (connection dropped by the simulator or abandoned by the client).
	Status int
	// Fault is the injected fault the request met, NoFault if none.
	Fault FaultKind
}

// Server is the simulator. It implements http.Handler; all its methods are
// safe to call while requests are being served. The zero value is not
// usable: call New.
type Server struct {
	mu         sync.Mutex
	keys       map[string]apiKey
	users      map[int]user
	autoCreate bool

	latMin, latMax time.Duration

	rate       int
	tokens     float64
	lastRefill time.Time

	faults []*pendingFault

	dir          []DirUser   // the directory, in listing order
	dirIndex     map[int]int // userId -> index in dir
	listBehavior ListBehavior

	calls     []Call
	callLimit int
	counts    [numEndpoints]int
}

type apiKey struct {
	userID    int
	authLevel string
}

type user struct {
	password string
	resets   int
	// apiKey is the user's live API key ("" until first asked for, see
	// ensureKeyLocked), keyLevel its AuthLevel, generated how many times
	// key-generate replaced it.
	apiKey    string
	keyLevel  string
	generated int
}

type pendingFault struct {
	Fault
	left int
}

// New returns a simulator with no keys, no users and no faults.
func New() *Server {
	return &Server{
		keys:      make(map[string]apiKey),
		users:     make(map[int]user),
		callLimit: DefaultCallLimit,
	}
}

// AddKey registers an API key belonging to userID with the given AuthLevel
// (e.g. "NetworkAdmin", "Root", "General"; an unknown level ranks below
// General).
func (s *Server) AddKey(key string, userID int, authLevel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[key] = apiKey{userID: userID, authLevel: authLevel}
}

// AddUser creates (or overwrites) user id with the given password.
func (s *Server) AddUser(id int, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[id]
	u.password = password
	s.users[id] = u
}

// SetAutoCreate makes every ID in 1..MaxUserID exist; a user never changed
// has the unknown password "".
func (s *Server) SetAutoCreate(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.autoCreate = on
}

// Password returns user id's live password and whether the user exists.
func (s *Server) Password(id int) (pw string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.lookupLocked(id)
	return u.password, ok
}

// Resets returns how many session resets user id received.
func (s *Server) Resets(id int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[id].resets
}

// SetLatency delays every request by a uniformly random duration in
// [min, max]; the wait ends early when the client gives up. Zero turns it
// off; max below min means min.
func (s *Server) SetLatency(min, max time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if max < min {
		max = min
	}
	s.latMin, s.latMax = min, max
}

// SetRateLimit admits at most perSecond requests per second (a token bucket
// of that size, full at the start); requests over it get 429
// RateLimitExceeded with "Retry-After: 1". 0 turns it off.
func (s *Server) SetRateLimit(perSecond int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rate = max(perSecond, 0)
	s.tokens = float64(s.rate)
	s.lastRefill = time.Now()
}

// Inject queues a fault. Faults are consumed in order by matching requests.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := f.Times
	if left <= 0 {
		left = 1
	}
	s.faults = append(s.faults, &pendingFault{Fault: f, left: left})
}

// PendingFaults returns how many injected faults still have hits left.
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults)
}

// Calls returns a copy of every request seen, in arrival order (at most the
// call limit, see SetCallLimit).
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	copy(out, s.calls)
	return out
}

// SetCallLimit bounds how many calls Calls keeps (the first n; default
// DefaultCallLimit) so that a long load test does not grow without bound. A
// negative n keeps every call. Count is exact regardless.
func (s *Server) SetCallLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.callLimit = n
}

// Count returns how many requests were seen for the endpoint name: "me",
// "password", "reset", "list" or "other".
func (s *Server) Count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ep := endpoint(0); ep < numEndpoints; ep++ {
		if ep.String() == name {
			return s.counts[ep]
		}
	}
	return 0
}

// ListenLoopback serves s on a random port of 127.0.0.1 and returns its base
// URL ("http://127.0.0.1:PORT") and the server, which the caller stops with
// Shutdown or Close.
func (s *Server) ListenLoopback() (baseURL string, srv *http.Server, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listening on loopback: %w", err)
	}
	srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = srv.Serve(ln) }() // returns http.ErrServerClosed on Shutdown
	return "http://" + ln.Addr().String(), srv, nil
}

// lookupLocked returns user id; with auto-create every valid ID exists.
func (s *Server) lookupLocked(id int) (user, bool) {
	u, ok := s.users[id]
	if !ok && s.autoCreate && id >= 1 && id <= MaxUserID {
		return user{}, true
	}
	return u, ok
}

// arrive records a request, applies the rate limit and pops the first
// matching fault. It returns the call's index in s.calls (-1 when not kept),
// the latency to apply, whether the request is over the rate limit, and the
// fault met (nil if none).
func (s *Server) arrive(req *request) (idx int, delay time.Duration, limited bool, fault *Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if req.ep == epMe {
		if k, ok := s.keys[req.key]; ok {
			req.userID = k.userID
		}
	}
	s.counts[req.ep]++

	if s.rate > 0 {
		s.tokens += now.Sub(s.lastRefill).Seconds() * float64(s.rate)
		s.tokens = min(s.tokens, float64(s.rate))
		s.lastRefill = now
		if s.tokens >= 1 {
			s.tokens--
		} else {
			limited = true
		}
	}

	kind := NoFault
	if !limited {
		for i, pf := range s.faults {
			if !pf.matches(req.ep, req.userID) {
				continue
			}
			f := pf.Fault
			fault = &f
			kind = f.Kind
			if pf.left--; pf.left <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			break
		}
	}

	idx = -1
	if s.callLimit < 0 || len(s.calls) < s.callLimit {
		idx = len(s.calls)
		s.calls = append(s.calls, Call{At: now, Endpoint: req.ep.String(), UserID: req.userID, Fault: kind})
	}

	if s.latMax > 0 {
		delay = s.latMin
		if span := s.latMax - s.latMin; span > 0 {
			delay += randDuration(span + 1)
		}
	}
	return idx, delay, limited, fault
}

// finish records the status answered to call idx.
func (s *Server) finish(idx, status int) {
	if idx < 0 {
		return
	}
	s.mu.Lock()
	s.calls[idx].Status = status
	s.mu.Unlock()
}

// APIKey returns user id's live API key, as GET /v2/users/key/{id} would
// (a user never asked about gets one now).
func (s *Server) APIKey(id int) (key string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.lookupLocked(id)
	if !ok {
		return "", false
	}
	s.ensureKeyLocked(id, &u)
	s.users[id] = u
	return u.apiKey, true
}

// KeysGenerated returns how many times user id's API key was replaced by
// POST /v2/users/key-generate/{id}.
func (s *Server) KeysGenerated(id int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[id].generated
}

// ensureKeyLocked gives u (user id) its API key if it has none yet: the key
// registered with AddKey for that user, if any, else a new one with
// AuthLevel General.
func (s *Server) ensureKeyLocked(id int, u *user) {
	if u.apiKey != "" {
		return
	}
	for k, v := range s.keys {
		if v.userID == id {
			u.apiKey, u.keyLevel = k, v.authLevel
			return
		}
	}
	u.apiKey, u.keyLevel = newAPIKey(), "General"
	s.keys[u.apiKey] = apiKey{userID: id, authLevel: u.keyLevel}
}

// newAPIKey returns a fresh random API key (32 hex digits, like ECGrid's).
func newAPIKey() string {
	return hex64(rand.Uint64()) + hex64(rand.Uint64())
}

// keyResponse is the answer of the key endpoints: the key in data.
func keyResponse(key string) response {
	b, err := json.Marshal(struct {
		Success bool   `json:"success"`
		Data    string `json:"data"`
	}{true, key})
	if err != nil {
		return errResponse(http.StatusInternalServerError, defaultCode, "Encoding failed.")
	}
	return response{status: http.StatusOK, ctype: ctJSON, body: b}
}
