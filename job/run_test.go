package job_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
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

const (
	testKey   = "test-key-5f0e1d2c3b4a"
	lowKey    = "low-key-0a1b2c3d"
	callerID  = 7
	initialPw = "Initial-Passw0rd!"
	firstUser = 1000
)

// world is a simulator with users firstUser.. and the pieces a run needs.
type world struct {
	t      *testing.T
	sim    *ecgridsim.Server
	url    string
	id     *age.X25519Identity
	logs   *syncBuffer
	stdout *syncBuffer
}

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

func newWorld(t *testing.T, users int) *world {
	t.Helper()
	sim := ecgridsim.New()
	sim.AddKey(testKey, callerID, "NetworkAdmin")
	sim.AddKey(lowKey, 8, "NetworkUser")
	sim.AddUser(callerID, initialPw)
	for i := range users {
		sim.AddUser(firstUser+i, initialPw)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, sim: sim, url: srv.URL, id: id, logs: &syncBuffer{}, stdout: &syncBuffer{}}
}

func (w *world) client(key string, mutate func(*rotate.Config)) *rotate.Client {
	w.t.Helper()
	cfg := rotate.Config{
		BaseURL: w.url, APIKey: key, Workers: 8, Timeout: 2 * time.Second, MaxAttempts: 5,
		BackoffBase: time.Millisecond, BackoffMax: 20 * time.Millisecond,
		Pacer: rotate.NewLimiter(0, 1), Logger: slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := rotate.New(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) config(input string, out string) job.Config {
	gen, err := rotate.NewGenerator(rotate.DefaultShape())
	if err != nil {
		w.t.Fatal(err)
	}
	return job.Config{
		InputData: []byte(input), InputName: "users.csv", Apply: true, Out: out,
		Recipients: []age.Recipient{w.id.Recipient()}, Client: w.client(testKey, nil),
		Endpoint: w.url, Generator: gen, Workers: 8, Version: "test",
		Logger: slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Stdout: w.stdout,
	}
}

func users(ids ...int) string {
	var b strings.Builder
	b.WriteString("userId\n")
	for _, id := range ids {
		fmt.Fprintf(&b, "%d\n", id)
	}
	return b.String()
}

func span(from, n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = from + i
	}
	return ids
}

// checkInvariant opens the sealed files with the age library and checks,
// for every results row, the server's truth: an updated user's live password
// is the sealed one of the recorded generation; an invalid or skipped user
// was never touched. It returns the rows by user.
func (w *world) checkInvariant(out string) map[int]report.Row {
	t := w.t
	t.Helper()
	rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
	if err != nil {
		t.Fatal(err)
	}
	sealed := map[[2]int]string{}
	matches, _ := filepath.Glob(filepath.Join(out, "passwords-g*.age"))
	for _, m := range matches {
		ss, err := report.ReadSealed(m, []age.Identity{w.id})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			sealed[[2]int{s.UserID, s.Generation}] = s.Password.Reveal()
		}
	}
	touched := map[int]bool{}
	for _, c := range w.sim.Calls() {
		if c.Endpoint == "password" {
			touched[c.UserID] = true
		}
	}
	byUser := map[int]report.Row{}
	for _, row := range rows {
		if row.Status != report.Invalid {
			byUser[row.UserID] = row
		}
	}
	for _, row := range rows {
		if _, ok := byUser[row.UserID]; !ok {
			byUser[row.UserID] = row
		}
		live, exists := w.sim.Password(row.UserID)
		switch row.Status {
		case report.Updated:
			pw, ok := sealed[[2]int{row.UserID, row.Generation}]
			if !ok {
				t.Errorf("line %d user %d: updated with generation %d, which is not sealed", row.Line, row.UserID, row.Generation)
			} else if pw != live {
				t.Errorf("line %d user %d: the server's live password is not the sealed one of generation %d", row.Line, row.UserID, row.Generation)
			}
		case report.Invalid:
			if row.UserID != 0 && touched[row.UserID] && byUser[row.UserID].Status == report.Invalid {
				t.Errorf("line %d user %d: invalid, yet the server saw a password call for it", row.Line, row.UserID)
			}
		case report.Skipped:
			if touched[row.UserID] || (exists && live != initialPw) {
				t.Errorf("line %d user %d: skipped (%s), yet the server saw a password call for it or its password changed", row.Line, row.UserID, row.Error)
			}
		case report.Failed:
			if !strings.Contains(row.Error, "outcome unknown") && exists && live != initialPw {
				t.Errorf("line %d user %d: failed for sure (%s), yet its password changed", row.Line, row.UserID, row.Error)
			}
		}
	}
	return byUser
}

// checkNoSecrets scans logs, stdout and every plaintext output for any
// sealed password and the API key.
func (w *world) checkNoSecrets(out string) {
	t := w.t
	t.Helper()
	var secrets []string
	matches, _ := filepath.Glob(filepath.Join(out, "passwords-g*.age"))
	for _, m := range matches {
		ss, err := report.ReadSealed(m, []age.Identity{w.id})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			secrets = append(secrets, s.Password.Reveal())
		}
	}
	secrets = append(secrets, testKey, initialPw)
	texts := map[string]string{"logs": w.logs.String(), "stdout": w.stdout.String()}
	for _, name := range []string{report.ResultsName, report.SummaryName, report.ManifestName} {
		b, _ := os.ReadFile(filepath.Join(out, name))
		texts[name] = string(b)
	}
	for name, text := range texts {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s contains a password or the API key", name)
			}
		}
	}
}

func TestApplyWithFaults(t *testing.T) {
	w := newWorld(t, 40)
	u := func(i int) int { return firstUser + i }
	faults := []ecgridsim.Fault{
		{Endpoint: "password", UserID: u(1), Kind: ecgridsim.TooManyRequests, RetryAfter: "1"},
		{Endpoint: "password", UserID: u(2), Kind: ecgridsim.ServerError, Times: 2},
		{Endpoint: "password", UserID: u(3), Kind: ecgridsim.HTMLError},
		{Endpoint: "password", UserID: u(4), Kind: ecgridsim.Problem, Status: 503},
		{Endpoint: "password", UserID: u(5), Kind: ecgridsim.SuccessFalse, Code: "InternalError"},
		{Endpoint: "password", UserID: u(6), Kind: ecgridsim.ApplyThenDrop},
		{Endpoint: "password", UserID: u(7), Kind: ecgridsim.ApplyThenHold, Hold: 3 * time.Second},
		{Endpoint: "password", UserID: u(8), Kind: ecgridsim.Envelope, Status: 400, Code: "InvalidParameter"},
		{Endpoint: "password", UserID: u(9), Kind: ecgridsim.ServerError, Times: 10},    // every attempt fails
		{Endpoint: "password", UserID: u(10), Kind: ecgridsim.ApplyThenDrop, Times: 10}, // applied, never answered
		{Endpoint: "password", UserID: u(11), Kind: ecgridsim.DataFalse},                // no errorCode: retried
		{Endpoint: "password", UserID: u(12), Kind: ecgridsim.Empty, Status: 502},
		{Endpoint: "password", UserID: u(13), Kind: ecgridsim.InvalidJSON},
		{Endpoint: "password", UserID: u(15), Kind: ecgridsim.Refusal, Times: 2},                    // unexplained: retried
		{Endpoint: "password", UserID: u(16), Kind: ecgridsim.SuccessFalse, Code: "ObjectNotFound"}, // explained: final
		{Endpoint: "password", UserID: u(17), Kind: ecgridsim.Refusal, Times: 10},                   // refused every time
	}
	for _, f := range faults {
		w.sim.Inject(f)
	}
	ids := span(firstUser, 40)
	input := users(ids...) + "abc\n" + fmt.Sprint(u(0)) + "\n" + fmt.Sprint(callerID) + "\n99999\n"
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(input, out)
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitIncomplete {
		t.Fatalf("exit code %d (%v), want 2", sum.ExitCode, err)
	}
	byUser := w.checkInvariant(out)
	w.checkNoSecrets(out)

	want := map[int]report.Status{
		u(1): report.Updated, u(2): report.Updated, u(3): report.Updated, u(4): report.Updated,
		u(5): report.Updated, u(6): report.Updated, u(7): report.Updated, u(8): report.Failed,
		u(9): report.Failed, u(10): report.Failed, u(11): report.Updated, u(12): report.Updated,
		u(13): report.Updated, u(14): report.Updated, u(15): report.Updated, u(16): report.Failed,
		u(17): report.Failed, 99999: report.Failed,
	}
	for id, st := range want {
		if byUser[id].Status != st {
			t.Errorf("user %d: status %q (%s), want %q", id, byUser[id].Status, byUser[id].Error, st)
		}
	}
	if r := byUser[u(10)]; !strings.Contains(r.Error, "outcome unknown") {
		t.Errorf("user %d applied but never answered: error %q does not say the outcome is unknown", u(10), r.Error)
	}
	// An unexplained refusal (200, success or data false, no errorCode) is
	// retried with the same password: checkInvariant saw the live password
	// equal the one sealed.
	for id, attempts := range map[int]int{u(11): 2, u(15): 3, u(17): 5} {
		if r := byUser[id]; r.Attempts != attempts || r.HTTPStatus != 200 {
			t.Errorf("user %d: %d attempts, status %d; want %d, 200 (an unexplained refusal is retried)", id, r.Attempts, r.HTTPStatus, attempts)
		}
	}
	if r := byUser[u(17)]; !strings.Contains(r.Error, "no errorCode") {
		t.Errorf("user %d: error %q does not say the refusal was unexplained", u(17), r.Error)
	}
	if r := byUser[u(16)]; r.Attempts != 1 || r.HTTPStatus != 200 || r.ErrorCode != "ObjectNotFound" {
		t.Errorf("user %d: 200 with errorCode ObjectNotFound must be final after one attempt, got %d attempts, status %d, code %q", u(16), r.Attempts, r.HTTPStatus, r.ErrorCode)
	}
	if r := byUser[u(8)]; r.HTTPStatus != 400 || r.Attempts != 1 {
		t.Errorf("user %d: 400 must be final after one attempt, got status %d after %d", u(8), r.HTTPStatus, r.Attempts)
	}
	rows, _ := report.ReadResults(filepath.Join(out, report.ResultsName))
	if len(rows) != 44 {
		t.Errorf("results has %d rows, want one per input record (44)", len(rows))
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].Line <= rows[i-1].Line {
			t.Fatalf("results not sorted by line at row %d", i)
		}
	}
	invalid := 0
	for _, r := range rows {
		if r.Status == report.Invalid {
			invalid++
		}
	}
	if invalid != 2 { // abc, duplicate of u(0)
		t.Errorf("%d invalid rows, want 2", invalid)
	}
	if r := byUser[callerID]; r.Status != report.Skipped || !strings.Contains(r.Error, "own account") {
		t.Errorf("the caller's own record: status %q (%s), want skipped as its own account", r.Status, r.Error)
	}
	if live, _ := w.sim.Password(callerID); live != initialPw {
		t.Error("the caller's own password changed without --include-self")
	}
	// The password of the applied-but-unanswered user is still findable.
	open, err := report.Open([]string{out}, []age.Identity{w.id}, false)
	if err != nil {
		t.Fatal(err)
	}
	live10, _ := w.sim.Password(u(10))
	found := false
	for _, r := range open {
		if r.UserID == u(10) && r.Status == "unconfirmed" && r.Password.Reveal() == live10 {
			found = true
		}
	}
	if !found {
		t.Errorf("open does not list user %d's live password as unconfirmed", u(10))
	}
	for _, st := range []string{"summary.json", "results.csv", "run.json"} {
		fi, err := os.Stat(filepath.Join(out, st))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", st, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o700 {
		t.Errorf("out has mode %v, want 0700", fi.Mode().Perm())
	}
}

func TestCleanRunWritesOneSealedFile(t *testing.T) {
	w := newWorld(t, 30)
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 30)...), out)
	cfg.ResetSessions = true
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil || sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d: %v", sum.ExitCode, err)
	}
	byUser := w.checkInvariant(out)
	matches, _ := filepath.Glob(filepath.Join(out, "*.age"))
	if len(matches) != 1 {
		t.Errorf("sealed files %v, want one", matches)
	}
	for _, id := range span(firstUser, 30) {
		if byUser[id].Status != report.Updated || byUser[id].SessionsReset != "true" {
			t.Errorf("user %d: %+v", id, byUser[id])
		}
		if w.sim.Resets(id) != 1 {
			t.Errorf("user %d: %d session resets, want 1", id, w.sim.Resets(id))
		}
	}
	if !sum.Complete || sum.Counts["updated"] != 30 || sum.InputSHA256 == "" {
		t.Errorf("summary %+v", sum)
	}
	// A finished run, resumed, changes nothing and keeps its exit code.
	before := len(w.sim.Calls())
	cfg.Resume = true
	sum2, err := job.New(cfg).Run(context.Background())
	if err != nil || sum2.ExitCode != report.ExitOK || len(w.sim.Calls()) != before {
		t.Errorf("resume of a finished run: exit %d err %v, %d new calls", sum2.ExitCode, err, len(w.sim.Calls())-before)
	}
}

func TestSessionResetFailureIsExit2(t *testing.T) {
	w := newWorld(t, 3)
	w.sim.Inject(ecgridsim.Fault{Endpoint: "reset", UserID: firstUser + 1, Kind: ecgridsim.Envelope, Status: 404, Code: "ObjectNotFound"})
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 3)...), out)
	cfg.ResetSessions = true
	sum, _ := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitIncomplete {
		t.Fatalf("exit %d, want 2", sum.ExitCode)
	}
	byUser := w.checkInvariant(out)
	if r := byUser[firstUser+1]; r.Status != report.Updated || r.SessionsReset != "false" {
		t.Errorf("row %+v: want updated with sessionsReset false", r)
	}

	// The reset is still owed: --resume does it (and only it), records it,
	// and the run then exits 0. Resumed again, there is nothing left to do.
	for i, flag := range []bool{true, false} {
		passwordCalls := w.sim.Count("password")
		cfg.Resume, cfg.ResetSessions = true, flag // the manifest remembers the flag
		sum, err := job.New(cfg).Run(context.Background())
		if sum.ExitCode != report.ExitOK {
			t.Fatalf("resume %d: exit %d (%v), want 0", i+1, sum.ExitCode, err)
		}
		byUser = w.checkInvariant(out)
		if r := byUser[firstUser+1]; r.Status != report.Updated || r.SessionsReset != "true" || r.Error != "" || r.Generation != 1 {
			t.Errorf("resume %d: row %+v: want updated, generation 1, sessionsReset true", i+1, r)
		}
		if got := w.sim.Resets(firstUser + 1); got != 1 {
			t.Errorf("resume %d: user %d had %d session resets, want 1", i+1, firstUser+1, got)
		}
		if n := w.sim.Count("password"); n != passwordCalls {
			t.Errorf("resume %d: %d password changes, want none", i+1, n-passwordCalls)
		}
	}
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	if err != nil || len(rows) != 3 {
		t.Errorf("results after the resumes: %d rows, %v; want 3", len(rows), err)
	}
}

func TestPreflightRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, key string
	}{
		{"unknown key", "no-such-key-0123456789"},
		{"AuthLevel too low", lowKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 5)
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.config(users(span(firstUser, 5)...), out)
			cfg.Client = w.client(tc.key, nil)
			sum, err := job.New(cfg).Run(context.Background())
			if sum.ExitCode != report.ExitFatal || err == nil {
				t.Fatalf("exit %d, err %v; want 1", sum.ExitCode, err)
			}
			if n := w.sim.Count("password"); n != 0 {
				t.Errorf("%d password calls after a failed preflight", n)
			}
			if strings.Contains(err.Error(), tc.key) {
				t.Error("the error shows the API key")
			}
			matches, _ := filepath.Glob(filepath.Join(out, "*.age"))
			if len(matches) != 0 {
				t.Errorf("sealed files written before a failed preflight: %v", matches)
			}
		})
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	w := newWorld(t, 5)
	out := filepath.Join(t.TempDir(), "plan")
	cfg := w.config(users(span(firstUser, 5)...)+"0\n", out)
	cfg.Apply = false
	cfg.Recipients = nil
	sum, _ := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitIncomplete {
		t.Errorf("dry run with an invalid record: exit %d, want 2", sum.ExitCode)
	}
	if n := w.sim.Count("password") + w.sim.Count("reset"); n != 0 {
		t.Errorf("dry run made %d changing calls", n)
	}
	if w.sim.Count("me") != 1 {
		t.Errorf("dry run with a key must preflight once, made %d", w.sim.Count("me"))
	}
	rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
	if err != nil {
		t.Fatal(err)
	}
	planned := 0
	for _, r := range rows {
		if r.Status == report.Planned {
			planned++
		}
	}
	if planned != 5 || len(rows) != 6 {
		t.Errorf("%d planned of %d rows, want 5 of 6", planned, len(rows))
	}
	if matches, _ := filepath.Glob(filepath.Join(out, "*.age")); len(matches) != 0 {
		t.Errorf("dry run sealed %v", matches)
	}
	if !strings.Contains(w.stdout.String(), "dry run") || !strings.Contains(w.stdout.String(), "AuthLevel NetworkAdmin") {
		t.Errorf("plan output:\n%s", w.stdout.String())
	}
	// Without a key: no call at all.
	w2 := newWorld(t, 5)
	cfg2 := w2.config(users(span(firstUser, 5)...), "")
	cfg2.Apply, cfg2.Client, cfg2.Recipients = false, nil, nil
	if sum, err := job.New(cfg2).Run(context.Background()); sum.ExitCode != report.ExitOK {
		t.Errorf("dry run without key: exit %d %v", sum.ExitCode, err)
	}
	if n := len(w2.sim.Calls()); n != 0 {
		t.Errorf("dry run without a key made %d calls", n)
	}
}

func TestUnauthorizedMidRunStopsEverything(t *testing.T) {
	w := newWorld(t, 30)
	w.sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: firstUser + 10, Kind: ecgridsim.Envelope, Status: 401, Code: "InvalidAPIKey"})
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 30)...), out)
	cfg.Workers = 1
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitFatal || err == nil {
		t.Fatalf("exit %d (%v), want 1", sum.ExitCode, err)
	}
	var after bool
	for _, c := range w.sim.Calls() {
		if after && c.Endpoint == "password" {
			t.Fatalf("a password call for user %d after the 401", c.UserID)
		}
		if c.Status == 401 {
			after = true
		}
	}
	w.checkInvariant(out)
	// The key is fixed (the fault is gone): --resume completes the run.
	cfg.Resume = true
	sum, err = job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK {
		t.Fatalf("resume: exit %d (%v)", sum.ExitCode, err)
	}
	byUser := w.checkInvariant(out)
	if len(byUser) != 30 {
		t.Errorf("%d users recorded, want 30", len(byUser))
	}
}

func TestInterruptThenResume(t *testing.T) {
	w := newWorld(t, 60)
	w.sim.SetLatency(20*time.Millisecond, 40*time.Millisecond)
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 60)...), out)
	cfg.Workers = 2
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	cfg.Hook = func(point string, n int) {
		if point == "recorded" && n == 10 {
			once.Do(cancel)
		}
	}
	sum, _ := job.New(cfg).Run(ctx)
	if sum.ExitCode != report.ExitInterrupted || !sum.Interrupted {
		t.Fatalf("exit %d interrupted %v, want 3", sum.ExitCode, sum.Interrupted)
	}
	got, err := report.ReadSummary(filepath.Join(out, report.SummaryName))
	if err != nil || !got.Interrupted || got.Complete {
		t.Fatalf("summary after interrupt: %+v %v", got, err)
	}
	w.checkInvariant(out)

	// Another input is refused.
	other := cfg
	other.InputData = []byte(users(span(firstUser, 61)...))
	other.Resume, other.Hook = true, nil
	if sum, _ := job.New(other).Run(context.Background()); sum.ExitCode != report.ExitFatal {
		t.Errorf("resume with another input: exit %d, want 1", sum.ExitCode)
	}
	// Without --resume the folder is refused, never overwritten.
	fresh := cfg
	fresh.Hook = nil
	if sum, _ := job.New(fresh).Run(context.Background()); sum.ExitCode != report.ExitFatal {
		t.Errorf("non-empty --out without --resume: exit %d, want 1", sum.ExitCode)
	}

	cfg.Resume, cfg.Hook = true, nil
	sum, err = job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK {
		t.Fatalf("resume: exit %d (%v)", sum.ExitCode, err)
	}
	byUser := w.checkInvariant(out)
	if len(byUser) != 60 {
		t.Fatalf("%d users recorded, want 60", len(byUser))
	}
	gens := map[int]int{}
	for _, r := range byUser {
		gens[r.Generation]++
	}
	if gens[1] < 10 || gens[2] == 0 {
		t.Errorf("generations %v: want the first run's outcomes in 1 and the rest in 2", gens)
	}
	w.checkNoSecrets(out)
}

func TestRateNeverExceeded(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 3 s")
	}
	const rate, burst = 25, 1
	w := newWorld(t, 70)
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(users(span(firstUser, 70)...), out)
	cfg.Workers = 16
	cfg.ResetSessions = true
	// Calls are timed when the limiter lets them go, and every call the
	// server saw must have been let go by it. (Times at the server or at
	// the transport add the scheduling jitter of a loaded test machine; the
	// load benchmark measures arrival times on a quiet one.)
	paced := &pacedTimes{}
	lim := rotate.NewLimiter(rate, burst)
	lim.SetReleaseHook(paced.record)
	cfg.Client = w.client(testKey, func(c *rotate.Config) { c.Pacer = lim })
	if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d: %v", sum.ExitCode, err)
	}
	at := paced.sorted()
	if len(at) != 141 || len(w.sim.Calls()) != 141 {
		t.Errorf("%d calls paced, %d seen, want 141 (preflight, 70 changes, 70 resets)", len(at), len(w.sim.Calls()))
	}
	worst := 0
	for i := range at {
		n := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < time.Second; j++ {
			n++
		}
		worst = max(worst, n)
	}
	if worst > rate+burst {
		t.Errorf("%d calls within one second, limit %d+%d", worst, rate, burst)
	}
}

func TestConcurrentRunsOnOneOut(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	first, err := report.OpenFolder(out, false)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for _, resume := range []bool{false, true} {
		if _, err := report.OpenFolder(out, resume); err == nil {
			t.Fatalf("resume=%v: a second run locked a folder in use", resume)
		} else if !strings.Contains(err.Error(), "pid") {
			t.Errorf("resume=%v: error %q does not name the holder", resume, err)
		}
	}
	first.Close()
	again, err := report.OpenFolder(out, true)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again.Close()
}

func TestShardsCoverEveryUserOnce(t *testing.T) {
	const shards = 3
	w := newWorld(t, 90)
	input := users(span(firstUser, 90)...) + "not-a-number\n" + fmt.Sprint(firstUser) + "\n"
	parent := t.TempDir()
	seen := map[int]int{}
	invalidLines := map[int]int{}
	for k := range shards {
		out := filepath.Join(parent, fmt.Sprintf("shard-%d", k))
		cfg := w.config(input, out)
		cfg.Shard, cfg.Shards = k, shards
		sum, err := job.New(cfg).Run(context.Background())
		if sum.ExitCode != report.ExitOK && sum.ExitCode != report.ExitIncomplete {
			t.Fatalf("shard %d: exit %d (%v)", k, sum.ExitCode, err)
		}
		if sum.Shard != fmt.Sprintf("%d/%d", k, shards) {
			t.Errorf("shard %d: summary says shard %q", k, sum.Shard)
		}
		w.checkInvariant(out)
		rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rows {
			id := r.UserID
			switch r.Status {
			case report.Updated:
				seen[id]++
				n++
				if job.ShardOf(id, shards) != k {
					t.Errorf("user %d done by shard %d, belongs to %d", id, k, job.ShardOf(id, shards))
				}
			case report.Invalid:
				invalidLines[r.Line]++
			}
		}
		if n == 0 || n == 90 {
			t.Errorf("shard %d did %d users: the hash does not spread them", k, n)
		}
	}
	for _, id := range span(firstUser, 90) {
		if seen[id] != 1 {
			t.Errorf("user %d updated by %d shards, want exactly 1", id, seen[id])
		}
	}
	if len(invalidLines) != 2 || invalidLines[92] != 1 || invalidLines[93] != 1 {
		t.Errorf("invalid records reported %v, want lines 92 and 93 once each", invalidLines)
	}
	// open on the parent folder merges the shards.
	open, err := report.Open([]string{parent}, []age.Identity{w.id}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 90 {
		t.Errorf("open over the shards printed %d rows, want 90", len(open))
	}
}

// pacedTimes records when the limiter lets each call go.
type pacedTimes struct {
	mu sync.Mutex
	at []time.Time
}

func (p *pacedTimes) record(t time.Time) {
	p.mu.Lock()
	p.at = append(p.at, t)
	p.mu.Unlock()
}

func (p *pacedTimes) sorted() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := append([]time.Time(nil), p.at...)
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	return at
}

// TestBatchFsyncAtMostTenASecond: results are fsynced every syncEvery
// outcomes, but a fast run does not fsync for every batch: at most one
// such fsync every 100 ms (each stalls the appends behind it).
func TestBatchFsyncAtMostTenASecond(t *testing.T) {
	if testing.Short() {
		t.Skip("8,000 users")
	}
	const n = 8000
	w := newWorld(t, n)
	cfg := w.config(users(span(firstUser, n)...), filepath.Join(t.TempDir(), "out"))
	cfg.Workers = 32
	var mu sync.Mutex
	var at []time.Time
	var outcomes []int
	cfg.Hook = func(point string, k int) {
		if point == "batch-fsync" {
			mu.Lock()
			at, outcomes = append(at, time.Now()), append(outcomes, k)
			mu.Unlock()
		}
	}
	start := time.Now()
	if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d: %v", sum.ExitCode, err)
	}
	elapsed := time.Since(start)
	if len(at) == 0 {
		t.Fatalf("no batch fsync in %d outcomes", n)
	}
	for i, k := range outcomes {
		if k%256 != 0 {
			t.Errorf("batch fsync %d after %d outcomes, not a multiple of 256", i, k)
		}
		// 100 ms apart when decided; the hook runs a moment later, so
		// allow for scheduling (without the gap they come ~15 ms apart).
		if i > 0 && at[i].Sub(at[i-1]) < 80*time.Millisecond {
			t.Errorf("batch fsyncs %d and %d %v apart, want about 100ms at least", i-1, i, at[i].Sub(at[i-1]))
		}
	}
	t.Logf("%d batch fsyncs of %d possible in %v", len(at), n/256, elapsed)
}
