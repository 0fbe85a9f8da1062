package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAPIKeyFileNeverEchoed: an API key passed by mistake as the value of
// --api-key-file never appears in the output, while a real path that cannot
// be read is named with the cause; a file larger than 64 KiB is refused
// without being taken as a key.
func TestAPIKeyFileNeverEchoed(t *testing.T) {
	sim := newSim(1000, 1)
	srv := serveSim(t, sim)
	dir := t.TempDir()
	users := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(users, []byte("userId\n1000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big-key")
	if err := os.WriteFile(big, []byte(strings.Repeat("k", 64<<10+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	exact := filepath.Join(dir, "exact-key")
	if err := os.WriteFile(exact, []byte(scriptKey+strings.Repeat("\n", 64<<10-len(scriptKey))), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		value string
		want  int
		errIn []string
		never []string
	}{
		{"a key as the value", "review-api-key-7f3a9c2e1b44d0", 1,
			[]string{"--api-key-file", "no such file"}, []string{"7f3a9c2e1b44d0"}},
		{"a base64 key with a slash", "q9Zk2/WmB7+xv1TtLr0aPc==", 1,
			[]string{"--api-key-file", "no such file"}, []string{"q9Zk2", "WmB7"}},
		{"a key pasted with the secret mount's folder", "/var/run/secrets/Zk2WmB7xv1TtLr0aPc", 1,
			[]string{"--api-key-file", "no such file"}, []string{"Zk2WmB7xv1TtLr0aPc"}},
		{"a real path that is missing", filepath.Join(dir, "nokey.txt"), 1,
			[]string{"--api-key-file " + filepath.Join(dir, "nokey.txt"), "no such file"}, nil},
		{"a folder", dir + "/", 1, []string{"--api-key-file", "is a directory"}, nil},
		{"larger than 64 KiB", big, 1, []string{"--api-key-file " + big, "64 KiB"}, []string{"kkkkkkkk"}},
		{"64 KiB exactly", exact, 0, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("ECGRID_API_KEY", "")
			code, stdout, stderr := runMain(t, strings.NewReader(""), "run", "--log-format", "json", "--progress", "never",
				"--base-url", srv.URL, "--input", users, "--api-key-file", c.value)
			if code != c.want {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", code, c.want, stderr)
			}
			for _, s := range c.errIn {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr does not say %q:\n%s", s, stderr)
				}
			}
			for _, s := range append(c.never, scriptKey) {
				if strings.Contains(stdout+stderr, s) {
					t.Errorf("the output echoes %q:\n%s", s, stderr)
				}
			}
		})
	}
}
