//go:build linux

package secret

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDisableCoreDumps calls DisableCoreDumps in a child process (the
// change cannot be undone) and checks there, through the kernel, that the
// core file size limit is 0 (soft and hard) and the process is no longer
// dumpable.
func TestDisableCoreDumps(t *testing.T) {
	if os.Getenv("PWROTATE_TEST_COREDUMP_CHILD") == "1" {
		coreDumpChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDisableCoreDumps$")
	cmd.Env = append(os.Environ(), "PWROTATE_TEST_COREDUMP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"before: dumpable=1", "after: core=0/0 dumpable=0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
}

// coreDumpChild prints the process's core dump state before and after
// DisableCoreDumps.
func coreDumpChild() {
	report := func(when string) {
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil {
			fmt.Println("getrlimit:", err)
			os.Exit(1)
		}
		d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		if err != nil {
			fmt.Println("prctl PR_GET_DUMPABLE:", err)
			os.Exit(1)
		}
		fmt.Printf("%s: dumpable=%d\n%s: core=%d/%d dumpable=%d\n", when, d, when, lim.Cur, lim.Max, d)
	}
	report("before")
	if err := DisableCoreDumps(); err != nil {
		fmt.Println("DisableCoreDumps:", err)
		os.Exit(1)
	}
	report("after")
}
