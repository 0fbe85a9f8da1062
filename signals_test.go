package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMDuringStartUpAsPID1 runs the real binary as PID 1 of its own
// PID namespace (as in a container) and sends SIGTERM while it waits on
// something read-only during start-up: a preflight to a server that accepts
// the request and never answers, and opening an --api-key-file that is a
// FIFO with no writer. Each must exit 3 within 5 s, saying that nothing was
// changed, instead of waiting out --timeout (or forever).
func TestSIGTERMDuringStartUpAsPID1(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	if out, err := exec.Command("unshare", "--pid", "--fork", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a PID namespace here: %v %s", err, out)
	}
	tests := []struct {
		name string
		// setup returns the extra arguments and environment, and waits
		// until the child is blocked where the test wants it.
		setup func(t *testing.T, w *crashWorld) (args, env []string, blocked func(pid int))
	}{
		{"preflight never answered", func(t *testing.T, w *crashWorld) ([]string, []string, func(int)) {
			arrived := make(chan struct{}, 1)
			release := make(chan struct{})
			hang := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				select {
				case arrived <- struct{}{}:
				default:
				}
				<-release
			}))
			t.Cleanup(func() { close(release); hang.Close() })
			return []string{"--base-url", hang.URL, "--timeout", "30s"}, []string{"ECGRID_API_KEY=" + scriptKey},
				func(int) {
					select {
					case <-arrived:
					case <-time.After(20 * time.Second):
						t.Fatal("the preflight never arrived")
					}
				}
		}},
		{"api key file is a FIFO with no writer", func(t *testing.T, w *crashWorld) ([]string, []string, func(int)) {
			fifo := filepath.Join(w.dir, "api-key")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"--api-key-file", fifo}, []string{"ECGRID_API_KEY="}, func(pid int) {
				// Blocked in openat(2) on the FIFO: /proc says so.
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/wchan")
					for _, task := range tasks {
						if b, err := os.ReadFile(task); err == nil && string(b) == "wait_for_partner" {
							return
						}
					}
					time.Sleep(10 * time.Millisecond)
				}
				t.Fatal("the child never blocked on the FIFO")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newCrashWorld(t, 5)
			out := filepath.Join(w.dir, "out")
			extra, env, blocked := tt.setup(t, w)
			args := append([]string{"--pid", "--fork", "--kill-child", os.Args[0], "run", "--input", w.input, "--apply", "--out", out,
				"--recipient", w.id.Recipient().String(), "--base-url", w.url, "--log-format", "json"}, extra...)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "unshare", args...)
			cmd.Env = append(append(os.Environ(), "PWROTATE_TEST_AS_MAIN=1"), env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := childOf(t, cmd.Process.Pid)
			blocked(pid)
			sent := time.Now()
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			took := time.Since(sent)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("SIGTERM as PID 1: %v, want exit 3\n%s", err, &stderr)
			}
			if took > 5*time.Second {
				t.Errorf("exit 3 came %v after SIGTERM, want under 5 s", took)
			}
			t.Logf("exit 3 %v after SIGTERM", took.Round(time.Millisecond))
			if !strings.Contains(stderr.String(), "nothing was changed") {
				t.Errorf("stderr does not say that nothing was changed:\n%s", &stderr)
			}
			if n := w.sim.Count("password"); n != 0 {
				t.Errorf("%d password calls, want 0", n)
			}
		})
	}
}

// childOf returns the PID (as this process sees it) of the only child of
// pid, waiting for it to appear.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	path := "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				c, err := strconv.Atoi(f[0])
				if err == nil {
					return c
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no child of pid %d", pid)
	return 0
}
