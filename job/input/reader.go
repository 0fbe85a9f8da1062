// The byte level of the users CSV: what the CSV parser reads through (NUL
// bytes, record and line limits, line numbers), and the string arena.

package input

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// inputArena copies small strings into shared chunks: one allocation per
// chunk rather than one per string, and no string pins a whole CSV record.
type inputArena struct {
	b strings.Builder
}

func (a *inputArena) clone(s string) string {
	if s == "" {
		return ""
	}
	if a.b.Cap()-a.b.Len() < len(s) {
		a.b = strings.Builder{}
		a.b.Grow(max(inputArenaChunk, len(s)))
	}
	a.b.WriteString(s)
	all := a.b.String()
	return all[len(all)-len(s):]
}

// inputReadError is a fatal error found by inputReader, with its line.
type inputReadError struct {
	line int
	err  error
}

func (e *inputReadError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }

func (e *inputReadError) Unwrap() error { return e.err }

// inputReader sits between the source and the CSV parser. It refuses NUL
// bytes, and enforces the record size while reading: its byte budget is
// reset after each record, so one huge line or a quote that never closes
// fails after about limit bytes instead of being buffered whole. It also
// tracks what the parser cannot tell: where the current record starts, and
// the length of the input's last line.
type inputReader struct {
	src       io.Reader
	limit     int64 // record budget in bytes
	delivered int64 // bytes handed to the parser's buffer
	newlines  int   // '\n' among them
	eof       bool
	err       error // sticky
	sniffing  bool  // looking ahead for NUL bytes: no budget yet

	leading   bool  // only line breaks seen since the last record
	pendingCR bool  // leading, and the last byte was a '\r' that may start a record
	start     int64 // offset of the current record's first byte
	startLine int   // its line
	used      int64 // bytes of the current record delivered

	tailLen     int  // bytes after the last '\n' delivered
	lastFullLen int  // length of the last complete line, '\n' included
	lastFullCR  bool // that line ended with "\r\n"
	lastByte    byte
}

func (r *inputReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if !r.leading && r.used > r.limit && !r.sniffing {
		r.err = &inputReadError{line: r.startLine, err: errInputRecordTooLong}
		return 0, r.err
	}
	if r.eof {
		return 0, io.EOF
	}
	n, err := r.src.Read(p)
	b := p[:n]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		r.err = &inputReadError{line: r.newlines + bytes.Count(b[:i], lfByte) + 1, err: errInputNUL}
		return 0, r.err
	}
	r.account(b)
	switch {
	case err == io.EOF:
		r.eof = true
	case err != nil:
		r.err = &inputReadError{line: r.line(), err: fmt.Errorf("reading: %w", err)}
		return n, r.err
	}
	return n, err
}

var lfByte = []byte{'\n'}

// line returns the line of the next byte to be delivered.
func (r *inputReader) line() int { return r.newlines + 1 }

func (r *inputReader) account(b []byte) {
	if len(b) == 0 {
		return
	}
	switch {
	case !r.leading:
		r.used += int64(len(b))
	case r.pendingCR && b[0] != '\n':
		r.begin(r.delivered-1, r.newlines+1, int64(len(b))+1) // the '\r' starts it
	default:
		j, cr := firstNonBreak(b)
		if j >= 0 {
			r.begin(r.delivered+int64(j), r.newlines+bytes.Count(b[:j], lfByte)+1, int64(len(b)-j))
		} else {
			r.pendingCR = cr
		}
	}
	if i := bytes.LastIndexByte(b, '\n'); i < 0 {
		r.tailLen += len(b)
	} else {
		if k := bytes.LastIndexByte(b[:i], '\n'); k >= 0 {
			r.lastFullLen = i - k
		} else {
			r.lastFullLen = r.tailLen + i + 1
		}
		r.lastFullCR = (i > 0 && b[i-1] == '\r') || (i == 0 && r.tailLen > 0 && r.lastByte == '\r')
		r.tailLen = len(b) - i - 1
	}
	r.newlines += bytes.Count(b, lfByte)
	r.delivered += int64(len(b))
	r.lastByte = b[len(b)-1]
}

// nextRecord resets the budget after a record that ended on line endLine;
// buffered holds the bytes delivered but not yet parsed.
func (r *inputReader) nextRecord(buffered []byte, endLine int) {
	j, cr := firstNonBreak(buffered)
	if j < 0 {
		r.leading, r.pendingCR, r.used = true, cr, 0
		return
	}
	r.begin(r.delivered-int64(len(buffered)-j), endLine+1+bytes.Count(buffered[:j], lfByte), int64(len(buffered)-j))
}

// begin notes that a record starts at offset start, on line startLine, with
// used of its bytes delivered.
func (r *inputReader) begin(start int64, startLine int, used int64) {
	r.leading, r.pendingCR = false, false
	r.start, r.startLine, r.used = start, startLine, used
}

// finalLineLen returns the length of the input's last line as the CSV parser
// counts it: "\r\n" as one byte, a trailing "\r" at the end dropped.
func (r *inputReader) finalLineLen() int {
	if r.tailLen > 1 || (r.tailLen == 1 && r.lastByte != '\r') {
		if r.lastByte == '\r' {
			return r.tailLen - 1
		}
		return r.tailLen
	}
	if r.lastFullCR {
		return r.lastFullLen - 1
	}
	return r.lastFullLen
}

// firstNonBreak returns the index of the first byte of b that is not part of
// a line break ("\n" or "\r\n"), or -1; then cr reports that b ends with a
// '\r' whose meaning depends on the next byte.
func firstNonBreak(b []byte) (i int, cr bool) {
	for i = 0; i < len(b); i++ {
		switch {
		case b[i] == '\n':
		case b[i] == '\r' && i+1 == len(b):
			return -1, true
		case b[i] == '\r' && b[i+1] == '\n':
		default:
			return i, false
		}
	}
	return -1, false
}
