package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"pwrotate/report"
)

// Names of the files a run keeps in its output folder.
const (
	LockName     = ".lock"
	ManifestName = "run.json"
	ResultsName  = "results.csv"
	SummaryName  = "summary.json"
	// DemoIdentityName is the age identity that --demo seals to.
	DemoIdentityName = "demo-identity.txt"
)

// ErrBusy reports that another run holds the output folder.
var ErrBusy = errors.New("output folder is in use by another run")

// Manifest is run.json: what a resumed run must agree with.
type Manifest struct {
	Version     string    `json:"version"`
	Input       string    `json:"input"`
	InputSHA256 string    `json:"inputSha256"`
	StartedAt   time.Time `json:"startedAt"`
	Shard       string    `json:"shard,omitempty"`
}

// OutDir is an output folder held by this process (flock on .lock, released
// by the kernel even on kill -9, so a lock is never stale for long).
type OutDir struct {
	Path string
	lock *os.File
}

// ours reports whether name is a file a run leaves in its output folder.
func ours(name string) bool {
	switch name {
	case LockName, ManifestName, ResultsName, SummaryName, DemoIdentityName:
		return true
	}
	return strings.HasPrefix(name, "passwords-g") || strings.HasPrefix(name, ".tmp-") ||
		strings.HasPrefix(name, "shard-") || strings.HasPrefix(name, ResultsName+".") ||
		name == report.KeyLogName || report.IsAPIKeysFile(name)
}

// OpenOut creates (0700) and locks the output folder. Without resume the
// folder must be empty (a demo identity aside); with resume it must be empty
// or hold an earlier run's files, nothing foreign.
func OpenOut(path string, resume bool) (*OutDir, error) {
	if path == "" {
		return nil, errors.New("--out: an output folder is required with --apply")
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("output folder %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("output folder %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("output folder %s: not a folder", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o700); err != nil {
			return nil, fmt.Errorf("output folder %s: %w", path, err)
		}
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("output folder %s: %w", path, err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == DemoIdentityName || name == LockName:
		case !resume:
			return nil, fmt.Errorf("output folder %s is not empty (has %s): pass --resume to continue the run in it, or choose a new folder", path, name)
		case !ours(name):
			return nil, fmt.Errorf("output folder %s holds %s, which is not a pwrotate output: refusing to use it", path, name)
		}
	}
	lf, err := os.OpenFile(filepath.Join(path, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("output folder %s: lock: %w", path, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(lf.Name())
		lf.Close()
		h := strings.TrimSpace(string(holder))
		if len(h) > 200 {
			h = h[:200]
		}
		return nil, fmt.Errorf("%w: %s (holder: %s)", ErrBusy, path, strconv.Quote(h))
	}
	host, _ := os.Hostname()
	if err := lf.Truncate(0); err == nil {
		_, _ = lf.WriteAt([]byte(fmt.Sprintf("pid %d host %s\n", os.Getpid(), host)), 0)
		_ = lf.Sync()
	}
	return &OutDir{Path: path, lock: lf}, nil
}

// Close releases the lock. The lock file stays: the flock, not the file, is
// the lock.
func (o *OutDir) Close() error {
	if o == nil || o.lock == nil {
		return nil
	}
	err := o.lock.Close()
	o.lock = nil
	return err
}

// File returns the path of name inside the folder.
func (o *OutDir) File(name string) string { return filepath.Join(o.Path, name) }

// ReadManifest returns the folder's run.json, or ok=false if there is none.
func (o *OutDir) ReadManifest() (m Manifest, ok bool, err error) {
	b, err := os.ReadFile(o.File(ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("reading %s: %w", ManifestName, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, false, fmt.Errorf("reading %s: %w", o.File(ManifestName), err)
	}
	return m, true, nil
}

// WriteManifest writes run.json atomically.
func (o *OutDir) WriteManifest(m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return report.WriteFileAtomic(o.File(ManifestName), append(b, '\n'), 0o600)
}
