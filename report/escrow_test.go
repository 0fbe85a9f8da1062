package report

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"pwrotate/rotate/secret"
)

func TestEscrow(t *testing.T) {
	dir := t.TempDir()
	pws := map[int]secret.Password{1042: "Escrowed-1042!a", 7: "Escrowed-7!b"}
	pass := EscrowPassphrase(EscrowSecret("the-api-key"), "run-1")
	rows := func(yield func(int, secret.Password) bool) {
		for _, u := range []int{1042, 7} {
			if !yield(u, pws[u]) {
				return
			}
		}
	}
	path, err := SealEscrow(dir, 3, pass, rows)
	if err != nil || filepath.Base(path) != "deliver-g0003.age" || !IsEscrowName("deliver-g0003.age") {
		t.Fatalf("SealEscrow = %s, %v", path, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("escrow file: %v %v", st, err)
	}
	if _, err := SealEscrow(dir, 3, pass, rows); err == nil {
		t.Error("an escrow was replaced")
	}
	got, err := OpenEscrow(dir, 3, pass)
	if err != nil || len(got) != 2 || got[1042] != pws[1042] || got[7] != pws[7] {
		t.Fatalf("OpenEscrow = %d rows, %v", len(got), err)
	}
	for name, p := range map[string]secret.Password{
		"another key": EscrowPassphrase(EscrowSecret("another-key"), "run-1"),
		"another run": EscrowPassphrase(EscrowSecret("the-api-key"), "run-2"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := OpenEscrow(dir, 3, p)
			if !errors.Is(err, ErrEscrowKey) {
				t.Fatalf("OpenEscrow = %v, want ErrEscrowKey", err)
			}
			if strings.Contains(err.Error(), "Escrowed") {
				t.Error("a password in the error")
			}
		})
	}
	// pwrotate open reads the sealed files of a folder, not its escrow.
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Seal(dir, 3, []age.Recipient{id.Recipient()}, rows); err != nil {
		t.Fatal(err)
	}
	opened, err := Open([]string{dir}, []age.Identity{id}, true)
	if err != nil || len(opened) != 2 {
		t.Fatalf("Open = %v, %v", opened, err)
	}
	// A temporary escrow file left by a kill is the folder's own.
	if final, ok := TempFinal("deliver-g0003.age.tmp"); !ok || final != "deliver-g0003.age" {
		t.Errorf("TempFinal(escrow tmp) = %q, %v", final, ok)
	}
	if !ours("deliver-g0003.age") {
		t.Error("the escrow file is not the folder's own")
	}
}
