package job

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenOutClearsOwnTemps: the temporary files that a process killed
// inside an atomic write leaves behind do not block --resume; they are
// removed under the lock. A look-alike that pwrotate never writes is still
// refused.
func TestOpenOutClearsOwnTemps(t *testing.T) {
	ours := []string{
		".run.json.123456.tmp", ".results.csv.9.tmp", ".summary.json.4294967295.tmp",
		"passwords-g0002.age.tmp",
	}
	tests := []struct {
		name    string
		files   []string
		refused string // "" when OpenOut must accept the folder
	}{
		{"every temp name of ours", append([]string{"run.json", "results.csv"}, ours...), ""},
		{"temp of a foreign file", []string{"run.json", ".notes.txt.12.tmp"}, ".notes.txt.12.tmp"},
		{"temp without digits", []string{"run.json", ".results.csv.x1.tmp"}, ".results.csv.x1.tmp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, err := OpenOut(dir, true)
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("OpenOut: %v, want a refusal naming %s", err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenOut: %v", err)
			}
			defer out.Close()
			for _, f := range ours {
				if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
					t.Errorf("%s still there after OpenOut (%v)", f, err)
				}
			}
			for _, f := range []string{"run.json", "results.csv"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
		})
	}
}
