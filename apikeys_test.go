package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/report"
	"pwrotate/rotate/ecgridsim"
)

// keyWorld is a crashWorld whose input also holds the caller (user
// scriptOwner, first record) and whose users' old API keys are known.
type keyWorld struct {
	*crashWorld
	oldKeys map[int]string
}

func newKeyWorld(t *testing.T, users int) *keyWorld {
	t.Helper()
	w := newCrashWorld(t, users)
	w.sim.AddUser(scriptOwner, scriptPw)
	var b strings.Builder
	fmt.Fprintf(&b, "userId\n%d\n", scriptOwner)
	for i := range users {
		fmt.Fprintf(&b, "%d\n", 2000+i)
	}
	if err := os.WriteFile(w.input, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	w.users++
	kw := &keyWorld{crashWorld: w, oldKeys: map[int]string{}}
	for _, id := range kw.ids() {
		k, _ := w.sim.APIKey(id)
		kw.oldKeys[id] = k
	}
	return kw
}

// ids returns every user of the input, the caller first.
func (w *keyWorld) ids() []int {
	ids := []int{scriptOwner}
	for i := range w.users - 1 {
		ids = append(ids, 2000+i)
	}
	return ids
}

// keyArgs are the flags of every run of a keyWorld.
var keyArgs = []string{"--rotate-api-keys", "--include-self"}

// checkKeys asserts, after a completed run, the guarantees of
// --rotate-api-keys: every key generated for a changed user is sealed (a
// key read back after a lost answer or a kill as a candidate, and then
// one more generated: so a user's key may be generated more than once,
// never without being sealed) and the live key is the sealed one `open
// --api-keys` gives (opened with the age library); the caller's key is
// untouched; every row says apiKeyRotated=true (the caller's: empty); no
// key, old or new, is in plaintext in any file of the folder but the
// sealed batches.
func (w *keyWorld) checkKeys(out string) {
	t := w.t
	t.Helper()
	w.check(out)
	sealed, err := report.OpenAPIKeys([]string{out}, []age.Identity{w.id})
	if err != nil {
		t.Fatal(err)
	}
	sealedBy := map[int]string{}
	for _, k := range sealed {
		sealedBy[k.UserID] = k.Key.Reveal()
	}
	everSealed := map[int]map[string]bool{} // by user, every key in any batch
	batches, err := report.APIKeyBatches(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range batches {
		ks, err := report.ReadSealedAPIKeys(filepath.Join(out, report.APIKeysName(n)), []age.Identity{w.id})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if everSealed[k.UserID] == nil {
				everSealed[k.UserID] = map[string]bool{}
			}
			everSealed[k.UserID][k.Key.Reveal()] = true
		}
	}
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		want := "true"
		if r.UserID == scriptOwner {
			want = ""
		}
		if r.APIKeyRotated != want {
			t.Errorf("user %d: apiKeyRotated %q (%s), want %q", r.UserID, r.APIKeyRotated, r.Error, want)
		}
	}
	secrets := []string{scriptKey}
	for _, id := range w.ids() {
		live, _ := w.sim.APIKey(id)
		secrets = append(secrets, live, w.oldKeys[id])
		if id == scriptOwner {
			if n := w.sim.KeysGenerated(id); n != 0 || live != w.oldKeys[id] {
				t.Errorf("the caller's key was rotated (%d generations)", n)
			}
			if _, ok := sealedBy[id]; ok {
				t.Errorf("the caller's key is sealed")
			}
			continue
		}
		if n := w.sim.KeysGenerated(id); n < 1 || n != len(everSealed[id]) {
			t.Errorf("user %d: key generated %d times, %d keys sealed: want every key generated sealed", id, n, len(everSealed[id]))
		}
		if got, ok := sealedBy[id]; !ok || got != live {
			t.Errorf("user %d: the live key is not the sealed one (sealed: %v)", id, ok)
		}
	}
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if report.IsAPIKeysFile(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Errorf("%s holds an API key in plaintext", e.Name())
				break
			}
		}
	}
}

// TestAPIKeysLostAnswers rotates keys while key-generate answers are lost
// (applied then dropped, applied then held past --timeout) or fail with
// 500 (not applied, unknown to pwrotate; read back twice, one --timeout
// apart): read-backs settle each (a key read back sealed as a candidate,
// then one more generated), so every user ends with a new key, live and
// sealed, and no key generated is lost.
func TestAPIKeysLostAnswers(t *testing.T) {
	w := newKeyWorld(t, 300)
	// One fault for each of 36 users (a user whose every generate met a
	// lost answer would fail after --max-attempts).
	for i := range 36 {
		f := ecgridsim.Fault{Endpoint: "keygen", UserID: 2000 + i, Kind: ecgridsim.ApplyThenDrop}
		switch {
		case i >= 34:
			f.Kind, f.Hold = ecgridsim.ApplyThenHold, 3*time.Second
		case i >= 30:
			f.Kind = ecgridsim.ServerError
		}
		w.sim.Inject(f)
	}
	out := filepath.Join(w.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, stderr := w.command(ctx, out, "", append([]string{"--log-level", "debug"}, keyArgs...)...)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("run: %v, want exit 0\n%s", err, stderr)
	}
	w.checkKeys(out)
	// Nor in the logs and the plan.
	for _, id := range w.ids() {
		live, _ := w.sim.APIKey(id)
		for _, k := range []string{live, w.oldKeys[id]} {
			if strings.Contains(stderr.String(), k) || strings.Contains(stdout.String(), k) {
				t.Fatalf("user %d: an API key is in the output or the logs", id)
			}
		}
	}
	sum, err := report.ReadSummary(filepath.Join(out, "summary.json"))
	if err != nil || sum.APIKeys == nil {
		t.Fatalf("summary: %+v %v", sum, err)
	}
	k := sum.APIKeys
	t.Logf("keys rotated %d, key-generate requests %d, read-backs %d, generates avoided %d, simulator keygen calls %d",
		k.Rotated, k.Generated, k.ReadBacks, k.GeneratesAvoided, w.sim.Count("keygen"))
	if k.Rotated != 300 || k.NotRotated != 0 || k.ReadBacks != 40 || k.GeneratesAvoided != 0 || k.Generated != 336 {
		t.Errorf("summary apiKeys %+v: want 300 rotated, 40 read-backs (36 + a second for each 500), 336 generates (one more for each fault), none avoided", *k)
	}
}

// TestAPIKeysFailedForGood: a key-generate refused with 404 is final for
// that user: exit 2, its row stays updated and says why; the others are
// rotated. A --resume settles the key still owed.
func TestAPIKeysFailedForGood(t *testing.T) {
	w := newKeyWorld(t, 20)
	w.sim.Inject(ecgridsim.Fault{Endpoint: "keygen", UserID: 2005, Kind: ecgridsim.Envelope, Status: 404, Code: "ObjectNotFound"})
	out := filepath.Join(w.dir, "out")
	if code := w.run(out, "", keyArgs...); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.UserID != 2005 {
			continue
		}
		if r.Status != report.Updated || r.APIKeyRotated != "false" || !strings.Contains(r.Error, "API key not rotated") || !strings.Contains(r.Error, "404") {
			t.Errorf("row of the failed key: %+v", r)
		}
	}
	if n := w.sim.KeysGenerated(2005); n != 0 {
		t.Fatalf("refused key generated %d times", n)
	}
	if code := w.run(out, "", keyArgs...); code != 0 {
		t.Fatalf("resume: exit %d, want 0", code)
	}
	w.checkKeys(out)
}

// TestAPIKeysKillAtEveryStep kills the child with SIGKILL at the key
// rotation's kill points (some answers lost on the way), then resumes it:
// every key is generated once, live and sealed.
func TestAPIKeysKillAtEveryStep(t *testing.T) {
	points := []string{
		"recorded:5",      // password recorded, key owed, not begun
		"key-logged:1",    // digest durable, nothing generated
		"key-logged:120",  // in the middle
		"key-answered:1",  // first key generated, not sealed
		"key-answered:3",  // its answer was lost (applied), read back pending
		"key-answered:90", // in the middle
		"keys-sealed:1",   // a batch durable, its rows not recorded
		"complete",        // all recorded, results not yet rewritten
	}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			w := newKeyWorld(t, 150)
			w.sim.Inject(ecgridsim.Fault{Endpoint: "keygen", Kind: ecgridsim.ApplyThenDrop, Times: 2})
			w.sim.Inject(ecgridsim.Fault{Endpoint: "keygen", Kind: ecgridsim.ApplyThenDrop, Times: 1})
			out := filepath.Join(w.dir, "out")
			if code := w.run(out, point, keyArgs...); code != -1 {
				t.Fatalf("the child was not killed at %s (exit %d)", point, code)
			}
			if code := w.run(out, "", keyArgs...); code != 0 {
				t.Fatalf("resume after kill at %s: exit %d", point, code)
			}
			w.checkKeys(out)
		})
	}
}

// TestAPIKeysRandomKills kills the child at random moments of the key
// rotation three times (answers lost too), then lets it finish.
func TestAPIKeysRandomKills(t *testing.T) {
	w := newKeyWorld(t, 600)
	w.sim.SetLatency(2*time.Millisecond, 8*time.Millisecond)
	w.sim.Inject(ecgridsim.Fault{Endpoint: "keygen", Kind: ecgridsim.ApplyThenDrop, Times: 20})
	out := filepath.Join(w.dir, "out")
	killed := 0
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cmd, _ := w.command(ctx, out, "", keyArgs...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		target := w.sim.Count("keygen") + 30 + rand.IntN(120)
		deadline := time.Now().Add(20 * time.Second)
		for w.sim.Count("keygen") < target && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		cancel()
		if err != nil {
			killed++
		}
		t.Logf("kill %d after %d keygen calls: %v", i+1, w.sim.Count("keygen"), err)
	}
	if code := w.run(out, "", keyArgs...); code != 0 {
		t.Fatalf("final resume: exit %d", code)
	}
	w.checkKeys(out)
	sum, _ := report.ReadSummary(filepath.Join(out, "summary.json"))
	if sum.APIKeys != nil {
		t.Logf("%d of 3 kills landed mid-run; last run: %+v", killed, *sum.APIKeys)
	}
}

// TestAPIKeysSIGTERM sends SIGTERM while keys are being rotated: the
// child lets the rotations begun finish, seals the keys it holds, exits 3;
// no key obtained is lost (what was not sealed is settled by --resume) and
// none is generated twice.
func TestAPIKeysSIGTERM(t *testing.T) {
	w := newKeyWorld(t, 200)
	w.sim.SetLatency(20*time.Millisecond, 60*time.Millisecond)
	out := filepath.Join(w.dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, stderr := w.command(ctx, out, "", keyArgs...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for w.sim.Count("keygen") < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 3 {
		t.Fatalf("exit after SIGTERM: %v, want code 3\n%s", err, stderr)
	}
	sum, err := report.ReadSummary(filepath.Join(out, "summary.json"))
	if err != nil || sum.APIKeys == nil || !sum.Interrupted {
		t.Fatalf("summary after SIGTERM: %+v %v", sum, err)
	}
	// Every key generated before the exit is sealed: none is owed to a
	// read-back by a rotation the signal cut short.
	generated := 0
	for _, id := range w.ids() {
		generated += w.sim.KeysGenerated(id)
	}
	if sum.APIKeys.RotatedNow != generated {
		t.Errorf("at SIGTERM %d keys generated, %d sealed and recorded", generated, sum.APIKeys.RotatedNow)
	}
	if code := w.run(out, "", keyArgs...); code != 0 {
		t.Fatalf("resume: exit %d", code)
	}
	w.checkKeys(out)
}

// TestAPIKeysWithResetsKilled: with --reset-sessions, the change, its
// reset and its key are one unit; killed between any two, --resume does
// what is owed (the reset, the key) once, and the final row says both.
func TestAPIKeysWithResetsKilled(t *testing.T) {
	for _, point := range []string{"changed:3", "key-logged:5", "keys-sealed:1"} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			w := newKeyWorld(t, 60)
			out := filepath.Join(w.dir, "out")
			args := append([]string{"--reset-sessions"}, keyArgs...)
			if code := w.run(out, point, args...); code != -1 {
				t.Fatalf("the child was not killed at %s (exit %d)", point, code)
			}
			if code := w.run(out, "", args...); code != 0 {
				t.Fatalf("resume after kill at %s: exit %d", point, code)
			}
			w.checkKeys(out)
			rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				if r.SessionsReset != "true" {
					t.Errorf("user %d: sessionsReset %q (%s)", r.UserID, r.SessionsReset, r.Error)
				}
				if r.Error != "" {
					t.Errorf("user %d: error %q on a complete row", r.UserID, r.Error)
				}
			}
		})
	}
}
