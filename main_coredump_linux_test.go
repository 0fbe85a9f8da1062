//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcessDisablesCoreDumps holds a real pwrotate process at its
// start-up pause (after the process settings) and reads, through /proc,
// that its core file size limit is 0, soft and hard, and (when the test
// does not run as root, which reads any process) that it is not dumpable:
// the kernel then makes root the owner of its /proc files.
func TestProcessDisablesCoreDumps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "version")
	cmd.Env = append(os.Environ(), "PWROTATE_TEST_AS_MAIN=1")
	var stderr strings.Builder
	done := startPaused(ctx, t, cmd, &stderr)
	proc := filepath.Join("/proc", fmt.Sprint(cmd.Process.Pid))
	limits, err := os.ReadFile(filepath.Join(proc, "limits"))
	if err != nil {
		t.Fatal(err)
	}
	core := ""
	for _, line := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(line, "Max core file size") {
			core = strings.Join(strings.Fields(strings.TrimPrefix(line, "Max core file size")), " ")
		}
	}
	if core != "0 0 bytes" {
		t.Errorf("core file size limit (soft hard unit) %q, want \"0 0 bytes\"", core)
	}
	if uid := os.Getuid(); uid != 0 {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(proc, "status"), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 {
			t.Errorf("%s/status is owned by uid %d: the process is still dumpable", proc, st.Uid)
		}
	} else {
		t.Log("running as root: the dumpable flag is checked in package secret only")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	done()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "warning") {
		t.Errorf("the process warns at start-up:\n%s", stderr.String())
	}
}
