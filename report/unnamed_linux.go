package report

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// createUnnamed opens a new regular file (0600) in the folder dir that has
// no name yet (O_TMPFILE), and returns it with the function that gives it
// the name final, which must be in dir and must not exist: a crash before
// then leaves nothing behind, and the name appears in one step, complete.
// ok is false where the file system or the kernel cannot (no O_TMPFILE, no
// /proc to link it from, or a link through /proc refused: probed once a
// folder, before any file is written): the caller then writes a temporary
// name and renames it.
func createUnnamed(dir string) (f *os.File, link func(final string) error, ok bool, err error) {
	if !haveProcFD() {
		return nil, nil, false, nil
	}
	v, _ := unnamedWorks.LoadOrStore(dir, new(probe))
	p := v.(*probe)
	p.once.Do(func() { p.works = probeUnnamed(dir) })
	if !p.works {
		return nil, nil, false, nil
	}
	f, err = openUnnamed(dir)
	if errors.Is(err, errNoUnnamed) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, err
	}
	return f, func(final string) error { return linkUnnamed(f, final) }, true, nil
}

// unnamedWorks holds, per folder, the probe of whether an unnamed file can
// be linked there (probeUnnamed): run once, however many files are sealed
// there at once.
var unnamedWorks sync.Map // folder → *probe

// probe is one folder's probeUnnamed, run once.
type probe struct {
	once  sync.Once
	works bool
}

// errNoUnnamed reports that the file system or the kernel has no O_TMPFILE.
var errNoUnnamed = errors.New("no O_TMPFILE")

// openUnnamed opens a new unnamed file (0600) in dir.
func openUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return nil, errNoUnnamed
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed)")), nil
}

// probeUnnamed reports whether an unnamed file in dir can be linked into
// it through /proc (a sandbox or a security module may refuse): it links
// one under a temporary name that a resume clears (TempFinal) and removes
// it.
func probeUnnamed(dir string) bool {
	f, err := openUnnamed(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	probe := filepath.Join(dir, "."+probeName+"."+strconv.Itoa(os.Getpid())+tmpSuffix)
	if err := linkUnnamed(f, probe); err != nil {
		return false
	}
	return os.Remove(probe) == nil
}

// linkUnnamed gives the unnamed file f the name final. It links through
// /proc/self/fd (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH) while f's
// descriptor is held (a closed f is an error, never another file's
// descriptor), and never replaces final (EEXIST).
func linkUnnamed(f *os.File, final string) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.FormatUint(uint64(fd), 10),
			unix.AT_FDCWD, final, unix.AT_SYMLINK_FOLLOW)
	}); err != nil {
		return err
	}
	if errors.Is(lerr, unix.EEXIST) {
		return errAppeared(final)
	}
	if lerr != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: final, Err: lerr}
	}
	return nil
}

// renameNoReplace renames old to new unless new exists
// (renameat2 RENAME_NOREPLACE; where the file system cannot, a check
// and a rename).
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return errAppeared(new)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		return checkAndRename(old, new)
	}
	return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
}

// haveProcFD reports whether /proc/self/fd is there to link unnamed files
// from (a container may run without /proc); asked once.
var haveProcFD = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
})
