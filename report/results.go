package report

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
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
)

// valid reports whether s is one of the known statuses.
func (s Status) valid() bool {
	switch s {
	case Updated, Failed, Invalid, Planned:
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
}

// ResultsHeader is the exact header row of results.csv.
var ResultsHeader = []string{
	"line", "userId", "status", "generation", "attempts", "httpStatus",
	"errorCode", "error", "passwordSource", "sessionsReset", "finishedAt",
}

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
	return nil
}

// record fills rec (len 11) with the cells of r.
func (r *Row) record(rec []string) {
	rec[0] = strconv.Itoa(r.Line)
	if r.UserID > 0 {
		rec[1] = strconv.Itoa(r.UserID)
	} else {
		rec[1] = SafeCell(r.RawUserID)
	}
	rec[2] = string(r.Status)
	rec[3] = intCell(r.Generation)
	rec[4] = strconv.Itoa(r.Attempts)
	rec[5] = intCell(r.HTTPStatus)
	rec[6] = SafeCell(r.ErrorCode)
	rec[7] = SafeCell(r.Error)
	rec[8] = r.PasswordSource
	rec[9] = r.SessionsReset
	rec[10] = ""
	if !r.FinishedAt.IsZero() {
		rec[10] = r.FinishedAt.UTC().Format(time.RFC3339Nano)
	}
}

func intCell(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// parseRow turns one record of results.csv into a Row.
func parseRow(rec []string) (Row, error) {
	var r Row
	var err error
	if r.Line, err = strconv.Atoi(rec[0]); err != nil || r.Line < 1 {
		return r, errors.New("bad line number")
	}
	if id, err := strconv.Atoi(rec[1]); err == nil && id >= 1 && id <= maxUserID {
		r.UserID = id
	} else {
		r.RawUserID = rec[1]
	}
	r.Status = Status(rec[2])
	if !r.Status.valid() {
		return r, errors.New("unknown status")
	}
	if r.Generation, err = optInt(rec[3]); err != nil {
		return r, fmt.Errorf("bad generation")
	}
	if r.Attempts, err = optInt(rec[4]); err != nil {
		return r, fmt.Errorf("bad attempts")
	}
	if r.HTTPStatus, err = optInt(rec[5]); err != nil {
		return r, fmt.Errorf("bad httpStatus")
	}
	r.ErrorCode, r.Error = rec[6], rec[7]
	r.PasswordSource, r.SessionsReset = rec[8], rec[9]
	if err := r.check(); err != nil {
		return r, errors.New("bad passwordSource or sessionsReset")
	}
	if rec[10] != "" {
		t, err := time.Parse(time.RFC3339Nano, rec[10])
		if err != nil {
			return r, errors.New("bad finishedAt")
		}
		r.FinishedAt = t.UTC()
	}
	return r, nil
}

func optInt(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errors.New("not a count")
	}
	return n, nil
}

// scanned is what parseResults found in a results file.
type scanned struct {
	rows []Row
	// end is the offset just past the last good record (or the header).
	end int64
	// torn is set when bytes after end must be cut off: an incomplete or
	// unparsable last record.
	torn bool
	// noHeader is set when the file is empty or holds only a torn prefix
	// of the header.
	noHeader bool
}

var headerLine = strings.Join(ResultsHeader, ",") + "\n"

// parseResults reads a whole results file of the given size from ra.
func parseResults(ra io.ReaderAt, size int64) (scanned, error) {
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
	cr.FieldsPerRecord = len(ResultsHeader)
	cr.ReuseRecord = true

	head, err := cr.Read()
	if err == nil && cr.InputOffset() == size && !endsWithNewline {
		err = errors.New("header not terminated")
	}
	if err != nil || !slices.Equal(head, ResultsHeader) {
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
	for {
		start := s.end
		rec, err := cr.Read()
		if err == io.EOF {
			return s, nil
		}
		var line int
		if err == nil {
			line, _ = cr.FieldPos(0)
			var row Row
			row, err = parseRow(rec)
			if err == nil && cr.InputOffset() == size && !endsWithNewline {
				err = errors.New("record not terminated")
			}
			if err == nil {
				s.rows = append(s.rows, row)
				s.end = cr.InputOffset()
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
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	s, err := parseResults(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return s.rows, nil
}

// ResultsFile is a results.csv open for appending. It is safe for
// concurrent use. Its write errors are sticky: once a write or fsync has
// failed, every later Append, Sync and Close returns that error, so a full
// disk stops the run instead of losing rows silently.
type ResultsFile struct {
	mu     sync.Mutex
	path   string
	f      *os.File
	bw     *bufio.Writer // the csv writer's buffer, on f
	cw     *csv.Writer
	rec    []string
	err    error
	closed bool
}

var errClosed = errors.New("results file is closed")

// OpenResults opens the results file at path for appending. An absent file
// is created (0600) with the header, fsynced. A present file must start
// with the header; every row is read and returned. A torn tail left by a
// crash (a last line without newline, or an unparsable last record) is
// repaired by truncating the file after the last good record; a bad record
// that is not the last one is an error naming its line.
func OpenResults(path string) (*ResultsFile, []Row, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := WriteFileAtomic(path, []byte(headerLine), 0o600); err != nil {
			return nil, nil, fmt.Errorf("creating results: %w", err)
		}
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening results: %w", err)
	}
	rows, err := loadForAppend(f, path)
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	return newResultsFile(path, f), rows, nil
}

// newResultsFile wraps an open file, positioned for appending.
func newResultsFile(path string, f *os.File) *ResultsFile {
	bw := bufio.NewWriterSize(f, 64<<10)
	return &ResultsFile{path: path, f: f, bw: bw, cw: csv.NewWriter(bw), rec: make([]string, len(ResultsHeader))}
}

// loadForAppend reads the rows of an open results file and repairs its
// tail.
func loadForAppend(f *os.File, path string) ([]Row, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening results: %w", err)
	}
	s, err := parseResults(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	switch {
	case s.noHeader:
		if err := f.Truncate(0); err != nil {
			return nil, fmt.Errorf("repairing %s: %w", path, err)
		}
		if _, err := f.WriteString(headerLine); err != nil {
			return nil, fmt.Errorf("repairing %s: %w", path, err)
		}
	case s.torn:
		if err := f.Truncate(s.end); err != nil {
			return nil, fmt.Errorf("repairing %s: %w", path, err)
		}
	default:
		return s.rows, nil
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("repairing %s: fsync: %w", path, err)
	}
	return s.rows, nil
}

// Append writes rows to the file's buffer; Sync makes them durable. A row
// that cannot be written (no line number, unknown status…) is an error and
// none of rows is written.
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
	return nil
}

// Sync flushes the buffer and fsyncs the file.
func (f *ResultsFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	return f.syncLocked()
}

func (f *ResultsFile) syncLocked() error {
	if f.err != nil {
		return f.err
	}
	f.cw.Flush()
	if err := f.cw.Error(); err != nil {
		f.err = fmt.Errorf("writing %s: %w", f.path, err)
		return f.err
	}
	if err := f.f.Sync(); err != nil {
		f.err = fmt.Errorf("writing %s: fsync: %w", f.path, err)
		return f.err
	}
	return nil
}

// Close syncs and closes the file. Closing twice is not an error.
func (f *ResultsFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	serr := f.syncLocked()
	if err := f.f.Close(); err != nil && serr == nil {
		return fmt.Errorf("closing %s: %w", f.path, err)
	}
	return serr
}

// RewriteSorted rewrites the results file with its rows sorted by input
// line, atomically. A torn last record is dropped. No ResultsFile may be
// open on path.
func RewriteSorted(path string) error {
	rows, err := ReadResults(path)
	if err != nil {
		return err
	}
	slices.SortStableFunc(rows, func(a, b Row) int { return a.Line - b.Line })
	return writeAtomic(path, 0o600, func(w io.Writer) error {
		cw := csv.NewWriter(w)
		rec := make([]string, len(ResultsHeader))
		if err := cw.Write(ResultsHeader); err != nil {
			return err
		}
		for i := range rows {
			rows[i].record(rec)
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		cw.Flush()
		return cw.Error()
	})
}
