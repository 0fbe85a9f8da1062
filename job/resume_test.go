package job_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"pwrotate/job"
	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

// editResults rewrites out's results.csv with edit applied to each row.
func editResults(t *testing.T, out string, edit func(*report.Row)) {
	t.Helper()
	path := filepath.Join(out, report.ResultsName)
	rows, err := report.ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	res, _, err := report.OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		edit(&rows[i])
	}
	if err := res.Append(rows...); err != nil {
		t.Fatal(err)
	}
	if err := res.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestResumeActsOnlyOnTheRecordsUser: what a resume owes (a session
// reset, an API key) acts on the input's user, never on a user ID taken
// from results.csv alone. A row whose user is not its line's record stops
// the resume (exit 1, naming the line) before any call; a row that says a
// skipped record was updated owes nothing.
func TestResumeActsOnlyOnTheRecordsUser(t *testing.T) {
	const stranger = 4242 // in no input
	protected := firstUser + 2
	tests := []struct {
		name  string
		edit  func(*report.Row)
		want  int
		lines string // in the error
	}{
		{"another user on a line", func(r *report.Row) {
			if r.UserID == firstUser+1 {
				r.UserID = stranger
			}
		}, report.ExitFatal, "line 3"},
		{"a protected user made updated and owing", func(r *report.Row) {
			if r.UserID == protected {
				r.Status, r.Error, r.Generation, r.SessionsReset, r.APIKeyRotated = report.Updated, "", 1, "false", "false"
			}
		}, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 3)
			w.sim.AddUser(stranger, initialPw)
			// The key of firstUser+1 fails for good: its row owes the key.
			w.sim.Inject(ecgridsim.Fault{Endpoint: "keygen", UserID: firstUser + 1, Kind: ecgridsim.Envelope, Status: 404, Code: "ObjectNotFound"})
			prot, err := input.LoadProtect([]string{writeProtect(t, t.TempDir(), "protect", "1002\n")})
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.config(users(span(firstUser, 3)...), out)
			cfg.RotateAPIKeys, cfg.ResetSessions, cfg.Protect = true, true, prot
			if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitIncomplete {
				t.Fatalf("first run: exit %d (%v), want 2", sum.ExitCode, err)
			}
			editResults(t, out, tt.edit)
			before := len(w.sim.Calls())
			cfg.Resume = true
			sum, err := job.New(cfg).Run(context.Background())
			if tt.want == report.ExitFatal {
				if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), tt.lines) {
					t.Fatalf("resume: exit %d (%v), want 1 naming %s", sum.ExitCode, err, tt.lines)
				}
				for _, c := range w.sim.Calls()[before:] {
					if c.Endpoint != "me" {
						t.Errorf("a %s call for user %d after the refusal", c.Endpoint, c.UserID)
					}
				}
			}
			for _, id := range []int{stranger, protected} {
				if n := w.sim.KeysGenerated(id); n != 0 {
					t.Errorf("user %d (not to be touched): key generated %d times", id, n)
				}
				if n := w.sim.Resets(id); n != 0 {
					t.Errorf("user %d (not to be touched): sessions reset %d times", id, n)
				}
			}
		})
	}
}

// TestResumeWithoutManifestRefused: a folder that holds results rows or
// sealed files but no run.json is not resumed (exit 1, naming the cause,
// no password sent): nothing binds those files to this input, and a
// resume with another input would count its users as updated from the old
// rows. A folder whose results hold only the header (a kill before
// run.json) is resumed.
func TestResumeWithoutManifestRefused(t *testing.T) {
	tests := []struct {
		name   string
		remove []string // besides run.json
		want   string   // in the error; "" for a resume that runs
	}{
		{"results rows", nil, report.ResultsName},
		{"sealed passwords", []string{report.ResultsName, report.SummaryName}, "passwords-g0001.age"},
		{"sealed API keys", []string{report.ResultsName, report.SummaryName, "passwords-g0001.age"}, "apikeys-00001.age"},
		{"results header only", []string{"passwords-g0001.age", "apikeys-00001.age", "apikeys-log.csv", report.SummaryName}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 4)
			out := filepath.Join(t.TempDir(), "out")
			cfg := w.config(users(span(firstUser, 3)...), out)
			cfg.RotateAPIKeys = true
			if sum, err := job.New(cfg).Run(context.Background()); sum.ExitCode != report.ExitOK {
				t.Fatalf("first run: exit %d: %v", sum.ExitCode, err)
			}
			for _, name := range append([]string{report.ManifestName}, tt.remove...) {
				if err := os.Remove(filepath.Join(out, name)); err != nil {
					t.Fatal(err)
				}
			}
			if tt.want == "" {
				// As a kill leaves it: the header of a new results.csv.
				if err := os.Remove(filepath.Join(out, report.ResultsName)); err != nil {
					t.Fatal(err)
				}
				res, _, err := report.OpenResults(filepath.Join(out, report.ResultsName))
				if err != nil {
					t.Fatal(err)
				}
				res.Close()
			}
			// Another input: the same users and one more.
			before := w.sim.Count("password")
			cfg = w.config(users(span(firstUser, 4)...), out)
			cfg.Resume = true
			cfg.Sleep = func(context.Context, time.Duration) error { return nil }
			sum, err := job.New(cfg).Run(context.Background())
			if tt.want == "" {
				if sum.ExitCode != report.ExitOK {
					t.Fatalf("resume: exit %d: %v", sum.ExitCode, err)
				}
				if n := w.sim.Count("password") - before; n != 4 {
					t.Errorf("the resume sent %d changes, want 4 (a run afresh)", n)
				}
				return
			}
			if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), report.ManifestName) {
				t.Fatalf("resume: exit %d (%v), want 1 naming %s and %s", sum.ExitCode, err, tt.want, report.ManifestName)
			}
			if n := w.sim.Count("password") - before; n != 0 {
				t.Errorf("%d changes sent by a refused resume", n)
			}
		})
	}
}

// TestSelectPlantedSnapshotNotTaken: an input.csv planted in an empty
// --out (listing users of another network) is never taken as the
// listing of a --select run started with --resume: without run.json the
// run lists, and changes only the users of its filter.
func TestSelectPlantedSnapshotNotTaken(t *testing.T) {
	w := newSelectWorld(t, 120)
	f := rotate.UserFilter{NetworkID: 1, Status: "Active"}
	want := truthIDs(w.sim, ecgridsim.ListFilter{NetworkID: 1, Status: "Active"})
	others := w.sim.Directory(ecgridsim.ListFilter{NetworkID: 3})
	if len(others) == 0 || len(want) == 0 {
		t.Fatalf("directory: %d users of network 1, %d of network 3", len(want), len(others))
	}
	var planted strings.Builder
	planted.WriteString("userId,login,networkId\n")
	for _, u := range others {
		planted.WriteString(strconv.Itoa(u.UserID) + "," + u.Login + ",1\n")
	}
	out := filepath.Join(t.TempDir(), "out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, report.SnapshotName), []byte(planted.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := w.selectConfig(f, out)
	cfg.Resume = true
	sum, err := job.New(cfg).Run(context.Background())
	if sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d: %v", sum.ExitCode, err)
	}
	if n := w.sim.Count("list"); n == 0 {
		t.Errorf("no list call: the planted input.csv was taken as the listing")
	}
	w.checkOnlyListedChanged(out, want)
}
