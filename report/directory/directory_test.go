package directory_test

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"pwrotate/job/input"
	"pwrotate/report"
	"pwrotate/report/directory"
	"pwrotate/rotate/ecgridsim"
)

// users converts simulator users, in their listing order.
func users(dir []ecgridsim.DirUser) []directory.User {
	out := make([]directory.User, len(dir))
	for i, u := range dir {
		out[i] = directory.User{UserID: u.UserID, Login: u.Login, Email: u.Email, FirstName: u.FirstName, LastName: u.LastName,
			NetworkID: u.NetworkID, MailboxID: u.MailboxID, AuthLevel: u.AuthLevel, Status: u.Status}
	}
	return out
}

func TestExportIsAnInput(t *testing.T) {
	dir := ecgridsim.GenerateDirectory(300, 11)
	var buf bytes.Buffer
	if err := directory.Write(&buf, users(dir)); err != nil {
		t.Fatal(err)
	}

	// run --input takes it as it is: every user once, in userId order,
	// none invalid.
	in, err := input.Read(bytes.NewReader(buf.Bytes()), "export.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int, len(dir))
	for i, u := range dir {
		want[i] = u.UserID
	}
	slices.Sort(want)
	got := make([]int, len(in.Records))
	for i, r := range in.Records {
		if r.Invalid != "" {
			t.Fatalf("line %d: invalid: %s", r.Line, r.Invalid)
		}
		if !r.Password.Empty() {
			t.Fatalf("line %d: a password column was read", r.Line)
		}
		got[i] = r.UserID
	}
	if !slices.Equal(got, want) {
		t.Fatalf("input read %d users, export had %d", len(got), len(want))
	}

	// Every row is the simulator's user, cells made safe.
	rows, err := csv.NewReader(bytes.NewReader(buf.Bytes())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rows[0], directory.Header) {
		t.Fatalf("header %q", rows[0])
	}
	byID := map[int]ecgridsim.DirUser{}
	for _, u := range dir {
		byID[u.UserID] = u
	}
	formula := false
	for _, row := range rows[1:] {
		id, _ := strconv.Atoi(row[0])
		u := byID[id]
		wantRow := []string{strconv.Itoa(id), report.SafeCell(u.Login), report.SafeCell(u.Email), report.SafeCell(u.FirstName),
			report.SafeCell(u.LastName), strconv.Itoa(u.NetworkID), strconv.Itoa(u.MailboxID), u.AuthLevel, u.Status}
		if !slices.Equal(row, wantRow) {
			t.Fatalf("row %q, want %q", row, wantRow)
		}
		for _, cell := range row {
			if cell != "" && strings.ContainsRune("=+-@", rune(cell[0])) {
				t.Fatalf("user %d: cell %q starts like a formula", id, cell)
			}
			if strings.ContainsAny(cell, "\n\r\u202e") {
				t.Fatalf("user %d: cell %q holds a control character", id, cell)
			}
		}
		if strings.HasPrefix(u.Login, "=") {
			formula = true
			if row[1] != "'"+u.Login {
				t.Fatalf("formula login exported as %q", row[1])
			}
		}
	}
	if !formula {
		t.Fatal("the directory has no formula login to neutralise")
	}
}

func TestWriteRefuses(t *testing.T) {
	for name, us := range map[string][]directory.User{
		"twice": {{UserID: 5}, {UserID: 3}, {UserID: 5}},
		"zero":  {{UserID: 0}},
		"big":   {{UserID: 1 << 31}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := directory.Write(&bytes.Buffer{}, us); err == nil {
				t.Fatal("written")
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.csv")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A failed export leaves the old file whole.
	if err := directory.WriteFile(path, []directory.User{{UserID: 2}, {UserID: 2}}); err == nil {
		t.Fatal("duplicate written")
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("old file changed: %q", b)
	}
	if err := directory.WriteFile(path, []directory.User{{UserID: 9, Login: "b"}, {UserID: 2, Login: "a"}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if want := "userId,login,email,firstName,lastName,networkId,mailboxId,authLevel,status\n2,a,,,,,,,\n9,b,,,,,,,\n"; string(b) != want {
		t.Fatalf("file %q", b)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %d entries", len(ents))
	}
	var out bytes.Buffer
	if err := directory.WriteTo("-", &out, []directory.User{{UserID: 1}}); err != nil || !strings.HasSuffix(out.String(), "\n1,,,,,,,,\n") {
		t.Fatalf("stdout %q %v", out.String(), err)
	}
}

// TestWriteManyRows checks the export across gocsv batches: one header,
// every user once, in order.
func TestWriteManyRows(t *testing.T) {
	var users []directory.User
	for id := 700; id >= 1; id-- {
		users = append(users, directory.User{UserID: id, Login: "=u" + strconv.Itoa(id), NetworkID: id % 3})
	}
	var b bytes.Buffer
	if err := directory.Write(&b, users); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 701 || lines[0] != strings.Join(directory.Header, ",") {
		t.Fatalf("%d lines, header %q", len(lines), lines[0])
	}
	for i, l := range lines[1:] {
		id := i + 1
		want := strconv.Itoa(id) + ",'=u" + strconv.Itoa(id) + ",,,," + map[bool]string{true: "", false: strconv.Itoa(id % 3)}[id%3 == 0] + ",,,"
		if l != want {
			t.Fatalf("line %d = %q, want %q", i+2, l, want)
		}
	}
}
