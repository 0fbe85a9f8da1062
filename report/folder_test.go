package report

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpenOutClearsOwnTemps: the temporary files that a process killed
// inside an atomic write leaves behind do not block --resume; they are
// removed under the lock. A look-alike that pwrotate never writes is still
// refused.
func TestOpenOutClearsOwnTemps(t *testing.T) {
	ours := []string{
		".run.json.123456.tmp", ".results.csv.9.tmp", ".summary.json.4294967295.tmp",
		"passwords-g0002.age.tmp",
	}
	tests := []struct {
		name    string
		files   []string
		refused string // "" when OpenOut must accept the folder
	}{
		{"every temp name of ours", append([]string{"run.json", "results.csv"}, ours...), ""},
		{"temp of a foreign file", []string{"run.json", ".notes.txt.12.tmp"}, ".notes.txt.12.tmp"},
		{"temp without digits", []string{"run.json", ".results.csv.x1.tmp"}, ".results.csv.x1.tmp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, err := OpenFolder(dir, true)
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("OpenOut: %v, want a refusal naming %s", err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenOut: %v", err)
			}
			defer out.Close()
			for _, f := range ours {
				if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
					t.Errorf("%s still there after OpenOut (%v)", f, err)
				}
			}
			for _, f := range []string{"run.json", "results.csv"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
		})
	}
}

// TestCheckLayout: an output folder is bound to the shard layout of its
// first run; the refusal names both layouts.
func TestCheckLayout(t *testing.T) {
	manifest := func(shard string) string {
		return `{"version":"t","input":"u.csv","inputSha256":"ab","startedAt":"2026-01-01T00:00:00Z","shard":"` + shard + `"}`
	}
	tests := []struct {
		name          string
		files         map[string]string // path under OUT: content ("/" ending: a folder)
		dir           string            // the run's folder under OUT
		shard, shards int
		refused       []string // what the error names; nil: accepted
	}{
		{"fresh, no shards", nil, ".", 0, 1, nil},
		{"fresh shard", nil, "shard-1", 1, 3, nil},
		{"same layout resumed", map[string]string{"shard-0/run.json": manifest("0/2"), "shard-1/run.json": manifest("1/2")}, "shard-0", 0, 2, nil},
		{"sibling of the same layout", map[string]string{"shard-0/run.json": manifest("0/2")}, "shard-1", 1, 2, nil},
		{"sibling killed before its run.json", map[string]string{"shard-0/": ""}, "shard-1", 1, 3, nil},
		{"resumed with another shard count", map[string]string{"shard-0/run.json": manifest("0/2")}, "shard-0", 0, 3, []string{"shard 0/2", "shard 0/3"}},
		{"another shard count beside", map[string]string{"shard-0/run.json": manifest("0/2")}, "shard-1", 1, 3, []string{"shard 0/2", "shard 1/3"}},
		{"no shards beside shard folders", map[string]string{"shard-0/run.json": manifest("0/2")}, ".", 0, 1, []string{"shard 0/2", "without shards"}},
		{"no shards beside a shard killed early", map[string]string{"shard-3/": ""}, ".", 0, 1, []string{"a sharded run", "without shards"}},
		{"shard in a run without shards", map[string]string{"run.json": manifest(""), "results.csv": "x"}, "shard-0", 0, 2, []string{"without shards", "shard 0/2"}},
		{"shard where only sealed passwords are", map[string]string{"passwords-g0001.age": "x"}, "shard-0", 0, 2, []string{"without shards", "shard 0/2"}},
		{"run without shards in a shard folder", map[string]string{"run.json": manifest("1/2")}, ".", 0, 1, []string{"shard 1/2", "without shards"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for p, content := range tt.files {
				full := filepath.Join(root, p)
				if strings.HasSuffix(p, "/") {
					if err := os.MkdirAll(full, 0o700); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := CheckLayout(filepath.Join(root, tt.dir), tt.shard, tt.shards)
			if tt.refused == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range tt.refused {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

// TestOpenOutRefusesPlantedEntries: an output folder that someone else
// could write is refused before anything in it is opened (a root run
// must not truncate a file outside through a planted .lock link), and so
// is an entry of the folder that is not a regular file; a FIFO does not
// hang the open.
func TestOpenOutRefusesPlantedEntries(t *testing.T) {
	const precious = "root's file\n"
	tests := []struct {
		name   string
		resume bool
		plant  func(t *testing.T, dir, outside string)
		want   []string // in the error
	}{
		{"lock linked to a file outside", false, func(t *testing.T, dir, outside string) {
			mustSymlink(t, outside, filepath.Join(dir, lockName))
		}, []string{lockName, "symbolic link"}},
		{"lock linked, resume", true, func(t *testing.T, dir, outside string) {
			mustSymlink(t, outside, filepath.Join(dir, lockName))
		}, []string{lockName, "symbolic link"}},
		{"results linked, resume", true, func(t *testing.T, dir, outside string) {
			mustSymlink(t, outside, filepath.Join(dir, ResultsName))
		}, []string{ResultsName, "symbolic link"}},
		{"key log linked, resume", true, func(t *testing.T, dir, outside string) {
			mustSymlink(t, outside, filepath.Join(dir, "apikeys-log.csv"))
		}, []string{"apikeys-log.csv", "symbolic link"}},
		{"results a FIFO, resume", true, func(t *testing.T, dir, _ string) {
			if err := syscall.Mkfifo(filepath.Join(dir, ResultsName), 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, []string{ResultsName, "FIFO"}},
		{"results a folder, resume", true, func(t *testing.T, dir, _ string) {
			if err := os.Mkdir(filepath.Join(dir, ResultsName), 0o700); err != nil {
				t.Fatal(err)
			}
		}, []string{ResultsName, "a folder"}},
		{"folder of another user", false, func(t *testing.T, dir, _ string) {
			chownOther(t, dir)
		}, []string{"owned by uid 12345"}},
		{"folder of another user, resume", true, func(t *testing.T, dir, _ string) {
			chownOther(t, dir)
		}, []string{"owned by uid 12345"}},
		{"folder a link", false, func(t *testing.T, dir, _ string) {
			real := dir + ".real"
			if err := os.Mkdir(real, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, real, dir)
		}, []string{"symbolic link"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outside := filepath.Join(t.TempDir(), "precious")
			if err := os.WriteFile(outside, []byte(precious), 0o600); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "out")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			tt.plant(t, dir, outside)
			type result struct {
				out *Folder
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := OpenFolder(dir, tt.resume)
				done <- result{out, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("OpenOut hangs")
			}
			if r.err == nil {
				r.out.Close()
				t.Fatal("OpenOut accepted the folder")
			}
			for _, s := range append(tt.want, dir) {
				if !strings.Contains(r.err.Error(), s) {
					t.Errorf("error %q does not say %q", r.err, s)
				}
			}
			if b, err := os.ReadFile(outside); err != nil || string(b) != precious {
				t.Errorf("the file outside is now %q (%v)", b, err)
			}
		})
	}
}

func mustSymlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// chownOther gives dir to uid 12345 (the tests run as root).
func chownOther(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a folder to another user")
	}
	if err := os.Chown(dir, 12345, 12345); err != nil {
		t.Fatal(err)
	}
}
