package report

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hangGuard bounds waits that only a bug would make long.
const hangGuard = 10 * time.Second

// openEmpty opens a new results file in a test folder.
func openEmpty(t *testing.T) (*ResultsFile, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "results.csv")
	f, _, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	return f, path
}

// TestAppendDuringFsync checks that Append does not wait for an fsync, and
// that what Sync fsyncs was flushed first.
func TestAppendDuringFsync(t *testing.T) {
	f, path := openEmpty(t)
	defer f.Close()
	entered := make(chan string, 1)
	release := make(chan struct{})
	f.fsyncFile = func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		entered <- string(b)
		<-release
		return f.f.Sync()
	}
	if err := f.Append(Row{Line: 2, UserID: 1, Status: Updated}); err != nil {
		t.Fatal(err)
	}
	syncErr := make(chan error, 1)
	go func() { syncErr <- f.Sync() }()
	var onDisk string
	select {
	case onDisk = <-entered:
	case <-time.After(hangGuard):
		t.Fatal("fsync never started")
	}
	if !strings.Contains(onDisk, "\n2,1,updated,") {
		t.Fatalf("row not flushed before the fsync; file holds %q", onDisk)
	}
	appended := make(chan error, 1)
	go func() { appended <- f.Append(Row{Line: 3, UserID: 2, Status: Updated}) }()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hangGuard):
		close(release)
		t.Fatal("Append waited for the fsync")
	}
	// A second Sync waits for the first fsync to end.
	second := make(chan error, 1)
	go func() { second <- f.Sync() }()
	f.fsyncFile = f.f.Sync // the first Sync has read the field already
	close(release)
	for _, ch := range []chan error{syncErr, second} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(hangGuard):
			t.Fatal("Sync hung")
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadResults(path)
	if err != nil || len(rows) != 2 {
		t.Fatalf("%d rows, err %v; want 2", len(rows), err)
	}
}

// TestFsyncErrorIsSticky checks that a failed fsync, reported while
// Appends go on, fails every later Append, Sync and Close.
func TestFsyncErrorIsSticky(t *testing.T) {
	f, _ := openEmpty(t)
	boom := errors.New("injected fsync failure")
	f.fsyncFile = func() error { return boom }
	row := Row{Line: 2, UserID: 1, Status: Updated}
	if err := f.Append(row); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"Sync", f.Sync},
		{"Sync again", f.Sync},
		{"Append", func() error { return f.Append(row) }},
		{"Close", f.Close},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v, want the fsync failure", err)
			}
			if !strings.Contains(err.Error(), "fsync") {
				t.Errorf("err %q does not say fsync", err)
			}
		})
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
}

// TestCloseWhileSyncing runs Appends, Syncs and two Closes at once, as an
// abort does. Every row whose Append succeeded must be in the file, and
// nothing may race (run with -race).
func TestCloseWhileSyncing(t *testing.T) {
	for round := range 5 {
		f, path := openEmpty(t)
		var ok sync.Map // line -> true for rows whose Append returned nil
		var started atomic.Int64
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range 200 {
					line := 2 + w*1000 + i
					err := f.Append(Row{Line: line, UserID: line, Status: Updated})
					started.Add(1)
					if err == nil {
						ok.Store(line, true)
					} else if !errors.Is(err, errClosed) {
						t.Errorf("Append: %v", err)
						return
					}
					if i%7 == 0 {
						if err := f.Sync(); err != nil && !errors.Is(err, errClosed) {
							t.Errorf("Sync: %v", err)
						}
					}
				}
			})
		}
		for range 2 {
			wg.Go(func() {
				for started.Load() < int64(100*(round+1)) {
					time.Sleep(50 * time.Microsecond)
				}
				if err := f.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
		wg.Wait()
		if err := f.Sync(); !errors.Is(err, errClosed) {
			t.Fatalf("Sync after Close = %v", err)
		}
		if err := f.Append(Row{Line: 2, UserID: 1, Status: Updated}); !errors.Is(err, errClosed) {
			t.Fatalf("Append after Close = %v", err)
		}
		rows, err := ReadResults(path)
		if err != nil {
			t.Fatal(err)
		}
		inFile := map[int]bool{}
		for _, r := range rows {
			inFile[r.Line] = true
		}
		want := 0
		ok.Range(func(k, _ any) bool {
			want++
			if !inFile[k.(int)] {
				t.Errorf("round %d: line %d was appended but is not in the file", round, k)
			}
			return true
		})
		if len(rows) != want {
			t.Fatalf("round %d: %d rows in the file, %d appended", round, len(rows), want)
		}
	}
}
