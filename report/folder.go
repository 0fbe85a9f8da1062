package report

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
)

// The names of the files a run keeps in its output folder: spelled here
// and nowhere else (Folder's methods give their paths).
const (
	lockName = ".lock"
	// ManifestName is run.json: what binds a folder to its run.
	ManifestName = "run.json"
	// ResultsName is the file name of the results CSV in an output folder.
	ResultsName = "results.csv"
	// SummaryName is the file name of the summary in an output folder.
	SummaryName = "summary.json"
	// SnapshotName holds the listing of a run --select: the run's input,
	// read again by --resume.
	SnapshotName = "input.csv"
	// KeyLogName is the log of API keys about to be replaced: for each
	// user, the sha256 of the key that was live before pwrotate asked for
	// a new one. Never a key. It also vouches for the sealed key batches
	// the run wrote: for each, a line "apikeys-NNNNN.age," and the sha256
	// of the file (KeyLog.RecordBatch), which open --api-keys prefers to
	// batches that nothing vouches for (age does not authenticate who
	// sealed a file).
	KeyLogName = "apikeys-log.csv"
	// DemoIdentityName is the age identity that --demo seals to.
	DemoIdentityName = "demo-identity.txt"
	sealedPrefix     = "passwords-g"
	escrowPrefix     = "deliver-g" // --deliver's escrow (escrow.go)
	sealedSuffix     = ".age"
	apiKeysPrefix    = "apikeys-"
	shardPrefix      = "shard-"
	tmpSuffix        = ".tmp"
	// probeName is what the probe of unnamed files (unnamed_linux.go)
	// links for a moment, as ".probe.PID.tmp": a temporary file of ours.
	probeName = "probe"
)

// ErrBusy reports that another run holds the output folder.
var ErrBusy = errors.New("output folder is in use by another run")

// Folder is an output folder held by this process (flock on .lock, released
// by the kernel even on kill -9, so a lock is never stale for long).
type Folder struct {
	Path string
	// Files writes the folder's files (run.json here); its Hook is the
	// run's test hook.
	Files Files
	lock  *os.File
}

// ours reports whether name is a file a run leaves in its output folder.
func ours(name string) bool {
	switch name {
	case lockName, ManifestName, ResultsName, SummaryName, DemoIdentityName, SnapshotName:
		return true
	}
	if _, ok := ourTemp(name); ok {
		return true
	}
	return strings.HasPrefix(name, sealedPrefix) || strings.HasPrefix(name, ".tmp-") ||
		strings.HasPrefix(name, shardPrefix) || strings.HasPrefix(name, ResultsName+".") ||
		name == KeyLogName || IsAPIKeysFile(name) || IsEscrowName(name)
}

// ourTemp reports whether name is the temporary file of an atomic write
// that a run makes in its output folder (run.json, results.csv,
// summary.json, a sealed file, the probe of unnamed files), left behind by
// a process killed inside that write, and returns the final name.
func ourTemp(name string) (string, bool) {
	final, ok := TempFinal(name)
	if !ok {
		return "", false
	}
	switch final {
	case ManifestName, ResultsName, SummaryName, SnapshotName, probeName:
		return final, true
	}
	return final, strings.HasPrefix(final, sealedPrefix) || IsEscrowName(final)
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
		return SyncDir(dir)
	}
	return nil
}

// OpenFolder creates (0700) and locks the output folder. Without resume the
// folder must be empty (a demo identity aside); with resume it must be empty
// or hold an earlier run's files, nothing foreign. The folder must be a
// folder, not a symbolic link, owned by the effective user, and every entry
// in it a regular file: whoever else could write it could have planted a
// link that makes a root run overwrite or read another file.
func OpenFolder(path string, resume bool) (*Folder, error) {
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
		if !e.Type().IsRegular() && (resume || name == DemoIdentityName || name == lockName) {
			return nil, fmt.Errorf("output folder %s: %w", path, NotRegular(filepath.Join(path, name), e.Type()))
		}
		switch {
		case name == DemoIdentityName || name == lockName:
		case !resume:
			return nil, Kind(ErrNotEmpty, fmt.Errorf("output folder %s is not empty (has %s): pass --resume to continue the run in it, or choose a new folder", path, name))
		case !ours(name):
			return nil, fmt.Errorf("output folder %s holds %s, which is not a pwrotate output: refusing to use it", path, name)
		}
	}
	lf, err := OpenFile(filepath.Join(path, lockName), os.O_RDWR|os.O_CREATE, 0o600)
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
	return &Folder{Path: path, lock: lf}, nil
}

// Close releases the lock. The lock file stays: the flock, not the file, is
// the lock.
func (o *Folder) Close() error {
	if o == nil || o.lock == nil {
		return nil
	}
	err := o.lock.Close()
	o.lock = nil
	return err
}

// File returns the path of name inside the folder.
func (o *Folder) File(name string) string { return filepath.Join(o.Path, name) }

// ResultsPath is the path of the folder's results.csv.
func (o *Folder) ResultsPath() string { return o.File(ResultsName) }

// SummaryPath is the path of the folder's summary.json.
func (o *Folder) SummaryPath() string { return o.File(SummaryName) }

// ManifestPath is the path of the folder's run.json, whose modification
// time is the run's heartbeat.
func (o *Folder) ManifestPath() string { return o.File(ManifestName) }

// SnapshotPath is the path of the folder's --select listing.
func (o *Folder) SnapshotPath() string { return o.File(SnapshotName) }

// ShardDir is the name of shard k's folder inside an output folder.
func ShardDir(k int) string { return fmt.Sprintf("%s%d", shardPrefix, k) }

// IsSealedName reports whether name is a sealed password file's.
func IsSealedName(name string) bool {
	return strings.HasPrefix(name, sealedPrefix) && strings.HasSuffix(name, sealedSuffix)
}

// ReadManifest decodes the folder's run.json into m (a JSON object), or
// returns ok=false if there is none.
func (o *Folder) ReadManifest(m any) (ok bool, err error) {
	return readManifest(o.Path, m)
}

// readManifest decodes dir's run.json into m, or returns ok=false if there
// is none.
func readManifest(dir string, m any) (ok bool, err error) {
	path := filepath.Join(dir, ManifestName)
	b, err := ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", ManifestName, err)
	}
	if err := json.Unmarshal(b, m); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	return true, nil
}

// layoutOf is what CheckLayout reads of a run.json: its shard.
type layoutOf struct {
	Shard string `json:"shard,omitempty"`
}

// CheckBound refuses to continue in an output folder that holds what only
// a run leaves after writing run.json (results rows, sealed passwords or
// API keys) but no run.json: without it nothing binds those files to an
// input, so old rows could be taken for another input's users. A dry run's
// folder is refused as such.
func CheckBound(o *Folder) error {
	ok, err := o.ReadManifest(&struct{}{})
	if err != nil || ok {
		return err
	}
	if prev, err := ReadSummary(o.File(SummaryName)); err == nil && prev.DryRun {
		return Kind(ErrDryRunFolder, fmt.Errorf("output folder %s holds a dry run's plan, not a run: choose another --out", o.Path))
	}
	var what string
	rows, err := ReadResults(o.File(ResultsName))
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist), len(rows) > 0:
		what = ResultsName
	default:
		sealed, err := SealedFiles(o.Path)
		if err != nil {
			return fmt.Errorf("output folder %s: %w", o.Path, err)
		}
		batches, err := APIKeyBatches(o.Path)
		if err != nil {
			return fmt.Errorf("output folder %s: %w", o.Path, err)
		}
		switch {
		case len(sealed) > 0:
			what = sealed[0]
		case len(batches) > 0:
			what = APIKeysName(batches[0])
		default:
			return nil
		}
	}
	return fmt.Errorf("--resume: output folder %s holds %s but no %s, which binds a run to its input: "+
		"refusing to continue a run whose input is unknown; choose a new --out", o.Path, what, ManifestName)
}

// LayoutName names a shard layout as run.json records it ("K/N", or ""
// for a run without shards).
func LayoutName(shard string) string {
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
	var m layoutOf
	ok, err := readManifest(out, &m)
	if err != nil {
		return err
	}
	if ok && m.Shard != this {
		return fmt.Errorf("output folder %s holds %s (run.json); this run is %s: %s", out, LayoutName(m.Shard), LayoutName(this), hint)
	}
	if shards <= 1 {
		entries, err := os.ReadDir(out)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("output folder %s: %w", out, err)
		}
		for _, e := range entries {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), shardPrefix) {
				continue
			}
			what := "a sharded run"
			var sm layoutOf
			if ok, _ := readManifest(filepath.Join(out, e.Name()), &sm); ok && sm.Shard != "" {
				what = LayoutName(sm.Shard)
			}
			return fmt.Errorf("output folder %s holds %s (in %s); this run is %s: %s", out, what, e.Name(), LayoutName(this), hint)
		}
		return nil
	}
	if filepath.Base(out) != ShardDir(shard) {
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
				IsSealedName(name) {
				return fmt.Errorf("output folder %s holds %s (%s); this run is %s: %s", parent, LayoutName(""), name, LayoutName(this), hint)
			}
			continue
		}
		if !strings.HasPrefix(name, shardPrefix) || name == filepath.Base(out) {
			continue
		}
		var sm layoutOf
		ok, err := readManifest(filepath.Join(parent, name), &sm)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if _, n, found := strings.Cut(sm.Shard, "/"); !found || n != fmt.Sprint(shards) {
			return fmt.Errorf("output folder %s holds %s (in %s); this run is %s: %s", parent, LayoutName(sm.Shard), name, LayoutName(this), hint)
		}
	}
	return nil
}

// WriteManifest writes run.json atomically.
func (o *Folder) WriteManifest(m any) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return o.Files.WriteFileAtomic(o.File(ManifestName), append(b, '\n'), 0o600)
}
