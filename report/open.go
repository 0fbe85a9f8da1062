package report

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/gocarina/gocsv"

	"pwrotate/rotate/secret"
)

// The statuses Open gives a sealed password.
const (
	// OpenUpdated: the password that is live on the server.
	OpenUpdated = "updated"
	// OpenSuperseded: an older or newer generation of a user whose live
	// password is another one (only with all).
	OpenSuperseded = "superseded"
	// OpenUnconfirmed: a password that may or may not have been applied.
	OpenUnconfirmed = "unconfirmed"
)

// OpenRow is one line of what `pwrotate open` prints.
type OpenRow struct {
	// UserID is the user.
	UserID int
	// Password is a sealed password of that user.
	Password secret.Password
	// Status is OpenUpdated, OpenSuperseded or OpenUnconfirmed.
	Status string
	// Generation is the generation the password was sealed in.
	Generation int
}

// openGroup is one output folder: its results and the sealed files chosen
// from it. Generations are only meaningful within one folder (each shard
// has its own).
type openGroup struct {
	tree     int // index of the path (folder tree) the folder was found under
	dir      string
	results  string // "" when the folder has no results.csv
	sealed   []string
	seenFile map[string]bool
	// whole is set when the folder itself was given: then every sealed
	// file of it is in sealed.
	whole bool
}

// Opened is what OpenSealed found.
type Opened struct {
	// Rows are the passwords, as Open returns them.
	Rows []OpenRow
	// Files counts the sealed files read.
	Files int
	// NotOpened names the sealed files that none of the identities can
	// open: sealed for another group's recipients (--recipients-map).
	NotOpened []string
}

// Open decrypts sealed files and tells, with the results, which password is
// live. A path is an output folder (every *.age in it and its results.csv,
// plus every shard-*/ subfolder) or a .age file (with its folder's
// results.csv when present). Each folder is judged on its own, then all are
// merged, sorted by userId then generation.
//
// By default a user whose results row says updated with generation g gives
// one row, the password of generation g (OpenUpdated); any other user gives
// every sealed candidate (OpenUnconfirmed). With all, every sealed row is
// returned: OpenUpdated for the live one, OpenSuperseded for the other
// generations of an updated user, OpenUnconfirmed for the rest. An updated
// row whose generation is not among the sealed rows read is an error naming
// the user and the generation: a missing file must be noticed.
//
// Sealed files that none of ids can open are skipped (see OpenSealed).
func Open(paths []string, ids []age.Identity, all bool) ([]OpenRow, error) {
	o, err := OpenSealed(paths, ids, all)
	return o.Rows, err
}

// OpenSealed is Open, telling which sealed files none of ids can open.
// Those are sealed for other groups (--recipients-map): they are skipped,
// and so are the users that results.csv says were sealed for a group none
// of whose files ids open. At least one file must open. A user updated in
// a group whose files ids do open must have the file of its live
// generation among them; when a whole folder is given and ids open its
// global group's files, every group that results.csv names must have files
// in it.
func OpenSealed(paths []string, ids []age.Identity, all bool) (Opened, error) {
	var o Opened
	if len(paths) == 0 {
		return o, errors.New("open: no paths given")
	}
	groups, err := collectGroups(paths)
	if err != nil {
		return o, err
	}
	var out []OpenRow
	nsealed := 0
	// One tree (a folder and its shard-* folders) gives each user at most
	// one live password: a user updated in two of its folders means two
	// runs (say a sharded and an unsharded one) wrote there.
	type treeUser struct{ tree, user int }
	liveIn := map[treeUser]string{}
	for _, g := range groups {
		nsealed += len(g.sealed)
		rows, err := openGroupRows(g, ids, all, &o)
		if err != nil {
			return o, err
		}
		for _, r := range rows {
			if r.Status != OpenUpdated {
				continue
			}
			k := treeUser{g.tree, r.UserID}
			if dir, ok := liveIn[k]; ok && dir != g.dir {
				return o, fmt.Errorf("open: user %d is updated in both %s and %s, so two runs wrote into %s: refusing to tell which password is live; open each folder on its own",
					r.UserID, dir, g.dir, paths[g.tree])
			}
			liveIn[k] = g.dir
		}
		out = append(out, rows...)
	}
	if nsealed == 0 {
		return o, fmt.Errorf("open: no sealed files (*.age) in %s", strings.Join(paths, ", "))
	}
	if o.Files == 0 {
		return o, fmt.Errorf("open: none of the identities can open any of the %d sealed files in %s (they are sealed to other recipients)",
			nsealed, strings.Join(paths, ", "))
	}
	slices.SortStableFunc(out, func(a, b OpenRow) int {
		return cmp.Or(cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.Generation, b.Generation))
	})
	o.Rows = out
	return o, nil
}

// collectGroups turns the paths into folders with their files, in the
// order first met, each file once.
func collectGroups(paths []string) ([]*openGroup, error) {
	var groups []*openGroup
	byDir := map[string]*openGroup{}
	tree := 0
	group := func(dir string) (*openGroup, error) {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		if g, ok := byDir[abs]; ok {
			return g, nil
		}
		g := &openGroup{tree: tree, dir: dir, seenFile: map[string]bool{}}
		res := filepath.Join(dir, ResultsName)
		if st, err := os.Stat(res); err == nil && st.Mode().IsRegular() {
			g.results = res
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open: %w", err)
		}
		byDir[abs] = g
		groups = append(groups, g)
		return g, nil
	}
	addFile := func(g *openGroup, file string) {
		base := filepath.Base(file)
		if !g.seenFile[base] {
			g.seenFile[base] = true
			g.sealed = append(g.sealed, file)
		}
	}
	addDir := func(dir string) error {
		g, err := group(dir)
		if err != nil {
			return err
		}
		g.whole = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		for _, e := range entries {
			// Sealed API key batches are opened by OpenAPIKeys; the
			// delivery escrow (a copy, to a passphrase) by the job alone.
			if strings.HasSuffix(e.Name(), sealedSuffix) && !IsAPIKeysFile(e.Name()) && !IsEscrowName(e.Name()) && e.Type().IsRegular() {
				addFile(g, filepath.Join(dir, e.Name()))
			}
		}
		return nil
	}
	for i, p := range paths {
		tree = i
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		if !st.IsDir() {
			if !strings.HasSuffix(p, sealedSuffix) {
				return nil, fmt.Errorf("open: %s is neither a folder nor a .age file", p)
			}
			g, err := group(filepath.Dir(p))
			if err != nil {
				return nil, err
			}
			addFile(g, p)
			continue
		}
		if err := addDir(p); err != nil {
			return nil, err
		}
		shards, err := filepath.Glob(filepath.Join(p, "shard-*"))
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		for _, s := range shards {
			if st, err := os.Stat(s); err == nil && st.IsDir() {
				if err := addDir(s); err != nil {
					return nil, err
				}
			}
		}
	}
	return groups, nil
}

// live is what results.csv says about an updated user.
type live struct {
	gen   int
	row   Row
	found bool
}

// openGroupRows reads one folder's results and sealed files; the files
// that ids cannot open are added to o.NotOpened, those read counted in
// o.Files.
func openGroupRows(g *openGroup, ids []age.Identity, all bool, o *Opened) ([]OpenRow, error) {
	if len(g.sealed) == 0 && g.results == "" {
		return nil, nil
	}
	lives := map[int]*live{}
	if g.results != "" {
		rows, err := ReadResults(g.results)
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		for _, r := range rows {
			if r.Status != Updated || r.UserID == 0 {
				continue
			}
			if r.Generation < 1 {
				return nil, fmt.Errorf("open: %s: line for input line %d says updated without a generation", g.results, r.Line)
			}
			// Two updated rows for one user cannot come from one run; if they
			// do, the later change is the live one.
			if l, ok := lives[r.UserID]; !ok || r.FinishedAt.After(l.row.FinishedAt) ||
				(r.FinishedAt.Equal(l.row.FinishedAt) && r.Generation > l.gen) {
				lives[r.UserID] = &live{gen: r.Generation, row: r}
			}
		}
	}
	type key struct{ user, gen int }
	seen := map[key]secret.Password{}
	present := map[Group]bool{} // groups with a file here (by its name)
	opened := map[Group]bool{}  // groups with a file here that ids open
	var out []OpenRow
	for _, path := range g.sealed {
		_, grp, named := ParseSealedName(filepath.Base(path))
		if named {
			present[grp] = true
		}
		rows, err := ReadSealed(path, ids)
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			o.NotOpened = append(o.NotOpened, path)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		o.Files++
		if named {
			opened[grp] = true
		}
		for _, s := range rows {
			k := key{s.UserID, s.Generation}
			if pw, dup := seen[k]; dup {
				if pw == s.Password {
					continue // the same file given twice, or a copy
				}
				return nil, fmt.Errorf("open: user %d has two different sealed passwords for generation %d (in %s)", s.UserID, s.Generation, g.dir)
			}
			seen[k] = s.Password
			status := OpenUnconfirmed
			if l, ok := lives[s.UserID]; ok {
				status = OpenSuperseded
				if l.gen == s.Generation {
					status = OpenUpdated
					l.found = true
				}
			}
			if all || status != OpenSuperseded {
				out = append(out, OpenRow{UserID: s.UserID, Password: s.Password, Status: status, Generation: s.Generation})
			}
		}
	}
	var missing []int
	for id, l := range lives {
		if l.found {
			continue
		}
		// Not found: an error when the files of its group were read, or
		// when ids open the global group's files (the global recipients
		// open every file) and the folder has no file of its group at all.
		// A group whose files ids cannot open, or that were not given (a
		// team handed its own files), is not ours to check.
		grp, _ := ParseGroup(l.row.SealedFor) // checked when read
		if opened[grp] || (g.whole && opened[Group{}] && !present[grp]) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		l := lives[missing[0]]
		grp, _ := ParseGroup(l.row.SealedFor)
		more := ""
		if len(missing) > 1 {
			more = fmt.Sprintf(" (and %d more users)", len(missing)-1)
		}
		return nil, fmt.Errorf("open: %s says user %d was updated with generation %d, but that generation is not sealed in the given paths%s: add %s",
			g.results, missing[0], l.gen, more, filepath.Join(g.dir, SealedGroupName(l.gen, grp)))
	}
	return out, nil
}

// WriteOpenCSV writes rows as CSV "userId,password,status,generation" with
// a header row (openRecord, marshalled by gocsv); the passwords are written
// as they are.
func WriteOpenCSV(w io.Writer, rows []OpenRow) error {
	cw := csv.NewWriter(w)
	batch := make([]openRecord, 0, min(len(rows), 256))
	defer clear(batch[:cap(batch)])
	header := true
	for len(rows) > 0 || header {
		batch = batch[:0]
		for len(rows) > 0 && len(batch) < cap(batch) {
			r := rows[0]
			batch = append(batch, openRecord{
				UserID: count(r.UserID), Password: passwordCell{r.Password}, Status: r.Status, Generation: count(r.Generation),
			})
			rows = rows[1:]
		}
		marshal := gocsv.MarshalCSVWithoutHeaders
		if header {
			marshal, header = gocsv.MarshalCSV, false
		}
		if err := marshal(&batch, cw); err != nil {
			return fmt.Errorf("writing passwords: %w", err)
		}
	}
	return nil
}
