package report

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// The stock age CLI opens post-quantum (age1pq1…) files from v1.3.0 on;
// older releases (Debian 12 ships 1.1.1) cannot read them.
const stockAgePQMajor, stockAgePQMinor = 1, 3

// requireStockAge reports whether PWROTATE_REQUIRE_AGE=1 (CI, which
// installs the module's own age): a stock-age check may then not be skipped.
func requireStockAge() bool { return os.Getenv("PWROTATE_REQUIRE_AGE") == "1" }

// stockAge returns the stock age binary on PATH to check a sealed file
// with; "" if age is not installed. tooOld says why it cannot be used: the
// file is sealed to a post-quantum recipient (pq) and the installed age is
// older than v1.3 (bin is then ""). err is a failure to ask its version.
func stockAge(pq bool) (bin, tooOld string, err error) {
	bin, err = exec.LookPath("age")
	if err != nil {
		return "", "", nil
	}
	if !pq {
		return bin, "", nil
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s --version: %w", bin, err)
	}
	v := strings.TrimSpace(string(out))
	if older, known := ageOlderThan(v, stockAgePQMajor, stockAgePQMinor); known && older {
		return "", fmt.Sprintf("the installed age (%s) is %s, older than v%d.%d: it cannot open post-quantum (age1pq1) files",
			bin, v, stockAgePQMajor, stockAgePQMinor), nil
	}
	return bin, "", nil
}

// ageOlderThan reports whether the version that age --version prints
// ("1.1.1", "v1.3.2", "v1.3.0-rc.1") is older than major.minor; known is
// false when it cannot be read (such as "(devel)").
func ageOlderThan(version string, major, minor int) (older, known bool) {
	v := strings.TrimPrefix(strings.TrimSpace(version), "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	end := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(parts[1])
	}
	min, err2 := strconv.Atoi(parts[1][:end])
	if err1 != nil || err2 != nil {
		return false, false
	}
	return maj < major || (maj == major && min < minor), true
}

func TestAgeOlderThan(t *testing.T) {
	tests := []struct {
		version      string
		older, known bool
	}{
		{"1.1.1", true, true},   // Debian 12
		{"v1.2.1", true, true},  // go install of an older release
		{"v1.3.0", false, true}, // the first with age1pq1
		{"v1.3.2\n", false, true},
		{"v1.3.0-rc.1", false, true},
		{"2.0.0", false, true},
		{"0.9", true, true},
		{"(devel)", false, false},
		{"", false, false},
		{"v1", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			older, known := ageOlderThan(tt.version, 1, 3)
			if older != tt.older || known != tt.known {
				t.Errorf("ageOlderThan(%q) = %v, %v; want %v, %v", tt.version, older, known, tt.older, tt.known)
			}
		})
	}
}

// TestStockAgeVersionGate puts a fake age on PATH that prints a version:
// a post-quantum check is skipped, naming the version, by an age older than
// v1.3, and run by a newer one; a classic check runs with any age.
func TestStockAgeVersionGate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the fake age is a shell script")
	}
	tests := []struct {
		version string
		pq      bool
		skipped bool
	}{
		{"1.1.1", true, true},
		{"1.1.1", false, false},
		{"v1.3.2", true, false},
		{"(devel)", true, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s pq=%v", tt.version, tt.pq), func(t *testing.T) {
			dir := t.TempDir()
			script := "#!/bin/sh\necho '" + tt.version + "'\n"
			if err := os.WriteFile(filepath.Join(dir, "age"), []byte(script), 0o700); err != nil {
				t.Fatal(err)
			}
			t.Setenv("PATH", dir)
			bin, skip, err := stockAge(tt.pq)
			if err != nil {
				t.Fatal(err)
			}
			if (skip != "") != tt.skipped || (bin == "") != tt.skipped {
				t.Fatalf("bin %q tooOld %q; want skipped=%v", bin, skip, tt.skipped)
			}
			if tt.skipped && (!strings.Contains(skip, tt.version) || !strings.Contains(skip, "v1.3") || !strings.Contains(skip, "age1pq1")) {
				t.Errorf("skip message %q does not name the version, v1.3 and age1pq1", skip)
			}
		})
	}
	t.Run("not installed", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		if bin, tooOld, err := stockAge(true); bin != "" || tooOld != "" || err != nil {
			t.Fatalf("bin %q tooOld %q err %v", bin, tooOld, err)
		}
	})
}
