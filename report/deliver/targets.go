package deliver

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Target is one place a user's password goes: the key of a Secret.
type Target struct {
	UserID    int
	Namespace string
	Secret    string
	Key       string
	File      string // the --deliver file that named it
	Line      int    // its line there
}

// String names the target as namespace/secret[key]; it is safe to log.
func (t Target) String() string { return t.Namespace + "/" + t.Secret + "[" + t.Key + "]" }

// secretRef names a Secret.
type secretRef struct{ ns, name string }

func (t Target) ref() secretRef { return secretRef{t.Namespace, t.Secret} }

// Limits of a --deliver file.
const (
	maxMapBytes = 64 << 20 // a file
	maxMapField = 1 << 10  // a cell
)

// Map is the targets of every user, read from --deliver files.
type Map struct {
	byUser map[int][]Target
	rows   int
	sum    [sha256.Size]byte
}

// Targets returns the targets of a user, in the order of the files; nil for
// a user without a row.
func (m *Map) Targets(userID int) []Target {
	if m == nil {
		return nil
	}
	return m.byUser[userID]
}

// Users returns the users with at least one target, in increasing order.
func (m *Map) Users() []int {
	if m == nil {
		return nil
	}
	users := make([]int, 0, len(m.byUser))
	for u := range m.byUser {
		users = append(users, u)
	}
	slices.Sort(users)
	return users
}

// Rows is the number of targets (rows) in the map.
func (m *Map) Rows() int {
	if m == nil {
		return 0
	}
	return m.rows
}

// SHA256 is the hex sha256 of the files' contents, in the order given.
func (m *Map) SHA256() string {
	if m == nil {
		return ""
	}
	return hex.EncodeToString(m.sum[:])
}

// ReadMap reads --deliver files: CSV with the header
// userId,namespace,secret,key, its columns matched as input columns are
// (case-insensitively, ignoring spaces, _ and -); other columns are
// ignored. One target a row; a user may have several, and a Secret may hold
// several users, one key each. A row that cannot be read, a name Kubernetes
// would refuse, the same target twice, or one key of a Secret mapped to two
// users is an error naming the file and line.
func ReadMap(paths ...string) (*Map, error) {
	m := &Map{byUser: map[int][]Target{}}
	h := sha256.New()
	seen := map[Target]Target{} // by the target without user, file and line
	for _, path := range paths {
		data, err := readLimited(path)
		if err != nil {
			return nil, err
		}
		h.Write(data)
		h.Write([]byte{0})
		targets, err := parseMap(data, path)
		if err != nil {
			return nil, err
		}
		for _, t := range targets {
			k := Target{Namespace: t.Namespace, Secret: t.Secret, Key: t.Key}
			if prev, ok := seen[k]; ok {
				if prev.UserID == t.UserID {
					return nil, fmt.Errorf("deliver map %s line %d: %s is a duplicate of %s line %d", t.File, t.Line, t, prev.File, prev.Line)
				}
				return nil, fmt.Errorf("deliver map %s line %d: %s is already the target of user %d (%s line %d): a key holds one password", t.File, t.Line, t, prev.UserID, prev.File, prev.Line)
			}
			seen[k] = t
			m.byUser[t.UserID] = append(m.byUser[t.UserID], t)
			m.rows++
		}
	}
	copy(m.sum[:], h.Sum(nil))
	return m, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("deliver map: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxMapBytes+1))
	if err != nil {
		return nil, fmt.Errorf("deliver map %s: %w", path, err)
	}
	if len(data) > maxMapBytes {
		return nil, fmt.Errorf("deliver map %s: larger than %d MiB", path, maxMapBytes>>20)
	}
	return data, nil
}

// mapColumns are the columns of a --deliver file, normalized.
var mapColumns = []string{"userid", "namespace", "secret", "key"}

// normalizeColumn folds a header cell for matching, as input columns are:
// lower case, without spaces, tabs, _ and -.
func normalizeColumn(s string) string {
	return strings.NewReplacer(" ", "", "\t", "", "_", "", "-", "").Replace(strings.ToLower(s))
}

// parseMap parses one --deliver file; name is its path, for messages.
func parseMap(data []byte, name string) ([]Target, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	lineErr := func(line int, err error) error {
		return fmt.Errorf("deliver map %s line %d: %w", name, line, err)
	}
	readRow := func() ([]string, int, error) {
		rec, err := r.Read()
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, pe.StartLine, lineErr(pe.StartLine, fmt.Errorf("cannot be parsed: %w", pe.Err))
			}
			return nil, 0, err
		}
		line, _ := r.FieldPos(0)
		for _, c := range rec {
			if len(c) > maxMapField {
				return nil, line, lineErr(line, fmt.Errorf("a cell is longer than %d bytes", maxMapField))
			}
		}
		return rec, line, nil
	}
	header, line, err := readRow()
	if err == io.EOF {
		return nil, fmt.Errorf("deliver map %s: empty, want the header userId,namespace,secret,key", name)
	}
	if err != nil {
		return nil, err
	}
	col := map[string]int{}
	for i, h := range header {
		n := normalizeColumn(h)
		if !slices.Contains(mapColumns, n) {
			continue
		}
		if _, dup := col[n]; dup {
			return nil, lineErr(line, fmt.Errorf("column %q appears twice", strings.TrimSpace(h)))
		}
		col[n] = i
	}
	for _, c := range mapColumns {
		if _, ok := col[c]; !ok {
			return nil, lineErr(line, fmt.Errorf("no %s column (want the header userId,namespace,secret,key; got %q)", c, strings.Join(header, ",")))
		}
	}
	var targets []Target
	for {
		rec, line, err := readRow()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if blank(rec) {
			continue
		}
		cell := func(c string) string {
			if i := col[c]; i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		t := Target{Namespace: cell("namespace"), Secret: cell("secret"), Key: cell("key"), File: name, Line: line}
		raw := cell("userid")
		id, err := strconv.ParseInt(raw, 10, 32)
		if err != nil || id < 1 || strings.TrimLeft(raw, "0123456789") != "" {
			return nil, lineErr(line, fmt.Errorf("userId %q: want an integer in 1..2147483647", safe(raw)))
		}
		t.UserID = int(id)
		if err := checkName("namespace", t.Namespace, validation.IsDNS1123Label); err != nil {
			return nil, lineErr(line, err)
		}
		if err := checkName("secret", t.Secret, validation.IsDNS1123Subdomain); err != nil {
			return nil, lineErr(line, err)
		}
		if err := checkName("key", t.Key, validation.IsConfigMapKey); err != nil {
			return nil, lineErr(line, err)
		}
		targets = append(targets, t)
	}
	return targets, nil
}

func checkName(what, v string, valid func(string) []string) error {
	if v == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if errs := valid(v); len(errs) > 0 {
		return fmt.Errorf("%s %q: %s", what, safe(v), errs[0])
	}
	return nil
}

func blank(rec []string) bool {
	for _, c := range rec {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

// safe shortens s and replaces what a terminal could misread, for a
// message.
func safe(s string) string {
	const max = 64
	var b strings.Builder
	for i, r := range s {
		if i >= max {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
