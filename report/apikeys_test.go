package report

import (
	"bytes"
	"encoding/csv"
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
