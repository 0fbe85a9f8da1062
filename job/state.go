package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	DemoIdentityName = report.DemoIdentityName
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
	// Reason is the --reason of the run that started the folder.
	Reason string `json:"reason,omitempty"`
	// ProtectEntries and ProtectSHA256 name the --protect entries the run
	// started with (Protect.Fingerprint): a resume must bring the same.
	ProtectEntries int    `json:"protectEntries,omitempty"`
	ProtectSHA256  string `json:"protectSha256,omitempty"`
	// ResetSessions records that the run resets the sessions of every user
	// it changes: a resume owes those resets even without the flag.
	ResetSessions bool `json:"resetSessions,omitempty"`
	// RotateAPIKeys records that the run rotates the API key of every user
	// it changes: a resume owes those keys even without the flag.
	RotateAPIKeys bool `json:"rotateApiKeys,omitempty"`
	// Selection is set for a run --select: the filter, how many users
	// were listed, and the snapshot's path and sha256.
	Selection *Selection `json:"selection,omitempty"`
}

// OutDir is an output folder held by this process (flock on .lock, released
// by the kernel even on kill -9, so a lock is never stale for long).
type OutDir struct {
	Path string
	// Files writes the folder's files (run.json here); its Hook is the
	// run's test hook.
	Files report.Files
	lock  *os.File
}

// ours reports whether name is a file a run leaves in its output folder.
func ours(name string) bool {
	switch name {
	case LockName, ManifestName, ResultsName, SummaryName, DemoIdentityName, SnapshotName:
		return true
	}
	if _, ok := ourTemp(name); ok {
		return true
	}
	return strings.HasPrefix(name, "passwords-g") || strings.HasPrefix(name, ".tmp-") ||
		strings.HasPrefix(name, "shard-") || strings.HasPrefix(name, ResultsName+".") ||
		name == report.KeyLogName || report.IsAPIKeysFile(name)
}

// ourTemp reports whether name is the temporary file of an atomic write
// that a run makes in its output folder (run.json, results.csv,
// summary.json, a sealed file), left behind by a process killed inside
// that write, and returns the final name.
func ourTemp(name string) (string, bool) {
	final, ok := report.TempFinal(name)
	if !ok {
		return "", false
	}
	switch final {
	case ManifestName, ResultsName, SummaryName, SnapshotName:
		return final, true
	}
	return final, strings.HasPrefix(final, "passwords-g")
}

// clearTemps removes the temporary files that a process killed inside an
// atomic write left in dir. Call it holding the folder's lock: then no
// write of another run is under way.
func clearTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("output folder %s: %w", dir, err)
	}
	removed := false
	for _, e := range entries {
		if _, ok := ourTemp(e.Name()); !ok || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("output folder %s: removing the leftover %s of an interrupted write: %w", dir, e.Name(), err)
		}
		removed = true
	}
	if removed {
		return report.SyncDir(dir)
	}
	return nil
}

// OpenOut creates (0700) and locks the output folder. Without resume the
// folder must be empty (a demo identity aside); with resume it must be empty
// or hold an earlier run's files, nothing foreign. The folder must be a
// folder, not a symbolic link, owned by the effective user, and every entry
// in it a regular file: whoever else could write it could have planted a
// link that makes a root run overwrite or read another file.
func OpenOut(path string, resume bool) (*OutDir, error) {
	if path == "" {
		return nil, errors.New("--out: an output folder is required with --apply")
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("output folder %s: %w", path, err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("output folder %s: %w", path, err)
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("output folder %s is a symbolic link: refusing to follow it; give the folder it points to", path)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("output folder %s: not a folder", path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("output folder %s is owned by uid %d, not by this user (uid %d): refusing to use it (another user could plant files in it); choose a folder of your own",
			path, sys.Uid, os.Geteuid())
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
		if !e.Type().IsRegular() && (resume || name == DemoIdentityName || name == LockName) {
			return nil, fmt.Errorf("output folder %s: %w", path, report.NotRegular(filepath.Join(path, name), e.Type()))
		}
		switch {
		case name == DemoIdentityName || name == LockName:
		case !resume:
			return nil, fmt.Errorf("output folder %s is not empty (has %s): pass --resume to continue the run in it, or choose a new folder", path, name)
		case !ours(name):
			return nil, fmt.Errorf("output folder %s holds %s, which is not a pwrotate output: refusing to use it", path, name)
		}
	}
	lf, err := report.OpenFile(filepath.Join(path, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("output folder %s: lock: %w", path, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(lf, 4096))
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
	if resume {
		if err := clearTemps(path); err != nil {
			lf.Close()
			return nil, err
		}
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
	return readManifest(o.Path)
}

// readManifest returns dir's run.json, or ok=false if there is none.
func readManifest(dir string) (m Manifest, ok bool, err error) {
	path := filepath.Join(dir, ManifestName)
	b, err := report.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("reading %s: %w", ManifestName, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, false, fmt.Errorf("reading %s: %w", path, err)
	}
	return m, true, nil
}

// checkBound refuses to continue in an output folder that holds what only
// a run leaves after writing run.json (results rows, sealed passwords or
// API keys) but no run.json: without it nothing binds those files to an
// input, so old rows could be taken for another input's users. A dry run's
// folder is refused as such.
func checkBound(o *OutDir) error {
	_, ok, err := o.ReadManifest()
	if err != nil || ok {
		return err
	}
	if prev, err := report.ReadSummary(o.File(SummaryName)); err == nil && prev.DryRun {
		return fmt.Errorf("output folder %s holds a dry run's plan, not a run: choose another --out", o.Path)
	}
	var what string
	rows, err := report.ReadResults(o.File(ResultsName))
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist), len(rows) > 0:
		what = ResultsName
	default:
		gens, err := report.SealedGenerations(o.Path)
		if err != nil {
			return fmt.Errorf("output folder %s: %w", o.Path, err)
		}
		batches, err := report.APIKeyBatches(o.Path)
		if err != nil {
			return fmt.Errorf("output folder %s: %w", o.Path, err)
		}
		switch {
		case len(gens) > 0:
			what = report.SealedName(gens[0])
		case len(batches) > 0:
			what = report.APIKeysName(batches[0])
		default:
			return nil
		}
	}
	return fmt.Errorf("--resume: output folder %s holds %s but no %s, which binds a run to its input: "+
		"refusing to continue a run whose input is unknown; choose a new --out", o.Path, what, ManifestName)
}

// layoutName names a shard layout as run.json records it ("K/N", or ""
// for a run without shards).
func layoutName(shard string) string {
	if shard == "" {
		return "a run without shards"
	}
	return "shard " + shard
}

// CheckLayout refuses an output folder laid out for another sharding than
// this run's (shard of shards; shards <= 1: no sharding). out is the run's
// own folder: OUT for a run without shards, OUT/shard-K for shard K (whose
// parent OUT is then checked too). A folder is bound to its layout: its
// run.json must name the same shard; a run without shards must not find
// shard-* folders in OUT; a shard must not find a run without shards in
// OUT, nor a shard of another number of shards beside it. The error names
// both layouts. Nothing is created or changed.
func CheckLayout(out string, shard, shards int) error {
	this := ""
	if shards > 1 {
		this = fmt.Sprintf("%d/%d", shard, shards)
	}
	const hint = "a folder is bound to the shard layout of its first run: use the same --shard/--shards, or choose another --out"
	m, ok, err := readManifest(out)
	if err != nil {
		return err
	}
	if ok && m.Shard != this {
		return fmt.Errorf("output folder %s holds %s (run.json); this run is %s: %s", out, layoutName(m.Shard), layoutName(this), hint)
	}
	if shards <= 1 {
		entries, err := os.ReadDir(out)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("output folder %s: %w", out, err)
		}
		for _, e := range entries {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), "shard-") {
				continue
			}
			what := "a sharded run"
			if sm, ok, _ := readManifest(filepath.Join(out, e.Name())); ok && sm.Shard != "" {
				what = layoutName(sm.Shard)
			}
			return fmt.Errorf("output folder %s holds %s (in %s); this run is %s: %s", out, what, e.Name(), layoutName(this), hint)
		}
		return nil
	}
	if filepath.Base(out) != fmt.Sprintf("shard-%d", shard) {
		return nil
	}
	parent := filepath.Dir(out)
	entries, err := os.ReadDir(parent)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("output folder %s: %w", parent, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() {
			if name == ManifestName || name == ResultsName || name == SummaryName ||
				strings.HasPrefix(name, "passwords-g") && strings.HasSuffix(name, ".age") {
				return fmt.Errorf("output folder %s holds %s (%s); this run is %s: %s", parent, layoutName(""), name, layoutName(this), hint)
			}
			continue
		}
		if !strings.HasPrefix(name, "shard-") || name == filepath.Base(out) {
			continue
		}
		sm, ok, err := readManifest(filepath.Join(parent, name))
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if _, n, found := strings.Cut(sm.Shard, "/"); !found || n != fmt.Sprint(shards) {
			return fmt.Errorf("output folder %s holds %s (in %s); this run is %s: %s", parent, layoutName(sm.Shard), name, layoutName(this), hint)
		}
	}
	return nil
}

// WriteManifest writes run.json atomically.
func (o *OutDir) WriteManifest(m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return o.Files.WriteFileAtomic(o.File(ManifestName), append(b, '\n'), 0o600)
}
