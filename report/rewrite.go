package report

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gocarina/gocsv"
)

// RewriteSorted rewrites the results file with its rows sorted by input
// line, one row a line, atomically: of several rows of one line (a later
// row supersedes an earlier one, e.g. an API key rotation recorded after
// its password change), the last written is kept. A torn last record is
// dropped. A file written before the last columns is written with
// the current header. No ResultsFile may be open on path.
//
// It streams: one pass validates every record and keeps only its line and
// byte range (24 bytes a row), the ranges are sorted, and a second pass
// copies the records' bytes in that order to a temporary file that then
// replaces path. A record whose bytes are not exactly what Append writes for
// its row (edited by hand: other quoting, CRLF, blank lines, unsanitized
// cells) is encoded again as Append would, so the result is the same as
// writing every row anew.
func RewriteSorted(path string) error {
	return Files{}.RewriteSorted(path)
}

// RewriteSorted is the package-level RewriteSorted, calling f.Hook.
func (f Files) RewriteSorted(path string) error {
	src, err := OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("reading results: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("reading results: %w", err)
	}
	var idx []sortEntry
	var canon canonChecker
	if _, err := parseResults(src, st.Size(), parseRow, func(r *Row, rec []string, start, end int64) error {
		if end-start > math.MaxInt32 {
			return fmt.Errorf("line %d: record too long", r.Line)
		}
		idx = append(idx, sortEntry{
			line:   r.Line,
			off:    start,
			n:      int32(end - start),
			recode: !canon.check(r, rec, end-start),
		})
		return nil
	}); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	slices.SortStableFunc(idx, func(a, b sortEntry) int { return cmp.Compare(a.line, b.line) })
	// A later row of a line supersedes the earlier ones (a session reset
	// done by a resumed run is recorded as a new row): keep the last.
	kept := idx[:0]
	for i, e := range idx {
		if i+1 < len(idx) && idx[i+1].line == e.line {
			continue
		}
		kept = append(kept, e)
	}
	idx = kept
	return f.writeAtomic(path, 0o600, func(w io.Writer) error {
		if _, err := io.WriteString(w, headerLine); err != nil {
			return err
		}
		sr := segmentReader{ra: src, size: st.Size()}
		var enc recoder
		for _, e := range idx {
			raw, err := sr.read(e.off, int(e.n))
			if err != nil {
				return fmt.Errorf("reading line %d again: %w", e.line, err)
			}
			if e.recode {
				if raw, err = enc.recode(raw); err != nil {
					return fmt.Errorf("line %d: %w", e.line, err)
				}
			}
			if _, err := w.Write(raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// sortEntry locates one record of a results file for RewriteSorted.
type sortEntry struct {
	line   int   // input line of the row, the sort key
	off    int64 // where the record starts in the file
	n      int32 // its length in bytes, terminator included
	recode bool  // its bytes are not what Append writes: encode it again
}

// canonChecker tells whether a record's bytes are exactly what Append
// writes for its row, without allocating.
type canonChecker struct {
	buf []byte
}

// check reports whether a record of n bytes that parsed into the cells rec
// and the row r is byte for byte what Append writes for r. It compares each
// cell with the one Append would write, then the length: a record whose
// cells are all equal and no cell needs an optional quoting has exactly one
// encoding of the minimum length (any other quoting, a CRLF or a blank line
// makes it longer).
func (c *canonChecker) check(r *Row, rec []string, n int64) bool {
	if len(rec) != len(ResultsHeader) ||
		!c.intCell(rec[0], r.Line, false) ||
		!(r.UserID > 0 && c.intCell(rec[1], r.UserID, false) || r.UserID == 0 && rec[1] == SafeCell(r.RawUserID)) ||
		rec[2] != string(r.Status) ||
		!c.intCell(rec[3], r.Generation, true) ||
		!c.intCell(rec[4], r.Attempts, false) ||
		!c.intCell(rec[5], r.HTTPStatus, true) ||
		rec[6] != SafeCell(r.ErrorCode) ||
		rec[7] != SafeCell(r.Error) ||
		rec[8] != r.PasswordSource ||
		rec[9] != r.SessionsReset ||
		rec[11] != r.APIKeyRotated ||
		rec[12] != r.SealedFor || rec[13] != r.Delivered {
		return false
	}
	if r.FinishedAt.IsZero() {
		if rec[10] != "" {
			return false
		}
	} else {
		c.buf = r.FinishedAt.UTC().AppendFormat(c.buf[:0], time.RFC3339Nano)
		if string(c.buf) != rec[10] {
			return false
		}
	}
	want := int64(len(rec)) // commas and the newline
	for _, cell := range rec {
		l, ok := encodedLen(cell)
		if !ok {
			return false
		}
		want += int64(l)
	}
	return want == n
}

// intCell reports whether s is n as Append writes it (empty for 0 when
// omitZero).
func (c *canonChecker) intCell(s string, n int, omitZero bool) bool {
	if omitZero && n == 0 {
		return s == ""
	}
	c.buf = strconv.AppendInt(c.buf[:0], int64(n), 10)
	return string(c.buf) == s
}

// encodedLen returns the length of cell as encoding/csv writes it. ok is
// false when csv quotes the cell although a reader would accept it
// unquoted (a leading space, a CR, `\.`): then a shorter, different
// encoding exists and lengths prove nothing.
func encodedLen(cell string) (n int, ok bool) {
	if cell == "" {
		return 0, true
	}
	if cell == `\.` || strings.IndexByte(cell, '\r') >= 0 {
		return 0, false
	}
	if r, _ := utf8.DecodeRuneInString(cell); unicode.IsSpace(r) {
		return 0, false
	}
	if strings.ContainsAny(cell, ",\"\n") {
		return len(cell) + 2 + strings.Count(cell, `"`), true
	}
	return len(cell), true
}

// recoder encodes a record again as Append writes it, with gocsv.
type recoder struct {
	out  bytes.Buffer
	read rowReader
	rows []resultsRecord // len 1: the row being encoded
}

// recode parses one raw record (possibly after blank lines) and returns it
// as Append writes it. The result is valid until the next call.
func (e *recoder) recode(raw []byte) ([]byte, error) {
	cr := csv.NewReader(bytes.NewReader(raw))
	cr.FieldsPerRecord = -1 // every column, or fewer in a file from before the last ones
	in, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("record changed since it was read: %w", err)
	}
	if e.rows == nil {
		e.read, e.rows = newRowReader(), make([]resultsRecord, 1)
	}
	row, err := e.read.read(in)
	if err != nil {
		return nil, fmt.Errorf("record changed since it was read: %w", err)
	}
	e.rows[0] = row.csvRecord()
	e.out.Reset()
	cw := csv.NewWriter(&e.out)
	if err := gocsv.MarshalCSVWithoutHeaders(&e.rows, cw); err != nil {
		return nil, err
	}
	return e.out.Bytes(), nil
}

// segmentWindow is how much of the file segmentReader reads at once.
const segmentWindow = 64 << 10

// segmentReader reads byte ranges of a file through a window, so that
// records near one another cost one read.
type segmentReader struct {
	ra   io.ReaderAt
	size int64
	win  []byte // the bytes from off
	off  int64
}

// read returns the n bytes at off, valid until the next call.
func (s *segmentReader) read(off int64, n int) ([]byte, error) {
	end := off + int64(n)
	if off >= s.off && end <= s.off+int64(len(s.win)) {
		return s.win[off-s.off : end-s.off], nil
	}
	if end > s.size {
		return nil, io.ErrUnexpectedEOF
	}
	if n > segmentWindow {
		big := make([]byte, n)
		if _, err := s.ra.ReadAt(big, off); err != nil {
			return nil, err
		}
		return big, nil
	}
	// Center the window on the record: rows arrive roughly in order, but
	// not exactly, and the index may be walked either way.
	start := max(0, off-int64(segmentWindow-n)/2)
	size := min(int64(segmentWindow), s.size-start)
	if cap(s.win) < segmentWindow {
		s.win = make([]byte, segmentWindow)
	}
	s.win = s.win[:size]
	s.off = start
	if m, err := s.ra.ReadAt(s.win, start); err != nil && !(err == io.EOF && m == len(s.win)) {
		s.win = s.win[:0]
		return nil, err
	}
	return s.win[off-start : end-start], nil
}
