package report

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"
)

// rewriteReference is what RewriteSorted wrote before it streamed: every
// row read, sorted stably by line, and encoded again.
func rewriteReference(t *testing.T, path string) []byte {
	t.Helper()
	rows, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(rows, func(a, b Row) int { return a.Line - b.Line })
	// The last row of a line supersedes the earlier ones.
	kept := rows[:0]
	for i, r := range rows {
		if i+1 < len(rows) && rows[i+1].Line == r.Line {
			continue
		}
		kept = append(kept, r)
	}
	rows = kept
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	rec := make([]string, len(ResultsHeader))
	if err := cw.Write(ResultsHeader); err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		rows[i].record(rec)
		if err := cw.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	cw.Flush()
	return buf.Bytes()
}

// appendedFile returns the bytes Append writes for rows, header included.
func appendedFile(t *testing.T, rows []Row) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "results.csv")
	writeRows(t, path, rows)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRewriteSortedSameAsReencoding(t *testing.T) {
	h := headerLine
	at := "2025-03-04T05:06:07.891011121Z"
	rows := sampleRows()
	reversed := slices.Clone(rows)
	slices.Reverse(reversed)
	// Of two rows of one line, the later one is kept.
	dup := append(slices.Clone(reversed), Row{Line: 3, UserID: 99, Status: Failed, Error: "second of line 3"})
	tests := []struct {
		name string
		file string
		// lines is the expected order of the line column afterwards.
		lines []int
	}{
		{"header only", h, nil},
		{"sorted already", appendedFile(t, rows), []int{2, 3, 5, 6}},
		{"reversed", appendedFile(t, reversed), []int{2, 3, 5, 6}},
		{"same line twice", appendedFile(t, dup), []int{2, 3, 5, 6}},
		{"quoted comma and quotes copied", h +
			"9,7,failed,,1,400,X,\"a, \"\"b\"\"\",,,\n" +
			"8,7,failed,,1,400,X,\"c,d\",,,\n", []int{8, 9}},
		{"quoted newlines", h +
			"12,5,failed,,1,500,,\"line one\nline two\",,,\n" +
			"4,6,updated,1,1,200,,,generated,,\"" + at + "\"\n" +
			"7,\"ab\ncd\",invalid,,0,,,\"multi\n\nline\",,,\n" +
			"3,8,updated,1,1,200,,,generated,,\n", []int{3, 4, 7, 12}},
		{"quoted newline record last", h +
			"4,6,updated,1,1,200,,,generated,,\n" +
			"2,5,failed,,1,500,,\"x\ny\",,,\n", []int{2, 4}},
		{"CRLF line ends", strings.ReplaceAll(h+
			"5,1,updated,1,1,200,,,generated,,\n"+
			"2,2,updated,1,1,200,,,generated,,\n", "\n", "\r\n"), []int{2, 5}},
		{"blank lines", h + "\n" +
			"5,1,updated,1,1,200,,,generated,,\n\n\n" +
			"2,2,updated,1,1,200,,,generated,,\n", []int{2, 5}},
		{"cells Append would write otherwise", h +
			"+5,007,updated,01,1,0200,,,generated,,2025-03-04T07:06:07.5+02:00\n" +
			"3,x,invalid,,0,,,=HYPERLINK(1),,,\n" +
			"2,\" abc \",invalid,,0,,,\"  padded\",,,\n" +
			"4,1,failed,,1,400,,\\.,,,\n" +
			"6,1,failed,,1,400,\"E\",\"quoted for nothing\",,,\n", []int{2, 3, 4, 5, 6}},
		{"torn last record dropped", h +
			"3,1,updated,1,1,200,,,generated,,\n" +
			"2,2,updated,1,1,200,,,generated,,\n" +
			"1,3,upd", []int{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "results.csv")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			want := rewriteReference(t, path)
			if err := RewriteSorted(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("rewritten file differs from the rows encoded again\ngot:\n%s\nwant:\n%s", got, want)
			}
			rows, err := ReadResults(path)
			if err != nil {
				t.Fatal(err)
			}
			var lines []int
			for _, r := range rows {
				lines = append(lines, r.Line)
			}
			if !slices.Equal(lines, tt.lines) {
				t.Fatalf("lines after rewrite %v, want %v", lines, tt.lines)
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
				t.Errorf("mode after rewrite %v", st.Mode().Perm())
			}
			assertNoTemp(t, filepath.Dir(path))
		})
	}
}

// TestRewriteSortedCopiesAppendedBytes checks the fast path: records as
// Append wrote them come out byte for byte, only reordered.
func TestRewriteSortedCopiesAppendedBytes(t *testing.T) {
	rows := sampleRows()
	rows[0].Error = `odd "quoted", text`
	var lines []string
	for _, r := range rows {
		lines = append(lines, strings.TrimPrefix(appendedFile(t, []Row{r}), headerLine))
	}
	path := filepath.Join(t.TempDir(), "results.csv")
	reversed := slices.Clone(rows)
	slices.Reverse(reversed)
	writeRows(t, path, reversed)
	if err := RewriteSorted(path); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := headerLine + strings.Join(lines, ""); string(got) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRewriteSortedErrors(t *testing.T) {
	t.Run("bad record in the middle", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "results.csv")
		content := headerLine +
			"3,1,updated,1,1,200,,,generated,,\n" +
			"2,1,bogus,1,1,200,,,generated,,\n" +
			"4,1,updated,1,1,200,,,generated,,\n"
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		err := RewriteSorted(path)
		if err == nil || !strings.Contains(err.Error(), "line 3") {
			t.Fatalf("err = %v, want one naming line 3", err)
		}
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Fatal("file changed after a failed rewrite")
		}
		assertNoTemp(t, filepath.Dir(path))
	})
	t.Run("missing", func(t *testing.T) {
		if err := RewriteSorted(filepath.Join(t.TempDir(), "none.csv")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("wrong header", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "results.csv")
		os.WriteFile(path, []byte("userId,password\n1,2\n"), 0o600)
		if err := RewriteSorted(path); err == nil || !strings.Contains(err.Error(), "header") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestSegmentReader(t *testing.T) {
	data := make([]byte, 3*segmentWindow+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sr := segmentReader{ra: bytes.NewReader(data), size: int64(len(data))}
	tests := []struct {
		name string
		off  int64
		n    int
	}{
		{"start", 0, 10},
		{"inside the window", 5, 100},
		{"far ahead", 2 * segmentWindow, 300},
		{"back", 100, 1},
		{"last bytes", int64(len(data) - 9), 9},
		{"larger than the window", 10, segmentWindow + 5},
		{"whole file", 0, len(data)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sr.read(tt.off, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[tt.off:tt.off+int64(tt.n)]) {
				t.Fatal("wrong bytes")
			}
		})
	}
	if _, err := sr.read(int64(len(data)-3), 4); err == nil {
		t.Fatal("read past the end succeeded")
	}
}

// TestRewriteSortedMemory rewrites 200,000 rows written in reverse and
// bounds the heap it needs on top of what was live before: the old
// implementation held every row (~120 MB at this size).
func TestRewriteSortedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200,000 rows")
	}
	const n = 200_000
	path := filepath.Join(t.TempDir(), "results.csv")
	f, _, err := OpenResults(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for i := n - 1; i >= 0; i-- {
		r := Row{Line: i + 2, UserID: 1_000_000 + i, Status: Updated, Generation: 1, Attempts: 1,
			HTTPStatus: 200, PasswordSource: "generated", FinishedAt: at.Add(time.Duration(i) * time.Microsecond)}
		if i%1000 == 0 {
			r.Status, r.Error, r.ErrorCode = Failed, `HTTP 400 InvalidParameter: "x", y`, "InvalidParameter"
		}
		if err := f.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// Collect often, so the samples show what is live, not garbage.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var max uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > max {
				max = v
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-tick.C:
			}
		}
	}()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	err = RewriteSorted(path)
	runtime.ReadMemStats(&ms1)
	close(stop)
	p := <-peak
	if err != nil {
		t.Fatal(err)
	}
	const bound = 20 << 20
	if p > base && p-base > bound {
		t.Errorf("heap grew by %.1f MB during the rewrite of %d rows, want < %d MB", float64(p-base)/(1<<20), n, bound>>20)
	}
	// The CSV reader allocates one string per record; the old rewrite
	// made five or more objects per row.
	if allocs := ms1.Mallocs - ms0.Mallocs; allocs > 2*n {
		t.Errorf("%d allocations for %d rows, want < %d", allocs, n, 2*n)
	}
	t.Logf("peak heap growth %.1f MB, %.1f MB allocated in %d objects",
		float64(p-min(p, base))/(1<<20), float64(ms1.TotalAlloc-ms0.TotalAlloc)/(1<<20), ms1.Mallocs-ms0.Mallocs)

	rows, err := ReadResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != n {
		t.Fatalf("%d rows after rewrite, want %d", len(rows), n)
	}
	for i, r := range rows {
		if r.Line != i+2 || r.UserID != 1_000_000+i {
			t.Fatalf("row %d: line %d user %d: not sorted or lost", i, r.Line, r.UserID)
		}
	}
}
