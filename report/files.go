// Package report holds what a run leaves on disk: the results CSV (appended
// as outcomes arrive, fsynced, repaired after a crash), the passwords sealed
// with age, the code that opens them again, summary.json, and the helpers
// that write files atomically.
//
// Every file it creates is mode 0600; the output folder itself is created by
// the caller. No function here ever puts a password into an error.
package report

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Hook is called at named points inside the file writes of this package
// (the crash tests kill the process there). A nil Hook does nothing.
type Hook func(point string)

func (h Hook) call(point string) {
	if h != nil {
		h(point)
	}
}

// Files writes the files of an output folder, calling Hook at
// "atomic-NAME" (NAME the final file name, e.g. "atomic-summary.json")
// inside every atomic write: after the temporary file is complete and
// fsynced, before it is renamed. The zero value is ready to use; the
// package-level functions of the same names use it.
type Files struct {
	Hook Hook
}

// TempFinal reports whether name is a temporary file that this package
// creates while writing a file atomically (".NAME.DIGITS.tmp" from
// WriteFileAtomic, ".probe.PID.tmp" from the probe of unnamed files,
// "passwords-gNNNN.age.tmp" from Seal where a sealed file cannot be
// written unnamed), and returns the final name it stands for. A process
// killed inside such a write leaves the temporary file behind; it holds
// nothing the final file does not.
func TempFinal(name string) (final string, ok bool) {
	if base, ok := strings.CutSuffix(name, sealedSuffix+tmpSuffix); ok {
		if _, ok := sealedGen(base + sealedSuffix); ok {
			return base + sealedSuffix, true
		}
		if _, ok := escrowGen(base + sealedSuffix); ok {
			return base + sealedSuffix, true
		}
		return "", false
	}
	rest, ok := strings.CutPrefix(name, ".")
	if !ok {
		return "", false
	}
	if rest, ok = strings.CutSuffix(rest, tmpSuffix); !ok {
		return "", false
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot <= 0 || dot == len(rest)-1 {
		return "", false
	}
	for _, c := range rest[dot+1:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return rest[:dot], true
}

// WriteFileAtomic writes data to path so that path holds either its old
// content or all of data, never a mix: it writes a temporary file in the same
// folder, fsyncs it, renames it over path and fsyncs the folder.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return Files{}.WriteFileAtomic(path, data, perm)
}

// WriteFileAtomic is the package-level WriteFileAtomic, calling f.Hook.
func (f Files) WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return f.writeAtomic(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileAtomicFunc is WriteFileAtomic with the content streamed by fill
// through a buffered writer: path holds its old content or all that fill
// wrote, fsynced; an error from fill leaves path as it was.
func WriteFileAtomicFunc(path string, perm os.FileMode, fill func(w io.Writer) error) error {
	return Files{}.writeAtomic(path, perm, fill)
}

// writeAtomic is WriteFileAtomic with the content streamed by fill through a
// buffered writer.
func (f Files) writeAtomic(path string, perm os.FileMode, fill func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	bw := bufio.NewWriterSize(tmp, 64<<10)
	if err := fill(bw); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	f.Hook.call("atomic-" + base)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		// The rename happened; only its durability is in doubt. Report it
		// without removing anything.
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a folder, making the creation, renaming and removal of the
// files in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing folder %s: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("syncing folder %s: %w", dir, err)
	}
	return nil
}

// OpenFile opens path, a file of an output folder, as os.OpenFile does, but
// never through a symbolic link (O_NOFOLLOW) and only when it is a regular
// file: a link, a FIFO, a device or a folder under one of the folder's names
// (planted by whoever could write the folder) is refused with an error
// naming path and the cause. Opening a FIFO does not block. A missing file
// is an error that matches fs.ErrNotExist. Every file of an output folder is
// opened through it.
func OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	// O_NONBLOCK: an open of a FIFO for reading would otherwise wait for a
	// writer. It is cleared again below: the file is then a regular file.
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if st, lerr := os.Lstat(path); lerr == nil && !st.Mode().IsRegular() {
			return nil, NotRegular(path, st.Mode())
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, NotRegular(path, st.Mode())
	}
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// ErrNotRegular reports a file of an output folder that is not a regular
// file (a symbolic link, a FIFO, a device, a folder): it is never used.
var ErrNotRegular = errors.New("not a regular file")

// NotRegular is the error, matching ErrNotRegular, for the file path of an
// output folder whose mode m is not a regular file's.
func NotRegular(path string, m fs.FileMode) error {
	what := "a " + m.Type().String()
	switch {
	case m&fs.ModeSymlink != 0:
		what = "a symbolic link"
	case m.IsDir():
		what = "a folder"
	case m&fs.ModeNamedPipe != 0:
		what = "a FIFO"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	case m&fs.ModeDevice != 0:
		what = "a device"
	}
	return fmt.Errorf("%s is %s, %w: refusing to use it", path, what, ErrNotRegular)
}

// ReadFile reads the whole file path of an output folder, opened with
// OpenFile.
func ReadFile(path string) ([]byte, error) {
	f, err := OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
