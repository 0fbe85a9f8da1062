package report

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestLinkUnnamedClosedFile checks that linking an unnamed file that was
// closed fails, and never links whatever file has reused its descriptor
// number (another group's file, sealed by another worker).
func TestLinkUnnamedClosedFile(t *testing.T) {
	dir := t.TempDir()
	f, err := openUnnamed(dir)
	if errors.Is(err, errNoUnnamed) {
		t.Skip("no O_TMPFILE here")
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	other, err := openUnnamed(dir) // likely the same descriptor number
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.WriteString("another group's file"); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(dir, "f.age")
	if err := linkUnnamed(f, final); err == nil {
		t.Fatal("a closed file was linked")
	}
	if _, err := os.Lstat(final); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists after a failed link: %v", final, err)
	}
}

// TestProbeUnnamed checks the probe links and removes its file, under a
// name a resume would clear if a kill left it.
func TestProbeUnnamed(t *testing.T) {
	dir := t.TempDir()
	if _, err := openUnnamed(dir); errors.Is(err, errNoUnnamed) {
		t.Skip("no O_TMPFILE here")
	}
	if !probeUnnamed(dir) {
		t.Fatal("probe failed in a plain folder")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("probe left %v", entries)
	}
	if _, ok := ourTemp(".probe.123.tmp"); !ok {
		t.Fatal("a leftover probe is not a temporary file of ours: a resume would refuse the folder")
	}
}

// TestRenameNoReplace checks the rename the fallback uses never replaces
// a file.
func TestRenameNoReplace(t *testing.T) {
	dir := t.TempDir()
	old, final := filepath.Join(dir, "f.age.tmp"), filepath.Join(dir, "f.age")
	for _, p := range []string{old, final} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := renameNoReplace(old, final); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("error %v, want one that is fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(final); string(got) != final {
		t.Fatal("the existing file was replaced")
	}
	_ = os.Remove(final)
	if err := renameNoReplace(old, final); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(final); string(got) != old {
		t.Fatal("not renamed")
	}
}

// TestCreateUnnamedConcurrent checks that files sealed at once into a new
// folder (SealGroups' workers) are all written unnamed: the probe runs once
// a folder, not once a worker (concurrent probes of one name failed each
// other, and the folder fell back to renames).
func TestCreateUnnamedConcurrent(t *testing.T) {
	if _, err := openUnnamed(t.TempDir()); errors.Is(err, errNoUnnamed) {
		t.Skip("no O_TMPFILE here")
	}
	for range 20 {
		dir := t.TempDir()
		start := make(chan struct{})
		var wg sync.WaitGroup
		var fallbacks atomic.Int32
		for range sealWorkers {
			wg.Go(func() {
				<-start
				f, _, ok, err := createUnnamed(dir)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					fallbacks.Add(1)
					return
				}
				_ = f.Close()
			})
		}
		close(start)
		wg.Wait()
		if n := fallbacks.Load(); n > 0 {
			t.Fatalf("%d of %d files in %s fell back to a temporary name", n, sealWorkers, dir)
		}
	}
}
