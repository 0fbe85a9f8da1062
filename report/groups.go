package report

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
	"unicode"

	"filippo.io/age"
)

// Sealing per group (--recipients-map): each user's passwords are sealed
// into files of the user's group (its network or its mailbox), to that
// group's recipients and every global recipient. A user whose group the map
// does not name is in the global group: sealed to the global recipients
// alone, in the files named as before any map existed (SealedName).

// GroupKind is what groups users: the input column a recipients map is
// keyed by.
type GroupKind uint8

// The kinds of group.
const (
	// NoGroups: no map; every user is in the global group.
	NoGroups GroupKind = iota
	// ByNetwork: a group is a network (the networkId column).
	ByNetwork
	// ByMailbox: a group is a mailbox (the mailboxId column).
	ByMailbox
)

// Column is the input column that puts a user in a group of kind k
// ("networkId", "mailboxId"; "" for NoGroups).
func (k GroupKind) Column() string {
	switch k {
	case ByNetwork:
		return "networkId"
	case ByMailbox:
		return "mailboxId"
	}
	return ""
}

// String names a group of kind k ("network", "mailbox"; "" for NoGroups).
func (k GroupKind) String() string {
	switch k {
	case ByNetwork:
		return "network"
	case ByMailbox:
		return "mailbox"
	}
	return ""
}

// Group is the group a user's passwords are sealed for. The zero Group is
// the global group (the global recipients alone).
type Group struct {
	Kind GroupKind
	ID   int // 1..2147483647; 0 for the global group
}

// Global reports whether g is the global group.
func (g Group) Global() bool { return g.ID == 0 || g.Kind == NoGroups }

// String names g as results.csv records it and sealed file names show it:
// "network-12", "mailbox-7", or "global".
func (g Group) String() string {
	if g.Global() {
		return globalGroupName
	}
	return g.Kind.String() + "-" + strconv.Itoa(g.ID)
}

const globalGroupName = "global"

// ParseGroup reads a group named by Group.String. "" is the global group
// too (results.csv rows written before the sealedFor column).
func ParseGroup(s string) (Group, error) {
	if s == "" || s == globalGroupName {
		return Group{}, nil
	}
	for _, k := range []GroupKind{ByNetwork, ByMailbox} {
		digits, ok := strings.CutPrefix(s, k.String()+"-")
		if !ok {
			continue
		}
		if id, ok := parseGroupID(digits); ok && strconv.Itoa(id) == digits {
			return Group{Kind: k, ID: id}, nil
		}
	}
	return Group{}, errors.New("not a group (want global, network-N or mailbox-N)")
}

// parseGroupID reads an ID in 1..2147483647 (decimal digits only).
func parseGroupID(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxUserID {
		return 0, false
	}
	return n, true
}

// maxMapBytes bounds a recipients map file (1,000 networks of ten RSA
// keys each fit).
const maxMapBytes = 16 << 20

// RecipientsMap is what --recipients-map files say: for each group (a
// network or a mailbox), the age recipients its passwords are sealed to
// besides the global ones.
type RecipientsMap struct {
	// Kind is what the map is keyed by: ByNetwork or ByMailbox.
	Kind GroupKind
	// SHA256 is the hex sha256 of the map: of its one file's bytes (what
	// sha256sum prints), or for several files of their digests, sorted,
	// one a line: the order of the flags does not matter.
	SHA256 string
	// Files are the map files, as given.
	Files []string
	// Rows counts the recipient rows (each group's distinct recipients).
	Rows   int
	groups map[int][]age.Recipient
}

// ParseRecipientsMap reads the --recipients-map files: CSV with a header
// naming the key column (networkId or mailboxId, matched as input columns
// are: case-insensitively, ignoring spaces, '_' and '-') and a recipient
// column; other columns are ignored. Each row is one recipient of one
// group, any kind ParseRecipients takes; several rows make a group, a
// repeated row counts once. Blank lines and lines starting with '#' are
// skipped. global are the global recipients: a map recipient must be of
// their kind (post-quantum or classic), since a file is sealed to both.
//
// Errors name the file and line and never echo a cell: a bad recipient, a
// bad ID (not in 1..2147483647), a file that mixes networkId and
// mailboxId, files of different keys, a file without rows. No files: nil
// and no error.
func ParseRecipientsMap(files []string, global []age.Recipient) (*RecipientsMap, error) {
	if len(files) == 0 {
		return nil, nil
	}
	m := &RecipientsMap{Files: slices.Clone(files), groups: map[int][]age.Recipient{}}
	seen := map[mapEntry]bool{}
	pq := pqOf(global)
	var sums []string
	first := ""
	for _, name := range files {
		f := mapFile{name: name, m: m, seen: seen, pq: pq}
		if err := f.parse(); err != nil {
			return nil, fmt.Errorf("--recipients-map %s: %w", name, err)
		}
		if first == "" {
			first = name
		} else if f.kind != m.Kind {
			return nil, fmt.Errorf("--recipients-map %s is keyed by %s, but --recipients-map %s by %s: a run seals by one of them (each user must be in one group)",
				name, f.kind.Column(), first, m.Kind.Column())
		}
		m.Kind, pq = f.kind, f.pq
		sums = append(sums, f.sum)
	}
	if len(sums) == 1 {
		m.SHA256 = sums[0]
	} else {
		slices.Sort(sums)
		h := sha256.Sum256([]byte(strings.Join(sums, "\n") + "\n"))
		m.SHA256 = hex.EncodeToString(h[:])
	}
	return m, nil
}

// pqKind says whether recipients are post-quantum: unknown (none yet),
// classic, or post-quantum.
type pqKind uint8

const (
	pqUnknown pqKind = iota
	pqClassic
	pqHybrid
)

func pqOf(recips []age.Recipient) pqKind {
	if len(recips) == 0 {
		return pqUnknown
	}
	if _, ok := recips[0].(*age.HybridRecipient); ok {
		return pqHybrid
	}
	return pqClassic
}

// mapEntry is one recipient of one group, by its text (an SSH key's type
// and key, without its comment).
type mapEntry struct {
	id  int
	key string
}

// mapFile parses one map file into m.
type mapFile struct {
	name string
	m    *RecipientsMap
	seen map[mapEntry]bool
	pq   pqKind

	kind   GroupKind
	sum    string
	keyCol int
	rcpCol int
}

func (f *mapFile) parse() error {
	data, err := readMapFile(f.name)
	if err != nil {
		return err
	}
	h := sha256.Sum256(data)
	f.sum = hex.EncodeToString(h[:])
	cr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cr.ReuseRecord = true
	header := false
	rows := 0
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return csvErr(err)
		}
		line, _ := cr.FieldPos(0)
		if blankCells(rec) {
			continue
		}
		if !header {
			if err := f.header(rec); err != nil {
				return fmt.Errorf("line %d: %w", line, err)
			}
			header = true
			continue
		}
		data, err := f.row(rec)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if data {
			rows++
		}
	}
	if !header {
		return errors.New("is empty: want a header networkId,recipient or mailboxId,recipient and one row a recipient")
	}
	if rows == 0 {
		return errors.New("has no rows: want one row a recipient under the header")
	}
	return nil
}

// header finds the key and recipient columns.
func (f *mapFile) header(rec []string) error {
	f.keyCol, f.rcpCol = -1, -1
	for i, cell := range rec {
		var col *int
		var kind GroupKind
		switch normalizeColumn(cell) {
		case "networkid":
			col, kind = &f.keyCol, ByNetwork
		case "mailboxid":
			col, kind = &f.keyCol, ByMailbox
		case "recipient":
			col = &f.rcpCol
		default:
			continue
		}
		if kind != NoGroups && f.kind != NoGroups && kind != f.kind {
			return errors.New("has both a networkId and a mailboxId column: a map is keyed by one of them")
		}
		if *col >= 0 {
			return fmt.Errorf("columns %d and %d are both %s: which one is meant?", *col+1, i+1, normalizeColumn(cell))
		}
		*col = i
		if kind != NoGroups {
			f.kind = kind
		}
	}
	switch {
	case f.keyCol < 0 && f.rcpCol < 0:
		return errors.New("is not a header networkId,recipient or mailboxId,recipient (the first line of a map names its columns)")
	case f.keyCol < 0:
		return errors.New("has no networkId or mailboxId column")
	case f.rcpCol < 0:
		return errors.New("has no recipient column")
	}
	return nil
}

// row adds the recipient of one row; data is false for a repeated header.
// A recipient already in its group is not added again.
func (f *mapFile) row(rec []string) (data bool, err error) {
	if f.keyCol >= len(rec) || f.rcpCol >= len(rec) {
		return false, fmt.Errorf("too few fields (%d): the %s column is field %d, recipient field %d", len(rec), f.kind.Column(), f.keyCol+1, f.rcpCol+1)
	}
	keyCell := strings.TrimSpace(rec[f.keyCol])
	switch normalizeColumn(keyCell) {
	case normalizeColumn(f.kind.Column()):
		return false, nil // the header again (files joined with cat)
	case "networkid", "mailboxid":
		return false, fmt.Errorf("is a %s header in a map keyed by %s: a map is keyed by one of them, not both", otherKind(f.kind).Column(), f.kind.Column())
	}
	id, ok := parseGroupID(strings.Trim(keyCell, " \t"))
	if !ok {
		return false, fmt.Errorf("%s is not an ID in 1..2147483647", f.kind.Column())
	}
	text := strings.TrimSpace(rec[f.rcpCol])
	r, err := parseRecipient(text)
	if err != nil {
		return false, fmt.Errorf("recipient %w", err)
	}
	pq := pqOf([]age.Recipient{r})
	switch {
	case f.pq == pqUnknown:
		f.pq = pq
	case pq != f.pq:
		what := map[pqKind]string{pqClassic: "classic", pqHybrid: "post-quantum (age1pq1…)"}
		return false, fmt.Errorf("recipient is %s, but the others (and the global recipients) are %s: post-quantum and classic recipients cannot be mixed in a file, which would not be safe against quantum computers",
			what[pq], what[f.pq])
	}
	e := mapEntry{id: id, key: recipientKey(text)}
	if f.seen[e] {
		return true, nil
	}
	f.seen[e] = true
	f.m.groups[id] = append(f.m.groups[id], r)
	f.m.Rows++
	return true, nil
}

// otherKind is ByMailbox for ByNetwork and the other way round.
func otherKind(k GroupKind) GroupKind {
	if k == ByNetwork {
		return ByMailbox
	}
	return ByNetwork
}

// recipientKey is the text that identifies a recipient: an SSH key
// without its comment, an age recipient as written.
func recipientKey(s string) string {
	if strings.HasPrefix(s, "ssh-") {
		fields := strings.Fields(s)
		if len(fields) >= 2 {
			return fields[0] + " " + fields[1]
		}
	}
	return s
}

// readMapFile reads a map file whole, up to maxMapBytes.
func readMapFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, errors.New("is a folder, not a CSV file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMapBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxMapBytes {
		return nil, fmt.Errorf("is larger than %d MiB", maxMapBytes>>20)
	}
	return data, nil
}

// blankCells reports whether every cell of rec is empty or spaces.
func blankCells(rec []string) bool {
	for _, c := range rec {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

// normalizeColumn folds a header cell for matching, as the input's columns
// are: lower case, without spaces, tabs, '_' and '-'.
func normalizeColumn(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '_', '-':
			return -1
		}
		return unicode.ToLower(r)
	}, s)
}

// Column is the input column the map is keyed by ("networkId",
// "mailboxId"); "" for a nil map.
func (m *RecipientsMap) Column() string {
	if m == nil {
		return ""
	}
	return m.Kind.Column()
}

// GroupOf returns the group of a user whose networkId or mailboxId (the
// map's Kind) is id: the global group when the map has no row for id (or
// id is 0: none known), or when m is nil.
func (m *RecipientsMap) GroupOf(id int) Group {
	if m == nil || id == 0 {
		return Group{}
	}
	if _, ok := m.groups[id]; !ok {
		return Group{}
	}
	return Group{Kind: m.Kind, ID: id}
}

// Groups returns the IDs of the map's groups, ascending.
func (m *RecipientsMap) Groups() []int {
	if m == nil {
		return nil
	}
	ids := make([]int, 0, len(m.groups))
	for id := range m.groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Recipients returns how many recipients the map gives group g (0 for the
// global group).
func (m *RecipientsMap) Recipients(g Group) int {
	if m == nil || g.Global() || g.Kind != m.Kind {
		return 0
	}
	return len(m.groups[g.ID])
}

// sealTo returns the recipients of group g's files: the group's, then
// every global one.
func (m *RecipientsMap) sealTo(g Group, global []age.Recipient) []age.Recipient {
	if m == nil || g.Global() || g.Kind != m.Kind {
		return global
	}
	own := m.groups[g.ID]
	return append(slices.Clip(own), global...)
}
