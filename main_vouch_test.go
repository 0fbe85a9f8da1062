package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/report"
	"pwrotate/rotate/secret"
)

// TestOpenAPIKeysIgnoresPlantedBatch: after a run rotated the keys, a batch
// file planted in the folder, sealed to the same recipient (anyone can: the
// recipient is public) with a later obtainedAt, does not replace the key
// pwrotate obtained: open --api-keys prints the live keys the key log
// vouches for, and names the planted file and the users only it holds on
// stderr.
func TestOpenAPIKeysIgnoresPlantedBatch(t *testing.T) {
	w := newKeyWorld(t, 3)
	t.Setenv("ECGRID_API_KEY", scriptKey)
	out := filepath.Join(w.dir, "out")
	args := append([]string{"run", "--input", w.input, "--apply", "--out", out, "--recipient", w.id.Recipient().String(),
		"--base-url", w.url, "--rate", "0", "--log-format", "json", "--progress", "never"}, keyArgs...)
	if code, _, stderr := runMain(t, strings.NewReader(""), args...); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, stderr)
	}
	const plantedKey = "planted-key-0123456789abcdefghij"
	planted := []report.SealedKey{
		{UserID: 2001, Key: secret.Password(plantedKey), ObtainedAt: time.Now().Add(time.Hour)},
		{UserID: 4242, Key: secret.Password(plantedKey + "x"), ObtainedAt: time.Now().Add(time.Hour)},
	}
	plantedPath, err := report.SealAPIKeys(out, 99, []age.Recipient{w.id.Recipient()}, planted)
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(w.dir, "identity.txt")
	if err := os.WriteFile(idFile, []byte(w.id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runMain(t, strings.NewReader(""), "open", "--api-keys", "-i", idFile, out)
	if code != 0 {
		t.Fatalf("open --api-keys: exit %d\n%s", code, stderr)
	}
	for _, id := range w.ids()[1:] {
		live, _ := w.sim.APIKey(id)
		if !strings.Contains(stdout, "\n"+strconv.Itoa(id)+","+live+"\n") {
			t.Errorf("user %d: open --api-keys does not print the live key", id)
		}
	}
	if strings.Contains(stdout, "\n2001,"+plantedKey+"\n") {
		t.Error("user 2001: open --api-keys prints the planted key")
	}
	for _, s := range []string{plantedPath, "not vouched", "4242"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr does not say %q:\n%s", s, stderr)
		}
	}
	if strings.Contains(stderr, plantedKey) {
		t.Error("stderr holds a key")
	}
}
