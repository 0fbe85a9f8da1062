package input

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of a --protect file: it is read whole before anything happens.
const (
	maxProtectFileBytes = 16 << 20 // one file
	maxProtectLineBytes = 4 << 10  // one line
)

// Protect is the accounts that --protect files say must never be rotated:
// user IDs and case-insensitive login globs (path.Match syntax). The zero
// value and nil protect nobody.
type Protect struct {
	ids   map[int]int     // userId -> index into entries (the first entry naming it)
	globs []int           // indexes into entries of the login globs, in order
	entry []protectEntry  // every entry, in file order
	seen  map[string]bool // normalized entries, for the fingerprint
}

// protectEntry is one line of a --protect file.
type protectEntry struct {
	id     int    // a userId, or 0 for a login glob
	glob   string // lower-cased pattern, when id is 0
	reason string // "protected (FILE:LINE)"
	where  string // "FILE:LINE"
}

// ProtectError is a problem with a --protect file: the run cannot start.
type ProtectError struct {
	File string // as given
	Line int    // 0 when the whole file is concerned
	Err  error
}

// Error returns e.g. "--protect keep.txt:3: bad login pattern "svc-[": syntax error in pattern".
func (e *ProtectError) Error() string {
	where := safeText(e.File, 256)
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	return "--protect " + where + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ProtectError) Unwrap() error { return e.Err }

// LoadProtect reads the --protect files, in order. An entry is a whole line,
// spaces trimmed: a decimal user ID (1..2147483647), else a login glob. A
// line that is empty or starts with '#' is skipped, and so is the rest of a
// line from a '#' that follows a space or tab ("svc-edi  # SOAP"). A glob
// that path.Match calls malformed is an error naming FILE:LINE.
func LoadProtect(files []string) (*Protect, error) {
	p := &Protect{}
	for _, f := range files {
		if err := p.loadFile(f); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Protect) loadFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return &ProtectError{File: name, Err: err}
	}
	defer func() { _ = f.Close() }() // read-only
	if st, err := f.Stat(); err != nil {
		return &ProtectError{File: name, Err: err}
	} else if st.IsDir() {
		return &ProtectError{File: name, Err: errors.New("is a directory, not a file")}
	}
	return p.load(io.LimitReader(f, maxProtectFileBytes+1), name)
}

// load reads one file's entries from r; name is the file as given.
func (p *Protect) load(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxProtectLineBytes)
	line, total := 0, 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		total += len(b) + 1
		if total > maxProtectFileBytes {
			return &ProtectError{File: name, Line: line, Err: errors.New("file over 16 MiB")}
		}
		if line == 1 {
			b = bytes.TrimPrefix(b, inputBOM)
		}
		if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
			return &ProtectError{File: name, Line: line, Err: errors.New("not UTF-8 text")}
		}
		s := protectEntryText(string(b))
		if s == "" {
			continue
		}
		if err := p.add(s, name, line); err != nil {
			return &ProtectError{File: name, Line: line, Err: err}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &ProtectError{File: name, Line: line + 1, Err: errors.New("line over 4 KiB")}
		}
		return &ProtectError{File: name, Err: fmt.Errorf("reading: %w", err)}
	}
	return nil
}

// protectEntryText returns the entry of a line: comments dropped, trimmed.
func protectEntryText(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "#") {
		return ""
	}
	for i := 1; i < len(s); i++ {
		if s[i] == '#' && (s[i-1] == ' ' || s[i-1] == '\t') {
			return strings.TrimSpace(s[:i])
		}
	}
	return s
}

func (p *Protect) add(s, file string, line int) error {
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return fmt.Errorf("entry %q holds a space or control character: one user ID or login glob a line", safeText(s, inputMaxIDRunes))
	}
	where := file + ":" + strconv.Itoa(line)
	e := protectEntry{reason: "protected (" + safeText(where, 300) + ")", where: where}
	var key string
	if isDigits(s) {
		id, ok := parseInputUserID(s)
		if !ok {
			return fmt.Errorf("user ID %s is not in 1..2147483647", safeText(s, inputMaxIDRunes))
		}
		e.id = id
		key = "id:" + strconv.Itoa(id)
	} else {
		e.glob = strings.ToLower(s)
		if _, err := path.Match(e.glob, ""); err != nil {
			return fmt.Errorf("bad login pattern %q: %w", safeText(s, inputMaxIDRunes), err)
		}
		key = "login:" + e.glob
	}
	if p.ids == nil {
		p.ids, p.seen = map[int]int{}, map[string]bool{}
	}
	p.seen[key] = true
	i := len(p.entry)
	p.entry = append(p.entry, e)
	if e.id != 0 {
		if _, dup := p.ids[e.id]; !dup {
			p.ids[e.id] = i
		}
	} else {
		p.globs = append(p.globs, i)
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Empty reports whether p protects nobody.
func (p *Protect) Empty() bool { return p == nil || len(p.entry) == 0 }

// Len returns the number of entries.
func (p *Protect) Len() int {
	if p == nil {
		return 0
	}
	return len(p.entry)
}

// FirstGlob returns where the first login glob is ("FILE:LINE") and the
// pattern, or ok=false when every entry is a user ID.
func (p *Protect) FirstGlob() (where, pattern string, ok bool) {
	if p == nil || len(p.globs) == 0 {
		return "", "", false
	}
	e := p.entry[p.globs[0]]
	return e.where, e.glob, true
}

// Match returns the reason ("protected (FILE:LINE)") of the first entry
// that protects the user with this ID and login, or "". An empty login
// matches no glob. A login cell written spreadsheet-safe (a ' before a
// leading = + - or @, as the --select snapshot and pwrotate users write
// it) is matched as the raw login and as written: a glob matching either
// protects the user.
func (p *Protect) Match(userID int, login string) string {
	if p == nil || len(p.entry) == 0 {
		return ""
	}
	best := -1
	if i, ok := p.ids[userID]; ok {
		best = i
	}
	if login != "" && len(p.globs) > 0 {
		lower := strings.ToLower(login)
		raw := ""
		if len(lower) > 1 && lower[0] == '\'' && strings.IndexByte("=+-@", lower[1]) >= 0 {
			raw = lower[1:]
		}
		for _, i := range p.globs {
			if best >= 0 && i > best {
				break
			}
			ok, _ := path.Match(p.entry[i].glob, lower)
			if !ok && raw != "" {
				ok, _ = path.Match(p.entry[i].glob, raw)
			}
			if ok {
				best = i
				break
			}
		}
	}
	if best < 0 {
		return ""
	}
	return p.entry[best].reason
}

// Fingerprint returns the hex sha256 of the set of entries (normalized,
// sorted, each once), so that files reordered or renamed give the same
// fingerprint; "" for no entry.
func (p *Protect) Fingerprint() string {
	if p.Empty() {
		return ""
	}
	keys := make([]string, 0, len(p.seen))
	for k := range p.seen {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}
