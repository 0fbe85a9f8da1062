// Command pwrotate rotates ECGrid user passwords in bulk: it reads a CSV of
// user IDs, gives each user a compliant password, seals the passwords with
// age before sending them, changes them through a rate-limited worker pool,
// and leaves a results CSV and a summary. See README.md and docs/reference.md.
//
// main only installs the signal handler, dispatches to one cmd_*.go file per
// subcommand and maps errors to exit codes.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"pwrotate/job/gcpace"
	"pwrotate/report"
	"pwrotate/rotate/secret"
)

// Set with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

func main() { os.Exit(realMain()) }

// startProfile starts a CPU profile and returns what stops it; a no-op
// unless built with the pprof tag (profile_on.go).
var startProfile = func() func() { return func() {} }

// realMain is the process: the signal handler first of all, so that a
// SIGTERM during start-up is an interruption (exit 3) and never Go's default
// death, then the process settings (no core dumps: a crash must not write
// the passwords in memory to disk), then the command line.
func realMain() int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := secret.DisableCoreDumps(); err != nil {
		// Not fatal: the run is still safe unless it crashes.
		fmt.Fprintf(os.Stderr, "pwrotate: warning: %v\n", err)
	}
	testPauseAtStart(sigs)
	defer startProfile()()
	// Few collections while the heap is small, GOGC=50's pacing once it
	// is large; the environment's GOGC or GOMEMLIMIT wins
	// (docs/performance.md).
	defer gcpace.Start(os.Getenv)()
	return dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, sigs)
}

// Main runs the command line args in-process (tests) and returns the exit
// code. It installs its own signal handler for 'run'.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return dispatch(args, stdin, stdout, stderr, nil)
}

// dispatch runs one subcommand. sigs, when not nil, is the process's signal
// channel, installed before anything else.
func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer, sigs chan os.Signal) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, helpTop)
		return report.ExitFatal
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdin, stdout, stderr, sigs)
	case "users":
		return cmdUsers(args[1:], stdout, stderr, sigs)
	case "open":
		return cmdOpen(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "pwrotate %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return report.ExitOK
	case "help", "-h", "--help":
		return cmdHelp(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "pwrotate: error: unknown command %q\npwrotate: hint: the commands are run, users, open and version; 'pwrotate help' says more\n", args[0])
		return report.ExitFatal
	}
}

// testPauseAtStart holds the process, right after the signal handler is
// installed, until a signal arrives, which it puts back for the command to
// find. Only tests set PWROTATE_TEST_PAUSE_AT=start (a signal during
// start-up must exit 3).
func testPauseAtStart(sigs chan os.Signal) {
	if os.Getenv("PWROTATE_TEST_PAUSE_AT") != "start" {
		return
	}
	fmt.Fprintln(os.Stderr, "pwrotate: test: paused at start")
	sigs <- <-sigs
}
