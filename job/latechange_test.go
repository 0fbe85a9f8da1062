package job_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pwrotate/job"
	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

// lateServer stands in front of the simulator. The first password change
// for user late is taken in but not passed on: the client gets no answer
// (it gives up at its timeout), and the change is applied only when the
// test calls apply: a slow server applying an old request late.
type lateServer struct {
	sim     *ecgridsim.Server
	late    int
	mu      sync.Mutex
	body    []byte // the held change; nil once applied or before it came
	arrived chan struct{}
	once    sync.Once
}

func (s *lateServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/users/password" {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			UserID int `json:"userId"`
		}
		_ = json.Unmarshal(body, &req)
		held := false
		if req.UserID == s.late {
			s.once.Do(func() {
				s.mu.Lock()
				s.body = body
				s.mu.Unlock()
				held = true
			})
		}
		if held {
			close(s.arrived)
			<-r.Context().Done() // never answered
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	s.sim.ServeHTTP(w, r)
}

// apply applies the held change now, if it is still held.
func (s *lateServer) apply() {
	s.mu.Lock()
	body := s.body
	s.body = nil
	s.mu.Unlock()
	if body == nil {
		return
	}
	req := httptest.NewRequest(http.MethodPost, "/v2/users/password", bytes.NewReader(body))
	req.Header.Set("X-API-Key", testKey)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	s.sim.ServeHTTP(rec, req)
	clear(body)
	if rec.Code != http.StatusOK {
		panic("late apply refused: " + rec.Body.String())
	}
}

// TestResumeWaitsOutLateChange: a run is stopped while the server holds a
// change it will apply late; --resume must not send the new generation to
// that user before twice --timeout has passed since the stopped run's last
// activity, so the late change cannot land over the new password. The
// clock and the sleep are the test's: the late change is applied during
// the resume's wait, as a slow server would; with no wait it lands after
// the resume and the live password is no longer the recorded one.
func TestResumeWaitsOutLateChange(t *testing.T) {
	w := newWorld(t, 6)
	late := firstUser + 2
	ls := &lateServer{sim: w.sim, late: late, arrived: make(chan struct{})}
	srv := httptest.NewServer(ls)
	t.Cleanup(srv.Close)
	w.url = srv.URL
	const timeout = 200 * time.Millisecond
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 6)...), out)
	cfg.Client = w.client(testKey, func(c *rotate.Config) { c.Timeout = timeout })
	cfg.Workers = 1

	// The first run is stopped (a signal) once the late change is held.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-ls.arrived; cancel() }()
	sum, _ := job.New(cfg).Run(ctx)
	if sum.ExitCode != report.ExitInterrupted {
		t.Fatalf("first run: exit %d, want 3", sum.ExitCode)
	}

	var waits []time.Duration
	now := time.Now()
	cfg.Resume = true
	cfg.Now = func() time.Time { return now }
	cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		ls.apply() // the slow server applies the old change while we wait
		now = now.Add(d)
		return nil
	}
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK {
		t.Fatalf("resume: exit %d: %v", sum.ExitCode, err)
	}
	ls.apply() // or after the resume, if it did not wait
	byUser := w.checkInvariant(out)
	if r := byUser[late]; r.Status != report.Updated || r.Generation != 2 {
		t.Errorf("user %d: %+v, want updated with generation 2", late, r)
	}
	if len(waits) != 1 {
		t.Fatalf("the resume waited %d times (%v), want once", len(waits), waits)
	}
	if max := 2*timeout + time.Second; waits[0] <= 0 || waits[0] > max {
		t.Errorf("the resume waited %v, want more than 0 and at most %v", waits[0], max)
	}
	if !strings.Contains(w.logs.String(), "waiting before sending a new generation") {
		t.Errorf("the wait is not logged")
	}
	t.Logf("the resume waited %v (2 x --timeout %v + 1s heartbeat since the last activity)", waits[0], timeout)
}

// TestResumeWaitsDespiteBackdatedFiles: someone who can write the output
// folder sets its files' mtimes an hour back after a run stopped with a
// change held by a slow server; the resume still waits (the files' ctimes
// say when they were last changed) and the late change cannot land over
// the new password.
func TestResumeWaitsDespiteBackdatedFiles(t *testing.T) {
	w := newWorld(t, 4)
	late := firstUser + 1
	ls := &lateServer{sim: w.sim, late: late, arrived: make(chan struct{})}
	srv := httptest.NewServer(ls)
	t.Cleanup(srv.Close)
	w.url = srv.URL
	const timeout = 200 * time.Millisecond
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 4)...), out)
	cfg.Client = w.client(testKey, func(c *rotate.Config) { c.Timeout = timeout })
	cfg.Workers = 1
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-ls.arrived; cancel() }()
	if sum, _ := job.New(cfg).Run(ctx); sum.ExitCode != report.ExitInterrupted {
		t.Fatalf("first run: exit %d, want 3", sum.ExitCode)
	}
	hourAgo := time.Now().Add(-time.Hour)
	ents, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Chtimes(filepath.Join(out, e.Name()), hourAgo, hourAgo); err != nil {
			t.Fatal(err)
		}
	}

	var waits []time.Duration
	now := time.Now()
	cfg.Resume = true
	cfg.Now = func() time.Time { return now }
	cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		ls.apply()
		now = now.Add(d)
		return nil
	}
	if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
		t.Fatalf("resume: exit %d: %v", sum.ExitCode, err)
	}
	ls.apply()
	if len(waits) != 1 || waits[0] <= 0 {
		t.Errorf("the resume waited %v, want once (the backdated mtimes are not the last activity)", waits)
	}
	w.checkInvariant(out)
}

// TestResumeWaitsOnlyWhenNeeded: no wait in a fresh run, in a resume whose
// earlier run sent nothing that is unaccounted for, and in a resume that
// starts after the time has passed.
func TestResumeWaitsOnlyWhenNeeded(t *testing.T) {
	tests := []struct {
		name string
		// prepare makes the earlier run (if any) in out; later is how long
		// after it the resume starts.
		prepare func(t *testing.T, w *world, cfg job.Config)
		later   time.Duration
	}{
		{"fresh run", func(*testing.T, *world, job.Config) {}, 0},
		{"earlier run recorded every outcome", func(t *testing.T, w *world, cfg job.Config) {
			w.sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: firstUser + 1, Kind: ecgridsim.Envelope, Status: 404, Code: "ObjectNotFound"})
			if sum, _ := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitIncomplete {
				t.Fatalf("earlier run: exit %d, want 2", sum.ExitCode)
			}
		}, 0},
		{"earlier run stopped long ago", func(t *testing.T, w *world, cfg job.Config) {
			ctx, cancel := context.WithCancel(context.Background())
			cfg.Hook = func(point string, n int) {
				if point == "recorded" && n == 2 {
					cancel()
				}
			}
			cfg.Workers = 1
			if sum, _ := job.New(cfg).Run(ctx); sum.ExitCode != report.ExitInterrupted {
				t.Fatalf("earlier run: exit %d, want 3", sum.ExitCode)
			}
		}, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 5)
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.config(users(span(firstUser, 5)...), out)
			tt.prepare(t, w, cfg)
			now := time.Now().Add(tt.later)
			cfg.Resume = true
			cfg.Now = func() time.Time { return now }
			cfg.Sleep = func(ctx context.Context, d time.Duration) error {
				t.Errorf("waited %v", d)
				return nil
			}
			sum, err := job.New(cfg).Run(context.Background())
			if sum.ExitCode != report.ExitOK && sum.ExitCode != report.ExitIncomplete {
				t.Fatalf("exit %d: %v", sum.ExitCode, err)
			}
			w.checkInvariant(out)
		})
	}
}

// passwordBarrier holds each password change until want of them have
// arrived (or 10 s have passed), then passes them all on to next.
type passwordBarrier struct {
	next http.Handler
	want int
	mu   sync.Mutex
	seen int
	all  chan struct{}
}

func (b *passwordBarrier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/users/password" {
		b.mu.Lock()
		b.seen++
		if b.seen == b.want {
			close(b.all)
		}
		b.mu.Unlock()
		select {
		case <-b.all:
		case <-time.After(10 * time.Second):
		case <-r.Context().Done():
			return
		}
	}
	b.next.ServeHTTP(w, r)
}

// TestResetSurvivesAnotherWorkersFatal: a change that succeeded is reset
// even though another worker's 401 stops the run meanwhile: the change and
// its reset are one unit.
func TestResetSurvivesAnotherWorkersFatal(t *testing.T) {
	w := newWorld(t, 2)
	slow, revoked := firstUser, firstUser+1
	// The slow user's change is applied at once and answered a second
	// later; by then the other worker's 401 has stopped the run.
	w.sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: slow, Kind: ecgridsim.ApplyThenHold, Hold: time.Second})
	w.sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: revoked, Kind: ecgridsim.Envelope, Status: 401, Code: "InvalidAPIKey"})
	// Both changes must be at the server before either is answered: if the
	// 401 came back before the slow change was sent, the run would stop
	// without sending it, and there would be nothing in flight to finish.
	gate := &passwordBarrier{next: w.sim, want: 2, all: make(chan struct{})}
	srv := httptest.NewServer(gate)
	t.Cleanup(srv.Close)
	w.url = srv.URL
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(slow, revoked), out)
	cfg.ResetSessions = true
	cfg.Workers = 2
	sum, _ := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitFatal {
		t.Fatalf("exit %d, want 1 (a 401 stops the run)", sum.ExitCode)
	}
	rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
	if err != nil {
		t.Fatal(err)
	}
	var last report.Row
	for _, r := range rows {
		if r.UserID == slow {
			last = r
		}
	}
	if last.Status != report.Updated || last.SessionsReset != "true" {
		t.Errorf("user %d: %+v, want updated with sessionsReset true", slow, last)
	}
	if n := w.sim.Resets(slow); n != 1 {
		t.Errorf("user %d: %d session resets on the server, want 1", slow, n)
	}
	w.checkInvariant(out)
}
