package report

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	tests := []struct {
		name string
		data string
		perm os.FileMode
	}{
		{"create", "first", 0o600},
		{"replace", "second, longer content", 0o600},
		{"replace with shorter and other mode", "3", 0o640},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := WriteFileAtomic(path, []byte(tt.data), tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != tt.data {
				t.Fatalf("content %q, %v", got, err)
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != tt.perm {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), tt.perm)
			}
			assertNoTemp(t, dir)
		})
	}
	t.Run("missing folder", func(t *testing.T) {
		if err := WriteFileAtomic(filepath.Join(dir, "no", "f"), []byte("x"), 0o600); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("target is a folder", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		os.Mkdir(sub, 0o700)
		os.WriteFile(filepath.Join(sub, "keep"), nil, 0o600)
		if err := WriteFileAtomic(sub, []byte("x"), 0o600); err == nil {
			t.Fatal("replaced a folder")
		}
		assertNoTemp(t, dir)
	})
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Fatal("no error for a missing folder")
	}
}

// TestOpenFileRefusesLinksAndSpecialFiles: a file of an output folder is
// opened only when it is a regular file; a planted link is never followed
// (its target is left as it was), and a FIFO is refused without blocking.
func TestOpenFileRefusesLinksAndSpecialFiles(t *testing.T) {
	const precious = "root's file\n"
	tests := []struct {
		name  string
		plant func(t *testing.T, path, outside string)
		flag  int
		want  string // in the error; "" when the open must succeed
	}{
		{"regular file", func(t *testing.T, path, _ string) { writeTestFile(t, path, "x") }, os.O_RDWR | os.O_APPEND, ""},
		{"absent, created", func(*testing.T, string, string) {}, os.O_RDWR | os.O_CREATE, ""},
		{"link to a file outside, create and write", func(t *testing.T, path, outside string) { symlink(t, outside, path) },
			os.O_RDWR | os.O_CREATE, "is a symbolic link"},
		{"link to a file outside, read", func(t *testing.T, path, outside string) { symlink(t, outside, path) },
			os.O_RDONLY, "is a symbolic link"},
		{"dangling link, create", func(t *testing.T, path, outside string) { symlink(t, outside+".new", path) },
			os.O_RDWR | os.O_CREATE, "is a symbolic link"},
		{"FIFO, read", func(t *testing.T, path, _ string) { mkfifo(t, path) }, os.O_RDONLY, "is a FIFO"},
		{"FIFO, read and write", func(t *testing.T, path, _ string) { mkfifo(t, path) }, os.O_RDWR | os.O_APPEND, "is a FIFO"},
		{"FIFO, write", func(t *testing.T, path, _ string) { mkfifo(t, path) }, os.O_WRONLY, "is a FIFO"},
		{"folder, read", func(t *testing.T, path, _ string) { mkdir(t, path) }, os.O_RDONLY, "is a folder"},
		{"folder, write", func(t *testing.T, path, _ string) { mkdir(t, path) }, os.O_RDWR, "is a folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outside := filepath.Join(t.TempDir(), "precious")
			writeTestFile(t, outside, precious)
			path := filepath.Join(t.TempDir(), "results.csv")
			tt.plant(t, path, outside)
			done := make(chan struct{})
			var f *os.File
			var err error
			go func() {
				defer close(done)
				f, err = OpenFile(path, tt.flag, 0o600)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("OpenFile blocks")
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("OpenFile: %v", err)
				}
				f.Close()
			} else {
				if err == nil {
					f.Close()
					t.Fatal("OpenFile opened it")
				}
				if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) || !errors.Is(err, ErrNotRegular) {
					t.Errorf("error %q does not name %s and %q", err, path, tt.want)
				}
			}
			if b, err := os.ReadFile(outside); err != nil || string(b) != precious {
				t.Errorf("the file outside is now %q (%v)", b, err)
			}
			if _, err := os.Lstat(outside + ".new"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a file was created through the dangling link (%v)", err)
			}
		})
	}
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
}
