package job_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

// TestOutDirAcceptsKeyFiles: a folder holding a run's API key files (the
// sealed batches, a batch's temporary file left by a kill, the key log)
// can be resumed; a look-alike name is foreign and refused.
func TestOutDirAcceptsKeyFiles(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		ok    bool
	}{
		{"batches, temp and log", []string{"apikeys-00001.age", "apikeys-00002.age.tmp", "apikeys-log.csv", "results.csv"}, true},
		{"bad batch number", []string{"apikeys-1.age"}, false},
		{"other csv", []string{"apikeys.csv"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			if err := os.Mkdir(out, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(out, f), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			d, err := report.OpenFolder(out, true)
			if tt.ok {
				if err != nil {
					t.Fatalf("OpenOut: %v", err)
				}
				d.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), "not a pwrotate output") {
				t.Fatalf("OpenOut: %v, want a refusal of the foreign file", err)
			}
		})
	}
}

// simKeygen generates user id's key through the simulator, as someone
// with an admin key would, and returns the new key.
func simKeygen(t *testing.T, sim *ecgridsim.Server, id int) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v2/users/key-generate/"+strconv.Itoa(id), nil)
	req.Header.Set("X-API-Key", testKey)
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, req)
	var ans struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || rec.Code != http.StatusOK || ans.Data == "" {
		t.Errorf("keygen through the simulator: %d %v", rec.Code, err)
	}
	return ans.Data
}

// dropAnswer closes the connection of a request without an answer.
func dropAnswer(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
		}
	}
}

// keyFront stands in front of the simulator; for requests about user
// target, keygen and key (GET) may be answered by the test's functions
// (nil: passed on). n counts the requests of that kind so far, from 1.
type keyFront struct {
	sim    *ecgridsim.Server
	target int
	mu     sync.Mutex
	gens   int
	reads  int
	keygen func(w http.ResponseWriter, n int) bool // true: answered
	key    func(w http.ResponseWriter, n int) bool
}

func (f *keyFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := strconv.Itoa(f.target)
	f.mu.Lock()
	var answer func(http.ResponseWriter, int) bool
	n := 0
	switch r.URL.Path {
	case "/v2/users/key-generate/" + id:
		f.gens++
		answer, n = f.keygen, f.gens
	case "/v2/users/key/" + id:
		f.reads++
		answer, n = f.key, f.reads
	}
	f.mu.Unlock()
	if answer != nil && answer(w, n) {
		return
	}
	f.sim.ServeHTTP(w, r)
}

// allSealedKeys opens every sealed key batch in out: each user's keys, in
// batch order, and the one `open --api-keys` gives.
func allSealedKeys(t *testing.T, out string, id age.Identity) (all map[int][]string, latest map[int]string) {
	t.Helper()
	all, latest = map[int][]string{}, map[int]string{}
	ns, err := report.APIKeyBatches(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		ks, err := report.ReadSealedAPIKeys(filepath.Join(out, report.APIKeysName(n)), []age.Identity{id})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			all[k.UserID] = append(all[k.UserID], k.Key.Reveal())
		}
	}
	if len(ns) > 0 {
		ks, err := report.OpenAPIKeys([]string{out}, []age.Identity{id})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			latest[k.UserID] = k.Key.Reveal()
		}
	}
	return all, latest
}

// checkKeyOutcome asserts that after a complete run every user's live key
// is the sealed one `open --api-keys` gives, and their last rows say
// apiKeyRotated=true; and that none of keys is in the logs, the plan or a
// plaintext file of out.
func (w *world) checkKeyOutcome(out string, ids []int, keys ...string) {
	t := w.t
	t.Helper()
	_, latest := allSealedKeys(t, out, w.id)
	rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
	if err != nil {
		t.Fatal(err)
	}
	last := map[int]report.Row{}
	for _, r := range rows {
		last[r.Line] = r
	}
	for _, r := range last {
		if r.APIKeyRotated != "true" {
			t.Errorf("user %d: apiKeyRotated %q (%s)", r.UserID, r.APIKeyRotated, r.Error)
		}
	}
	for _, id := range ids {
		live, _ := w.sim.APIKey(id)
		if latest[id] != live {
			t.Errorf("user %d: the live key is not the sealed one open gives", id)
		}
		keys = append(keys, live)
	}
	w.checkNoKeys(out, keys...)
}

// checkNoKeys asserts that none of keys is in the logs, the plan or a
// plaintext file of out.
func (w *world) checkNoKeys(out string, keys ...string) {
	t := w.t
	t.Helper()
	texts := map[string]string{"logs": w.logs.String(), "stdout": w.stdout.String()}
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if !report.IsAPIKeysFile(e.Name()) {
			b, _ := os.ReadFile(filepath.Join(out, e.Name()))
			texts[e.Name()] = string(b)
		}
	}
	for name, text := range texts {
		for _, k := range keys {
			if k != "" && strings.Contains(text, k) {
				t.Errorf("%s holds an API key in plaintext", name)
			}
		}
	}
}

// TestKeyGenerateTextAnswerIsSealed: a key-generate is applied and
// answered 200 with the new key as a text body, and the key cannot be read
// back. The key is in no message, log or results row, and it is sealed as
// received; a --resume then rotates it for good.
func TestKeyGenerateTextAnswerIsSealed(t *testing.T) {
	w := newWorld(t, 3)
	target := firstUser + 1
	var textKey string
	front := &keyFront{sim: w.sim, target: target}
	front.keygen = func(rw http.ResponseWriter, n int) bool {
		if n > 1 {
			return false
		}
		textKey = simKeygen(t, w.sim, target)
		rw.Header().Set("Content-Type", "text/plain")
		io.WriteString(rw, textKey+"\n")
		return true
	}
	front.key = func(rw http.ResponseWriter, n int) bool {
		if n == 1 {
			return false // the key before the generate
		}
		rw.Header().Set("Content-Type", "text/plain")
		rw.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(rw, "down")
		return true
	}
	srv := httptest.NewServer(front)
	t.Cleanup(srv.Close)
	w.url = srv.URL
	oldKey, _ := w.sim.APIKey(target)
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 3)...), out)
	cfg.RotateAPIKeys = true
	cfg.Client = w.client(testKey, func(c *rotate.Config) { c.MaxAttempts = 2; c.Timeout = 200 * time.Millisecond })
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitIncomplete {
		t.Fatalf("exit %d (%v), want 2: the key could not be read back", sum.ExitCode, err)
	}
	if live, _ := w.sim.APIKey(target); live != textKey {
		t.Fatalf("the simulator's live key is not the one answered")
	}
	all, _ := allSealedKeys(t, out, w.id)
	if !slices.ContainsFunc(all[target], func(k string) bool { return strings.TrimSpace(k) == textKey }) {
		t.Errorf("the live key answered as text is not sealed (sealed for the user: %d)", len(all[target]))
	}
	w.checkNoKeys(out, textKey, oldKey)

	front.mu.Lock()
	front.keygen, front.key = nil, nil
	front.mu.Unlock()
	cfg.Resume = true
	if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
		t.Fatalf("resume: exit %d: %v", sum.ExitCode, err)
	}
	w.checkKeyOutcome(out, span(firstUser, 3), textKey, oldKey)
}

// TestKeyChangedBySomeoneElseIsNotTaken: someone regenerates a user's key
// while pwrotate cannot tell what became of its own generate (its answer
// lost; or it failed, and a --resume reads the key back). The key read back
// is sealed as a candidate, never taken as pwrotate's: a key is generated
// once more, and the live key in the end is not the one the other party
// knows.
func TestKeyChangedBySomeoneElseIsNotTaken(t *testing.T) {
	tests := []struct {
		name   string
		resume bool // the first run fails the generate for good; the resume reads back
	}{
		{"answer lost", false},
		{"resume after a failed generate", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 3)
			target := firstUser + 2
			var theirs string
			front := &keyFront{sim: w.sim, target: target}
			front.keygen = func(rw http.ResponseWriter, n int) bool {
				if n > 1 {
					return false
				}
				if tt.resume {
					rw.Header().Set("Content-Type", "application/json")
					rw.WriteHeader(http.StatusNotFound)
					io.WriteString(rw, `{"success":false,"errorCode":"ObjectNotFound","message":"no such user"}`)
					theirs = simKeygen(t, w.sim, target)
					return true
				}
				simKeygen(t, w.sim, target) // pwrotate's generate, applied
				theirs = simKeygen(t, w.sim, target)
				dropAnswer(rw)
				return true
			}
			srv := httptest.NewServer(front)
			t.Cleanup(srv.Close)
			w.url = srv.URL
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.config(users(span(firstUser, 3)...), out)
			cfg.RotateAPIKeys = true
			cfg.Client = w.client(testKey, func(c *rotate.Config) { c.Timeout = 300 * time.Millisecond })
			sum, err := job.New(cfg).Run(context.Background())
			if tt.resume {
				if sum.ExitCode != report.ExitIncomplete {
					t.Fatalf("first run: exit %d (%v), want 2", sum.ExitCode, err)
				}
				cfg.Resume = true
				sum, err = job.New(cfg).Run(context.Background())
			}
			if sum.ExitCode != report.ExitOK {
				t.Fatalf("exit %d: %v", sum.ExitCode, err)
			}
			live, _ := w.sim.APIKey(target)
			if live == theirs {
				t.Fatalf("the key someone else generated is taken as pwrotate's and left live")
			}
			all, _ := allSealedKeys(t, out, w.id)
			if !slices.Contains(all[target], theirs) {
				t.Errorf("the key read back is not sealed as a candidate")
			}
			w.checkKeyOutcome(out, span(firstUser, 3), theirs)
		})
	}
}

// TestResumeHonoursRotateAPIKeys: a run started with --rotate-api-keys
// and resumed without the flag still rotates the keys it owes (run.json
// records the flag): those of the users changed before it stopped and of
// those it changes now.
func TestResumeHonoursRotateAPIKeys(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(w *world, cfg *job.Config) context.Context
		want    int // exit code of the first run
	}{
		{"interrupted", func(w *world, cfg *job.Config) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cfg.Workers = 1
			cfg.Hook = func(point string, n int) {
				if point == "recorded" && n == 1 {
					cancel()
				}
			}
			return ctx
		}, report.ExitInterrupted},
		{"a key failed for good", func(w *world, cfg *job.Config) context.Context {
			w.sim.Inject(ecgridsim.Fault{Endpoint: "keygen", UserID: firstUser + 1, Kind: ecgridsim.Envelope, Status: 404, Code: "ObjectNotFound"})
			return context.Background()
		}, report.ExitIncomplete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 4)
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.config(users(span(firstUser, 4)...), out)
			cfg.RotateAPIKeys = true
			ctx := tt.prepare(w, &cfg)
			if sum, err := job.New(cfg).Run(ctx); sum.ExitCode != tt.want {
				t.Fatalf("first run: exit %d (%v), want %d", sum.ExitCode, err, tt.want)
			}
			cfg = w.config(users(span(firstUser, 4)...), out)
			cfg.Resume = true // and no --rotate-api-keys
			cfg.Sleep = func(context.Context, time.Duration) error { return nil }
			if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
				t.Fatalf("resume without --rotate-api-keys: exit %d: %v", sum.ExitCode, err)
			}
			w.checkInvariant(out)
			w.checkKeyOutcome(out, span(firstUser, 4))
		})
	}
}
