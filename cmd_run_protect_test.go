package main

// Issue 10 points 3-6 at the command line: --protect, the skipped status,
// most privileged first, --reason.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"

	"pwrotate/report"
	"pwrotate/rotate/ecgridsim"
)

// protectUsers has the columns of 'pwrotate users'.
const protectUsers = `userId,login,email,firstName,lastName,networkId,mailboxId,authLevel,status
1000,alice,a@example.com,A,A,1,10,General,Active
1001,svc-edi-soap,s@example.com,S,S,1,10,NetworkAdmin,Active
1002,bob,b@example.com,B,B,1,10,Root,Active
1003,SVC-FTP,f@example.com,F,F,1,10,MailboxUser,Active
1004,carol,c@example.com,C,C,1,10,Root,Active
1005,break-glass,d@example.com,D,D,1,10,Root,Active
1006,erin,e@example.com,E,E,1,10,TechOps,Active
7,me,me@example.com,M,M,1,10,NetworkAdmin,Active
1007,frank,f@example.com,F,F,1,10,TPUser,Active
`

// protectWorld is a simulator with the users of protectUsers, an age
// identity, and a folder with the input and a protect file.
type protectWorld struct {
	sim  *ecgridsim.Server
	url  string
	id   *age.X25519Identity
	dir  string
	keep string // the protect file
}

func newProtectWorld(t *testing.T) *protectWorld {
	t.Helper()
	sim := newSim(1000, 10)
	srv := serveSim(t, sim)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	w := &protectWorld{sim: sim, url: srv.URL, id: id, dir: t.TempDir()}
	w.keep = w.write(t, "keep.txt", "# integration accounts: their passwords also log in SOAP and FTP/SFTP\nsvc-*\n\n1005  # break-glass\n")
	w.write(t, "users.csv", protectUsers)
	t.Setenv("ECGRID_API_KEY", scriptKey)
	return w
}

func (w *protectWorld) write(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *protectWorld) args(extra ...string) []string {
	return append([]string{"run", "--input", filepath.Join(w.dir, "users.csv"), "--base-url", w.url,
		"--rate", "0", "--log-format", "json", "--progress", "never"}, extra...)
}

// TestRunProtectSkipsAndOrder: protected IDs and globs and the caller are
// skipped and unchanged on the server, the run exits 0, the most privileged
// users are changed first, and the reason is on record.
func TestRunProtectSkipsAndOrder(t *testing.T) {
	w := newProtectWorld(t)
	out := filepath.Join(w.dir, "out")
	const reason = "INC-4711: leaked admin credentials"
	t.Setenv("PWROTATE_REASON", reason)
	code, stdout, stderr := runMain(t, nil, w.args("--apply", "--out", out, "--recipient", w.id.Recipient().String(),
		"--workers", "1", "--protect", w.keep)...)
	if code != 0 {
		t.Fatalf("exit %d, want 0 (skips are deliberate)\n%s", code, stderr)
	}
	rows, err := report.ReadResults(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	sealed := map[int]string{}
	ss, err := report.ReadSealed(filepath.Join(out, report.SealedName(1)), []age.Identity{w.id})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		sealed[s.UserID] = s.Password.Reveal()
	}
	wantSkip := map[int]string{
		1001: "protected (" + w.keep + ":2)",
		1003: "protected (" + w.keep + ":2)",
		1005: "protected (" + w.keep + ":4)",
		7:    "the caller's own account (pass --include-self to rotate it)",
	}
	for _, r := range rows {
		live, _ := w.sim.Password(r.UserID)
		if why, ok := wantSkip[r.UserID]; ok {
			if r.Status != report.Skipped || r.Error != why {
				t.Errorf("user %d: %s %q, want skipped %q", r.UserID, r.Status, r.Error, why)
			}
			if live != scriptPw {
				t.Errorf("user %d is skipped but its password changed on the server", r.UserID)
			}
			if _, ok := sealed[r.UserID]; ok {
				t.Errorf("user %d is skipped but a password was sealed for it", r.UserID)
			}
			continue
		}
		if r.Status != report.Updated || sealed[r.UserID] != live {
			t.Errorf("user %d: %s, want updated with the sealed password live", r.UserID, r.Status)
		}
	}
	var order []int
	for _, c := range w.sim.Calls() {
		if c.Endpoint == "password" {
			order = append(order, c.UserID)
		}
	}
	// Root 1002, 1004 (1005 protected); TechOps 1006; TPUser 1007; General 1000.
	if want := []int{1002, 1004, 1006, 1007, 1000}; !slices.Equal(order, want) {
		t.Errorf("the simulator saw the changes in the order %v, want %v (most privileged first)", order, want)
	}

	var sum report.Summary
	b, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Reason != reason || sum.Counts["skipped"] != 4 || sum.Counts["updated"] != 5 || sum.ExitCode != 0 {
		t.Errorf("summary.json: reason %q counts %v exit %d", sum.Reason, sum.Counts, sum.ExitCode)
	}
	var manifest map[string]any
	b, _ = os.ReadFile(filepath.Join(out, "run.json"))
	if err := json.Unmarshal(b, &manifest); err != nil || manifest["reason"] != reason {
		t.Errorf("run.json does not record the reason: %s", b)
	}
	startLine := ""
	for l := range strings.SplitSeq(stderr, "\n") {
		if strings.Contains(l, `"msg":"start"`) {
			startLine = l
		}
	}
	if !strings.Contains(startLine, `"reason":"`+reason+`"`) {
		t.Errorf("the start log line does not carry the reason: %s", startLine)
	}
	for _, want := range []string{"skipped:   4", "reason:    " + reason, "most privileged first (Root 2, TechOps 1, TPUser 1, General 1)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan output lacks %q:\n%s", want, stdout)
		}
	}

	// open prints the live passwords of the updated users, none for skipped ones.
	idFile := w.write(t, "key.txt", w.id.String()+"\n")
	code, opened, stderr := runMain(t, nil, "open", "-i", idFile, out)
	if code != 0 {
		t.Fatalf("open: exit %d\n%s", code, stderr)
	}
	if n := strings.Count(opened, ",updated,1\n"); n != 5 || strings.Contains(opened, "1001,") || strings.Contains(opened, "\n7,") {
		t.Errorf("open printed %d updated rows, or a skipped user (%d lines)", n, strings.Count(opened, "\n"))
	}
}

// TestRunProtectRefusals: bad protect files, a glob without a login column,
// a bad reason: exit 1 naming the cause, before any call.
func TestRunProtectRefusals(t *testing.T) {
	w := newProtectWorld(t)
	ids := w.write(t, "ids.csv", "userId\n1000\n1001\n")
	bad := w.write(t, "bad.txt", "1000\n# ok so far\nsvc-[\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad pattern", w.args("--protect", w.keep, "--protect", bad), "--protect " + bad + ":3: bad login pattern"},
		{"missing file", w.args("--protect", filepath.Join(w.dir, "nope.txt")), "--protect " + filepath.Join(w.dir, "nope.txt") + ": "},
		{"glob without login column", []string{"run", "--input", ids, "--base-url", w.url, "--apply", "--out", filepath.Join(w.dir, "o1"),
			"--recipient", w.id.Recipient().String(), "--protect", w.keep, "--log-format", "json"},
			"--protect " + w.keep + ":2: login pattern \\\"svc-*\\\" needs a login column"},
		{"reason too long", w.args("--reason", strings.Repeat("x", 201)), "--reason: 201 characters, at most 200"},
		{"reason with a line break", w.args("--reason", "INC-1\nfake log line"), "--reason: character U+000A is not printable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := len(w.sim.Calls())
			code, _, stderr := runMain(t, nil, tt.args...)
			if code != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, want 1 with %q in:\n%s", code, tt.want, stderr)
			}
			if n := len(w.sim.Calls()) - calls; n != 0 {
				t.Errorf("%d calls made before refusing", n)
			}
		})
	}
	// 200 characters, any script, are fine; and so is PWROTATE_PROTECT.
	t.Setenv("PWROTATE_PROTECT", w.keep)
	code, stdout, stderr := runMain(t, nil, w.args("--reason", strings.Repeat("é", 200))...)
	if code != 0 || !strings.Contains(stdout, "skipped:   4") {
		t.Errorf("dry run with PWROTATE_PROTECT: exit %d, plan:\n%s\n%s", code, stdout, stderr)
	}
}
