package report

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

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
		// Written before the apiKeyRotated or delivered column: rewrite it with the
		// current header (same rows, same order) before appending.
		if err := f.Close(); err != nil {
			return nil, nil, fmt.Errorf("opening results: %w", err)
		}
		if err := fl.writeAtomic(path, 0o600, func(w io.Writer) error { return encodeRows(w, rows) }); err != nil {
			return nil, nil, fmt.Errorf("upgrading %s to the current columns: %w", path, err)
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
// tail. legacy reports a file written before the apiKeyRotated or the
// delivered column.
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
