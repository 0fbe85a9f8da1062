package report

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gocarina/gocsv"
)

// Status is the outcome of one input record, as written in results.csv.
type Status string

// The statuses a results row can have.
const (
	// Updated: the server confirmed the new password of the row's generation.
	Updated Status = "updated"
	// Failed: the change was refused or could not be made.
	Failed Status = "failed"
	// Invalid: the input record was rejected before any request.
	Invalid Status = "invalid"
	// Planned: a dry run would change this user.
	Planned Status = "planned"
	// Skipped: the record was deliberately left alone (protected by
	// --protect, or the caller's own account); no request was made.
	Skipped Status = "skipped"
)

// valid reports whether s is one of the known statuses.
func (s Status) valid() bool {
	switch s {
	case Updated, Failed, Invalid, Planned, Skipped:
		return true
	}
	return false
}

// Row is one line of results.csv: the outcome of one input record.
type Row struct {
	// Line is the input line where the record starts (≥ 1).
	Line int
	// UserID is the user; 0 when the input ID could not be parsed.
	UserID int
	// RawUserID is the input ID as given, written (sanitized) only when
	// UserID is 0.
	RawUserID string
	// Status is the outcome.
	Status Status
	// Generation is the sealed file generation of the password sent; 0 for
	// none (written as an empty cell).
	Generation int
	// Attempts counts the password-change requests made.
	Attempts int
	// HTTPStatus is the last HTTP status seen; 0 for none (empty cell).
	HTTPStatus int
	// ErrorCode is the API's errorCode, or a short code of our own.
	ErrorCode string
	// Error is one short line saying what went wrong; never a secret.
	Error string
	// PasswordSource is "generated", "input" or "".
	PasswordSource string
	// SessionsReset is "", "true" or "false".
	SessionsReset string
	// FinishedAt is when the outcome was known; zero for none (empty cell),
	// else written as RFC 3339 with nanoseconds in UTC.
	FinishedAt time.Time
	// APIKeyRotated is "" (not asked, --rotate-api-keys), "true" (the new
	// key is sealed) or "false" (not rotated: owed, or failed).
	APIKeyRotated string
}

// ResultsHeader is the exact header row of results.csv: the csv tags of
// its row struct, in order.
var ResultsHeader = CSVHeader[resultsRecord]()

// legacyColumns is the number of columns of a results.csv written before
// the apiKeyRotated column: such a file is read (apiKeyRotated empty), and
// upgraded to the current header before anything is appended to it.
const legacyColumns = 11

// legacyHeader is the header row of such a file.
var legacyHeader = ResultsHeader[:legacyColumns]

const (
	maxCellBytes = 300
	maxUserID    = 2147483647
)

// SafeCell makes free text fit for one CSV cell that a person may open in a
// spreadsheet: control characters, line breaks and bidi controls become
// spaces, invalid UTF-8 becomes U+FFFD, the result is trimmed, a cell that
// starts with = + - or @ gets a leading ' (so it is not read as a formula),
// and text longer than 300 bytes is cut on a character boundary and ends
// with "…". SafeCell(SafeCell(s)) == SafeCell(s).
func SafeCell(s string) string {
	if plainCell(s) {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), maxCellBytes+8))
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteRune(utf8.RuneError)
		case unicode.IsControl(r), r == '\u2028', r == '\u2029', unicode.Is(unicode.Bidi_Control, r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
		if b.Len() > 4*maxCellBytes {
			break // the rest would be cut anyway
		}
	}
	out := strings.TrimSpace(b.String())
	if out != "" && strings.IndexByte("=+-@", out[0]) >= 0 {
		out = "'" + out
	}
	if len(out) > maxCellBytes {
		const ellipsis = "…"
		cut := maxCellBytes - len(ellipsis)
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = strings.TrimRightFunc(out[:cut], unicode.IsSpace) + ellipsis
	}
	return out
}

// plainCell reports whether s is already safe: short printable ASCII, not
// padded, not starting like a formula.
func plainCell(s string) bool {
	if len(s) > maxCellBytes {
		return false
	}
	if s == "" {
		return true
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' || strings.IndexByte("=+-@", s[0]) >= 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// check says what is wrong with a row that cannot be written.
func (r *Row) check() error {
	switch {
	case r.Line < 1:
		return fmt.Errorf("line %d is not a line number", r.Line)
	case r.UserID < 0 || r.UserID > maxUserID:
		return fmt.Errorf("line %d: user id out of range", r.Line)
	case !r.Status.valid():
		return fmt.Errorf("line %d: unknown status %q", r.Line, SafeCell(string(r.Status)))
	case r.Generation < 0 || r.Attempts < 0 || r.HTTPStatus < 0:
		return fmt.Errorf("line %d: negative count", r.Line)
	}
	switch r.PasswordSource {
	case "", "generated", "input":
	default:
		return fmt.Errorf("line %d: unknown password source %q", r.Line, SafeCell(r.PasswordSource))
	}
	switch r.SessionsReset {
	case "", "true", "false":
	default:
		return fmt.Errorf("line %d: sessionsReset must be empty, true or false", r.Line)
	}
	switch r.APIKeyRotated {
	case "", "true", "false":
	default:
		return fmt.Errorf("line %d: apiKeyRotated must be empty, true or false", r.Line)
	}
	return nil
}

// record fills rec (one string per column) with the cells of r, as gocsv
// marshals its resultsRecord.
func (r *Row) record(rec []string) {
	cr := r.csvRecord()
	cr.cells(rec)
}

// parseRow turns one record of results.csv into a Row, decoding the cells
// without reflection (RewriteSorted's scan); rowReader.read does the same
// through gocsv.
func parseRow(rec []string) (Row, error) {
	var cr resultsRecord
	if rec = upgradeRecord(rec); rec == nil {
		return Row{}, errors.New("wrong number of fields")
	}
	if err := cr.decode(rec); err != nil {
		return Row{}, badCell(err, ResultsHeader)
	}
	return validRow(&cr)
}

// rowReader turns records of results.csv into Rows with gocsv.
type rowReader struct {
	dec *rowDecoder[resultsRecord]
}

func newRowReader() rowReader { return rowReader{dec: newRowDecoder[resultsRecord]()} }

// read is parseRow through gocsv.
func (rr rowReader) read(rec []string) (Row, error) {
	if rec = upgradeRecord(rec); rec == nil {
		return Row{}, errors.New("wrong number of fields")
	}
	cr, err := rr.dec.decode(rec)
	if err != nil {
		return Row{}, badCell(err, ResultsHeader)
	}
	return validRow(cr)
}

// upgradeRecord returns rec with every column of ResultsHeader: as it is,
// or, for a file written before the apiKeyRotated column (legacyColumns),
// with that cell empty. It returns nil for any other number of cells.
func upgradeRecord(rec []string) []string {
	switch len(rec) {
	case len(ResultsHeader):
		return rec
	case legacyColumns:
		return append(rec[:legacyColumns:legacyColumns], "")
	}
	return nil
}

// validRow returns the Row of a decoded record, or says why it cannot be
// one that Append writes.
func validRow(cr *resultsRecord) (Row, error) {
	r := cr.row()
	switch {
	case r.Line < 1:
		return r, errors.New("bad line number")
	case !r.Status.valid():
		return r, errors.New("unknown status")
	case r.check() != nil:
		return r, errors.New("bad passwordSource, sessionsReset or apiKeyRotated")
	}
	return r, nil
}

// scanned is what parseResults found in a results file.
type scanned struct {
	// end is the offset just past the last good record (or the header).
	end int64
	// torn is set when bytes after end must be cut off: an incomplete or
	// unparsable last record.
	torn bool
	// noHeader is set when the file is empty or holds only a torn prefix
	// of the header.
	noHeader bool
	// legacy is set when the file has the header of a results.csv written
	// before the apiKeyRotated column.
	legacy bool
}

var headerLine = strings.Join(ResultsHeader, ",") + "\n"

// parseResults reads a whole results file of the given size from ra, one
// record at a time, each decoded by parse. It calls add for every good
// record, in file order, with the parsed row, the record's cells (valid only during the call) and the
// byte range [start, end) of the record in the file; the range may begin
// with blank lines that the CSV reader skipped. An error from add stops the
// scan and is returned as is. The row is reused: add must copy it to keep it.
func parseResults(ra io.ReaderAt, size int64, parse func(rec []string) (Row, error), add func(row *Row, rec []string, start, end int64) error) (scanned, error) {
	var s scanned
	if size == 0 {
		s.noHeader = true
		return s, nil
	}
	endsWithNewline, err := lastByteIs(ra, size, '\n')
	if err != nil {
		return s, err
	}
	cr := csv.NewReader(bufio.NewReaderSize(io.NewSectionReader(ra, 0, size), 64<<10))
	// 0: every record must have the header's number of fields.
	cr.FieldsPerRecord = 0
	cr.ReuseRecord = true

	head, err := cr.Read()
	if err == nil && cr.InputOffset() == size && !endsWithNewline {
		err = errors.New("header not terminated")
	}
	if err == nil && slices.Equal(head, legacyHeader) {
		s.legacy = true
	}
	if err != nil || !slices.Equal(head, ResultsHeader) && !s.legacy {
		// A crash while the header was written leaves a prefix of it.
		if size < int64(len(headerLine)) && !endsWithNewline {
			prefix := make([]byte, size)
			if _, rerr := ra.ReadAt(prefix, 0); rerr == nil && strings.HasPrefix(headerLine, string(prefix)) {
				s.noHeader = true
				return s, nil
			}
		}
		return s, errors.New("line 1: not the results.csv header (want " + strings.TrimSpace(headerLine) + ")")
	}
	s.end = cr.InputOffset()
	var row Row // one for all records: add gets its address
	for {
		start := s.end
		rec, err := cr.Read()
		if err == io.EOF {
			return s, nil
		}
		var line int
		if err == nil {
			line, _ = cr.FieldPos(0)
			row, err = parse(rec)
			if err == nil && cr.InputOffset() == size && !endsWithNewline {
				err = errors.New("record not terminated")
			}
			if err == nil {
				s.end = cr.InputOffset()
				if err := add(&row, rec, start, s.end); err != nil {
					return s, err
				}
				continue
			}
		} else {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.StartLine
				err = pe.Err
			}
		}
		last, lerr := isLastLine(ra, start, size)
		if lerr != nil {
			return s, lerr
		}
		if last {
			s.torn = true
			return s, nil
		}
		return s, fmt.Errorf("line %d: %w", line, err)
	}
}

// parseRows is parseResults collecting the rows, decoded by gocsv.
func parseRows(ra io.ReaderAt, size int64) ([]Row, scanned, error) {
	var rows []Row
	s, err := parseResults(ra, size, newRowReader().read, func(r *Row, _ []string, _, _ int64) error {
		rows = append(rows, *r)
		return nil
	})
	return rows, s, err
}

// lastByteIs reports whether the byte at size-1 is b.
func lastByteIs(ra io.ReaderAt, size int64, b byte) (bool, error) {
	var one [1]byte
	if _, err := ra.ReadAt(one[:], size-1); err != nil {
		return false, err
	}
	return one[0] == b, nil
}

// isLastLine reports whether the bytes from start to size hold at most one
// line: no newline, or a single newline that is the final byte.
func isLastLine(ra io.ReaderAt, start, size int64) (bool, error) {
	br := bufio.NewReader(io.NewSectionReader(ra, start, size-start))
	n := start
	for {
		chunk, err := br.ReadSlice('\n')
		n += int64(len(chunk))
		switch {
		case err == nil:
			return n == size, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			return true, nil
		default:
			return false, err
		}
	}
}

// ReadResults reads every row of a results file. A torn last record (left
// by a crash) is ignored, not repaired; any other bad record is an error
// naming its line. A missing file is an error that matches fs.ErrNotExist.
func ReadResults(path string) ([]Row, error) {
	f, err := OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	rows, _, err := parseRows(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return rows, nil
}

// ResultsFile is a results.csv open for appending. It is safe for
// concurrent use. Its write errors are sticky: once a write or fsync has
// failed, every later Append, Sync and Close returns that error, so a full
// disk stops the run instead of losing rows silently.
//
// Appends are not held up by an fsync: Sync flushes the buffer under the
// append lock, releases it, and then fsyncs under a lock of its own.
type ResultsFile struct {
	// syncMu serialises fsyncs and Close. It is always taken before mu.
	syncMu sync.Mutex
	// mu guards everything below: the buffer, err, closed.
	mu     sync.Mutex
	path   string
	f      *os.File
	bw     *bufio.Writer // the csv writer's buffer, on f
	cw     *csv.Writer
	rec    []string
	err    error
	closed bool
	// fsyncFile is f.Sync; tests replace it to hold or fail an fsync.
	fsyncFile func() error
}

var errClosed = errors.New("results file is closed")

// OpenResults opens the results file at path for appending. An absent file
// is created (0600) with the header, fsynced. A present file must start
// with the header; every row is read and returned. A torn tail left by a
// crash (a last line without newline, or an unparsable last record) is
// repaired by truncating the file after the last good record; a bad record
// that is not the last one is an error naming its line.
func OpenResults(path string) (*ResultsFile, []Row, error) {
	return Files{}.OpenResults(path)
}

// OpenResults is the package-level OpenResults, calling fl.Hook.
func (fl Files) OpenResults(path string) (*ResultsFile, []Row, error) {
	f, err := OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := fl.WriteFileAtomic(path, []byte(headerLine), 0o600); err != nil {
			return nil, nil, fmt.Errorf("creating results: %w", err)
		}
		f, err = OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening results: %w", err)
	}
	rows, legacy, err := loadForAppend(f, path)
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	if legacy {
		// Written before the apiKeyRotated column: rewrite it with the
		// current header (same rows, same order) before appending.
		if err := f.Close(); err != nil {
			return nil, nil, fmt.Errorf("opening results: %w", err)
		}
		if err := fl.writeAtomic(path, 0o600, func(w io.Writer) error { return encodeRows(w, rows) }); err != nil {
			return nil, nil, fmt.Errorf("upgrading %s to the apiKeyRotated column: %w", path, err)
		}
		if f, err = OpenFile(path, os.O_RDWR|os.O_APPEND, 0); err != nil {
			return nil, nil, fmt.Errorf("opening results: %w", err)
		}
	}
	return newResultsFile(path, f), rows, nil
}

// encodeRows writes the header and rows to w as Append writes them.
func encodeRows(w io.Writer, rows []Row) error {
	if _, err := io.WriteString(w, headerLine); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	rec := make([]string, len(ResultsHeader))
	for i := range rows {
		rows[i].record(rec)
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// newResultsFile wraps an open file, positioned for appending.
func newResultsFile(path string, f *os.File) *ResultsFile {
	bw := bufio.NewWriterSize(f, 64<<10)
	return &ResultsFile{
		path: path, f: f, bw: bw, cw: csv.NewWriter(bw), rec: make([]string, len(ResultsHeader)),
		fsyncFile: f.Sync,
	}
}

// loadForAppend reads the rows of an open results file and repairs its
// tail. legacy reports a file written before the apiKeyRotated column.
func loadForAppend(f *os.File, path string) (rows []Row, legacy bool, err error) {
	st, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("opening results: %w", err)
	}
	rows, s, err := parseRows(f, st.Size())
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	switch {
	case s.noHeader:
		if err := f.Truncate(0); err != nil {
			return nil, false, fmt.Errorf("repairing %s: %w", path, err)
		}
		if _, err := f.WriteString(headerLine); err != nil {
			return nil, false, fmt.Errorf("repairing %s: %w", path, err)
		}
	case s.torn:
		if err := f.Truncate(s.end); err != nil {
			return nil, false, fmt.Errorf("repairing %s: %w", path, err)
		}
	default:
		return rows, s.legacy, nil
	}
	if err := f.Sync(); err != nil {
		return nil, false, fmt.Errorf("repairing %s: fsync: %w", path, err)
	}
	return rows, s.legacy, nil
}

// Append writes rows to the file: when it returns nil they are in the
// kernel's hands (they survive the process being killed; Sync makes them
// survive the machine), and a full or failing disk is reported at the first
// row it refuses, so that the caller stops at once. A row that cannot be
// written (no line number, unknown status…) is an error and none of rows
// is written.
func (f *ResultsFile) Append(rows ...Row) error {
	for i := range rows {
		if err := rows[i].check(); err != nil {
			return fmt.Errorf("appending to results: %w", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	if f.err != nil {
		return f.err
	}
	for i := range rows {
		rows[i].record(f.rec)
		if err := f.cw.Write(f.rec); err != nil {
			f.err = fmt.Errorf("appending to %s: %w", f.path, err)
			return f.err
		}
	}
	return f.flushLocked()
}

// Sync flushes the buffer and fsyncs the file: when it returns nil, every
// row appended before the call is durable. Appends go on while the fsync
// runs; concurrent Syncs are serialised.
func (f *ResultsFile) Sync() error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return errClosed
	}
	err := f.flushLocked()
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.fsync()
}

// flushLocked writes the buffer to the file, or returns the sticky error.
// f.mu must be held.
func (f *ResultsFile) flushLocked() error {
	if f.err != nil {
		return f.err
	}
	f.cw.Flush()
	if err := f.cw.Error(); err != nil {
		f.err = fmt.Errorf("writing %s: %w", f.path, err)
		return f.err
	}
	return nil
}

// fsync fsyncs the file and makes a failure sticky. f.syncMu must be held,
// f.mu must not be.
func (f *ResultsFile) fsync() error {
	if err := f.fsyncFile(); err != nil {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.err == nil {
			f.err = fmt.Errorf("writing %s: fsync: %w", f.path, err)
		}
		return f.err
	}
	return nil
}

// Close syncs and closes the file. Closing twice is not an error. Append
// and Sync after Close fail.
func (f *ResultsFile) Close() error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	serr := f.flushLocked()
	f.mu.Unlock()
	// From here on nothing but Close uses f.f: Append and Sync see closed
	// under mu, and another Close waits for syncMu.
	if serr == nil {
		serr = f.fsync()
	}
	if err := f.f.Close(); err != nil && serr == nil {
		return fmt.Errorf("closing %s: %w", f.path, err)
	}
	return serr
}

// RewriteSorted rewrites the results file with its rows sorted by input
// line, one row a line, atomically: of several rows of one line (a later
// row supersedes an earlier one, e.g. an API key rotation recorded after
// its password change), the last written is kept. A torn last record is
// dropped. A file written before the apiKeyRotated column is written with
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
		rec[11] != r.APIKeyRotated {
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
	cr.FieldsPerRecord = -1 // 12 cells, or 11 in a file from before apiKeyRotated
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
