// Package input reads and validates what a run is given: the users CSV
// (Read, ReadFile: every record checked, invalid ones kept with their
// reason and line, limits enforced before memory is spent) and the
// --protect files (LoadProtect).
package input

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"pwrotate/rotate"
	"pwrotate/rotate/secret"
)

// Input limits (the input format of docs/reference.md). Each one breached is a fatal *Error
// naming the line.
const (
	// maxInputFieldBytes is the largest field, in bytes.
	maxInputFieldBytes = 1 << 10
	// maxInputRecordBytes is the largest record, in raw input bytes including
	// its line break.
	maxInputRecordBytes = 64 << 10
	// maxInputRecords is the largest number of records an input may hold.
	maxInputRecords = 10_000_000
	// maxInputUserID is the largest valid userId.
	maxInputUserID = 1<<31 - 1
)

// Record is one data record of the input.
type Record struct {
	Line      int             // input line where the record starts (1 = header line, if no blank line precedes it)
	UserID    int             // the parsed userId; 0 if unparsable
	RawUserID string          // display-safe userId cell: trimmed, non-printables replaced, truncated; "[not shown]" when it may hold a password
	Password  secret.Password // the given password of a valid record; empty if none given ("generate one") or the record is invalid
	Invalid   string          // "" if valid; else one short reason, never containing a password
}

// Input is a whole users CSV, read and validated.
type Input struct {
	Name         string   // path, or "stdin"
	Records      []Record // data records in input order (blank lines and all-empty rows skipped)
	SHA256       string   // hex sha256 of the exact bytes read
	Columns      []string // header cells as seen (display-safe: non-printables replaced, truncated)
	HasPasswords bool     // a newPassword or password column exists
	HasLogin     bool     // a login column exists
	HasAuthLevel bool     // an authLevel column exists
	// GroupColumn is the column the groups were read from
	// (Options.GroupColumn), "" when not asked for or absent.
	GroupColumn string

	// Kept beside Records, only when the column exists, so that an input
	// without them costs nothing more per record (a plan can be millions
	// long): parallel to Records.
	logins   string   // the login cells, one after the other
	loginEnd []uint32 // loginEnd[i] is where record i's login ends in logins
	levels   []uint8
	groups   []int32 // the group column's IDs (0: empty or not an ID), only when asked for
}

// Options says what Read keeps of the input beside its records: each costs
// memory per record, so only what the run needs.
type Options struct {
	// KeepLogins keeps the login cells (Input.Login): only login globs
	// need them.
	KeepLogins bool
	// GroupColumn ("networkId" or "mailboxId", matched as every column
	// is) keeps that column's ID of each record (Input.Group): only
	// --recipients-map needs it.
	GroupColumn string
}

// Group returns the ID in the group column (Options.GroupColumn) of
// record i: 0 when the record is invalid, the cell is empty or not an ID
// in 1..2147483647, or the input has no such column.
func (in *Input) Group(i int) int {
	if i < len(in.groups) && in.Records[i].Invalid == "" {
		return int(in.groups[i])
	}
	return 0
}

// Login returns the login cell (spaces trimmed) of record i, or "" when the
// record is invalid, the input has no login column, or logins were not
// kept (the run has no login glob to match).
func (in *Input) Login(i int) string {
	if i >= len(in.loginEnd) || in.Records[i].Invalid != "" {
		return ""
	}
	start := uint32(0)
	if i > 0 {
		start = in.loginEnd[i-1]
	}
	return in.logins[start:in.loginEnd[i]]
}

// Level returns the parsed authLevel cell of record i: LevelUnknown when
// the name is not known, the record is invalid or the input has no
// authLevel column.
func (in *Input) Level(i int) rotate.AuthLevel {
	if i < len(in.levels) && in.Records[i].Invalid == "" {
		return rotate.AuthLevel(in.levels[i])
	}
	return rotate.LevelUnknown
}

// Error is a fatal problem with the input: nothing may be changed.
type Error struct {
	Name string // path, or "stdin"
	Line int    // the input line concerned; 0 if none
	Err  error
}

// Error returns e.g. "reading input users.csv: line 12: field over 1 KiB".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("reading input")
	if e.Name != "" {
		b.WriteString(" ")
		b.WriteString(safeText(e.Name, 256))
	}
	if e.Line > 0 {
		b.WriteString(": line ")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("unknown error")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

var (
	errInputNoHeader = errors.New("input has no header")
	// ErrNoRecords: the input holds a header and no record.
	ErrNoRecords           = errors.New("input has no records")
	errInputFieldTooLong   = errors.New("field over 1 KiB")
	errInputRecordTooLong  = errors.New("record over 64 KiB (a line this long, or a quote that never closes)")
	errInputTooManyRecords = errors.New("more than 10000000 records")
	errInputNUL            = errors.New("NUL byte: this looks like a binary file, not CSV")
	errInputUnclosedQuote  = errors.New("a quote opened in the record starting here never closes (it would swallow the rest of the input)")
	errInputHeaderUTF8     = errors.New("header is not valid UTF-8 (save the file as UTF-8)")
	// ErrNoUserIDColumn: the header has no userId column.
	ErrNoUserIDColumn   = errors.New("no userId column")
	errInputIsDirectory = errors.New("is a directory, not a CSV file")
)

// inputHiddenCell replaces, in RawUserID and in messages, a cell that may hold a
// password.
const inputHiddenCell = "[not shown]"

const (
	inputMaxIDRunes     = 32 // of a userId cell quoted in a reason
	inputMaxColumnRunes = 32 // of a header cell in Columns and messages
	inputMaxColumnsSeen = 10 // header cells listed by "no userId column"
	inputBufSize        = 64 << 10
	inputSniffBytes     = 8 << 10 // looked at before parsing
)

var inputBOM = []byte("\ufeff")

type inputLimits struct {
	field, record, records int
}

var defaultInputLimits = inputLimits{field: maxInputFieldBytes, record: maxInputRecordBytes, records: maxInputRecords}

// ReadFile reads and validates the users CSV at path; "-" is standard
// input (named "stdin"). Errors are *Error naming the path.
func ReadFile(path string) (*Input, error) {
	return ReadFileWith(path, os.Stdin, true)
}

// ReadFileWith is ReadFile reading "-" from stdin; logins are kept
// only if keepLogins.
func ReadFileWith(path string, stdin io.Reader, keepLogins bool) (*Input, error) {
	return ReadFileOptions(path, stdin, Options{KeepLogins: keepLogins})
}

// ReadFileOptions is ReadFile reading "-" from stdin, keeping what opts
// asks for.
func ReadFileOptions(path string, stdin io.Reader, opts Options) (*Input, error) {
	if path == "-" {
		return readWith(stdin, "stdin", defaultInputLimits, opts)
	}
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in the message
		}
		return nil, &Error{Name: path, Err: fmt.Errorf("opening: %w", err)}
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose on close
	fi, err := f.Stat()
	if err != nil {
		return nil, &Error{Name: path, Err: fmt.Errorf("stat: %w", err)}
	}
	if fi.IsDir() {
		return nil, &Error{Name: path, Err: errInputIsDirectory}
	}
	return readWith(f, path, defaultInputLimits, opts)
}

// Read reads and validates a whole users CSV from r (the input format of docs/reference.md).
// name is used in messages. Records that are wrong on their own are returned
// with Invalid set; problems that make the whole input untrustworthy (limits,
// binary data, an unclosed quote, no header, no records, a read error) are a
// *Error.
//
// userId cells are decimal digits after trimming spaces and tabs; leading
// zeros are accepted ("0042" is 42, and a duplicate of "42").
func Read(r io.Reader, name string) (*Input, error) {
	return readInput(r, name, defaultInputLimits)
}

func readInput(r io.Reader, name string, lim inputLimits) (*Input, error) {
	return readWith(r, name, lim, Options{KeepLogins: true})
}

// ReadWith is Read keeping the login cells (Input.Login) only if
// keepLogins: they cost memory per record, and only login globs need them.
func ReadWith(r io.Reader, name string, keepLogins bool) (*Input, error) {
	return readWith(r, name, defaultInputLimits, Options{KeepLogins: keepLogins})
}

// ReadOptions is Read keeping what opts asks for.
func ReadOptions(r io.Reader, name string, opts Options) (*Input, error) {
	return readWith(r, name, defaultInputLimits, opts)
}

// readWith reads an input within lim, keeping what opts asks for.
func readWith(r io.Reader, name string, lim inputLimits, opts Options) (*Input, error) {
	h := sha256.New()
	src := &inputReader{src: io.TeeReader(r, h), limit: int64(lim.record), leading: true}
	br := bufio.NewReaderSize(src, inputBufSize)
	// Look ahead first, so that a binary file is called one (NUL byte)
	// however its source splits its reads.
	src.sniffing = true
	b, err := br.Peek(inputSniffBytes)
	src.sniffing = false
	var re *inputReadError
	if errors.As(err, &re) {
		return nil, &Error{Name: name, Line: re.line, Err: re.err}
	}
	if bytes.HasPrefix(b, inputBOM) {
		_, _ = br.Discard(len(inputBOM))
	}
	cr := csv.NewReader(br) // uses br itself: it is a large enough *bufio.Reader
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	p := &inputParser{
		name: name, lim: lim, src: src, br: br, cr: cr, keepLogins: opts.KeepLogins,
		in:   &Input{Name: name},
		seed: maphash.MakeSeed(),
	}
	p.groupName = normalizeInputColumn(opts.GroupColumn)
	if err := p.readHeader(); err != nil {
		return nil, err
	}
	for {
		rec, line, pe, err := p.next()
		if err != nil {
			return nil, err
		}
		if rec == nil && pe == nil {
			break
		}
		if err := p.addRecord(rec, line, pe); err != nil {
			return nil, err
		}
	}
	if p.count == 0 {
		return nil, p.fatal(0, ErrNoRecords)
	}
	p.in.Records = make([]Record, 0, p.count)
	for _, c := range append(p.chunks, p.cur) {
		p.in.Records = append(p.in.Records, c...)
	}
	p.chunks, p.cur = nil, nil
	p.in.logins = p.loginBuf.String()
	p.markDuplicates()
	p.hideEchoedPasswords()
	p.in.SHA256 = hex.EncodeToString(h.Sum(nil))
	return p.in, nil
}

type inputParser struct {
	name string
	lim  inputLimits
	src  *inputReader
	br   *bufio.Reader
	cr   *csv.Reader
	in   *Input

	idCol, pwCol       int
	loginCol, levelCol int // -1 when absent
	keepLogins         bool
	groupName          string          // the group column, normalized; "" for none
	groupCol           int             // -1 when absent or not asked for
	loginBuf           strings.Builder // Input.logins while reading (String does not copy)

	// Records are collected in chunks and copied once at the end: cheaper
	// than growing one slice.
	chunks [][]Record
	cur    []Record
	count  int

	arena    inputArena
	ids      []uint64 // userId<<32 | index of each record with a parsable userId, valid or not
	seed     maphash.Seed
	pwHashes []uint64    // of the given passwords not kept (invalid records)
	echoes   []inputEcho // invalid records that show their userId cell
}

// inputEcho is an invalid record whose RawUserID (and maybe Invalid reason)
// shows its userId cell.
type inputEcho struct {
	index int
	hash  uint64 // of the trimmed cell
}

func (p *inputParser) fatal(line int, err error) *Error {
	return &Error{Name: p.name, Line: line, Err: err}
}

// next reads one CSV record and applies the limits. It returns the record
// (nil at the end of input), its start line and its parse error if the record
// is malformed but the input can go on.
func (p *inputParser) next() ([]string, int, *csv.ParseError, error) {
	rec, err := p.cr.Read()
	if err == io.EOF {
		return nil, 0, nil, nil
	}
	var pe *csv.ParseError
	if err != nil {
		var re *inputReadError
		if errors.As(err, &re) {
			return nil, 0, nil, p.fatal(re.line, re.err)
		}
		var perr *csv.ParseError
		if !errors.As(err, &perr) {
			return nil, 0, nil, p.fatal(p.src.line(), fmt.Errorf("reading: %w", err))
		}
		pe = perr
		if pe.Err == csv.ErrQuote && p.src.eof && p.br.Buffered() == 0 && pe.Column == p.src.finalLineLen()+1 {
			// The CSV parser reached the end of input inside a quoted field
			// (an extraneous quote would point before the line's end).
			return nil, 0, nil, p.fatal(pe.StartLine, errInputUnclosedQuote)
		}
	}
	var line, endLine int
	if pe != nil {
		line, endLine = pe.StartLine, pe.Line
	} else {
		line, _ = p.cr.FieldPos(0)
		last, _ := p.cr.FieldPos(len(rec) - 1)
		endLine = last + strings.Count(rec[len(rec)-1], "\n")
	}
	end := p.src.delivered - int64(p.br.Buffered())
	if !p.src.leading && end-p.src.start > int64(p.lim.record) {
		return nil, 0, nil, p.fatal(line, errInputRecordTooLong)
	}
	for i, f := range rec {
		if len(f) > p.lim.field {
			l, _ := p.cr.FieldPos(i)
			return nil, 0, nil, p.fatal(l, errInputFieldTooLong)
		}
	}
	buffered, _ := p.br.Peek(p.br.Buffered())
	p.src.nextRecord(buffered, endLine)
	return rec, line, pe, nil
}

func (p *inputParser) readHeader() error {
	var rec []string
	var line int
	for {
		var pe *csv.ParseError
		var err error
		rec, line, pe, err = p.next()
		switch {
		case err != nil:
			return err
		case pe != nil:
			return p.fatal(pe.StartLine, fmt.Errorf("header cannot be parsed: %w", pe.Err))
		case rec == nil:
			return p.fatal(0, errInputNoHeader)
		}
		if !blankRecord(rec) {
			break
		}
	}
	p.in.Columns = make([]string, len(rec))
	p.idCol, p.pwCol, p.loginCol, p.levelCol, p.groupCol = -1, -1, -1, -1, -1
	newPw, oldPw := -1, -1
	for i, f := range rec {
		if !utf8.ValidString(f) {
			return p.fatal(line, errInputHeaderUTF8)
		}
		p.in.Columns[i] = safeText(f, inputMaxColumnRunes)
		var col *int
		switch normalizeInputColumn(f) {
		case "userid":
			col = &p.idCol
		case "newpassword":
			col = &newPw
		case "password":
			col = &oldPw
		case "login":
			col = &p.loginCol
		case "authlevel":
			col = &p.levelCol
		case "":
			continue
		case p.groupName:
			col = &p.groupCol
		default:
			continue
		}
		if *col >= 0 {
			return p.fatal(line, fmt.Errorf("columns %d and %d are both %q: which one is meant?", *col+1, i+1, p.in.Columns[i]))
		}
		*col = i
	}
	if p.idCol < 0 {
		return p.fatal(line, fmt.Errorf("%w (%s)", ErrNoUserIDColumn, describeInputColumns(rec)))
	}
	p.pwCol = newPw
	if p.pwCol < 0 {
		p.pwCol = oldPw
	}
	p.in.HasPasswords = p.pwCol >= 0
	p.in.HasLogin = p.loginCol >= 0
	p.in.HasAuthLevel = p.levelCol >= 0
	if p.groupCol >= 0 {
		p.in.GroupColumn = p.in.Columns[p.groupCol]
	}
	return nil
}

// addRecord validates one data record and appends it.
func (p *inputParser) addRecord(rec []string, line int, pe *csv.ParseError) error {
	if pe == nil && blankRecord(rec) {
		return nil
	}
	if p.count >= p.lim.records {
		return p.fatal(line, errInputTooManyRecords)
	}
	r := Record{Line: line}
	var rawID, pw string
	haveID := p.idCol < len(rec)
	if haveID {
		rawID = strings.Trim(rec[p.idCol], " \t")
		if id, ok := parseInputUserID(rawID); ok {
			r.UserID = id
		}
	}
	if p.pwCol >= 0 && p.pwCol < len(rec) {
		pw = rec[p.pwCol]
	}
	badUTF8 := -1
	for i, f := range rec {
		if !utf8.ValidString(f) {
			badUTF8 = i
			break
		}
	}
	switch {
	case pe != nil:
		r.Invalid = fmt.Sprintf("cannot be parsed: %v (line %d, column %d)", pe.Err, pe.Line, pe.Column)
	case badUTF8 >= 0:
		r.Invalid = fmt.Sprintf("field %d is not valid UTF-8", badUTF8+1)
	case !haveID:
		r.Invalid = fmt.Sprintf("too few fields (%d): the userId column is field %d", len(rec), p.idCol+1)
	case r.UserID == 0:
		r.Invalid = badUserIDReason(rawID, pw)
	case pw != "":
		r.Invalid = passwordReason(pw)
	}
	switch {
	case r.UserID != 0:
		r.RawUserID = p.arena.clone(rawID)
	case mayHoldPassword(rawID, pw):
		r.RawUserID = inputHiddenCell
	default:
		r.RawUserID = safeText(rawID, inputMaxIDRunes)
	}
	if r.UserID == 0 && rawID != "" && r.RawUserID != inputHiddenCell {
		p.echoes = append(p.echoes, inputEcho{index: p.count, hash: p.hash(rawID)})
	}
	if p.loginCol >= 0 && p.keepLogins {
		if r.Invalid == "" && p.loginCol < len(rec) {
			if p.loginBuf.Len()+len(rec[p.loginCol]) > math.MaxUint32 {
				return p.fatal(line, errors.New("the login cells exceed 4 GiB"))
			}
			p.loginBuf.WriteString(strings.TrimSpace(rec[p.loginCol]))
		}
		p.in.loginEnd = append(p.in.loginEnd, uint32(p.loginBuf.Len()))
	}
	if p.levelCol >= 0 {
		level := rotate.LevelUnknown
		if r.Invalid == "" && p.levelCol < len(rec) {
			level = rotate.ParseAuthLevel(rec[p.levelCol])
		}
		p.in.levels = append(p.in.levels, uint8(level))
	}
	if p.groupCol >= 0 {
		group := 0
		if r.Invalid == "" && p.groupCol < len(rec) {
			group, _ = parseInputUserID(strings.Trim(rec[p.groupCol], " \t"))
		}
		p.in.groups = append(p.in.groups, int32(group))
	}
	if r.UserID != 0 {
		p.ids = append(p.ids, uint64(r.UserID)<<32|uint64(p.count))
	}
	if r.Invalid == "" {
		r.Password = secret.Password(p.arena.clone(pw))
	} else if pw != "" {
		p.pwHashes = append(p.pwHashes, p.hash(pw))
	}
	if len(p.cur) == cap(p.cur) {
		if p.cur != nil {
			p.chunks = append(p.chunks, p.cur)
		}
		p.cur = make([]Record, 0, inputChunkRecords)
	}
	p.cur = append(p.cur, r)
	p.count++
	return nil
}

const inputChunkRecords = 4096

// markDuplicates makes invalid every record whose userId repeats that of an
// earlier record ("duplicate of line N", N the first record with that ID),
// whether or not the earlier record is valid: an ID is planned at most once,
// and fixing line N's password never turns a later line into a second
// change. A record already invalid for its own reason keeps that reason.
func (p *inputParser) markDuplicates() {
	slices.Sort(p.ids) // by userId, then input order
	first := -1
	for i, key := range p.ids {
		idx := int(key & (1<<32 - 1))
		if i == 0 || key>>32 != p.ids[i-1]>>32 {
			first = idx
			continue
		}
		r := &p.in.Records[idx]
		if r.Invalid != "" {
			continue
		}
		r.Invalid = "duplicate of line " + strconv.Itoa(p.in.Records[first].Line)
		if !r.Password.Empty() {
			p.pwHashes = append(p.pwHashes, p.hash(r.Password.Reveal()))
			r.Password = ""
		}
	}
	p.ids = nil
}

// hash hashes a cell, trimmed, to compare userId and password cells.
func (p *inputParser) hash(cell string) uint64 {
	return maphash.String(p.seed, strings.Trim(cell, " \t"))
}

// hideEchoedPasswords hides the userId cell quoted by a reason when it equals
// the password given on another record (columns shifted between rows).
func (p *inputParser) hideEchoedPasswords() {
	if len(p.echoes) == 0 {
		return
	}
	given := make(map[uint64]struct{}, len(p.pwHashes))
	for _, h := range p.pwHashes {
		given[h] = struct{}{}
	}
	for i := range p.in.Records {
		if pw := p.in.Records[i].Password; !pw.Empty() {
			given[p.hash(pw.Reveal())] = struct{}{}
		}
	}
	for _, e := range p.echoes {
		if _, ok := given[e.hash]; ok {
			r := &p.in.Records[e.index]
			r.RawUserID = inputHiddenCell
			if strings.HasPrefix(r.Invalid, `userId "`) {
				r.Invalid = inputHiddenIDReason
			}
		}
	}
	p.pwHashes, p.echoes = nil, nil
}

const inputHiddenIDReason = "userId is not an integer in 1..2147483647 (the cell is not shown: it may hold a password)"

// badUserIDReason returns the reason for an unparsable userId cell.
func badUserIDReason(rawID, pw string) string {
	switch {
	case rawID == "":
		return "userId is empty"
	case mayHoldPassword(rawID, pw):
		return inputHiddenIDReason
	}
	return "userId " + strconv.Quote(safeText(rawID, inputMaxIDRunes)) + " is not an integer in 1..2147483647"
}

// mayHoldPassword reports whether a userId or header cell must not be
// shown: it meets the password rule (so it may be a password), it contains
// the record's own given password, or that password cell holds a userId
// (columns swapped).
func mayHoldPassword(cell, pw string) bool {
	if cell == "" {
		return false
	}
	if len(rotate.MissingClasses(cell)) == 0 || (pw != "" && strings.Contains(cell, pw)) {
		return true
	}
	_, swapped := parseInputUserID(strings.Trim(pw, " \t"))
	return swapped
}

// passwordReason returns why a given password cannot be used, or "".
func passwordReason(pw string) string {
	if missing := rotate.MissingClasses(pw); len(missing) > 0 {
		return "password breaks the rule: missing " + strings.Join(missing, ", ")
	}
	if strings.ContainsFunc(pw, unicode.IsControl) {
		return "password contains a control character"
	}
	first, _ := utf8.DecodeRuneInString(pw)
	last, _ := utf8.DecodeLastRuneInString(pw)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return "password begins or ends with a space"
	}
	return ""
}

// parseInputUserID parses a decimal userId in 1..maxInputUserID: digits only (leading
// zeros allowed), no sign, no spaces.
func parseInputUserID(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
		if n > maxInputUserID {
			return 0, false
		}
	}
	return n, n >= 1
}

// normalizeInputColumn folds a header cell for matching: lower case, without
// spaces, tabs, '_' and '-'.
func normalizeInputColumn(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '_', '-':
			return -1
		}
		return unicode.ToLower(r)
	}, s)
}

// describeInputColumns lists header cells for the "no userId column" error,
// without showing a cell that may be a password.
func describeInputColumns(rec []string) string {
	for _, f := range rec {
		if _, ok := parseInputUserID(strings.Trim(f, " \t")); ok {
			return "the first line looks like data, not a header: add a header line such as userId,newPassword"
		}
	}
	var b strings.Builder
	b.WriteString("columns seen: ")
	for i, f := range rec {
		if i == inputMaxColumnsSeen {
			fmt.Fprintf(&b, " and %d more", len(rec)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if mayHoldPassword(f, "") {
			b.WriteString(inputHiddenCell)
		} else {
			b.WriteString(strconv.Quote(safeText(f, inputMaxColumnRunes)))
		}
	}
	return b.String()
}

// blankRecord reports whether every field is empty or spaces: a blank line as
// a spreadsheet writes it (",,,").
func blankRecord(rec []string) bool {
	for _, f := range rec {
		if strings.Trim(f, " \t") != "" {
			return false
		}
	}
	return true
}

// safeText makes s safe to print: invalid UTF-8 and non-printable runes
// become U+FFFD, and it is cut to maxRunes runes (marked by "…").
func safeText(s string, maxRunes int) string {
	var b strings.Builder
	n := 0
	for i, c := range s {
		if n == maxRunes {
			if i < len(s) {
				b.WriteString("…")
			}
			break
		}
		if c == utf8.RuneError || !unicode.IsPrint(c) {
			c = utf8.RuneError
		}
		b.WriteRune(c)
		n++
	}
	return b.String()
}

const inputArenaChunk = 64 << 10

// ColumnsSeen lists the input's header cells (already display-safe) for a
// message: "columns seen: a, b, c".
func (in *Input) ColumnsSeen() string {
	cols := in.Columns
	if len(cols) > inputMaxColumnsSeen {
		return fmt.Sprintf("columns seen: %s and %d more", strings.Join(cols[:inputMaxColumnsSeen], ", "), len(cols)-inputMaxColumnsSeen)
	}
	return "columns seen: " + strings.Join(cols, ", ")
}
