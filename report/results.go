package report

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
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
	// SealedFor names the group whose files hold the row's passwords
	// (Group.String: "global", "network-12"); "" when none was sealed
	// (invalid, skipped) or in a file from before the column. ParseGroup
	// reads "" as the global group.
	SealedFor string
	// Delivered is "" (the user has no --deliver target), "true" (every
	// target holds the password of the row's generation) or "false" (not
	// delivered: owed, or failed).
	Delivered string
}

// ResultsHeader is the exact header row of results.csv: the csv tags of
// its row struct, in order.
var ResultsHeader = CSVHeader[resultsRecord]()

// legacyColumns is the number of columns of the oldest results.csv read:
// the one written before the apiKeyRotated column. A file whose header is
// ResultsHeader cut after a later column (before sealedFor, say) is read
// too, the cells it lacks empty, and is upgraded to the current header
// before anything is appended to it.
const legacyColumns = 11

// legacyHeader is the header row of the oldest such file.
var legacyHeader = ResultsHeader[:legacyColumns]

// isLegacyHeader reports whether head is the header of a results.csv
// written before the last columns: a prefix of ResultsHeader of at least
// legacyColumns cells.
func isLegacyHeader(head []string) bool {
	return len(head) >= legacyColumns && len(head) < len(ResultsHeader) && slices.Equal(head, ResultsHeader[:len(head)])
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
	switch r.APIKeyRotated {
	case "", "true", "false":
	default:
		return fmt.Errorf("line %d: apiKeyRotated must be empty, true or false", r.Line)
	}
	if _, err := ParseGroup(r.SealedFor); err != nil {
		return fmt.Errorf("line %d: sealedFor: %w", r.Line, err)
	}
	switch r.Delivered {
	case "", "true", "false":
	default:
		return fmt.Errorf("line %d: delivered must be empty, true or false", r.Line)
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
// or, for a file written before the last columns (legacyColumns or more
// cells), with the cells it lacks empty. It returns nil for any other
// number of cells.
func upgradeRecord(rec []string) []string {
	switch n := len(rec); {
	case n == len(ResultsHeader):
		return rec
	case n >= legacyColumns && n < len(ResultsHeader):
		return append(rec[:n:n], make([]string, len(ResultsHeader)-n)...)
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
		return r, errors.New("bad passwordSource, sessionsReset, apiKeyRotated, sealedFor or delivered")
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
	// before the last columns (isLegacyHeader).
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
	if err == nil && isLegacyHeader(head) {
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
		return s, errors.New("line 1: not the " + ResultsName + " header (want " + strings.TrimSpace(headerLine) + ")")
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
