package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/report"
	"pwrotate/rotate/ecgridsim"
)

// crashWorld is a simulator in this process and a pwrotate child process
// run against it, so that the child can be killed while the simulator keeps
// the truth.
type crashWorld struct {
	t     *testing.T
	sim   *ecgridsim.Server
	url   string
	id    *age.X25519Identity
	dir   string
	input string
	users int
}

func newCrashWorld(t *testing.T, users int) *crashWorld {
	t.Helper()
	sim := ecgridsim.New()
	sim.AddKey(scriptKey, scriptOwner, "NetworkAdmin")
	var b strings.Builder
	b.WriteString("userId\n")
	for i := range users {
		sim.AddUser(2000+i, scriptPw)
		fmt.Fprintf(&b, "%d\n", 2000+i)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	input := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(input, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return &crashWorld{t: t, sim: sim, url: srv.URL, id: id, dir: dir, input: input, users: users}
}

// command returns the child pwrotate process for a run into out.
func (w *crashWorld) command(ctx context.Context, out string, killAt string, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	args := append([]string{"run", "--input", w.input, "--apply", "--resume", "--out", out,
		"--recipient", w.id.Recipient().String(), "--base-url", w.url, "--rate", "0", "--workers", "4",
		"--timeout", "2s", "--log-format", "json"}, extra...)
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "PWROTATE_TEST_AS_MAIN=1", "ECGRID_API_KEY="+scriptKey, "PWROTATE_TEST_KILL_AT="+killAt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	return cmd, &stderr
}

// waitPasswordCalls waits (20 s at most) until the simulator has seen n
// password changes.
func (w *crashWorld) waitPasswordCalls(n int) {
	deadline := time.Now().Add(20 * time.Second)
	for w.sim.Count("password") < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// run runs a child to its end and returns its exit code (-1: killed).
func (w *crashWorld) run(out, killAt string, extra ...string) int {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, stderr := w.command(ctx, out, killAt, extra...)
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1
		}
		code := ee.ExitCode()
		if code == 1 {
			w.t.Logf("child stderr:\n%s", stderr)
		}
		return code
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return 0
}

// check asserts the contract's invariant after a completed run: every user
// has a row, and every updated user's live password is the sealed one of
// its recorded generation; the sealed files open with the age library.
func (w *crashWorld) check(out string) map[int]int {
	t := w.t
	t.Helper()
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	sealed := map[[2]int]string{}
	files, _ := filepath.Glob(filepath.Join(out, "passwords-g*.age"))
	for _, f := range files {
		ss, err := report.ReadSealed(f, []age.Identity{w.id})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			sealed[[2]int{s.UserID, s.Generation}] = s.Password.Reveal()
		}
	}
	if left, _ := filepath.Glob(filepath.Join(out, "*.tmp")); len(left) > 0 {
		t.Errorf("temporary files left after completion: %v", left)
	}
	gens := map[int]int{}
	seen := map[int]bool{}
	for _, r := range rows {
		if seen[r.UserID] {
			t.Errorf("user %d has two rows", r.UserID)
		}
		seen[r.UserID] = true
		if r.Status != report.Updated {
			t.Errorf("user %d: %s (%s), want updated", r.UserID, r.Status, r.Error)
			continue
		}
		gens[r.Generation]++
		live, _ := w.sim.Password(r.UserID)
		if pw, ok := sealed[[2]int{r.UserID, r.Generation}]; !ok || pw != live {
			t.Errorf("user %d: the live password is not the sealed one of generation %d", r.UserID, r.Generation)
		}
	}
	if len(rows) != w.users {
		t.Errorf("%d rows, want %d", len(rows), w.users)
	}
	return gens
}

// TestKillAtEveryStep kills the child with SIGKILL at named steps, then
// resumes it to completion.
func TestKillAtEveryStep(t *testing.T) {
	points := []string{
		"locked",       // output folder locked, nothing else
		"manifest",     // run.json written, nothing sealed
		"sealing",      // halfway through writing the sealed file
		"sealed",       // sealed, nothing sent
		"answered:1",   // first change applied, its answer not recorded
		"answered:15",  // in the middle of the updates
		"recorded:3",   // recorded in the buffer, not yet fsynced
		"recorded:40",  // the last outcome recorded, not yet synced
		"recorded:270", // 256 outcomes fsynced, 14 more in the buffer
		"answered:300", // the last answer, not recorded
		"complete",     // all recorded, results not yet rewritten
		// Inside each atomic write: the temporary file is complete, not yet
		// renamed. The resume must clear it, not refuse the folder.
		"atomic-run.json:1",     // the manifest
		"atomic-results.csv:1",  // the header of a new results.csv
		"atomic-results.csv:2",  // the final sorted rewrite
		"atomic-summary.json:1", // the summary of the completed run
	}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			w := newCrashWorld(t, 300)
			out := filepath.Join(w.dir, "out")
			if code := w.run(out, point); code != -1 {
				t.Fatalf("the child was not killed at %s (exit %d)", point, code)
			}
			if code := w.run(out, ""); code != 0 {
				t.Fatalf("resume after kill at %s: exit %d", point, code)
			}
			gens := w.check(out)
			t.Logf("kill at %s: rows by generation %v", point, gens)
		})
	}
}

// TestRepeatedRandomKills kills the child at random times three times in a
// row, then lets it finish: the run still converges.
func TestRepeatedRandomKills(t *testing.T) {
	w := newCrashWorld(t, 1200)
	w.sim.SetLatency(5*time.Millisecond, 15*time.Millisecond)
	out := filepath.Join(w.dir, "out")
	killed := 0
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cmd, _ := w.command(ctx, out, "")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill once a random number of further changes reached the server
		// (the child's own start-up time varies too much for a fixed delay).
		target := w.sim.Count("password") + 100 + rand.IntN(200)
		w.waitPasswordCalls(target)
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		cancel()
		if err != nil {
			killed++
		}
		t.Logf("kill %d: %v", i+1, err)
	}
	if code := w.run(out, ""); code != 0 {
		t.Fatalf("final resume: exit %d", code)
	}
	gens := w.check(out)
	t.Logf("%d of 3 kills landed mid-run; rows by generation %v", killed, gens)
}

// TestSIGTERMFinishesInFlight sends SIGTERM mid-run: the child lets the
// requests in flight finish, records them, writes the summary and exits 3
// within the request timeout plus about a second; the sealed file opens.
func TestSIGTERMFinishesInFlight(t *testing.T) {
	w := newCrashWorld(t, 200)
	w.sim.SetLatency(100*time.Millisecond, 300*time.Millisecond)
	out := filepath.Join(w.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, stderr := w.command(ctx, out, "")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.waitPasswordCalls(20)
	sent := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	took := time.Since(sent)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit after SIGTERM: %v, want code 3\n%s", err, stderr)
	}
	t.Logf("SIGTERM to exit: %v (request timeout 2s)", took)
	if took > 3*time.Second {
		t.Errorf("SIGTERM to exit took %v, more than the 2s timeout plus a second", took)
	}
	sum, err := report.ReadSummary(filepath.Join(out, "summary.json"))
	if err != nil || !sum.Interrupted || sum.ExitCode != 3 {
		t.Fatalf("summary after SIGTERM: %+v %v", sum, err)
	}
	if _, err := report.ReadSealed(filepath.Join(out, report.SealedName(1)), []age.Identity{w.id}); err != nil {
		t.Fatalf("sealed file after SIGTERM: %v", err)
	}
	// Every request the server answered before the exit is recorded, so the
	// resumed run sends no new password to those users.
	rows, _ := report.ReadResults(filepath.Join(out, "results.csv"))
	if len(rows) == 0 {
		t.Fatal("nothing recorded before exit")
	}
	if code := w.run(out, ""); code != 0 {
		t.Fatalf("resume: exit %d", code)
	}
	gens := w.check(out)
	if gens[1] < len(rows) {
		t.Errorf("generation 1 has %d rows after resume, but %d were recorded at SIGTERM", gens[1], len(rows))
	}
}

// TestSecondRunOnSameOutRefused starts a slow run, then a second on the
// same folder: the second exits 4 ("busy", retried by Kubernetes within its
// backoff limit, not FailJob) naming the holder; the first completes.
func TestSecondRunOnSameOutRefused(t *testing.T) {
	w := newCrashWorld(t, 30)
	w.sim.SetLatency(50*time.Millisecond, 60*time.Millisecond)
	out := filepath.Join(w.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, _ := w.command(ctx, out, "", "--workers", "1")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	w.waitPasswordCalls(2)
	second, stderr := w.command(ctx, out, "")
	err := second.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("second run: %v, want exit 4 (output folder busy)\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "in use") || !strings.Contains(stderr.String(), "pid") {
		t.Errorf("second run's error does not name the holder:\n%s", stderr)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("first run: %v", err)
	}
	w.check(out)
}

// TestSecondSignalExitsAtOnce sends SIGTERM twice: the child exits 3 at
// once, without waiting for the slow requests in flight; what it had
// recorded survives and --resume completes the run.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	w := newCrashWorld(t, 300)
	w.sim.SetLatency(1500*time.Millisecond, 1800*time.Millisecond)
	out := filepath.Join(w.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, stderr := w.command(ctx, out, "", "--timeout", "10s", "--workers", "8")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.waitPasswordCalls(12)
	sent := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	took := time.Since(sent)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit after two signals: %v, want code 3\n%s", err, stderr)
	}
	t.Logf("two signals to exit: %v (requests in flight take 1.5 s or more)", took)
	if took > 1200*time.Millisecond {
		t.Errorf("the second signal did not exit at once: %v", took)
	}
	if !strings.Contains(stderr.String(), "second signal") {
		t.Errorf("no log line for the second signal:\n%s", stderr)
	}
	w.sim.SetLatency(0, 0)
	if code := w.run(out, ""); code != 0 {
		t.Fatalf("resume: exit %d", code)
	}
	w.check(out)
}

// checkResets asserts that every updated user of out had its sessions
// reset on the simulator, and that its row says so.
func (w *crashWorld) checkResets(out string) {
	w.t.Helper()
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	if err != nil {
		w.t.Fatal(err)
	}
	for _, r := range rows {
		if r.Status != report.Updated {
			continue
		}
		if r.SessionsReset != "true" || r.Error != "" {
			w.t.Errorf("user %d: sessionsReset %q (%s), want true", r.UserID, r.SessionsReset, r.Error)
		}
		if n := w.sim.Resets(r.UserID); n < 1 {
			w.t.Errorf("user %d: updated, but the simulator saw no session reset", r.UserID)
		}
	}
}

// TestResetOwedIsNeverForgotten: with --reset-sessions, a SIGTERM lets the
// resets of the changes in flight finish, and a kill between a change and
// its reset leaves the reset owed; either way --resume completes with exit
// 0 and every updated user's sessions were reset on the server.
func TestResetOwedIsNeverForgotten(t *testing.T) {
	t.Run("SIGTERM", func(t *testing.T) {
		t.Parallel()
		w := newCrashWorld(t, 60)
		w.sim.SetLatency(100*time.Millisecond, 200*time.Millisecond)
		out := filepath.Join(w.dir, "out")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd, stderr := w.command(ctx, out, "", "--reset-sessions")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.waitPasswordCalls(10)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exit after SIGTERM: %v, want code 3\n%s", err, stderr)
		}
		rows := lastRows(t, out)
		notDone := 0
		for _, r := range rows {
			if r.Status == report.Updated && r.SessionsReset != "true" {
				notDone++
				t.Errorf("user %d: reset not done at SIGTERM (%s)", r.UserID, r.Error)
			}
		}
		t.Logf("at SIGTERM: %d users recorded, %d with a reset not done", len(rows), notDone)
		w.sim.SetLatency(0, 0)
		if code := w.run(out, "", "--reset-sessions"); code != 0 {
			t.Fatalf("resume: exit %d", code)
		}
		w.check(out)
		w.checkResets(out)
	})
	t.Run("kill between change and reset", func(t *testing.T) {
		t.Parallel()
		w := newCrashWorld(t, 40)
		out := filepath.Join(w.dir, "out")
		if code := w.run(out, "changed:5", "--reset-sessions"); code != -1 {
			t.Fatalf("the child was not killed at changed:5 (exit %d)", code)
		}
		owed := 0
		for _, r := range lastRows(t, out) {
			if r.Status == report.Updated && r.SessionsReset != "true" {
				owed++
			}
		}
		if owed == 0 {
			t.Fatal("no row records a change whose reset is owed")
		}
		// Without the flag: run.json says the run resets sessions.
		if code := w.run(out, ""); code != 0 {
			t.Fatalf("resume: exit %d", code)
		}
		gens := w.check(out)
		w.checkResets(out)
		t.Logf("%d resets owed at the kill; rows by generation after resume %v", owed, gens)
	})
}

// lastRows returns the last row of each line of out's results.csv (a later
// row of a line supersedes an earlier one).
func lastRows(t *testing.T, out string) map[int]report.Row {
	t.Helper()
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	last := map[int]report.Row{}
	for _, r := range rows {
		last[r.Line] = r
	}
	return last
}

// TestSignalDuringStartUpExitsInterrupted sends SIGTERM while the child is
// held right after its signal handler is installed (before any wiring):
// the exit is 3 (interrupted, resume), never Go's default death nor 2.
func TestSignalDuringStartUpExitsInterrupted(t *testing.T) {
	w := newCrashWorld(t, 5)
	out := filepath.Join(w.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, stderr := w.command(ctx, out, "")
	done := startPaused(ctx, t, cmd, stderr)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	done()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("SIGTERM during start-up: %v, want exit 3\n%s", err, stderr)
	}
	if n := w.sim.Count("password"); n != 0 {
		t.Errorf("%d password calls after a signal during start-up, want 0", n)
	}
	if code := w.run(out, ""); code != 0 {
		t.Fatalf("run after the interrupted start: exit %d", code)
	}
	w.check(out)
}

// startPaused starts cmd (a child pwrotate) held at its start-up pause
// (PWROTATE_TEST_PAUSE_AT=start) and returns once the child says it is
// there; its stderr goes to stderr. Call done after cmd.Wait.
func startPaused(ctx context.Context, t *testing.T, cmd *exec.Cmd, stderr io.Writer) (done func()) {
	t.Helper()
	cmd.Env = append(cmd.Env, "PWROTATE_TEST_PAUSE_AT=start")
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	paused := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "paused at start") {
				close(paused)
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case <-paused:
	case <-ctx.Done():
		t.Fatal("the child never reached its start-up pause")
	}
	return func() { _ = pw.Close() }
}
