package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/rogpeppe/go-internal/testscript"

	"pwrotate/report"
	"pwrotate/rotate/ecgridsim"
)

// TestMain makes the test binary double as the pwrotate command: as
// "pwrotate" inside test scripts, and when PWROTATE_TEST_AS_MAIN=1 for the
// crash tests that kill a real child process.
func TestMain(m *testing.M) {
	if os.Getenv("PWROTATE_TEST_AS_MAIN") == "1" {
		os.Exit(realMain())
	}
	testscript.Main(m, map[string]func(){
		"pwrotate": func() { os.Exit(realMain()) },
	})
}

const (
	scriptKey   = "script-api-key-91c2"
	scriptLow   = "script-low-key-44aa"
	scriptPw    = "Initial-Passw0rd!"
	scriptOwner = 7
)

type simKey struct{}
type idKey struct{}
type oldKeysKey struct{}

// TestScripts runs the command-line scripts in testdata/script against an
// in-process ECGrid simulator: $SIM_URL, $ECGRID_API_KEY (NetworkAdmin user
// 7), $LOW_KEY (NetworkUser), users 1000-1099 (in the directory: network
// 1+id%3, every tenth Suspended, user 1012 with a formula login), and an
// age identity in $WORK/key.txt whose recipient is $RECIPIENT.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			sim := ecgridsim.New()
			sim.AddKey(scriptKey, scriptOwner, "NetworkAdmin")
			sim.AddKey(scriptLow, 8, "NetworkUser")
			sim.AddUser(scriptOwner, scriptPw)
			for id := 1000; id < 1100; id++ {
				sim.AddUser(id, scriptPw)
				status := "Active"
				if id%10 == 9 {
					status = "Suspended"
				}
				login := "user-" + strconv.Itoa(id)
				if id == 1012 {
					login = "=HYPERLINK(\"http://evil\")"
				}
				sim.AddDirectoryUser(ecgridsim.DirUser{UserID: id, Login: login, Email: login + "@example.com",
					NetworkID: 1 + id%3, MailboxID: 100 + id%3, AuthLevel: "MailboxUser", Status: status})
			}
			// Every user's API key before the script, for noleak.
			var oldKeys []string
			for _, id := range append([]int{scriptOwner}, scriptUsers()...) {
				k, _ := sim.APIKey(id)
				oldKeys = append(oldKeys, k)
			}
			env.Values[oldKeysKey{}] = oldKeys
			srv := httptest.NewServer(sim)
			env.Defer(srv.Close)
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(env.WorkDir, "key.txt"), []byte(id.String()+"\n"), 0o600); err != nil {
				return err
			}
			env.Setenv("PUSHGW_URL", fakePushgateway(env, filepath.Join(env.WorkDir, "pushed.txt")))
			env.Values[simKey{}] = sim
			env.Values[idKey{}] = id
			env.Setenv("SIM_URL", srv.URL)
			env.Setenv("ECGRID_API_KEY", scriptKey)
			env.Setenv("LOW_KEY", scriptLow)
			env.Setenv("RECIPIENT", id.Recipient().String())
			env.Setenv("PWROTATE_LOG_FORMAT", "json")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": cmdExitCode,
			"live":     cmdLive,
			"simcalls": cmdSimCalls,
			"simfault": cmdSimFault,
			"simlist":  cmdSimList,
			"noleak":   cmdNoLeak,
			"livekeys": cmdLiveKeys,
			"pushedat": cmdPushedAt,
		},
	})
}

// exitcode N command args...: run the command and check its exit code.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exitcode: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}

// live OUT [N]: for every updated row of OUT/results.csv, the sealed
// password of its generation (opened with the age library) is the
// simulator's live password; with N, exactly N rows are updated.
func cmdLive(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: live OUT [N]")
	}
	sim := ts.Value(simKey{}).(*ecgridsim.Server)
	id := ts.Value(idKey{}).(*age.X25519Identity)
	out := ts.MkAbs(args[0])
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	ts.Check(err)
	sealed := map[[2]int]string{}
	files, _ := filepath.Glob(filepath.Join(out, "passwords-g*.age"))
	for _, f := range files {
		ss, err := report.ReadSealed(f, []age.Identity{id})
		ts.Check(err)
		for _, s := range ss {
			sealed[[2]int{s.UserID, s.Generation}] = s.Password.Reveal()
		}
	}
	updated := 0
	for _, r := range rows {
		if r.Status != report.Updated {
			continue
		}
		updated++
		live, _ := sim.Password(r.UserID)
		if pw, ok := sealed[[2]int{r.UserID, r.Generation}]; !ok || pw != live {
			ts.Fatalf("user %d: the live password is not the sealed one of generation %d", r.UserID, r.Generation)
		}
	}
	if len(args) > 1 {
		want, _ := strconv.Atoi(args[1])
		if updated != want {
			ts.Fatalf("%d updated rows, want %d", updated, want)
		}
	}
}

// simcalls ENDPOINT N: the simulator saw N requests for ENDPOINT.
func cmdSimCalls(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: simcalls ENDPOINT N")
	}
	sim := ts.Value(simKey{}).(*ecgridsim.Server)
	want, _ := strconv.Atoi(args[1])
	if got := sim.Count(args[0]); (got == want) == neg {
		ts.Fatalf("simulator saw %d %s calls, want %s%d", got, args[0], map[bool]string{true: "not ", false: ""}[neg], want)
	}
}

// simfault ENDPOINT USERID KIND [STATUS [TIMES]]: inject a fault.
func cmdSimFault(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: simfault ENDPOINT USERID KIND [STATUS [TIMES]]")
	}
	sim := ts.Value(simKey{}).(*ecgridsim.Server)
	user, _ := strconv.Atoi(args[1])
	kinds := map[string]ecgridsim.FaultKind{
		"429": ecgridsim.TooManyRequests, "500": ecgridsim.ServerError, "html": ecgridsim.HTMLError,
		"problem": ecgridsim.Problem, "false": ecgridsim.SuccessFalse, "envelope": ecgridsim.Envelope,
		"drop": ecgridsim.ApplyThenDrop, "hold": ecgridsim.ApplyThenHold,
	}
	kind, ok := kinds[args[2]]
	if !ok {
		ts.Fatalf("simfault: unknown kind %q", args[2])
	}
	f := ecgridsim.Fault{Endpoint: args[0], UserID: user, Kind: kind, Hold: 5 * time.Second}
	if len(args) > 3 {
		f.Status, _ = strconv.Atoi(args[3])
	}
	if len(args) > 4 {
		f.Times, _ = strconv.Atoi(args[4])
	}
	if kind == ecgridsim.Envelope {
		f.Code = map[int]string{400: "InvalidParameter", 401: "InvalidAPIKey", 403: "AccessDenied", 404: "ObjectNotFound"}[f.Status]
	}
	sim.Inject(f)
}

// scriptUsers are the users 1000-1099 of the scripts' simulator.
func scriptUsers() []int {
	ids := make([]int, 0, 100)
	for id := 1000; id < 1100; id++ {
		ids = append(ids, id)
	}
	return ids
}

// livekeys OUT... N: exactly N rows of the OUT folders' results.csv say
// apiKeyRotated=true, and for each every key generated for the user is
// sealed in that OUT/apikeys-*.age (one more after a key read back, sealed
// as a candidate) and the live key is the one open --api-keys gives; no
// other user's key was generated.
func cmdLiveKeys(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: livekeys OUT... N")
	}
	sim := ts.Value(simKey{}).(*ecgridsim.Server)
	id := ts.Value(idKey{}).(*age.X25519Identity)
	rotated := map[int]bool{}
	for _, a := range args[:len(args)-1] {
		liveKeysIn(ts, sim, id, ts.MkAbs(a), rotated)
	}
	for _, u := range append([]int{scriptOwner}, scriptUsers()...) {
		if !rotated[u] && sim.KeysGenerated(u) != 0 {
			ts.Fatalf("user %d: API key generated but not recorded as rotated", u)
		}
	}
	if want, _ := strconv.Atoi(args[len(args)-1]); len(rotated) != want {
		ts.Fatalf("%d API keys rotated, want %d", len(rotated), want)
	}
}

// liveKeysIn checks the rotated keys of one output folder for livekeys,
// adding their users to rotated.
func liveKeysIn(ts *testscript.TestScript, sim *ecgridsim.Server, id age.Identity, out string, rotated map[int]bool) {
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	ts.Check(err)
	sealed := map[int]string{}
	if keys, err := report.OpenAPIKeys([]string{out}, []age.Identity{id}); err == nil {
		for _, k := range keys {
			sealed[k.UserID] = k.Key.Reveal()
		}
	}
	everSealed := map[int]map[string]bool{}
	batches, err := report.APIKeyBatches(out)
	ts.Check(err)
	for _, n := range batches {
		keys, err := report.ReadSealedAPIKeys(filepath.Join(out, report.APIKeysName(n)), []age.Identity{id})
		ts.Check(err)
		for _, k := range keys {
			if everSealed[k.UserID] == nil {
				everSealed[k.UserID] = map[string]bool{}
			}
			everSealed[k.UserID][k.Key.Reveal()] = true
		}
	}
	for _, r := range rows {
		if r.APIKeyRotated != "true" {
			continue
		}
		rotated[r.UserID] = true
		live, _ := sim.APIKey(r.UserID)
		if k, ok := sealed[r.UserID]; !ok || k != live {
			ts.Fatalf("user %d: the live API key is not the sealed one", r.UserID)
		}
		if n := sim.KeysGenerated(r.UserID); n < 1 || n != len(everSealed[r.UserID]) {
			ts.Fatalf("user %d: API key generated %d times, %d keys sealed: want every key generated sealed", r.UserID, n, len(everSealed[r.UserID]))
		}
	}
}

// simlist [cap N] [ignorepage] [object]: set how the simulator pages
// POST /v2/users/list.
func cmdSimList(ts *testscript.TestScript, neg bool, args []string) {
	sim := ts.Value(simKey{}).(*ecgridsim.Server)
	var b ecgridsim.ListBehavior
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "cap":
			i++
			if i == len(args) {
				ts.Fatalf("usage: simlist [cap N] [ignorepage] [object]")
			}
			b.PageCap, _ = strconv.Atoi(args[i])
		case "ignorepage":
			b.IgnorePageNo = true
		case "object":
			b.Shape = ecgridsim.ListObject
		default:
			ts.Fatalf("simlist: unknown %q", args[i])
		}
	}
	sim.SetListBehavior(b)
}

// noleak FILE...: none of the files (or folders' files) holds a password
// the simulator knows, the API key, or a user's API key (the live one, or
// the one it had when the script started).
func cmdNoLeak(ts *testscript.TestScript, neg bool, args []string) {
	sim := ts.Value(simKey{}).(*ecgridsim.Server)
	secrets := []string{scriptKey, scriptLow, scriptPw}
	for id := 1000; id < 1100; id++ {
		if pw, ok := sim.Password(id); ok && pw != "" {
			secrets = append(secrets, pw)
		}
	}
	secrets = append(secrets, ts.Value(oldKeysKey{}).([]string)...)
	for _, id := range append([]int{scriptOwner}, scriptUsers()...) {
		if k, ok := sim.APIKey(id); ok {
			secrets = append(secrets, k)
		}
	}
	for _, a := range args {
		var files []string
		if a == "stdout" || a == "stderr" {
			files = append(files, a)
		} else if fi, err := os.Stat(ts.MkAbs(a)); err == nil && fi.IsDir() {
			ents, _ := os.ReadDir(ts.MkAbs(a))
			for _, e := range ents {
				if !e.IsDir() {
					files = append(files, filepath.Join(ts.MkAbs(a), e.Name()))
				}
			}
		} else {
			files = append(files, ts.MkAbs(a))
		}
		for _, f := range files {
			var text string
			if f == "stdout" || f == "stderr" {
				text = ts.ReadFile(f)
			} else {
				b, err := os.ReadFile(f)
				ts.Check(err)
				text = string(b)
			}
			for _, s := range secrets {
				if strings.Contains(text, s) {
					ts.Fatalf("%s holds a password or the API key", f)
				}
			}
		}
	}
}

// pushedat PUSHED SUMMARY N: the fake Pushgateway's file PUSHED holds N
// values of pwrotate_last_success_timestamp_seconds, each the finishedAt
// recorded in SUMMARY (summary.json), to the millisecond.
func cmdPushedAt(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: pushedat PUSHED SUMMARY N")
	}
	sum, err := report.ReadSummary(ts.MkAbs(args[1]))
	ts.Check(err)
	want, _ := strconv.Atoi(args[2])
	got := 0
	for _, line := range strings.Split(ts.ReadFile(args[0]), "\n") {
		v, ok := strings.CutPrefix(line, "pwrotate_last_success_timestamp_seconds ")
		if !ok {
			continue
		}
		got++
		f, err := strconv.ParseFloat(v, 64)
		ts.Check(err)
		at := time.Unix(0, int64(f*1e9))
		if d := at.Sub(sum.FinishedAt); d > time.Millisecond || d < -time.Millisecond {
			ts.Fatalf("push %d: last success at %v, but summary.json says the run finished at %v", got, at.UTC(), sum.FinishedAt)
		}
	}
	if got != want {
		ts.Fatalf("%d pushes of pwrotate_last_success_timestamp_seconds, want %d", got, want)
	}
}

// newSim returns a simulator where scriptKey belongs to NetworkAdmin user
// scriptOwner (who exists) and users first..first+n-1 exist with scriptPw.
func newSim(first, n int) *ecgridsim.Server {
	sim := ecgridsim.New()
	sim.AddKey(scriptKey, scriptOwner, "NetworkAdmin")
	sim.AddUser(scriptOwner, scriptPw)
	for id := first; id < first+n; id++ {
		sim.AddUser(id, scriptPw)
	}
	return sim
}

// serveSim serves sim on loopback for the test's duration.
func serveSim(t *testing.T, sim *ecgridsim.Server) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return srv
}

// TestStockAgeAvailable makes CI fail, rather than skip the scripts' stock
// age checks, when the age command is missing (.ci/run installs it).
func TestStockAgeAvailable(t *testing.T) {
	if _, err := exec.LookPath("age"); err != nil {
		if os.Getenv("PWROTATE_REQUIRE_AGE") == "1" {
			t.Fatalf("the age command is required here: %v", err)
		}
		t.Skip("age is not on PATH: the scripts skip their stock-age checks")
	}
}

// fakePushgateway stands in for a Prometheus Pushgateway: it checks each
// push (POST to /metrics/job/...), decodes the exposition format the push
// client sends, and appends it as text (with the path) to file.
func fakePushgateway(env *testscript.Env, file string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/metrics/job/") {
			http.Error(w, "want POST /metrics/job/...", http.StatusBadRequest)
			return
		}
		var text bytes.Buffer
		fmt.Fprintf(&text, "# push %s\n", r.URL.Path)
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err == io.EOF {
				break
			} else if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if _, err := expfmt.MetricFamilyToText(&text, &mf); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			_, _ = f.Write(text.Bytes())
			_ = f.Close()
		}
		w.WriteHeader(http.StatusOK)
	}))
	env.Defer(srv.Close)
	return srv.URL
}
