package report

import (
	"encoding/csv"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/gocarina/gocsv"

	"pwrotate/rotate/secret"
)

// The CSV rows pwrotate writes and reads, one struct per row shape. A
// column's name is its csv tag, and nowhere else: the header rows are
// derived from the structs by gocsv. A column's encoding is its cell type's
// MarshalCSV and UnmarshalCSV (gocsv's TypeMarshaller and
// TypeUnmarshaller). Adding a column is adding one field, plus its line in
// the direct paths below and in the Row conversion
// (TestEveryResultsColumnCoded fails until cells and decode have it).
//
// gocsv marshals and unmarshals these structs by reflection, which costs
// two to three times what the rows cost by hand, and allocates per cell
// (BenchmarkRowCodec). The three loops whose
// speed is benchmarked (appending to results.csv, sealing, and the scan of
// RewriteSorted) therefore call the same cell methods directly, in field
// order (resultsRecord.cells, resultsRecord.decode, writeSealedRows); every other
// path (the resume's read-back, the re-encoding of hand-edited rows, open's
// reading and printing) goes through gocsv. TestRowCodecsAgree and
// FuzzResultsRecord pin the direct paths to gocsv's bytes and values.

// resultsRecord is one row of results.csv, as written.
type resultsRecord struct {
	Line           count    `csv:"line"`
	UserID         userCell `csv:"userId"`
	Status         Status   `csv:"status"`
	Generation     OptCount `csv:"generation"`
	Attempts       count    `csv:"attempts"`
	HTTPStatus     OptCount `csv:"httpStatus"`
	ErrorCode      SafeText `csv:"errorCode"`
	Error          SafeText `csv:"error"`
	PasswordSource string   `csv:"passwordSource"`
	SessionsReset  string   `csv:"sessionsReset"`
	FinishedAt     stamp    `csv:"finishedAt"`
	APIKeyRotated  string   `csv:"apiKeyRotated"`
	SealedFor      string   `csv:"sealedFor"`
	Delivered      string   `csv:"delivered"`
}

// sealedRecord is one row of a sealed file's plaintext.
type sealedRecord struct {
	UserID     count        `csv:"userId"`
	Password   passwordCell `csv:"password"`
	Generation count        `csv:"generation"`
}

// openRecord is one row of what `pwrotate open` prints.
type openRecord struct {
	UserID     count        `csv:"userId"`
	Password   passwordCell `csv:"password"`
	Status     string       `csv:"status"`
	Generation count        `csv:"generation"`
}

// csvRecord returns the results row r as it is written.
func (r *Row) csvRecord() resultsRecord {
	return resultsRecord{
		Line:           count(r.Line),
		UserID:         userCell{id: r.UserID, raw: r.RawUserID},
		Status:         r.Status,
		Generation:     OptCount(r.Generation),
		Attempts:       count(r.Attempts),
		HTTPStatus:     OptCount(r.HTTPStatus),
		ErrorCode:      SafeText(r.ErrorCode),
		Error:          SafeText(r.Error),
		PasswordSource: r.PasswordSource,
		SessionsReset:  r.SessionsReset,
		FinishedAt:     stamp{r.FinishedAt},
		APIKeyRotated:  r.APIKeyRotated,
		SealedFor:      r.SealedFor,
		Delivered:      r.Delivered,
	}
}

// row returns the Row a results record was read into (not validated).
func (rec *resultsRecord) row() Row {
	return Row{
		Line:           int(rec.Line),
		UserID:         rec.UserID.id,
		RawUserID:      rec.UserID.raw,
		Status:         rec.Status,
		Generation:     int(rec.Generation),
		Attempts:       int(rec.Attempts),
		HTTPStatus:     int(rec.HTTPStatus),
		ErrorCode:      string(rec.ErrorCode),
		Error:          string(rec.Error),
		PasswordSource: rec.PasswordSource,
		SessionsReset:  rec.SessionsReset,
		FinishedAt:     rec.FinishedAt.t,
		APIKeyRotated:  rec.APIKeyRotated,
		SealedFor:      rec.SealedFor,
		Delivered:      rec.Delivered,
	}
}

// cells fills dst (one string per column) as gocsv marshals rec, without
// reflection: Append's path.
func (rec *resultsRecord) cells(dst []string) {
	dst[0], _ = rec.Line.MarshalCSV()
	dst[1], _ = rec.UserID.MarshalCSV()
	dst[2] = string(rec.Status)
	dst[3], _ = rec.Generation.MarshalCSV()
	dst[4], _ = rec.Attempts.MarshalCSV()
	dst[5], _ = rec.HTTPStatus.MarshalCSV()
	dst[6], _ = rec.ErrorCode.MarshalCSV()
	dst[7], _ = rec.Error.MarshalCSV()
	dst[8] = rec.PasswordSource
	dst[9] = rec.SessionsReset
	dst[10], _ = rec.FinishedAt.MarshalCSV()
	dst[11] = rec.APIKeyRotated
	dst[12] = rec.SealedFor
	dst[13] = rec.Delivered
}

// decode reads the cells of one record (one string per column) into rec as
// gocsv unmarshals them, without reflection: RewriteSorted's scan. Its
// error is a *cellError, like rowDecoder's.
func (rec *resultsRecord) decode(src []string) error {
	*rec = resultsRecord{
		Status:         Status(src[2]),
		PasswordSource: src[8],
		SessionsReset:  src[9],
		APIKeyRotated:  src[11],
		SealedFor:      src[12],
		Delivered:      src[13],
	}
	for _, err := range [...]error{
		atColumn(0, rec.Line.UnmarshalCSV(src[0])),
		atColumn(1, rec.UserID.UnmarshalCSV(src[1])),
		atColumn(3, rec.Generation.UnmarshalCSV(src[3])),
		atColumn(4, rec.Attempts.UnmarshalCSV(src[4])),
		atColumn(5, rec.HTTPStatus.UnmarshalCSV(src[5])),
		atColumn(6, rec.ErrorCode.UnmarshalCSV(src[6])),
		atColumn(7, rec.Error.UnmarshalCSV(src[7])),
		atColumn(10, rec.FinishedAt.UnmarshalCSV(src[10])),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// Cell types. Their errors never hold the cell's text: a sealed row's cell
// may be a password.

// cellFault is what a cell type's UnmarshalCSV says is wrong.
type cellFault string

func (f cellFault) Error() string { return string(f) }

const (
	errNotCount      cellFault = "not a count"
	errNotTime       cellFault = "not an RFC 3339 time"
	errEmptyPassword cellFault = "empty password"
)

// count is a non-negative integer cell, always written.
type count int

// MarshalCSV writes c in decimal.
func (c count) MarshalCSV() (string, error) { return strconv.Itoa(int(c)), nil }

// UnmarshalCSV reads a decimal count; an empty cell is 0.
func (c *count) UnmarshalCSV(s string) error {
	n, err := parseCount(s)
	*c = count(n)
	return err
}

// OptCount is a count (or an ID) written as an empty cell when 0.
type OptCount int

// MarshalCSV writes c in decimal, or nothing for 0.
func (c OptCount) MarshalCSV() (string, error) {
	if c == 0 {
		return "", nil
	}
	return strconv.Itoa(int(c)), nil
}

// UnmarshalCSV reads a decimal count; an empty cell is 0.
func (c *OptCount) UnmarshalCSV(s string) error {
	n, err := parseCount(s)
	*c = OptCount(n)
	return err
}

func parseCount(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, errNotCount
	}
	return n, nil
}

// userCell is results.csv's userId: the user ID, or when the input's ID
// could not be parsed (id 0), the input's text, spreadsheet-safe.
type userCell struct {
	id  int
	raw string
}

// MarshalCSV writes the ID, or the raw text through SafeCell.
func (u userCell) MarshalCSV() (string, error) {
	if u.id > 0 {
		return strconv.Itoa(u.id), nil
	}
	return SafeCell(u.raw), nil
}

// UnmarshalCSV reads a user ID in 1..2147483647, or keeps any other text
// as the raw ID.
func (u *userCell) UnmarshalCSV(s string) error {
	if id, err := strconv.Atoi(s); err == nil && id >= 1 && id <= maxUserID {
		*u = userCell{id: id}
	} else {
		*u = userCell{raw: s}
	}
	return nil
}

// SafeText is a cell of free text that a person may open in a
// spreadsheet: written through SafeCell, read as it is.
type SafeText string

// MarshalCSV writes SafeCell(t).
func (t SafeText) MarshalCSV() (string, error) { return SafeCell(string(t)), nil }

// UnmarshalCSV keeps the cell as it is.
func (t *SafeText) UnmarshalCSV(s string) error { *t = SafeText(s); return nil }

// stamp is a time written as RFC 3339 with nanoseconds in UTC, or an empty
// cell for the zero time.
type stamp struct{ t time.Time }

// MarshalCSV writes the time in UTC, or nothing for the zero time.
func (s stamp) MarshalCSV() (string, error) {
	if s.t.IsZero() {
		return "", nil
	}
	return s.t.UTC().Format(time.RFC3339Nano), nil
}

// UnmarshalCSV reads an RFC 3339 time into UTC; an empty cell is the zero
// time.
func (s *stamp) UnmarshalCSV(v string) error {
	*s = stamp{}
	if v == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return errNotTime
	}
	s.t = t.UTC()
	return nil
}

// passwordCell is a password in a CSV row: MarshalCSV reveals it, as a
// sealed file and open's output must hold it. Everything else (fmt, slog,
// JSON, encoding.TextMarshaler) still prints the embedded Password's
// redaction, and UnmarshalCSV's error never holds the cell.
type passwordCell struct{ secret.Password }

// MarshalCSV returns the password's characters.
func (p passwordCell) MarshalCSV() (string, error) { return p.Reveal(), nil }

// UnmarshalCSV keeps the cell as the password; an empty cell is an error.
func (p *passwordCell) UnmarshalCSV(s string) error {
	if s == "" {
		return errEmptyPassword
	}
	p.Password = secret.Password(s)
	return nil
}

// cellError is a cell that does not decode: its column and what is wrong,
// never the cell's text.
type cellError struct {
	column int // 0-based
	err    error
}

func (e *cellError) Error() string { return e.err.Error() }

// atColumn returns err (if any) as a *cellError of the given column.
func atColumn(column int, err error) error {
	if err == nil {
		return nil
	}
	return &cellError{column: column, err: err}
}
func (e *cellError) Unwrap() error { return e.err }

// badCell returns "bad NAME: why" for a decoding error of a row with the
// given header, keeping no text of gocsv's or the cell's.
func badCell(err error, header []string) error {
	var ce *cellError
	if errors.As(err, &ce) && ce.column >= 0 && ce.column < len(header) {
		return fmt.Errorf("bad %s: %w", header[ce.column], ce.err)
	}
	return errors.New("record does not decode")
}

// CSVHeader returns the header row gocsv writes for rows of type T: the csv
// tags of its fields, in order.
func CSVHeader[T any]() []string {
	var w headerWriter
	if err := gocsv.MarshalCSV(&[]T{}, &w); err != nil || w.header == nil {
		panic(fmt.Sprintf("report: no CSV header for %T: %v", *new(T), err))
	}
	return w.header
}

// headerWriter is a gocsv.CSVWriter that keeps the first row written.
type headerWriter struct{ header []string }

func (w *headerWriter) Write(row []string) error {
	if w.header == nil {
		w.header = slices.Clone(row)
	}
	return nil
}
func (w *headerWriter) Flush()       {}
func (w *headerWriter) Error() error { return nil }

// rowDecoder unmarshals one CSV record at a time into a T with gocsv, the
// cells in field order: the caller reads the records with its own
// csv.Reader (and so keeps its line numbers, offsets and limits) and hands
// them over one by one. It is a gocsv.CSVReader whose whole content is the
// record being decoded.
type rowDecoder[T any] struct {
	rec [][]string // the record being decoded
	out []T        // len 1: the decoded row
}

func newRowDecoder[T any]() *rowDecoder[T] {
	return &rowDecoder[T]{rec: make([][]string, 1), out: make([]T, 1)}
}

// decode unmarshals rec. The row is valid until the next call. Its error
// is a *cellError naming the column; gocsv's own text is dropped (it may
// quote the cell).
func (d *rowDecoder[T]) decode(rec []string) (*T, error) {
	d.rec[0] = rec
	err := gocsv.UnmarshalCSVWithoutHeaders(d, &d.out)
	d.rec[0] = nil
	if err != nil {
		// Only a cell type's own fault is kept: gocsv's conversions quote
		// the cell in their errors.
		var pe *csv.ParseError
		if !errors.As(err, &pe) || pe.Column < 1 {
			return nil, errors.New("record does not decode")
		}
		var fault cellFault
		if !errors.As(pe.Err, &fault) {
			fault = "does not decode"
		}
		return nil, &cellError{column: pe.Column - 1, err: fault}
	}
	return &d.out[0], nil
}

// reset drops the last decoded row.
func (d *rowDecoder[T]) reset() { clear(d.out) }

// Read is gocsv.CSVReader's: not used by UnmarshalCSVWithoutHeaders.
func (d *rowDecoder[T]) Read() ([]string, error) {
	return nil, errors.New("rowDecoder: Read is not supported")
}

// ReadAll returns the record being decoded.
func (d *rowDecoder[T]) ReadAll() ([][]string, error) { return d.rec, nil }
