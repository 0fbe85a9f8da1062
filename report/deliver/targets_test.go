package deliver

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReadMap(t *testing.T) {
	m, err := ReadMap("testdata/deliver.csv", "testdata/deliver2.csv")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Users(); !slices.Equal(got, []int{1001, 1002, 1003}) {
		t.Errorf("Users = %v", got)
	}
	if m.Rows() != 4 {
		t.Errorf("Rows = %d, want 4", m.Rows())
	}
	var got []string
	for _, tg := range m.Targets(1001) {
		got = append(got, tg.String()+"@"+filepath.Base(tg.File)+":"+strconv.Itoa(tg.Line))
	}
	want := []string{"billing/ftp-creds[password]@deliver.csv:2", "edi/soap-client[ECGRID_PASSWORD]@deliver.csv:4"}
	if !slices.Equal(got, want) {
		t.Errorf("targets of 1001 = %q, want %q", got, want)
	}
	if m.Targets(42) != nil {
		t.Error("a user without a row has targets")
	}
	if len(m.SHA256()) != 64 {
		t.Errorf("SHA256 = %q", m.SHA256())
	}
}

func TestReadMapErrors(t *testing.T) {
	tests := []struct {
		name, csv, want string
	}{
		{"empty", "", "empty, want the header"},
		{"no key column", "userId,namespace,secret\n1,a,b\n", "line 1: no key column"},
		{"column twice", "userId,namespace,secret,key,Key\n", "line 1: column \"Key\" appears twice"},
		{"bad user", "userId,namespace,secret,key\n\nx1,a,b,c\n", "line 3: userId \"x1\""},
		{"signed user", "userId,namespace,secret,key\n+1,a,b,c\n", "line 2: userId \"+1\""},
		{"user zero", "userId,namespace,secret,key\n0,a,b,c\n", "line 2: userId \"0\""},
		{"user too big", "userId,namespace,secret,key\n2147483648,a,b,c\n", "line 2: userId"},
		{"namespace upper", "userId,namespace,secret,key\n1,Billing,b,c\n", "line 2: namespace \"Billing\""},
		{"namespace empty", "userId,namespace,secret,key\n1,,b,c\n", "line 2: namespace is empty"},
		{"secret bad", "userId,namespace,secret,key\n1,a,b_c,c\n", "line 2: secret \"b_c\""},
		{"key bad", "userId,namespace,secret,key\n1,a,b,c/d\n", "line 2: key \"c/d\""},
		{"key dotdot", "userId,namespace,secret,key\n1,a,b,..\n", "line 2: key \"..\""},
		{"missing cells", "userId,namespace,secret,key\n1,a\n", "line 2: secret is empty"},
		{"unclosed quote", "userId,namespace,secret,key\n1,a,b,\"c\n", "line 2: cannot be parsed"},
		{"long cell", "userId,namespace,secret,key\n1,a,b," + strings.Repeat("k", 2000) + "\n", "line 2: a cell is longer"},
		{"duplicate", "userId,namespace,secret,key\n1,a,b,c\n1,a,b,c\n", "line 3: a/b[c] is a duplicate of"},
		{"key for two users", "userId,namespace,secret,key\n1,a,b,c\n2,a,b,c\n", "line 3: a/b[c] is already the target of user 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "map.csv")
			if err := os.WriteFile(path, []byte(tt.csv), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := ReadMap(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("ReadMap = %v, want an error naming %s and %q", err, path, tt.want)
			}
		})
	}
	t.Run("across files", func(t *testing.T) {
		dir := t.TempDir()
		a, b := filepath.Join(dir, "a.csv"), filepath.Join(dir, "b.csv")
		os.WriteFile(a, []byte("userId,namespace,secret,key\n1,a,b,c\n"), 0o600)
		os.WriteFile(b, []byte("userId,namespace,secret,key\n2,a,b,c\n"), 0o600)
		_, err := ReadMap(a, b)
		if err == nil || !strings.Contains(err.Error(), b+" line 2") || !strings.Contains(err.Error(), a+" line 2") {
			t.Fatalf("ReadMap = %v, want an error naming both lines", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := ReadMap(filepath.Join(t.TempDir(), "nope.csv"))
		if err == nil || !strings.Contains(err.Error(), "nope.csv") {
			t.Fatalf("ReadMap = %v", err)
		}
	})
}

func TestAnnotationName(t *testing.T) {
	tests := []struct{ key, want string }{
		{"password", "pwrotate.io/rotated-password"},
		{"ECGRID_PASSWORD", "pwrotate.io/rotated-ECGRID_PASSWORD"},
		{"config.json", "pwrotate.io/rotated-config.json"},
		{".hidden", "pwrotate.io/rotated-.hidden"},
		{"trailing-", "pwrotate.io/rotated-sha256-"},
		{strings.Repeat("k", 56), "pwrotate.io/rotated-sha256-"},
		{"sha256-0011", "pwrotate.io/rotated-sha256-"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got := AnnotationName(tt.key)
			if !strings.HasPrefix(got, tt.want) || (strings.HasSuffix(tt.want, "-") && len(got) != len(tt.want)+16) {
				t.Errorf("AnnotationName(%q) = %q, want %q...", tt.key, got, tt.want)
			}
		})
	}
}

func TestAgeParseFormat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"90d", 90 * 24 * time.Hour, false},
		{"36h", 36 * time.Hour, false},
		{"1h30m", 90 * time.Minute, false},
		{"0d", 0, true},
		{"-1h", 0, true},
		{"1.5d", 0, true},
		{"soon", 0, true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAge(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("ParseAge(%q) = %v, %v", tt.in, got, err)
			}
		})
	}
	for d, want := range map[time.Duration]string{
		12*24*time.Hour + 5*time.Hour: "12d",
		36 * time.Hour:                "36h",
		57 * time.Minute:              "57m",
		40 * time.Second:              "40s",
	} {
		if got := FormatAge(d); got != want {
			t.Errorf("FormatAge(%v) = %q, want %q", d, got, want)
		}
	}
}
