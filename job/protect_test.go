package job_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"pwrotate/job"
	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

// writeProtect writes a --protect file into dir and returns its path.
func writeProtect(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadProtect(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, text string
		wantErr    string // substring of the error; "" for none
		match      map[string]string
	}{
		{
			name: "ids and globs",
			text: "\ufeff# integration accounts\n1001\n\n  SVC-*  # SOAP and FTP\nbreak-glass\n1001\n",
			match: map[string]string{
				"1001/x":           "f:2",
				"5/svc-edi":        "f:4",
				"5/Svc-EDI":        "f:4",
				"5/BREAK-GLASS":    "f:5",
				"5/break-glass2":   "",
				"5/":               "",
				"1002/admin":       "",
				"1001/svc-first":   "f:2", // the first entry that matches names the reason
				"6/edi#svc":        "",
				"7/svc-[x]":        "f:4",
				"2147483647/other": "",
			},
		},
		{
			// A login cell written spreadsheet-safe is matched as the raw
			// login too (issue 24): '-breakglass is the login -breakglass.
			name: "spreadsheet-safe logins",
			text: "-breakglass\n@OPS-*\n=root\n+*\n'-as-written\n",
			match: map[string]string{
				"5/'-breakglass":  "f:1",
				"5/-breakglass":   "f:1",
				"5/'-BreakGlass":  "f:1",
				"5/'@ops-1":       "f:2",
				"5/'=root":        "f:3",
				"5/'+x":           "f:4",
				"5/'-as-written":  "f:5",
				"5/'breakglass":   "",
				"5/''-breakglass": "",
				"5/x-breakglass":  "",
				"5/'":             "",
			},
		},
		{name: "bad pattern", text: "1001\nsvc-[\n", wantErr: "f:2: bad login pattern \"svc-[\""},
		{name: "id out of range", text: "2147483648\n", wantErr: "f:1: user ID 2147483648 is not in 1..2147483647"},
		{name: "id zero", text: "0\n", wantErr: "f:1:"},
		{name: "two entries a line", text: "svc-a svc-b\n", wantErr: "f:1: entry"},
		{name: "binary", text: "svc\x00\n", wantErr: "f:1: not UTF-8 text"},
		{name: "long line", text: strings.Repeat("a", 5000) + "\n", wantErr: "f:1: line over 4 KiB"},
		{name: "comments only", text: "# nobody\n\n", match: map[string]string{"1/a": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeProtect(t, dir, "f", tt.text)
			p, err := input.LoadProtect([]string{path})
			if tt.wantErr != "" {
				want := strings.Replace(tt.wantErr, "f:", path+":", 1)
				var pe *input.ProtectError
				if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "--protect ") {
					t.Fatalf("error %v, want a *ProtectError with %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for in, where := range tt.match {
				idText, login, _ := strings.Cut(in, "/")
				var id int
				for _, c := range idText {
					id = id*10 + int(c-'0')
				}
				want := ""
				if where != "" {
					want = "protected (" + strings.Replace(where, "f:", path+":", 1) + ")"
				}
				if got := p.Match(id, login); got != want {
					t.Errorf("Match(%d, %q) = %q, want %q", id, login, got, want)
				}
			}
		})
	}
	if _, err := input.LoadProtect([]string{filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "--protect "+filepath.Join(dir, "missing")+": ") {
		t.Errorf("missing file: error %v does not name the flag and file", err)
	}
}

func TestProtectFingerprint(t *testing.T) {
	dir := t.TempDir()
	a, _ := input.LoadProtect([]string{writeProtect(t, dir, "a", "1001\nsvc-*\n")})
	b, _ := input.LoadProtect([]string{writeProtect(t, dir, "b", "# same set\nSVC-*\n1001\n1001\n")})
	c, _ := input.LoadProtect([]string{writeProtect(t, dir, "c", "1001\n")})
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("the same entries in another order and file give another fingerprint")
	}
	if a.Fingerprint() == c.Fingerprint() || c.Fingerprint() == "" {
		t.Error("different entries give the same fingerprint")
	}
	var none *input.Protect
	if none.Fingerprint() != "" || none.Match(1001, "svc-a") != "" {
		t.Error("a nil Protect protects somebody")
	}
}

// exportCSV is an input with the columns of 'pwrotate users'.
const exportCSV = `userId,login,email,firstName,lastName,networkId,mailboxId,authLevel,status
1000,alice,a@example.com,A,A,1,10,General,Active
1001,svc-edi-soap,s@example.com,S,S,1,10,NetworkAdmin,Active
1002,bob,b@example.com,B,B,1,10,Root,Active
1003,SVC-FTP,f@example.com,F,F,1,10,MailboxUser,Active
1004,carol,c@example.com,C,C,1,10,Root,Active
1005,dave,d@example.com,D,D,1,10,Mystery,Active
1006,erin,e@example.com,E,E,1,10,TechOps,Active
7,me,me@example.com,M,M,1,10,NetworkAdmin,Active
1007,frank,f@example.com,F,F,1,10,networkadmin,Active
1008,grace,g@example.com,G,G,1,10,,Active
`

// TestProtectedAndSelfSkipped: protected IDs, login globs and the caller
// are recorded as skipped, never touched on the server, and the run exits 0.
func TestProtectedAndSelfSkipped(t *testing.T) {
	w := newWorld(t, 10)
	dir := t.TempDir()
	pf := writeProtect(t, dir, "keep.txt", "# never rotate\n1000\nsvc-*\n")
	prot, err := input.LoadProtect([]string{pf})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cfg := w.config(exportCSV, out)
	cfg.Protect = prot
	cfg.Reason = "INC-4711 credential leak"
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil || sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d (%v), want 0: skips are deliberate", sum.ExitCode, err)
	}
	byUser := w.checkInvariant(out)
	want := map[int]string{
		1000: "protected (" + pf + ":2)",
		1001: "protected (" + pf + ":3)",
		1003: "protected (" + pf + ":3)",
		7:    "the caller's own account (pass --include-self to rotate it)",
	}
	for id, why := range want {
		if r := byUser[id]; r.Status != report.Skipped || r.Error != why {
			t.Errorf("user %d: %s (%q), want skipped (%q)", id, r.Status, r.Error, why)
		}
	}
	for _, id := range []int{1002, 1004, 1005, 1006, 1007, 1008} {
		if byUser[id].Status != report.Updated {
			t.Errorf("user %d: %s, want updated", id, byUser[id].Status)
		}
	}
	if sum.Counts["skipped"] != 4 || sum.Counts["updated"] != 6 || sum.Counts["invalid"] != 0 {
		t.Errorf("counts %v, want 4 skipped, 6 updated", sum.Counts)
	}
	got, err := report.ReadSummary(filepath.Join(out, report.SummaryName))
	if err != nil {
		t.Fatal(err)
	}
	if got.Reason != cfg.Reason || got.Counts["skipped"] != 4 {
		t.Errorf("summary.json: reason %q, counts %v", got.Reason, got.Counts)
	}
	var m map[string]any
	b, _ := os.ReadFile(filepath.Join(out, report.ManifestName))
	if err := json.Unmarshal(b, &m); err != nil || m["reason"] != cfg.Reason || m["protectSha256"] != prot.Fingerprint() {
		t.Errorf("run.json %s: want the reason and the protect fingerprint", b)
	}
	if !strings.Contains(w.stdout.String(), "skipped:   4") || !strings.Contains(w.stdout.String(), "reason:    INC-4711") {
		t.Errorf("plan does not show the skips and the reason:\n%s", w.stdout.String())
	}
	// A resume with another protect list is refused before any call.
	calls := len(w.sim.Calls())
	cfg.Resume = true
	cfg.Protect = nil
	sum, err = job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK || err != nil {
		// A complete run needs nothing: it is reported as it was.
		t.Fatalf("resume of a complete run: exit %d (%v)", sum.ExitCode, err)
	}
	if len(w.sim.Calls()) != calls {
		t.Error("resuming a complete run made calls")
	}
}

// TestResumeRefusesOtherProtection: a resumed run must keep the protected
// accounts it started with.
func TestResumeRefusesOtherProtection(t *testing.T) {
	w := newWorld(t, 10)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	prot, err := input.LoadProtect([]string{writeProtect(t, dir, "keep.txt", "svc-*\n")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.config(exportCSV, out)
	cfg.Protect, cfg.Reason = prot, "INC-9 first run"
	ctx, stop := context.WithCancel(context.Background())
	cfg.Hook = func(point string, n int) {
		if point == "manifest" {
			stop() // as a signal would: nothing is sent
		}
	}
	if sum, err := job.New(cfg).Run(ctx); sum.ExitCode != report.ExitInterrupted {
		t.Fatalf("first run: exit %d (%v), want 3", sum.ExitCode, err)
	}
	cfg.Hook = nil
	cfg.Resume, cfg.Protect, cfg.Reason = true, nil, ""
	calls := len(w.sim.Calls())
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), "same --protect") {
		t.Fatalf("exit %d (%v), want 1 refusing other protection", sum.ExitCode, err)
	}
	if len(w.sim.Calls()) != calls {
		t.Error("the refused resume made calls")
	}
	cfg.Protect = prot
	sum, err = job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK {
		t.Fatalf("resume with the same protection: exit %d (%v)", sum.ExitCode, err)
	}
	if sum.Reason != "INC-9 first run" {
		t.Errorf("a resume without --reason reports reason %q, want the first run's", sum.Reason)
	}
	w.checkInvariant(out)
}

// TestProtectGlobNeedsLogin: a login glob with an input that has no login
// column is exit 1 before any call or file.
func TestProtectGlobNeedsLogin(t *testing.T) {
	w := newWorld(t, 3)
	dir := t.TempDir()
	pf := writeProtect(t, dir, "keep.txt", "1000\n\nsvc-*\n")
	prot, err := input.LoadProtect([]string{pf})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cfg := w.config(users(1000, 1001, 1002), out)
	cfg.Protect = prot
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), "--protect "+pf+":3") || !strings.Contains(err.Error(), "login column") {
		t.Fatalf("exit %d (%v), want 1 naming the pattern's line and the login column", sum.ExitCode, err)
	}
	if n := len(w.sim.Calls()); n != 0 {
		t.Errorf("%d calls made", n)
	}
	if _, err := os.Stat(filepath.Join(out, report.ManifestName)); err == nil {
		t.Error("run.json written")
	}
	// IDs alone need no login column.
	prot, _ = input.LoadProtect([]string{writeProtect(t, dir, "ids.txt", "1000\n")})
	cfg = w.config(users(1000, 1001, 1002), filepath.Join(dir, "out2"))
	cfg.Protect = prot
	if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
		t.Fatalf("IDs only: exit %d (%v)", sum.ExitCode, err)
	}
	if pw, _ := w.sim.Password(1000); pw != initialPw {
		t.Error("protected user 1000 changed")
	}
}

// TestPrivilegedFirst: with an authLevel column, the simulator sees the
// changes most privileged first, input order within a level.
func TestPrivilegedFirst(t *testing.T) {
	w := newWorld(t, 10)
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.config(exportCSV, out)
	cfg.Workers = 1
	cfg.Client = w.client(testKey, nil) // 8 connections, but one worker
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d (%v)", sum.ExitCode, err)
	}
	var order []int
	for _, c := range w.sim.Calls() {
		if c.Endpoint == "password" {
			order = append(order, c.UserID)
		}
	}
	// Root 1002, 1004; TechOps 1006; NetworkAdmin 1001, 1007; MailboxUser
	// 1003; General 1000; unknown ("Mystery", empty) 1005, 1008. The caller
	// (7) is skipped.
	want := []int{1002, 1004, 1006, 1001, 1007, 1003, 1000, 1005, 1008}
	if !slices.Equal(order, want) {
		t.Errorf("order of arrival %v, want %v", order, want)
	}
	w.checkInvariant(out)
	if !strings.Contains(w.stdout.String(), "most privileged first (Root 2, TechOps 1, NetworkAdmin 2, MailboxUser 1, General 1, unknown 2)") {
		t.Errorf("plan does not show the order:\n%s", w.stdout.String())
	}

	// Without an authLevel column: input order.
	w2 := newWorld(t, 10)
	cfg = w2.config(users(1005, 1002, 1000), filepath.Join(t.TempDir(), "out"))
	cfg.Workers = 1
	if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d (%v)", sum.ExitCode, err)
	}
	order = nil
	for _, c := range w2.sim.Calls() {
		if c.Endpoint == "password" {
			order = append(order, c.UserID)
		}
	}
	if !slices.Equal(order, []int{1005, 1002, 1000}) {
		t.Errorf("without authLevel: order %v, want input order", order)
	}
}

// TestDryRunSkipped: a dry run plans the skips and exits 0.
func TestDryRunSkipped(t *testing.T) {
	w := newWorld(t, 10)
	dir := t.TempDir()
	prot, _ := input.LoadProtect([]string{writeProtect(t, dir, "keep.txt", "svc-*\n")})
	out := filepath.Join(dir, "plan")
	cfg := w.config(exportCSV, out)
	cfg.Apply, cfg.Recipients, cfg.Protect = false, nil, prot
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK || err != nil {
		t.Fatalf("exit %d (%v)", sum.ExitCode, err)
	}
	if sum.Counts["planned"] != 7 || sum.Counts["skipped"] != 3 {
		t.Errorf("counts %v, want 7 planned, 3 skipped", sum.Counts)
	}
	rows, err := report.ReadResults(filepath.Join(out, report.ResultsName))
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for _, r := range rows {
		if r.Status == report.Skipped {
			skipped++
		}
	}
	if skipped != 3 {
		t.Errorf("%d skipped rows in the plan's results, want 3", skipped)
	}
	if got, _ := report.ReadSummary(filepath.Join(out, report.SummaryName)); got.Selection != nil {
		t.Errorf("summary.json of an input file has a selection: %+v", got.Selection)
	}
	if w.sim.Count("password") != 0 {
		t.Error("a dry run changed passwords")
	}
}

// TestProtectSharded: each shard finds the logins and levels of its own
// records.
func TestProtectSharded(t *testing.T) {
	w := newWorld(t, 10)
	dir := t.TempDir()
	prot, _ := input.LoadProtect([]string{writeProtect(t, dir, "keep.txt", "svc-*\n")})
	skipped := map[int]bool{}
	for k := range 2 {
		out := filepath.Join(dir, "out", "shard-"+string(rune('0'+k)))
		cfg := w.config(exportCSV, out)
		cfg.Protect, cfg.Shard, cfg.Shards, cfg.Workers = prot, k, 2, 1
		if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
			t.Fatalf("shard %d: exit %d (%v)", k, sum.ExitCode, err)
		}
		for id, r := range w.checkInvariant(out) {
			if r.Status == report.Skipped {
				skipped[id] = true
			}
		}
	}
	if len(skipped) != 3 || !skipped[1001] || !skipped[1003] || !skipped[7] {
		t.Errorf("skipped %v, want 1001, 1003 and the caller 7", skipped)
	}
	// Within each shard, most privileged first (the shards ran one after
	// the other, one worker each).
	rank := map[int]int{1002: 9, 1004: 9, 1006: 8, 1001: 6, 1007: 6, 1003: 3, 1000: 1, 1005: 0, 1008: 0}
	last := map[int]int{0: 10, 1: 10}
	n := 0
	for _, c := range w.sim.Calls() {
		if c.Endpoint != "password" {
			continue
		}
		n++
		k := job.ShardOf(c.UserID, 2)
		if rank[c.UserID] > last[k] {
			t.Errorf("shard %d: user %d (rank %d) sent after a less privileged user (rank %d)", k, c.UserID, rank[c.UserID], last[k])
		}
		last[k] = rank[c.UserID]
	}
	if n != 7 {
		t.Errorf("%d password calls, want 7", n)
	}
}

// TestMaxUsersCountsNoSkips: --max-users caps the users to change; skipped
// ones are not changed, so they do not count.
func TestMaxUsersCountsNoSkips(t *testing.T) {
	w := newWorld(t, 10)
	dir := t.TempDir()
	prot, _ := input.LoadProtect([]string{writeProtect(t, dir, "keep.txt", "svc-*\n1000\n")})
	for _, tt := range []struct {
		max  int
		code int
	}{{6, report.ExitOK}, {5, report.ExitFatal}} {
		cfg := w.config(exportCSV, "")
		cfg.Apply, cfg.Recipients, cfg.Protect, cfg.MaxUsers = false, nil, prot, tt.max
		// 10 records; 1000, 1001, 1003 protected and 7 the caller: 6 to change.
		sum, err := job.New(cfg).Run(context.Background())
		if sum.ExitCode != tt.code {
			t.Errorf("--max-users %d: exit %d (%v), want %d", tt.max, sum.ExitCode, err, tt.code)
		}
	}
}

// TestSelectProtectedPrivilegedFirst: --select lists the users; the
// protected service accounts and nobody else are skipped, the listed rest
// are changed most privileged first, and summary.json says what was listed.
func TestSelectProtectedPrivilegedFirst(t *testing.T) {
	w := newSelectWorld(t, 300)
	dir := t.TempDir()
	prot, _ := input.LoadProtect([]string{writeProtect(t, dir, "keep.txt", "# integrations\nsvc-*\n")})
	filter := rotate.UserFilter{NetworkID: 1, Status: "Active"}
	listed := w.sim.Directory(ecgridsim.ListFilter{NetworkID: 1, Status: "Active"})
	level := map[int]rotate.AuthLevel{}
	var want []int // listed minus protected
	wantSkip := 0
	for _, u := range listed {
		level[u.UserID] = rotate.ParseAuthLevel(u.AuthLevel)
		if strings.HasPrefix(strings.ToLower(u.Login), "svc-") {
			wantSkip++
			continue
		}
		want = append(want, u.UserID)
	}
	if wantSkip == 0 || len(want) == 0 {
		t.Fatalf("the directory has %d service accounts and %d others in network 1: no test", wantSkip, len(want))
	}
	slices.Sort(want)
	out := filepath.Join(dir, "out")
	cfg := w.selectConfig(filter, out)
	cfg.Protect, cfg.Workers, cfg.Reason = prot, 1, "INC-77"
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil || sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d: %v", sum.ExitCode, err)
	}
	w.checkOnlyListedChanged(out, want)
	if sum.Counts["skipped"] != wantSkip {
		t.Errorf("%d skipped, want the %d service accounts", sum.Counts["skipped"], wantSkip)
	}
	got, err := report.ReadSummary(filepath.Join(out, report.SummaryName))
	if err != nil {
		t.Fatal(err)
	}
	if got.Selection == nil || got.Selection.Filter != "network=1,status=Active" || got.Selection.Listed != len(listed) || got.Reason != "INC-77" {
		t.Errorf("summary.json selection %+v reason %q, want network=1,status=Active with %d listed", got.Selection, got.Reason, len(listed))
	}
	prev := rotate.LevelRoot
	for _, c := range w.sim.Calls() {
		if c.Endpoint != "password" {
			continue
		}
		if level[c.UserID] > prev {
			t.Fatalf("user %d (%v) was sent after a %v user", c.UserID, level[c.UserID], prev)
		}
		prev = level[c.UserID]
	}
}
