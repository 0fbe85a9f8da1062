package job_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pwrotate/job"
)

// TestOutDirAcceptsKeyFiles: a folder holding a run's API key files (the
// sealed batches, a batch's temporary file left by a kill, the key log)
// can be resumed; a look-alike name is foreign and refused.
func TestOutDirAcceptsKeyFiles(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		ok    bool
	}{
		{"batches, temp and log", []string{"apikeys-00001.age", "apikeys-00002.age.tmp", "apikeys-log.csv", "results.csv"}, true},
		{"bad batch number", []string{"apikeys-1.age"}, false},
		{"other csv", []string{"apikeys.csv"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			if err := os.Mkdir(out, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(out, f), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			d, err := job.OpenOut(out, true)
			if tt.ok {
				if err != nil {
					t.Fatalf("OpenOut: %v", err)
				}
				d.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), "not a pwrotate output") {
				t.Fatalf("OpenOut: %v, want a refusal of the foreign file", err)
			}
		})
	}
}
