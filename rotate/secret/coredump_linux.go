//go:build linux

package secret

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DisableCoreDumps makes sure a crash of this process cannot write its
// memory, and the passwords in it, to disk: the core file size limit
// (RLIMIT_CORE, soft and hard) becomes 0, and the process is marked not
// dumpable (prctl PR_SET_DUMPABLE 0), which also stops core dumps piped to
// a handler that ignores the limit (systemd-coredump, apport) and ptrace
// attaches and /proc/PID/mem reads by other processes of the same user.
// Neither can be undone by this process. Call it first thing in main. Both
// are attempted; the error joins those that failed.
func DisableCoreDumps() error {
	var errs []error
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		errs = append(errs, fmt.Errorf("disabling core dumps: setrlimit RLIMIT_CORE 0: %w", err))
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		errs = append(errs, fmt.Errorf("disabling core dumps: prctl PR_SET_DUMPABLE 0: %w", err))
	}
	return errors.Join(errs...)
}
