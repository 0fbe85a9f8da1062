package report

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/rotate/secret"
)

// pw is the test password of a user in a generation.
func pw(user, gen int) secret.Password {
	return secret.Password("Pw" + string(rune('a'+user)) + "-" + string(rune('0'+gen)) + "!x9")
}

type fixture struct {
	ids    []age.Identity
	recips []age.Recipient
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	k := testKeys(t)[0]
	ids, err := ParseIdentities([]string{writeTemp(t, t.TempDir(), "TEST-ONLY-identity.txt", k.identity)})
	if err != nil {
		t.Fatal(err)
	}
	recips, err := ParseRecipients([]string{k.recipient}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{ids, recips}
}

func (fx fixture) seal(t *testing.T, dir string, gen int, users ...int) string {
	t.Helper()
	m := map[int]secret.Password{}
	for _, u := range users {
		m[u] = pw(u, gen)
	}
	p, err := Seal(dir, gen, fx.recips, pairs(m))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// twoGenerations builds an output folder: users 1..4 sealed in generation
// 1; 2 and 4 resealed in generation 2 (a resume). Results: 1 updated with
// g1, 2 updated with g2, 3 failed, 4 without an outcome, plus an invalid
// record.
func twoGenerations(t *testing.T, fx fixture, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fx.seal(t, dir, 1, 1, 2, 3, 4)
	fx.seal(t, dir, 2, 2, 4)
	now := time.Now()
	writeRows(t, filepath.Join(dir, ResultsName), []Row{
		{Line: 2, UserID: 1, Status: Updated, Generation: 1, Attempts: 1, FinishedAt: now},
		{Line: 3, UserID: 2, Status: Updated, Generation: 2, Attempts: 1, FinishedAt: now},
		{Line: 4, UserID: 3, Status: Failed, Generation: 1, Attempts: 1, HTTPStatus: 404, FinishedAt: now},
		{Line: 6, RawUserID: "x", Status: Invalid},
	})
}

func row(user, gen int, status string) OpenRow {
	return OpenRow{UserID: user, Password: pw(user, gen), Status: status, Generation: gen}
}

func TestOpenDefaultAndAll(t *testing.T) {
	fx := newFixture(t)
	dir := filepath.Join(t.TempDir(), "out")
	twoGenerations(t, fx, dir)

	wantDefault := []OpenRow{
		row(1, 1, OpenUpdated),
		row(2, 2, OpenUpdated),
		row(3, 1, OpenUnconfirmed),
		row(4, 1, OpenUnconfirmed),
		row(4, 2, OpenUnconfirmed),
	}
	wantAll := []OpenRow{
		row(1, 1, OpenUpdated),
		row(2, 1, OpenSuperseded),
		row(2, 2, OpenUpdated),
		row(3, 1, OpenUnconfirmed),
		row(4, 1, OpenUnconfirmed),
		row(4, 2, OpenUnconfirmed),
	}
	g1, g2 := filepath.Join(dir, SealedName(1)), filepath.Join(dir, SealedName(2))
	tests := []struct {
		name  string
		paths []string
		all   bool
		want  []OpenRow
	}{
		{"folder", []string{dir}, false, wantDefault},
		{"folder all", []string{dir}, true, wantAll},
		{"files", []string{g2, g1}, false, wantDefault},
		{"files all", []string{g1, g2}, true, wantAll},
		{"folder and its file again", []string{dir, g1, dir}, true, wantAll},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Open(tt.paths, fx.ids, tt.all)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got\n%s\nwant\n%s", dump(got), dump(tt.want))
			}
		})
	}
}

// dump shows rows with their passwords, for test failures only.
func dump(rows []OpenRow) string {
	var b bytes.Buffer
	_ = WriteOpenCSV(&b, rows)
	return b.String()
}

func TestOpenMissingGeneration(t *testing.T) {
	fx := newFixture(t)
	dir := filepath.Join(t.TempDir(), "out")
	twoGenerations(t, fx, dir)
	g1 := filepath.Join(dir, SealedName(1))

	// Only one of the two files given.
	_, err := Open([]string{g1}, fx.ids, false)
	if err == nil || !strings.Contains(err.Error(), "user 2") || !strings.Contains(err.Error(), "generation 2") {
		t.Fatalf("one file of two: %v", err)
	}
	// The file is gone from the folder.
	if err := os.Remove(filepath.Join(dir, SealedName(2))); err != nil {
		t.Fatal(err)
	}
	for _, all := range []bool{false, true} {
		_, err := Open([]string{dir}, fx.ids, all)
		if err == nil || !strings.Contains(err.Error(), "user 2") || !strings.Contains(err.Error(), "generation 2") {
			t.Fatalf("all=%v: %v, want an error naming user 2 and generation 2", all, err)
		}
	}
}

func TestOpenShards(t *testing.T) {
	fx := newFixture(t)
	out := t.TempDir()
	s0, s1 := filepath.Join(out, "shard-0"), filepath.Join(out, "shard-1")
	// Generations are per shard: shard-0 resumed once, shard-1 did not.
	twoGenerations(t, fx, s0)
	if err := os.MkdirAll(s1, 0o700); err != nil {
		t.Fatal(err)
	}
	fx.seal(t, s1, 1, 10, 11)
	writeRows(t, filepath.Join(s1, ResultsName), []Row{
		{Line: 2, UserID: 10, Status: Updated, Generation: 1},
		{Line: 3, UserID: 11, Status: Failed, Generation: 1},
	})
	writeTemp(t, out, "summary.json", "{}")

	got, err := Open([]string{out}, fx.ids, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []OpenRow{
		row(1, 1, OpenUpdated),
		row(2, 2, OpenUpdated),
		row(3, 1, OpenUnconfirmed),
		row(4, 1, OpenUnconfirmed),
		row(4, 2, OpenUnconfirmed),
		row(10, 1, OpenUpdated),
		row(11, 1, OpenUnconfirmed),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", dump(got), dump(want))
	}

	// A shard's generation is not satisfied by another shard's file.
	if err := os.Remove(filepath.Join(s0, SealedName(2))); err != nil {
		t.Fatal(err)
	}
	if _, err := Open([]string{out}, fx.ids, true); err == nil || !strings.Contains(err.Error(), "generation 2") {
		t.Fatalf("missing shard generation: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	fx := newFixture(t)
	empty := t.TempDir()
	writeRows(t, filepath.Join(empty, ResultsName), []Row{{Line: 2, UserID: 1, Status: Planned}})
	other := newFixture(t)
	foreign := t.TempDir()
	other.seal(t, foreign, 1, 1)
	notAge := writeTemp(t, t.TempDir(), "passwords.csv", "x")

	for name, tt := range map[string]struct {
		paths  []string
		errHas string
	}{
		"no paths":        {nil, "no paths"},
		"no sealed files": {[]string{empty}, "no sealed files"},
		"missing path":    {[]string{filepath.Join(empty, "nope")}, "nope"},
		"not an age file": {[]string{notAge}, "neither a folder nor a .age file"},
		"wrong identity":  {[]string{foreign}, "none of the identities"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(tt.paths, fx.ids, false)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err %v, want %q", err, tt.errHas)
			}
		})
	}
	t.Run("updated without results generation", func(t *testing.T) {
		dir := t.TempDir()
		fx.seal(t, dir, 1, 1)
		writeRows(t, filepath.Join(dir, ResultsName), []Row{{Line: 2, UserID: 1, Status: Updated}})
		if _, err := Open([]string{dir}, fx.ids, false); err == nil || !strings.Contains(err.Error(), "without a generation") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("no results: all unconfirmed", func(t *testing.T) {
		dir := t.TempDir()
		p := fx.seal(t, dir, 1, 5)
		got, err := Open([]string{p}, fx.ids, false)
		if err != nil || !reflect.DeepEqual(got, []OpenRow{row(5, 1, OpenUnconfirmed)}) {
			t.Fatalf("got %s, %v", dump(got), err)
		}
	})
}

func TestWriteOpenCSV(t *testing.T) {
	var b bytes.Buffer
	err := WriteOpenCSV(&b, []OpenRow{
		{UserID: 1, Password: "Abc1!xyz", Status: OpenUpdated, Generation: 1},
		{UserID: 2, Password: `a,b"C1`, Status: OpenUnconfirmed, Generation: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "userId,password,status,generation\n1,Abc1!xyz,updated,1\n2,\"a,b\"\"C1\",unconfirmed,2\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}

// TestOpenRefusesTwoLiveFoldersInOneTree: a user updated in a folder and
// in one of its shard-* folders has two "live" passwords: open refuses,
// naming both folders. Two trees given as two paths are judged apart.
func TestOpenRefusesTwoLiveFoldersInOneTree(t *testing.T) {
	fx := newFixture(t)
	root := filepath.Join(t.TempDir(), "out")
	twoGenerations(t, fx, root) // user 1 updated with g1, user 2 with g2
	shard := filepath.Join(root, "shard-0")
	if err := os.MkdirAll(shard, 0o700); err != nil {
		t.Fatal(err)
	}
	fx.seal(t, shard, 1, 2)
	writeRows(t, filepath.Join(shard, ResultsName), []Row{
		{Line: 3, UserID: 2, Status: Updated, Generation: 1, Attempts: 1, FinishedAt: time.Now()},
	})
	for _, all := range []bool{false, true} {
		_, err := Open([]string{root}, fx.ids, all)
		if err == nil || !strings.Contains(err.Error(), "user 2 is updated in both") || !strings.Contains(err.Error(), "shard-0") {
			t.Errorf("all=%v: %v, want a refusal naming user 2 and both folders", all, err)
		}
	}
	// Each folder on its own, or as two trees, opens.
	if _, err := Open([]string{shard}, fx.ids, false); err != nil {
		t.Errorf("the shard folder alone: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other")
	twoGenerations(t, fx, other)
	if _, err := Open([]string{shard, other}, fx.ids, false); err != nil {
		t.Errorf("two trees, user 2 updated in each: %v", err)
	}
}
