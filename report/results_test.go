package report

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func sampleRows() []Row {
	t0 := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC)
	return []Row{
		{Line: 2, UserID: 1042, Status: Updated, Generation: 1, Attempts: 2, HTTPStatus: 200,
			PasswordSource: "generated", SessionsReset: "true", FinishedAt: t0, APIKeyRotated: "true", SealedFor: "network-12", Delivered: "false"},
		{Line: 3, UserID: 0, RawUserID: "abc", Status: Invalid, Error: "userId is not an integer"},
		{Line: 5, UserID: 7, Status: Failed, Attempts: 5, HTTPStatus: 404, ErrorCode: "ObjectNotFound",
			Error: "user, \"7\" not found", PasswordSource: "input", SessionsReset: "false",
			FinishedAt: t0.Add(time.Second)},
		{Line: 6, UserID: 2147483647, Status: Planned, PasswordSource: "generated"},
	}
}

func writeRows(t *testing.T, path string, rows []Row) {
	t.Helper()
	f, got, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("new file has %d rows", len(got))
	}
	if err := f.Append(rows...); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestResultsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.csv")
	rows := sampleRows()
	writeRows(t, path, rows)

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const header = "line,userId,status,generation,attempts,httpStatus,errorCode,error,passwordSource,sessionsReset,finishedAt,apiKeyRotated,sealedFor,delivered\n"
	if !strings.HasPrefix(string(data), header) {
		t.Fatalf("header:\n%q", strings.SplitAfter(string(data), "\n")[0])
	}
	lines := strings.Split(string(data), "\n")
	wantLines := map[int]string{
		1: "2,1042,updated,1,2,200,,,generated,true,2025-03-04T05:06:07.891011121Z,true,network-12,false",
		2: "3,abc,invalid,,0,,,userId is not an integer,,,,,,",
		4: "6,2147483647,planned,,0,,,,generated,,,,,",
	}
	for i, want := range wantLines {
		if lines[i] != want {
			t.Errorf("line %d = %q, want %q", i+1, lines[i], want)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}

	got, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rows) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, rows)
	}

	// Reopening returns the rows and appends after them.
	f, again, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, rows) {
		t.Fatalf("reopen: got %+v", again)
	}
	extra := Row{Line: 9, UserID: 9, Status: Failed, Error: "=cmd|' /C calc'!A0"}
	if err := f.Append(extra); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err = ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[4].Error != "'=cmd|' /C calc'!A0" {
		t.Fatalf("after append: %+v", got)
	}
}

func TestResultsRawUserIDSanitized(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.csv")
	writeRows(t, path, []Row{
		{Line: 2, RawUserID: "=1+1\nx", Status: Invalid},
		{Line: 3, RawUserID: "0", Status: Invalid},
		{Line: 4, RawUserID: "99999999999", Status: Invalid},
	})
	got, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"'=1+1 x", "0", "99999999999"}
	for i, w := range want {
		if got[i].UserID != 0 || got[i].RawUserID != w {
			t.Errorf("row %d: UserID %d RawUserID %q, want 0 %q", i, got[i].UserID, got[i].RawUserID, w)
		}
	}
}

func TestAppendRejectsBadRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.csv")
	f, _, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	good := Row{Line: 2, UserID: 1, Status: Updated}
	for name, bad := range map[string]Row{
		"no line":        {UserID: 1, Status: Updated},
		"unknown status": {Line: 2, UserID: 1, Status: "done"},
		"bad source":     {Line: 2, UserID: 1, Status: Updated, PasswordSource: "guess"},
		"bad reset":      {Line: 2, UserID: 1, Status: Updated, SessionsReset: "yes"},
		"negative id":    {Line: 2, UserID: -1, Status: Updated},
	} {
		t.Run(name, func(t *testing.T) {
			if err := f.Append(good, bad); err == nil {
				t.Fatal("Append accepted a bad row")
			}
		})
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("a rejected row must not poison the file: %v", err)
	}
	rows, err := ReadResults(path)
	if err != nil || len(rows) != 0 {
		t.Fatalf("rows %v err %v: a batch with a bad row must write nothing", rows, err)
	}
}

func TestSafeCell(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	tests := []struct {
		name, in, want string
	}{
		{"plain", "user not found", "user not found"},
		{"empty", "", ""},
		{"equals", "=SUM(A1)", "'=SUM(A1)"},
		{"plus", "+1", "'+1"},
		{"minus", "-1", "'-1"},
		{"at", "@cmd", "'@cmd"},
		{"formula after spaces", "  =1+1", "'=1+1"},
		{"formula after tab", "\t=1", "'=1"},
		{"formula after newline", "\n@x", "'@x"},
		{"newlines", "a\nb\r\nc", "a b  c"},
		{"controls", "a\x00b\x1bc\x7fd\u0085e", "a b c d e"},
		{"line separator", "a\u2028b", "a b"},
		{"bidi override", "a\u202eb", "a b"},
		{"trimmed", "  x  ", "x"},
		{"invalid utf8", "a\xffb\xc3", "a\uFFFDb\uFFFD"},
		{"unicode kept", "naïve ✓", "naïve ✓"},
		{"quote and comma", `a,"b"`, `a,"b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SafeCell(tt.in); got != tt.want {
				t.Errorf("SafeCell(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	t.Run("long", func(t *testing.T) {
		for _, in := range []string{long, "=" + long, strings.Repeat("a", 301), "x" + long + "\xff"} {
			got := SafeCell(in)
			if len(got) > 300 || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
				t.Errorf("SafeCell(%d bytes) = %d bytes, valid %v: %q…", len(in), len(got), utf8.ValidString(got), got[:10])
			}
			if in[0] == '=' && got[0] != '\'' {
				t.Errorf("lost formula prefix")
			}
		}
		if got := SafeCell(strings.Repeat("a", 300)); got != strings.Repeat("a", 300) {
			t.Errorf("300 bytes must be kept whole")
		}
	})
	t.Run("idempotent", func(t *testing.T) {
		for _, tt := range tests {
			once := SafeCell(tt.in)
			if twice := SafeCell(once); twice != once {
				t.Errorf("SafeCell(SafeCell(%q)) = %q, want %q", tt.in, twice, once)
			}
		}
		once := SafeCell("=" + long)
		if SafeCell(once) != once {
			t.Errorf("long: not idempotent")
		}
	})
}

// TestTornTailRepair cuts a valid file at every byte of its last line.
func TestTornTailRepair(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full.csv")
	rows := sampleRows()
	writeRows(t, full, rows)
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	lastStart := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
	last := rows[len(rows)-1]

	for cut := lastStart; cut < len(data); cut++ {
		path := filepath.Join(dir, "cut.csv")
		if err := os.WriteFile(path, data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		f, got, err := OpenResults(path)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if !reflect.DeepEqual(got, rows[:len(rows)-1]) {
			t.Fatalf("cut at %d: got %d rows %+v", cut, len(got), got)
		}
		if err := f.Append(last); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		repaired, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(repaired, data) {
			t.Fatalf("cut at %d: after repair and append:\n%s\nwant\n%s", cut, repaired, data)
		}
	}
}

func TestTornTailUnparsableLastRecord(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "results.csv")
	rows := sampleRows()
	writeRows(t, full, rows)
	good, _ := os.ReadFile(full)
	for name, tail := range map[string]string{
		"garbage line":     "garbage\n",
		"unknown status":   "7,8,done,,0,,,,,,\n",
		"bad time":         "7,8,failed,,0,,,,,,yesterday\n",
		"open quote":       "7,8,failed,,0,,,\"oops,,,\n",
		"too many columns": "7,8,failed,,0,,,,,,,,,,\n",
		"bad delivered":    "7,8,failed,,0,,,,,,,,,maybe\n",
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(full, append(bytes.Clone(good), tail...), 0o600); err != nil {
				t.Fatal(err)
			}
			f, got, err := OpenResults(full)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if !reflect.DeepEqual(got, rows) {
				t.Fatalf("got %+v", got)
			}
			if after, _ := os.ReadFile(full); !bytes.Equal(after, good) {
				t.Fatalf("not truncated to the last good record:\n%s", after)
			}
		})
	}
}

func TestTornHeaderRepair(t *testing.T) {
	for _, n := range []int{0, 1, 20, len(headerLine) - 1} {
		path := filepath.Join(t.TempDir(), "results.csv")
		if err := os.WriteFile(path, []byte(headerLine[:n]), 0o600); err != nil {
			t.Fatal(err)
		}
		f, rows, err := OpenResults(path)
		if err != nil {
			t.Fatalf("header cut at %d: %v", n, err)
		}
		if len(rows) != 0 {
			t.Fatalf("rows %v", rows)
		}
		f.Close()
		if data, _ := os.ReadFile(path); string(data) != headerLine {
			t.Fatalf("header cut at %d: file %q", n, data)
		}
	}
}

func TestResultsCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "results.csv")
	writeRows(t, path, sampleRows())
	data, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(data), "\n")
	for name, bad := range map[string]string{
		"garbage":      "garbage\n",
		"bad status":   "3,abc,weird,,0,,,,,,\n",
		"unterminated": "3,abc,invalid,,0,,,\"x,,,\n",
	} {
		t.Run(name, func(t *testing.T) {
			mixed := append([]string{}, lines...)
			mixed[2] = bad // file line 3
			orig := strings.Join(mixed, "")
			if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := OpenResults(path)
			if err == nil || !strings.Contains(err.Error(), "line 3") {
				t.Fatalf("OpenResults: %v, want an error naming line 3", err)
			}
			if _, err := ReadResults(path); err == nil || !strings.Contains(err.Error(), "line 3") {
				t.Fatalf("ReadResults: %v, want an error naming line 3", err)
			}
			if after, _ := os.ReadFile(path); string(after) != orig {
				t.Fatal("a corrupt file must be left alone")
			}
		})
	}
}

func TestResultsWrongHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.csv")
	os.WriteFile(path, []byte("userId,password\n1,2\n"), 0o600)
	if _, _, err := OpenResults(path); err == nil || !strings.Contains(err.Error(), "header") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ReadResults(filepath.Join(t.TempDir(), "none.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestSyncErrorIsSticky(t *testing.T) {
	row := Row{Line: 2, UserID: 1, Status: Updated}
	t.Run("closed underneath", func(t *testing.T) {
		f, _, err := OpenResults(filepath.Join(t.TempDir(), "results.csv"))
		if err != nil {
			t.Fatal(err)
		}
		f.f.Close()
		// Append writes through: the failure shows at once.
		if err := f.Append(row); err == nil {
			t.Fatal("Append to a closed file succeeded")
		}
		if err := f.Sync(); err == nil {
			t.Fatal("Sync on a closed file succeeded")
		}
		if err := f.Sync(); err == nil {
			t.Fatal("second Sync succeeded")
		}
		if err := f.Append(row); err == nil {
			t.Fatal("Append after a failed write succeeded")
		}
		if err := f.Close(); err == nil {
			t.Fatal("Close after a failed write succeeded")
		}
	})
	t.Run("disk full", func(t *testing.T) {
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Skip("no /dev/full:", err)
		}
		f := newResultsFile("/dev/full", full)
		if err := f.Append(row); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("first Append = %v, want ENOSPC at once", err)
		}
		for i := range 3 {
			if err := f.Sync(); !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Sync #%d = %v, want ENOSPC", i+1, err)
			}
		}
		if err := f.Append(row); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append = %v, want ENOSPC", err)
		}
		if err := f.Close(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Close = %v, want ENOSPC", err)
		}
	})
}

func TestResultsConcurrentAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.csv")
	f, _, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				line := w*100 + i + 2
				if err := f.Append(Row{Line: line, UserID: line, Status: Updated, Generation: 1}); err != nil {
					t.Error(err)
				}
				if i%10 == 0 {
					if err := f.Sync(); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := RewriteSorted(path); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 800 {
		t.Fatalf("%d rows, want 800", len(rows))
	}
	for i, r := range rows {
		if r.Line != i+2 || r.UserID != i+2 {
			t.Fatalf("row %d: line %d user %d: not sorted or lost", i, r.Line, r.UserID)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode after rewrite %v", st.Mode().Perm())
	}
	assertNoTemp(t, filepath.Dir(path))
}

// assertNoTemp fails if dir holds a temporary file.
func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// TestResultsLegacyFile reads a results.csv written before the
// apiKeyRotated column (apiKeyRotated empty), and upgrades it to the
// current header when it is opened for appending, torn tail cut, rows
// kept in order.
func TestResultsLegacyFile(t *testing.T) {
	legacy := "line,userId,status,generation,attempts,httpStatus,errorCode,error,passwordSource,sessionsReset,finishedAt\n" +
		"4,10,updated,1,1,200,,,generated,,2025-03-04T05:06:07Z\n" +
		"2,11,failed,,5,500,,\"boom, twice\",generated,,2025-03-04T05:06:08Z\n" +
		"3,12,upd"
	path := filepath.Join(t.TempDir(), "results.csv")
	if err := os.WriteFile(path, []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].UserID != 10 || rows[1].Error != "boom, twice" || rows[0].APIKeyRotated != "" {
		t.Fatalf("legacy rows: %+v", rows)
	}
	f, got, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("OpenResults: %d rows, want 2", len(got))
	}
	if err := f.Append(Row{Line: 3, UserID: 12, Status: Updated, Generation: 2, Attempts: 1, APIKeyRotated: "true"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := headerLine +
		"4,10,updated,1,1,200,,,generated,,2025-03-04T05:06:07Z,,,\n" +
		"2,11,failed,,5,500,,\"boom, twice\",generated,,2025-03-04T05:06:08Z,,,\n" +
		"3,12,updated,2,1,,,,,,,true,,\n"
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Fatalf("upgraded file:\n%s\nwant:\n%s", b, want)
	}
	assertNoTemp(t, filepath.Dir(path))
}

// TestResultsBeforeSealedFor reads a results.csv written before the
// sealedFor column (12 columns: its rows are of the global group), keeps
// it through RewriteSorted and upgrades it when appending. A bad sealedFor
// cell is a bad row.
func TestResultsBeforeSealedFor(t *testing.T) {
	const old = "line,userId,status,generation,attempts,httpStatus,errorCode,error,passwordSource,sessionsReset,finishedAt,apiKeyRotated\n" +
		"4,10,updated,1,1,200,,,generated,,2025-03-04T05:06:07Z,true\n" +
		"2,11,failed,,5,500,,boom,generated,,2025-03-04T05:06:08Z,\n"
	path := filepath.Join(t.TempDir(), "results.csv")
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].APIKeyRotated != "true" || rows[0].SealedFor != "" {
		t.Fatalf("rows: %+v", rows)
	}
	if g, err := ParseGroup(rows[0].SealedFor); err != nil || !g.Global() {
		t.Fatalf("group of an old row: %v %v", g, err)
	}
	if err := RewriteSorted(path); err != nil {
		t.Fatal(err)
	}
	f, _, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Append(Row{Line: 3, UserID: 12, Status: Updated, Generation: 2, Attempts: 1, SealedFor: "mailbox-7"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := headerLine +
		"2,11,failed,,5,500,,boom,generated,,2025-03-04T05:06:08Z,,,\n" +
		"4,10,updated,1,1,200,,,generated,,2025-03-04T05:06:07Z,true,,\n" +
		"3,12,updated,2,1,,,,,,,,mailbox-7,\n"
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Fatalf("upgraded file:\n%s\nwant:\n%s", b, want)
	}
	bad := headerLine + "2,11,updated,1,1,200,,,generated,,2025-03-04T05:06:08Z,,network-x,\n"
	if err := os.WriteFile(path, []byte(bad+bad[len(headerLine):]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadResults(path); err == nil {
		t.Fatal("a bad sealedFor cell was read")
	}
	f, _, err = OpenResults(filepath.Join(t.TempDir(), "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, g := range []string{"network-0", "network-012", "Network-1", "team-1", "global "} {
		if err := f.Append(Row{Line: 3, UserID: 12, Status: Updated, SealedFor: g}); err == nil {
			t.Errorf("sealedFor %q was written", g)
		}
	}
	if err := f.Append(Row{Line: 3, UserID: 12, Status: Updated, SealedFor: "global"}); err != nil {
		t.Fatal(err)
	}
}
