package report

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/rotate/secret"
)

func sealedKeys(t0 time.Time) []SealedKey {
	return []SealedKey{
		{UserID: 1042, Key: secret.Password("0123456789abcdef0123456789abcdef"), ObtainedAt: t0},
		{UserID: 7, Key: secret.Password("fedcba9876543210fedcba9876543210"), ObtainedAt: t0.Add(time.Millisecond)},
	}
}

func TestSealAPIKeysRoundTrip(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t0 := time.Date(2026, 12, 1, 21, 0, 0, 123456789, time.UTC)
	keys := sealedKeys(t0)
	path, err := SealAPIKeys(dir, 1, []age.Recipient{id.Recipient()}, keys)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "apikeys-00001.age" {
		t.Errorf("sealed as %s", path)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	for _, k := range keys {
		if bytes.Contains(raw, []byte(k.Key.Reveal())) {
			t.Fatal("a key is in the sealed file in plaintext")
		}
	}
	got, err := ReadSealedAPIKeys(path, []age.Identity{id})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].UserID != 1042 || got[0].Key != keys[0].Key || !got[0].ObtainedAt.Equal(t0) || got[1].Key != keys[1].Key {
		t.Errorf("read back %d rows, not what was sealed", len(got))
	}
	if _, err := SealAPIKeys(dir, 1, []age.Recipient{id.Recipient()}, keys); err == nil {
		t.Error("batch 1 was replaced")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// The stock age CLI opens it to userId,apiKey,obtainedAt.
	if bin, err := exec.LookPath("age"); err == nil {
		idFile := filepath.Join(dir, "TEST-ONLY-identity")
		if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-d", "-i", idFile, path).Output()
		if err != nil {
			t.Fatalf("age -d: %v", err)
		}
		recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
		if err != nil || len(recs) != 3 || strings.Join(recs[0], ",") != "userId,apiKey,obtainedAt" || recs[1][1] != keys[0].Key.Reveal() {
			t.Errorf("age -d output: %d records, %v", len(recs), err)
		}
	}
}

// TestOpenAPIKeys: the live key per user is the one obtained last, across
// batches and shard folders; password files beside them are not keys, and
// Open (passwords) ignores the key batches.
func TestOpenAPIKeys(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	recips := []age.Recipient{id.Recipient()}
	dir := t.TempDir()
	t0 := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	if _, err := SealAPIKeys(dir, 1, recips, sealedKeys(t0)); err != nil {
		t.Fatal(err)
	}
	newer := SealedKey{UserID: 1042, Key: secret.Password("aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb"), ObtainedAt: t0.Add(time.Hour)}
	if _, err := SealAPIKeys(dir, 2, recips, []SealedKey{newer}); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(dir, "shard-1")
	if err := os.Mkdir(shard, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := SealAPIKeys(shard, 1, recips, []SealedKey{{UserID: 9, Key: "99999999999999999999999999999999", ObtainedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Seal(dir, 1, recips, pairs(testPasswords)); err != nil {
		t.Fatal(err)
	}
	got, err := OpenAPIKeys([]string{dir}, []age.Identity{id})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteAPIKeysCSV(&b, got); err != nil {
		t.Fatal(err)
	}
	want := "userId,apiKey\n7,fedcba9876543210fedcba9876543210\n9,99999999999999999999999999999999\n1042,aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb\n"
	if b.String() != want {
		t.Errorf("open --api-keys printed\n%s\nwant\n%s", b.String(), want)
	}
	rows, err := Open([]string{dir}, []age.Identity{id}, true)
	if err != nil {
		t.Fatalf("Open with key batches beside the passwords: %v", err)
	}
	if len(rows) != len(testPasswords) {
		t.Errorf("Open gave %d rows, want %d", len(rows), len(testPasswords))
	}
	if _, err := OpenAPIKeys([]string{t.TempDir()}, []age.Identity{id}); err == nil {
		t.Error("an empty folder opened without error")
	}
}

func TestKeyLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyLogName)
	l, got, err := OpenKeyLog(path)
	if err != nil || len(got) != 0 {
		t.Fatalf("new log: %v, %d entries", err, len(got))
	}
	d1 := KeyDigest("old-key-of-user-1042-aaaaaaaaaaaa")
	d2 := KeyDigest("old-key-of-user-7-bbbbbbbbbbbbbbbb")
	if err := l.Record(KeyLogEntry{1042, d1}, KeyLogEntry{7, d2}); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(KeyLogEntry{0, d1}); err == nil {
		t.Error("user 0 recorded")
	}
	if err := l.Record(KeyLogEntry{5, "not-a-digest"}); err == nil {
		t.Error("a bad digest recorded")
	}
	l.Close()
	// A torn append (kill -9 in the middle) is cut off on the next open.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("99,abc")
	f.Close()
	l, got, err = OpenKeyLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(got) != 2 || got[1042] != d1 || got[7] != d2 {
		t.Errorf("reopened log: %v", got)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "99,") || !strings.HasPrefix(string(data), "userId,oldKeySha256\n") {
		t.Errorf("log after reopening:\n%s", data)
	}
	if strings.Contains(string(data), "old-key") {
		t.Error("the log holds a key")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
}

// TestOpenAPIKeysPrefersVouched: a batch the key log vouches for (its name
// and sha256) beats any other batch of the folder, however late the other's
// obtainedAt; a user that only unvouched batches hold gets the latest of
// those, and is named; a batch changed after it was vouched for is not
// used at all. The log with batch lines still reopens for a resume.
func TestOpenAPIKeysPrefersVouched(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	recips := []age.Recipient{id.Recipient()}
	t0 := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	const (
		ours    = "ours-0123456789abcdef0123456789ab"
		ours2   = "ours-fedcba9876543210fedcba987654"
		planted = "planted-0123456789abcdef01234567"
	)
	tests := []struct {
		name          string
		plant         func(t *testing.T, dir string)
		want          map[int]string
		unvouched     []string
		fromUnvouched []int
		altered       []string
	}{
		{"nothing planted", func(*testing.T, string) {}, map[int]string{1042: ours, 7: ours2}, nil, nil, nil},
		{"a later batch sealed to the same recipient", func(t *testing.T, dir string) {
			if _, err := SealAPIKeys(dir, 3, recips, []SealedKey{
				{UserID: 1042, Key: planted, ObtainedAt: t0.Add(time.Hour)},
				{UserID: 55, Key: planted + "x", ObtainedAt: t0.Add(time.Hour)},
			}); err != nil {
				t.Fatal(err)
			}
		}, map[int]string{1042: ours, 7: ours2, 55: planted + "x"}, []string{"apikeys-00003.age"}, []int{55}, nil},
		{"a vouched batch replaced", func(t *testing.T, dir string) {
			p := filepath.Join(dir, APIKeysName(2))
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if _, err := SealAPIKeys(dir, 2, recips, []SealedKey{{UserID: 7, Key: planted, ObtainedAt: t0.Add(time.Hour)}}); err != nil {
				t.Fatal(err)
			}
		}, map[int]string{1042: ours}, nil, nil, []string{"apikeys-00002.age"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _, err := OpenKeyLog(filepath.Join(dir, KeyLogName))
			if err != nil {
				t.Fatal(err)
			}
			for n, k := range []SealedKey{{UserID: 1042, Key: ours, ObtainedAt: t0}, {UserID: 7, Key: ours2, ObtainedAt: t0}} {
				p, err := SealAPIKeys(dir, n+1, recips, []SealedKey{k})
				if err != nil {
					t.Fatal(err)
				}
				if err := l.RecordBatch(p); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Record(KeyLogEntry{1042, KeyDigest("old-key-of-1042-aaaaaaaaaaaaaa")}); err != nil {
				t.Fatal(err)
			}
			l.Close()
			if l, digests, err := OpenKeyLog(filepath.Join(dir, KeyLogName)); err != nil || len(digests) != 1 {
				t.Fatalf("reopening the log: %v, %d digests", err, len(digests))
			} else {
				l.Close()
			}
			tt.plant(t, dir)
			got, err := OpenAPIKeysVouched([]string{dir}, []age.Identity{id})
			if err != nil {
				t.Fatal(err)
			}
			keys := map[int]string{}
			for _, k := range got.Keys {
				keys[k.UserID] = k.Key.Reveal()
			}
			if len(keys) != len(tt.want) {
				t.Errorf("%d keys, want %d", len(keys), len(tt.want))
			}
			for id, k := range tt.want {
				if keys[id] != k {
					t.Errorf("user %d: not the key expected (planted: %v)", id, keys[id] == planted)
				}
			}
			base := func(files []string) string {
				var names []string
				for _, f := range files {
					names = append(names, filepath.Base(f))
				}
				return strings.Join(names, ",")
			}
			if got := base(got.Unvouched); got != strings.Join(tt.unvouched, ",") {
				t.Errorf("unvouched %v, want %v", got, tt.unvouched)
			}
			if got := base(got.Altered); got != strings.Join(tt.altered, ",") {
				t.Errorf("altered %v, want %v", got, tt.altered)
			}
			if fmt.Sprint(got.FromUnvouched) != fmt.Sprint(tt.fromUnvouched) && len(got.FromUnvouched)+len(tt.fromUnvouched) > 0 {
				t.Errorf("users from unvouched batches %v, want %v", got.FromUnvouched, tt.fromUnvouched)
			}
		})
	}
}
