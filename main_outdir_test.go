package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"filippo.io/age"
)

// TestOutFolderPlanted: a root run refuses (exit 1, before any call) an
// output folder that another user owns, a folder given as a link, and a
// folder whose .lock, results.csv or key log is a link or not a regular
// file; the file a planted link points to is left untouched, and a FIFO
// does not hang the run.
func TestOutFolderPlanted(t *testing.T) {
	const precious = "root's file\n"
	sim := newSim(1000, 3)
	srv := serveSim(t, sim)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(users, []byte("userId\n1000\n1001\n1002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := func(name string) func(t *testing.T, out, outside string) {
		return func(t *testing.T, out, outside string) {
			if err := os.Symlink(outside, filepath.Join(out, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name  string
		flags []string
		plant func(t *testing.T, out, outside string)
		errIn []string
	}{
		{"lock linked to a root file", nil, link(".lock"), []string{".lock", "symbolic link"}},
		{"results linked, resume", []string{"--resume"}, link("results.csv"), []string{"results.csv", "symbolic link"}},
		{"key log linked, resume", []string{"--resume", "--rotate-api-keys"}, link("apikeys-log.csv"), []string{"apikeys-log.csv", "symbolic link"}},
		{"results a FIFO, resume", []string{"--resume"}, func(t *testing.T, out, _ string) {
			if err := syscall.Mkfifo(filepath.Join(out, "results.csv"), 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, []string{"results.csv", "FIFO"}},
		{"results a folder, resume", []string{"--resume"}, func(t *testing.T, out, _ string) {
			if err := os.Mkdir(filepath.Join(out, "results.csv"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, []string{"results.csv", "a folder"}},
		{"folder owned by another user", nil, func(t *testing.T, out, _ string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a folder to another user")
			}
			if err := os.Chown(out, 12345, 12345); err != nil {
				t.Fatal(err)
			}
		}, []string{"owned by uid 12345"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("ECGRID_API_KEY", scriptKey)
			outside := filepath.Join(t.TempDir(), "precious")
			if err := os.WriteFile(outside, []byte(precious), 0o600); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := os.Mkdir(out, 0o700); err != nil {
				t.Fatal(err)
			}
			c.plant(t, out, outside)
			before := len(sim.Calls())
			args := append([]string{"run", "--log-format", "json", "--progress", "never", "--base-url", srv.URL,
				"--input", users, "--apply", "--out", out, "--recipient", id.Recipient().String(), "--rate", "0"}, c.flags...)
			code, _, stderr := runMain(t, strings.NewReader(""), args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstderr:\n%s", code, stderr)
			}
			for _, s := range append(c.errIn, "output folder", out) {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr does not say %q:\n%s", s, stderr)
				}
			}
			if b, err := os.ReadFile(outside); err != nil || string(b) != precious {
				t.Errorf("the file outside is now %q (%v)", b, err)
			}
			if n := len(sim.Calls()) - before; n != 0 {
				t.Errorf("%d API calls", n)
			}
		})
	}
}
