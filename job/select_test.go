package job_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"pwrotate/report/directory"
	"pwrotate/rotate"
	"pwrotate/rotate/ecgridsim"
)

// selectWorld is a world whose simulator holds a directory of n users
// (every one with initialPw); the caller (user 7) is not in it.
func newSelectWorld(t *testing.T, n int) *world {
	t.Helper()
	w := newWorld(t, 0)
	for _, u := range ecgridsim.GenerateDirectory(n, 5) {
		w.sim.AddDirectoryUser(u)
		w.sim.AddUser(u.UserID, initialPw)
	}
	return w
}

func (w *world) selectConfig(f rotate.UserFilter, out string) job.Config {
	cfg := w.config("", out)
	cfg.InputData, cfg.InputName = nil, ""
	cfg.Select = &f
	return cfg
}

// truthIDs returns the IDs the simulator's directory holds for f.
func truthIDs(sim *ecgridsim.Server, f ecgridsim.ListFilter) []int {
	var ids []int
	for _, u := range sim.Directory(f) {
		ids = append(ids, u.UserID)
	}
	return ids
}

// checkOnlyListedChanged fails unless exactly want (sorted) are updated in
// out and every other directory user keeps initialPw.
func (w *world) checkOnlyListedChanged(out string, want []int) {
	t := w.t
	t.Helper()
	rows := w.checkInvariant(out)
	var updated []int
	for id, row := range rows {
		if row.Status == report.Updated {
			updated = append(updated, id)
		}
	}
	slices.Sort(updated)
	if !slices.Equal(updated, want) {
		t.Fatalf("updated %d users, listed %d", len(updated), len(want))
	}
	for _, u := range w.sim.Directory(ecgridsim.ListFilter{}) {
		if _, listed := slices.BinarySearch(want, u.UserID); listed {
			continue
		}
		if pw, _ := w.sim.Password(u.UserID); pw != initialPw {
			t.Fatalf("user %d was not listed, yet its password changed", u.UserID)
		}
	}
}

func TestSelectChangesExactlyTheListed(t *testing.T) {
	w := newSelectWorld(t, 400)
	w.sim.SetListBehavior(ecgridsim.ListBehavior{PageCap: 13})
	w.sim.Inject(ecgridsim.Fault{Endpoint: "list", Kind: ecgridsim.HTMLError})
	w.sim.Inject(ecgridsim.Fault{Endpoint: "list", Kind: ecgridsim.TooManyRequests, RetryAfter: "0"})
	want := truthIDs(w.sim, ecgridsim.ListFilter{NetworkID: 1, Status: "Active"})
	out := filepath.Join(t.TempDir(), "out")
	cfg := w.selectConfig(rotate.UserFilter{NetworkID: 1, Status: "Active"}, out)
	var pages int
	cfg.ListProgress = func(int, int, int) { pages++ }
	sum, err := job.New(cfg).Run(context.Background())
	if err != nil || sum.ExitCode != report.ExitOK {
		t.Fatalf("exit %d: %v", sum.ExitCode, err)
	}
	w.checkOnlyListedChanged(out, want)
	if pages < len(want)/13 {
		t.Fatalf("progress told of %d pages", pages)
	}

	// The snapshot is the export of exactly the listed users, 0600, and
	// run.json records the filter and its sha256.
	snap := filepath.Join(out, report.SnapshotName)
	b, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	var exp bytes.Buffer
	var us []rotate.User
	for _, u := range w.sim.Directory(ecgridsim.ListFilter{NetworkID: 1, Status: "Active"}) {
		us = append(us, rotate.User{UserID: u.UserID, Login: u.Login, Email: u.Email, FirstName: u.FirstName, LastName: u.LastName,
			NetworkID: u.NetworkID, MailboxID: u.MailboxID, AuthLevel: u.AuthLevel, Status: u.Status})
	}
	if err := directory.Write(&exp, directory.Users(us)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, exp.Bytes()) {
		t.Fatal("the snapshot is not the export of the simulator's users")
	}
	if fi, _ := os.Stat(snap); fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot mode %v", fi.Mode())
	}
	sha := sha256.Sum256(b)
	var m job.Manifest
	mb, _ := os.ReadFile(filepath.Join(out, report.ManifestName))
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	if m.Selection == nil || m.Selection.Spec != "network=1,status=Active" || m.Selection.Listed != len(want) ||
		m.Selection.SnapshotSHA256 != hex.EncodeToString(sha[:]) || m.InputSHA256 != m.Selection.SnapshotSHA256 ||
		m.Selection.Filter != (rotate.UserFilter{NetworkID: 1, Status: "Active"}) {
		t.Fatalf("run.json selection %s", mb)
	}
	if !strings.Contains(w.stdout.String(), "selection: network=1,status=Active from POST") {
		t.Fatalf("plan does not show the selection:\n%s", w.stdout.String())
	}
}

// TestSelectResumeNeverListsAgain: a resume of a --select run reads the
// snapshot run.json vouches for and never lists again; stopped before
// run.json was written (nothing sent yet), it lists afresh.
func TestSelectResumeNeverListsAgain(t *testing.T) {
	for _, point := range []string{"snapshot", "manifest", "recorded"} {
		t.Run(point, func(t *testing.T) {
			w := newSelectWorld(t, 200)
			// The server ignores the filter: the listing drops the rest.
			w.sim.SetListBehavior(ecgridsim.ListBehavior{IgnoreFilter: true})
			f := rotate.UserFilter{NetworkID: 1, Status: "Active"}
			want := truthIDs(w.sim, ecgridsim.ListFilter{NetworkID: 1, Status: "Active"})
			dropped := 200 - len(want)
			out := filepath.Join(t.TempDir(), "out")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg := w.selectConfig(f, out)
			cfg.Workers = 1
			cfg.Hook = func(p string, n int) {
				if p == point && (p != "recorded" || n == 5) {
					cancel()
				}
			}
			sum, _ := job.New(cfg).Run(ctx)
			if sum.ExitCode != report.ExitInterrupted {
				t.Fatalf("first run: exit %d", sum.ExitCode)
			}
			lists := w.sim.Count("list")

			// The directory changes meanwhile: a resumed run must not see it.
			w.sim.AddDirectoryUser(ecgridsim.DirUser{UserID: 999999, Login: "late", NetworkID: 1, Status: "Active", AuthLevel: "Root"})
			w.sim.AddUser(999999, initialPw)
			cfg = w.selectConfig(f, out)
			cfg.Resume = true
			r := job.New(cfg)
			sum, err := r.Run(context.Background())
			if err != nil || sum.ExitCode != report.ExitOK {
				t.Fatalf("resume: exit %d: %v", sum.ExitCode, err)
			}
			if point == "snapshot" {
				// No run.json: the snapshot is not a run's; listed again.
				if n := w.sim.Count("list"); n <= lists {
					t.Fatalf("the resume did not list again (no run.json): %d list calls", n)
				}
				want = truthIDs(w.sim, ecgridsim.ListFilter{NetworkID: 1, Status: "Active"})
			} else if n := w.sim.Count("list"); n != lists {
				t.Fatalf("the resume listed again: %d list calls, %d before", n, lists)
			}
			w.checkOnlyListedChanged(out, want)
			if sel := r.Selection(); sel == nil || sel.Listed != len(want) {
				t.Fatalf("resumed selection %+v", sel)
			}
			// run.json keeps the dropped count for the resume's summary
			// (when it was written before the kill).
			if sel := r.Selection(); point != "snapshot" && sel.Dropped != dropped {
				t.Fatalf("resumed selection %+v, want %d dropped", sel, dropped)
			}
		})
	}
}

func TestSelectRefusals(t *testing.T) {
	f := rotate.UserFilter{NetworkID: 1, Status: "Active"}
	t.Run("ignored pageNo", func(t *testing.T) {
		w := newSelectWorld(t, 100)
		w.sim.SetListBehavior(ecgridsim.ListBehavior{IgnorePageNo: true})
		out := filepath.Join(t.TempDir(), "out")
		sum, err := job.New(w.selectConfig(f, out)).Run(context.Background())
		if sum.ExitCode != report.ExitFatal || !errors.Is(err, rotate.ErrPageNoIgnored) {
			t.Fatalf("exit %d: %v", sum.ExitCode, err)
		}
		if w.sim.Count("list") != 2 || w.sim.Count("password") != 0 {
			t.Fatalf("%d list calls, %d password calls", w.sim.Count("list"), w.sim.Count("password"))
		}
		if _, err := os.Stat(filepath.Join(out, report.SnapshotName)); err == nil {
			t.Fatal("a snapshot of a failed listing was written")
		}
	})
	t.Run("resume with another filter", func(t *testing.T) {
		w := newSelectWorld(t, 100)
		out := filepath.Join(t.TempDir(), "out")
		if sum, err := job.New(w.selectConfig(f, out)).Run(context.Background()); sum.ExitCode != 0 {
			t.Fatal(err)
		}
		lists, pw := w.sim.Count("list"), w.sim.Count("password")
		other := w.selectConfig(rotate.UserFilter{NetworkID: 2, Status: "Active"}, out)
		other.Resume = true
		sum, err := job.New(other).Run(context.Background())
		if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), "not of --select network=2") {
			t.Fatalf("exit %d: %v", sum.ExitCode, err)
		}
		if w.sim.Count("list") != lists || w.sim.Count("password") != pw {
			t.Fatal("calls made")
		}
	})
	t.Run("resume of an input run", func(t *testing.T) {
		w := newSelectWorld(t, 100)
		out := filepath.Join(t.TempDir(), "out")
		w.sim.AddUser(firstUser, initialPw)
		if sum, err := job.New(w.config(users(firstUser), out)).Run(context.Background()); sum.ExitCode != 0 {
			t.Fatal(err)
		}
		cfg := w.selectConfig(f, out)
		cfg.Resume = true
		sum, err := job.New(cfg).Run(context.Background())
		if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), "not of a --select listing") {
			t.Fatalf("exit %d: %v", sum.ExitCode, err)
		}
		if w.sim.Count("list") != 0 {
			t.Fatal("listed")
		}
	})
	t.Run("no key", func(t *testing.T) {
		w := newSelectWorld(t, 10)
		cfg := w.selectConfig(f, "")
		cfg.Apply, cfg.Client = false, nil
		sum, err := job.New(cfg).Run(context.Background())
		if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), "ECGRID_API_KEY") {
			t.Fatalf("exit %d: %v", sum.ExitCode, err)
		}
	})
	t.Run("nobody listed", func(t *testing.T) {
		w := newSelectWorld(t, 10)
		cfg := w.selectConfig(rotate.UserFilter{NetworkID: 77, Status: "Active"}, filepath.Join(t.TempDir(), "out"))
		sum, err := job.New(cfg).Run(context.Background())
		if sum.ExitCode != report.ExitFatal || err == nil || !strings.Contains(err.Error(), "no records") {
			t.Fatalf("exit %d: %v", sum.ExitCode, err)
		}
	})
}

func TestSelectDryRun(t *testing.T) {
	f := rotate.UserFilter{NetworkID: 2}
	for _, withOut := range []bool{false, true} {
		t.Run(map[bool]string{false: "no out", true: "out"}[withOut], func(t *testing.T) {
			w := newSelectWorld(t, 150)
			want := truthIDs(w.sim, ecgridsim.ListFilter{NetworkID: 2})
			out := ""
			if withOut {
				out = filepath.Join(t.TempDir(), "review")
			}
			cfg := w.selectConfig(f, out)
			cfg.Apply = false
			sum, err := job.New(cfg).Run(context.Background())
			if err != nil || sum.ExitCode != report.ExitOK || sum.Counts["planned"] != len(want) {
				t.Fatalf("exit %d, counts %v: %v", sum.ExitCode, sum.Counts, err)
			}
			if w.sim.Count("password") != 0 || w.sim.Count("list") == 0 {
				t.Fatal("a dry run changed something or listed nothing")
			}
			plan := w.stdout.String()
			if !strings.Contains(plan, "network=2,status=any") || !strings.Contains(plan, "dry run") {
				t.Fatalf("plan:\n%s", plan)
			}
			if !withOut {
				if !strings.Contains(plan, "not kept") {
					t.Fatalf("plan:\n%s", plan)
				}
				return
			}
			// The snapshot stays for review; run --input takes it.
			in, err := input.ReadFile(filepath.Join(out, report.SnapshotName))
			if err != nil || len(in.Records) != len(want) {
				t.Fatalf("snapshot: %v", err)
			}
		})
	}
}

func TestParseSelect(t *testing.T) {
	for _, c := range []struct {
		spec string
		want rotate.UserFilter
		err  string
	}{
		{"network=1", rotate.UserFilter{NetworkID: 1, Status: "Active"}, ""},
		{"network=1,status=any", rotate.UserFilter{NetworkID: 1}, ""},
		{" network = 3 , mailbox=9, auth-level=networkadmin ,status=suspended", rotate.UserFilter{NetworkID: 3, MailboxID: 9, AuthLevel: "NetworkAdmin", Status: "Suspended"}, ""},
		{"mailbox=9", rotate.UserFilter{MailboxID: 9, Status: "Active"}, ""},
		{"status=any", rotate.UserFilter{}, ""},
		{"network=1,network=2", rotate.UserFilter{}, "network given twice"},
		{"network=x", rotate.UserFilter{}, "want an ID"},
		{"network=0", rotate.UserFilter{}, "want an ID"},
		{"network=1,status=gone", rotate.UserFilter{}, "want one of Development"},
		{"network=1,auth-level=boss", rotate.UserFilter{}, "want one of Root"},
		{"network=1,team=ops", rotate.UserFilter{}, "unknown key"},
		{"network", rotate.UserFilter{}, "not key=value"},
		{"", rotate.UserFilter{Status: "Active"}, ""},
	} {
		t.Run(c.spec, func(t *testing.T) {
			got, err := job.ParseSelect(c.spec)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ParseSelect = %+v, %v", got, err)
			}
		})
	}
}
