package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/report"
	"pwrotate/rotate/ecgridsim"
)

// groupWorld is a crashWorld whose users are spread over networks 1 to 4,
// the input as 'pwrotate users' writes it (networkId column; every
// eleventh user without one), and a recipients map that gives networks 1,
// 2 and 3 each their own key and leaves network 4 out. The global key is
// the crashWorld's.
type groupWorld struct {
	*crashWorld
	network map[int]int                 // user → network (0: none in the input)
	keys    map[int]*age.X25519Identity // network → its key
	keyFile map[int]string              // network → its identity file; 0: the global key
	mapFile string
	env     []string // extra environment of the children (SSL_CERT_FILE)
}

func newGroupWorld(t *testing.T, users int) *groupWorld {
	t.Helper()
	w := &groupWorld{crashWorld: newCrashWorld(t, users), network: map[int]int{}, keys: map[int]*age.X25519Identity{}, keyFile: map[int]string{}}
	var in strings.Builder
	in.WriteString("userId,login,networkId,mailboxId,status\n")
	for i := range users {
		id := 2000 + i
		n := 1 + i%4
		w.network[id] = n
		cell := strconv.Itoa(n)
		if i%11 == 10 {
			w.network[id], cell = 0, ""
		}
		fmt.Fprintf(&in, "%d,user-%d,%s,%d,Active\n", id, id, cell, 100*n+1)
		w.sim.AddDirectoryUser(ecgridsim.DirUser{UserID: id, Login: fmt.Sprintf("user-%d", id), NetworkID: n, MailboxID: 100*n + 1,
			AuthLevel: "MailboxUser", Status: "Active"})
	}
	if err := os.WriteFile(w.input, []byte(in.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var m strings.Builder
	m.WriteString("networkId,recipient,team\n")
	for n := 1; n <= 3; n++ {
		k, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		w.keys[n] = k
		w.keyFile[n] = filepath.Join(w.dir, fmt.Sprintf("network-%d-TEST-ONLY.key", n))
		if err := os.WriteFile(w.keyFile[n], []byte(k.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&m, "%d,%s,team %d\n", n, k.Recipient(), n)
	}
	w.keyFile[0] = filepath.Join(w.dir, "global-TEST-ONLY.key")
	if err := os.WriteFile(w.keyFile[0], []byte(w.id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.mapFile = filepath.Join(w.dir, "map.csv")
	if err := os.WriteFile(w.mapFile, []byte(m.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// sealedFor is the group a user's passwords must be sealed for.
func (w *groupWorld) sealedFor(user int) string {
	if n := w.network[user]; n >= 1 && n <= 3 {
		return "network-" + strconv.Itoa(n)
	}
	return "global"
}

// runChild runs pwrotate with args to its end: the exit code (-1: killed)
// and its stdout and stderr.
func (w *groupWorld) runChild(killAt string, args ...string) (int, string, string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "PWROTATE_TEST_AS_MAIN=1", "ECGRID_API_KEY="+scriptKey, "PWROTATE_TEST_KILL_AT="+killAt), w.env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		if ee.ProcessState.String() == "signal: killed" {
			return -1, stdout.String(), stderr.String()
		}
		return ee.ExitCode(), stdout.String(), stderr.String()
	case err != nil:
		w.t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

// apply runs 'pwrotate run --apply --resume' into out with the map (and
// extra flags), killed at killAt when set.
func (w *groupWorld) apply(out, killAt string, extra ...string) (int, string) {
	w.t.Helper()
	args := append([]string{"run", "--input", w.input, "--apply", "--resume", "--out", out,
		"--recipient", w.id.Recipient().String(), "--recipients-map", w.mapFile, "--base-url", w.url, "--rate", "0",
		"--workers", "4", "--timeout", "2s", "--log-format", "json"}, extra...)
	code, _, stderr := w.runChild(killAt, args...)
	return code, stderr
}

// checkGroups checks a completed run in out: every user updated with its
// live password sealed (w.check); each file holds one group's users and is
// named for it; each network's key opens exactly its network's files, and
// 'pwrotate open' with it prints exactly that network's users with their
// live passwords (exit 0, the other files counted on stderr); the users of
// network 4 and those without a network are in the global files only,
// which no network key opens; the global key opens every user.
func (w *groupWorld) checkGroups(out string) {
	t := w.t
	t.Helper()
	w.check(out)
	rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
	if err != nil {
		t.Fatal(err)
	}
	gen := map[int]int{}
	for _, r := range rows {
		gen[r.UserID] = r.Generation
		if r.SealedFor != w.sealedFor(r.UserID) {
			t.Errorf("user %d (network %d): sealedFor %q, want %q", r.UserID, w.network[r.UserID], r.SealedFor, w.sealedFor(r.UserID))
		}
	}
	files, err := report.SealedFiles(out)
	if err != nil || len(files) == 0 {
		t.Fatalf("sealed files %v %v", files, err)
	}
	for _, name := range files {
		_, g, _ := report.ParseSealedName(name)
		ss, err := report.ReadSealed(filepath.Join(out, name), []age.Identity{w.id})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if w.sealedFor(s.UserID) != g.String() {
				t.Errorf("%s holds user %d of network %d", name, s.UserID, w.network[s.UserID])
			}
		}
		for n := 1; n <= 3; n++ {
			_, err := report.ReadSealed(filepath.Join(out, name), []age.Identity{w.keys[n]})
			if opens := err == nil; opens != (g.String() == "network-"+strconv.Itoa(n)) {
				t.Errorf("network %d's key opens %s: %v", n, name, opens)
			}
		}
	}
	for n := 0; n <= 3; n++ {
		code, stdout, stderr := w.runChild("", "open", "--identity", w.keyFile[n], out)
		if code != 0 {
			t.Fatalf("open with network %d's key: exit %d\n%s", n, code, stderr)
		}
		recs, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
		if err != nil || len(recs) == 0 || !slices.Equal(recs[0], []string{"userId", "password", "status", "generation"}) {
			t.Fatalf("open with network %d's key printed %d records: %v", n, len(recs), err)
		}
		var got []int
		for _, rec := range recs[1:] {
			id, _ := strconv.Atoi(rec[0])
			got = append(got, id)
			live, _ := w.sim.Password(id)
			if rec[1] != live || rec[2] != "updated" || rec[3] != strconv.Itoa(gen[id]) {
				t.Errorf("open with network %d's key: user %d is not its live password (status %s, generation %s, want %d)", n, id, rec[2], rec[3], gen[id])
			}
		}
		var want []int
		for id := range w.network {
			if n == 0 || w.sealedFor(id) == "network-"+strconv.Itoa(n) {
				want = append(want, id)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("open with network %d's key printed %d users, want %d (its network's)", n, len(got), len(want))
		}
		notOpened := strings.Contains(stderr, "sealed to other recipients (other groups' files) and were not opened")
		if notOpened != (n != 0) {
			t.Errorf("open with network %d's key: stderr %q", n, stderr)
		}
	}
	raw, _ := os.ReadFile(w.mapFile)
	sum := sha256.Sum256(raw)
	var m struct {
		RecipientsMap struct {
			Column string `json:"column"`
			SHA256 string `json:"sha256"`
		} `json:"recipientsMap"`
	}
	if b, err := os.ReadFile(filepath.Join(out, report.ManifestName)); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("run.json: %v", err)
	}
	if m.RecipientsMap.SHA256 != hex.EncodeToString(sum[:]) || m.RecipientsMap.Column != "networkId" {
		t.Errorf("run.json records the map as %+v, want networkId and the file's sha256", m.RecipientsMap)
	}
}

// TestGroupsSealedPerNetwork runs the real binary over four networks with
// a map that leaves one out, killed with SIGKILL at several steps and
// resumed, over plain HTTP and over TLS: each network's key opens exactly
// its users' live passwords, the left-out network's users are in files
// only the global key opens, the global key opens every user; a resumed
// run keeps each user in its group, new generations included.
func TestGroupsSealedPerNetwork(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		for _, killAt := range []string{"", "sealing", "sealed", "answered:40", "recorded:90"} {
			name := "http"
			if overTLS {
				name = "tls"
			}
			t.Run(name+"/"+cmpOr(killAt, "no kill"), func(t *testing.T) {
				t.Parallel()
				w := newGroupWorld(t, 200)
				if overTLS {
					w.serveTLS(t)
				}
				out := filepath.Join(w.dir, "out")
				code, stderr := w.apply(out, killAt)
				switch {
				case killAt == "" && code != 0:
					t.Fatalf("exit %d\n%s", code, stderr)
				case killAt != "" && code != -1:
					t.Fatalf("not killed at %s: exit %d\n%s", killAt, code, stderr)
				}
				if killAt != "" {
					if code, stderr := w.apply(out, ""); code != 0 {
						t.Fatalf("resume after a kill at %s: exit %d\n%s", killAt, code, stderr)
					}
				}
				w.checkGroups(out)
				if killAt == "answered:40" {
					// The users whose outcome the kill left unknown got a
					// second generation, sealed in their own group's files.
					if names, _ := report.SealedFiles(out); !slices.Contains(names, "passwords-g0002-network-1.age") {
						t.Errorf("no second generation for network 1 after a kill mid-run: %v", names)
					}
				}
			})
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// serveTLS moves w's simulator behind TLS, trusted by the children
// through SSL_CERT_FILE.
func (w *groupWorld) serveTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(w.sim)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(w.dir, "test-ca.pem") // the httptest CA: a test fixture, no secret
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	w.url = srv.URL
	w.crashWorld.url = srv.URL
	w.env = append(w.env, "SSL_CERT_FILE="+ca)
}

// TestGroupsResumeRefusesAnotherMap: a run killed mid-way and resumed with
// another map, or without one, is exit 1 before any call; with the same
// map it completes.
func TestGroupsResumeRefusesAnotherMap(t *testing.T) {
	w := newGroupWorld(t, 120)
	out := filepath.Join(w.dir, "out")
	if code, stderr := w.apply(out, "answered:30"); code != -1 {
		t.Fatalf("not killed: exit %d\n%s", code, stderr)
	}
	raw, _ := os.ReadFile(w.mapFile)
	other := filepath.Join(w.dir, "other-map.csv")
	if err := os.WriteFile(other, append(raw, fmt.Sprintf("4,%s,team 4\n", w.keys[1].Recipient())...), 0o600); err != nil {
		t.Fatal(err)
	}
	calls := w.sim.Count("password") + w.sim.Count("me")
	for name, args := range map[string][]string{
		"another map": {"run", "--input", w.input, "--apply", "--resume", "--out", out, "--recipient", w.id.Recipient().String(),
			"--recipients-map", other, "--base-url", w.url, "--log-format", "json"},
		"no map": {"run", "--input", w.input, "--apply", "--resume", "--out", out, "--recipient", w.id.Recipient().String(),
			"--base-url", w.url, "--log-format", "json"},
	} {
		code, _, stderr := w.runChild("", args...)
		if code != 1 || !strings.Contains(stderr, "refusing to change the groups mid-run") {
			t.Errorf("%s: exit %d\n%s", name, code, stderr)
		}
	}
	if n := w.sim.Count("password") + w.sim.Count("me"); n != calls {
		t.Errorf("%d calls by refused resumes", n-calls)
	}
	if code, stderr := w.apply(out, ""); code != 0 {
		t.Fatalf("resume with the same map: exit %d\n%s", code, stderr)
	}
	w.checkGroups(out)
}

// TestGroupsRefusals: a map with an input that has no networkId column, or
// a bad map, is exit 1 before any call, saying what to do or naming the
// file and line.
func TestGroupsRefusals(t *testing.T) {
	w := newGroupWorld(t, 10)
	noColumn := filepath.Join(w.dir, "ids.csv")
	if err := os.WriteFile(noColumn, []byte("userId\n2000\n2001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badMap := filepath.Join(w.dir, "bad-map.csv")
	if err := os.WriteFile(badMap, []byte("networkId,recipient\n1,"+w.keys[1].Recipient().String()+"\n2,age1notakey\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mixed := filepath.Join(w.dir, "mixed-map.csv")
	if err := os.WriteFile(mixed, []byte("networkId,mailboxId,recipient\n1,2,"+w.keys[1].Recipient().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func(input, m string) []string {
		return []string{"run", "--input", input, "--apply", "--out", filepath.Join(t.TempDir(), "out"), "--recipient", w.id.Recipient().String(),
			"--recipients-map", m, "--base-url", w.url, "--log-format", "json"}
	}
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"input without networkId", base(noColumn, w.mapFile), []string{"has no networkId column", "pwrotate users", "--select"}},
		{"bad recipient", base(w.input, badMap), []string{"--recipients-map " + badMap + ": line 3: recipient is not a valid age recipient"}},
		{"both keys", base(w.input, mixed), []string{"--recipients-map " + mixed + ": line 1: has both a networkId and a mailboxId column"}},
		{"no global recipient", []string{"run", "--input", w.input, "--apply", "--out", filepath.Join(t.TempDir(), "out"),
			"--recipients-map", w.mapFile, "--base-url", w.url, "--log-format", "json"}, []string{"at least one global recipient is needed"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := w.runChild("", tt.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1\n%s", code, stderr)
			}
			for _, s := range tt.want {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr does not say %q:\n%s", s, stderr)
				}
			}
		})
	}
	if n := len(w.sim.Calls()); n != 0 {
		t.Errorf("the refused runs made %d calls", n)
	}
}

// TestGroupsSelectEveryNetwork: --select without network= lists the users
// of every network; the listing gives each its group; the dry run's plan
// shows the users and recipients of each group and those sealed to the
// global recipients only; the run seals per network.
func TestGroupsSelectEveryNetwork(t *testing.T) {
	w := newGroupWorld(t, 60)
	common := []string{"--select", "status=Active", "--recipient", w.id.Recipient().String(), "--recipients-map", w.mapFile,
		"--base-url", w.url, "--rate", "0", "--log-format", "json"}
	code, stdout, stderr := w.runChild("", append([]string{"run"}, common...)...)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s", code, stderr)
	}
	for _, s := range []string{
		"sealing:   one file per network (--recipients-map, 3 groups,",
		"every file also to the 1 global recipient",
		"network 1: 15 users, 2 recipients",
		"network 2: 15 users, 2 recipients",
		"network 3: 15 users, 2 recipients",
		"global recipients only: 15 users (15 in 1 network the map leaves out)",
	} {
		if !strings.Contains(stdout, s) {
			t.Errorf("the plan does not say %q:\n%s", s, stdout)
		}
	}
	t.Logf("plan:\n%s", stdout)
	if n := w.sim.Count("password"); n != 0 {
		t.Fatalf("the dry run changed %d passwords", n)
	}
	// A dry run with --out: each planned row names its group.
	plan := filepath.Join(w.dir, "plan")
	if code, _, stderr := w.runChild("", append([]string{"run", "--out", plan}, common...)...); code != 0 {
		t.Fatalf("dry run --out: exit %d\n%s", code, stderr)
	}
	planned, err := report.ReadResults(filepath.Join(plan, report.ResultsName))
	if err != nil || len(planned) != 60 {
		t.Fatalf("planned rows: %d %v", len(planned), err)
	}
	for _, r := range planned {
		want := "global"
		if n := 1 + (r.UserID-2000)%4; n <= 3 {
			want = "network-" + strconv.Itoa(n)
		}
		if r.Status != report.Planned || r.SealedFor != want {
			t.Errorf("user %d: %s sealedFor %q, want planned %q", r.UserID, r.Status, r.SealedFor, want)
		}
	}
	out := filepath.Join(w.dir, "out")
	if code, _, stderr := w.runChild("", append([]string{"run", "--apply", "--out", out}, common...)...); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, stderr)
	}
	// The listing holds every user's network: none is without one.
	for id := range w.network {
		if w.network[id] == 0 {
			w.network[id] = 1 + (id-2000)%4
		}
	}
	w.checkGroups(out)
}
