package report

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// createUnnamed opens a new regular file (0600) in the folder dir that has
// no name yet (O_TMPFILE), and returns it with the function that gives it
// the name final, which must be in dir and must not exist: a crash before
// then leaves nothing behind, and the name appears in one step, complete.
// ok is false where the file system or the kernel cannot (no O_TMPFILE, or
// no /proc to link it from): the caller then writes a temporary name and
// renames it.
func createUnnamed(dir string) (f *os.File, link func(final string) error, ok bool, err error) {
	if !haveProcFD() {
		return nil, nil, false, nil
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
			return nil, nil, false, nil
		}
		return nil, nil, false, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f = os.NewFile(uintptr(fd), dir)
	link = func(final string) error {
		// linkat through /proc, not AT_EMPTY_PATH, which needs
		// CAP_DAC_READ_SEARCH; it never replaces final (EEXIST).
		err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, final, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s appeared while sealing: refusing to replace it", final)
		}
		if err != nil {
			return &os.LinkError{Op: "link", Old: dir + " (unnamed)", New: final, Err: err}
		}
		return nil
	}
	return f, link, true, nil
}

// haveProcFD reports whether /proc/self/fd is there to link unnamed files
// from (a container may run without /proc); asked once.
var haveProcFD = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
})
