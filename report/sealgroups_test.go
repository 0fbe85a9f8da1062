package report

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"pwrotate/rotate/secret"
)

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeMap writes a recipients map of groups (ID → recipients) keyed by
// column, one row a recipient, and returns its path.
func writeMap(t testing.TB, dir, column string, ids []int, recips map[int][]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(column + ",recipient\n")
	for _, id := range ids {
		for _, r := range recips[id] {
			fmt.Fprintf(&b, "%d,%s\n", id, r)
		}
	}
	return writeTemp(t, dir, "map.csv", b.String())
}

// benchGroups builds a map of groups networks (1..groups), one X25519
// recipient each, and the global recipient.
func benchGroups(b *testing.B, groups int) (*RecipientsMap, []age.Recipient) {
	b.Helper()
	global := mustParseRecipients(b, mustX25519(b).Recipient().String()) // as a run parses them
	if groups <= 1 {
		return nil, global
	}
	ids := make([]int, groups)
	recips := map[int][]string{}
	for g := range groups {
		ids[g] = g + 1
		recips[g+1] = []string{mustX25519(b).Recipient().String()}
	}
	m, err := ParseRecipientsMap([]string{writeMap(b, b.TempDir(), "networkId", ids, recips)}, global)
	if err != nil {
		b.Fatal(err)
	}
	return m, global
}

// BenchmarkSealGroups seals 20,000 users (24-character passwords) in one
// group (no map: one file, as before maps) and in 1,000 groups of 20 (a
// map of 1,000 networks, one recipient each, plus the global recipient:
// 1,000 files of two recipients), fsyncs included, each time into a fresh
// folder (a run's --out). cpu-ms/op is the process's CPU time (user and
// system: creating and fsyncing a file is mostly the kernel's). The
// folder is under $TMPDIR, whose file system's cost of creating a file
// dominates the 1,000 groups (DESIGN.md, "Sealing per group").
func BenchmarkSealGroups(b *testing.B) {
	const users = 20_000
	pw := secret.Password("Xq7#mZ2!pLr9^Tw4kV8_abcd")
	for _, groups := range []int{1, 1000} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			m, global := benchGroups(b, groups)
			perGroup := users / groups
			root := b.TempDir()
			n := 0
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				n++
				dir := filepath.Join(root, strconv.Itoa(n))
				if err := os.Mkdir(dir, 0o700); err != nil {
					b.Fatal(err)
				}
				cpu0 := cpuTime(b)
				b.StartTimer()
				files, err := SealGroups(dir, 1, global, m, users,
					func(i int) int { return i/perGroup + 1 },
					func(i int) (int, secret.Password) { return 1_000_000 + i, pw })
				b.StopTimer()
				cpu += cpuTime(b) - cpu0
				if err != nil {
					b.Fatal(err)
				}
				if len(files) != groups {
					b.Fatalf("%d files", len(files))
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// groupFixture is a folder sealed per group: networks 1 (one X25519 key)
// and 2 (an SSH ed25519 key and an X25519 key) mapped, network 3 not, and
// users without a network; every file also to the global key.
type groupFixture struct {
	dir                    string
	global, k1, k2a, k2b   testKey
	globalIDs, ids1, ids2a []age.Identity
	ids2b                  []age.Identity
	m                      *RecipientsMap
	users                  []int // userIds, in sealing order
	network                []int // parallel to users
	files                  []SealedGroup
}

func newGroupFixture(t *testing.T, gen int) *groupFixture {
	t.Helper()
	keys := testKeys(t)
	fx := &groupFixture{dir: t.TempDir(), global: keys[0], k2a: keys[2]}
	k1 := mustX25519(t)
	fx.k1 = testKey{"n1", k1.Recipient().String(), k1.String() + "\n"}
	k2b := mustX25519(t)
	fx.k2b = testKey{"n2b", k2b.Recipient().String(), k2b.String() + "\n"}
	keyDir := t.TempDir()
	idsOf := func(k testKey) []age.Identity {
		ids, err := ParseIdentities([]string{writeTemp(t, keyDir, k.name+"-TEST-ONLY", k.identity)})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	fx.globalIDs, fx.ids1, fx.ids2a, fx.ids2b = idsOf(fx.global), idsOf(fx.k1), idsOf(fx.k2a), idsOf(fx.k2b)
	mapFile := writeMap(t, t.TempDir(), "networkId", []int{1, 2}, map[int][]string{1: {fx.k1.recipient}, 2: {fx.k2a.recipient, fx.k2b.recipient}})
	global := mustParseRecipients(t, fx.global.recipient)
	var err error
	if fx.m, err = ParseRecipientsMap([]string{mapFile}, global); err != nil {
		t.Fatal(err)
	}
	nets := []int{2, 1, 3, 0, 2, 1, 1, 3, 2, 0, 1}
	for i, n := range nets {
		fx.users = append(fx.users, 1000+i)
		fx.network = append(fx.network, n)
	}
	fx.files, err = SealGroups(fx.dir, gen, global, fx.m, len(fx.users),
		func(i int) int { return fx.network[i] },
		func(i int) (int, secret.Password) { return fx.users[i], pw(i, gen) })
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

// usersOf returns the users of network n (0: those sealed globally: no
// network, or one the map leaves out), in sealing order, as sealed rows.
func (fx *groupFixture) usersOf(n, gen int) []Sealed {
	var out []Sealed
	for i, u := range fx.users {
		g := fx.network[i]
		if g == 3 {
			g = 0
		}
		if g == n {
			out = append(out, Sealed{UserID: u, Password: pw(i, gen), Generation: gen})
		}
	}
	return out
}

// TestSealGroups seals users of three networks and some without one: one
// file per mapped network, to its keys and the global key, the others in
// the global file; each network's key opens its file alone, the global key
// every file, stock age -d a network's file with its key.
func TestSealGroups(t *testing.T) {
	fx := newGroupFixture(t, 2)
	want := []struct {
		name       string
		network    int
		recipients int
		ids        []age.Identity
	}{
		{"passwords-g0002.age", 0, 1, fx.globalIDs},
		{"passwords-g0002-network-1.age", 1, 2, fx.ids1},
		{"passwords-g0002-network-2.age", 2, 3, fx.ids2a},
	}
	if len(fx.files) != len(want) {
		t.Fatalf("%d files, want %d", len(fx.files), len(want))
	}
	for k, w := range want {
		f := fx.files[k]
		rows := fx.usersOf(w.network, 2)
		if filepath.Base(f.Path) != w.name || f.Users != len(rows) || f.Recipients != w.recipients {
			t.Errorf("file %d: %s, %d users, %d recipients; want %s, %d, %d", k, filepath.Base(f.Path), f.Users, f.Recipients, w.name, len(rows), w.recipients)
		}
		if st, err := os.Stat(f.Path); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f.Path, st, err)
		}
		for _, ids := range [][]age.Identity{w.ids, fx.globalIDs} {
			got, err := ReadSealed(f.Path, ids)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, rows) {
				t.Errorf("%s holds %v, want %v", w.name, got, rows)
			}
		}
		for _, k := range []struct {
			network int
			ids     []age.Identity
		}{{1, fx.ids1}, {2, fx.ids2a}, {2, fx.ids2b}} {
			_, err := ReadSealed(f.Path, k.ids)
			if opens := err == nil; opens != (k.network == w.network) {
				t.Errorf("%s: network %d's key opens it: %v (%v)", w.name, k.network, opens, err)
			}
		}
	}
	assertNoTemp(t, fx.dir)
	gens, err := SealedGenerations(fx.dir)
	if err != nil || !slices.Equal(gens, []int{2}) {
		t.Errorf("SealedGenerations %v %v", gens, err)
	}

	// The stock age CLI opens a network's file with that network's key.
	bin, _, err := stockAge(false)
	switch {
	case err != nil:
		t.Fatal(err)
	case bin == "" && requireStockAge():
		t.Fatal("age binary not on PATH; PWROTATE_REQUIRE_AGE=1 needs it")
	case bin == "":
		t.Log("age binary not on PATH: skipping the check with the stock CLI")
		return
	}
	keyFile := writeTemp(t, t.TempDir(), "n1-TEST-ONLY", fx.k1.identity)
	out, err := exec.Command(bin, "-d", "-i", keyFile, fx.files[1].Path).Output()
	if err != nil {
		t.Fatalf("age -d: %v", err)
	}
	var b strings.Builder
	b.WriteString("userId,password,generation\n")
	for _, s := range fx.usersOf(1, 2) {
		fmt.Fprintf(&b, "%d,%s,2\n", s.UserID, s.Password.Reveal())
	}
	if string(out) != b.String() {
		t.Errorf("age -d printed %d bytes, not the sealed rows", len(out))
	}
	if err := exec.Command(bin, "-d", "-i", keyFile, fx.files[2].Path).Run(); err == nil {
		t.Error("age -d opened network 2's file with network 1's key")
	}
}

// TestSealGroupsLeavesNothingOnError: a file of the generation that
// exists already, or a bad row, fails the call, and the files it had
// completed are removed (nothing of theirs was sent); the existing file is
// left as it was.
func TestSealGroupsLeavesNothingOnError(t *testing.T) {
	x := mustX25519(t).Recipient().String()
	m, err := ParseRecipientsMap([]string{writeMap(t, t.TempDir(), "mailboxId", []int{1, 2, 3}, map[int][]string{1: {x}, 2: {x}, 3: {x}})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	global := mustParseRecipients(t, x)
	groupOf := func(i int) int { return i%4 + 0 } // mailboxes 0 (global), 1, 2, 3
	good := func(i int) (int, secret.Password) { return 100 + i, pw(i, 1) }

	t.Run("existing file", func(t *testing.T) {
		dir := t.TempDir()
		existing := writeTemp(t, dir, "passwords-g0001-mailbox-2.age", "kept")
		if _, err := SealGroups(dir, 1, global, m, 40, groupOf, good); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("err %v", err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("left %v", entries)
		}
		if b, _ := os.ReadFile(existing); string(b) != "kept" {
			t.Error("the existing file changed")
		}
	})
	t.Run("bad row", func(t *testing.T) {
		dir := t.TempDir()
		bad := func(i int) (int, secret.Password) {
			if i == 39 {
				return 100 + i, ""
			}
			return good(i)
		}
		if _, err := SealGroups(dir, 1, global, m, 40, groupOf, bad); err == nil || !strings.Contains(err.Error(), "empty password") {
			t.Fatalf("err %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("left %v", entries)
		}
	})
	t.Run("arguments", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := SealGroups(dir, 0, global, m, 4, groupOf, good); err == nil {
			t.Error("generation 0 accepted")
		}
		if _, err := SealGroups(dir, 1, nil, m, 4, groupOf, good); err == nil {
			t.Error("no global recipients accepted")
		}
		if files, err := SealGroups(dir, 1, global, m, 0, groupOf, good); err != nil || files != nil {
			t.Errorf("no users: %v %v", files, err)
		}
	})
}

// TestBucketByGroup: users sorted by group, the global group first, each
// group in the users' order; one group needs no permutation.
func TestBucketByGroup(t *testing.T) {
	x := mustX25519(t).Recipient().String()
	m, err := ParseRecipientsMap([]string{writeMap(t, t.TempDir(), "networkId", []int{5, 9}, map[int][]string{5: {x}, 9: {x}})}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nets := []int{9, 5, 0, 9, 7, 5, 9}
	buckets, perm := bucketByGroup(m, len(nets), func(i int) int { return nets[i] })
	wantGroups := []Group{{}, {ByNetwork, 5}, {ByNetwork, 9}}
	if len(buckets) != 3 {
		t.Fatalf("buckets %v", buckets)
	}
	for k, b := range buckets {
		if b.group != wantGroups[k] {
			t.Errorf("bucket %d: %v", k, b.group)
		}
	}
	if !slices.Equal(perm, []int32{2, 4, 1, 5, 0, 3, 6}) {
		t.Errorf("perm %v", perm)
	}
	if b, perm := bucketByGroup(m, 3, func(int) int { return 9 }); len(b) != 1 || perm != nil || b[0].n != 3 {
		t.Errorf("one group: %v %v", b, perm)
	}
	if b, perm := bucketByGroup(nil, 3, func(int) int { return 9 }); len(b) != 1 || perm != nil || !b[0].group.Global() {
		t.Errorf("no map: %v %v", b, perm)
	}
}

// results writes results.csv for the fixture's users: every user updated
// with generation gen, sealed for its group.
func (fx *groupFixture) results(t *testing.T, gen int) {
	t.Helper()
	var rows []Row
	for i, u := range fx.users {
		g := fx.m.GroupOf(fx.network[i])
		rows = append(rows, Row{Line: i + 2, UserID: u, Status: Updated, Generation: gen, Attempts: 1,
			FinishedAt: time.Now(), SealedFor: g.String()})
	}
	_ = os.Remove(filepath.Join(fx.dir, ResultsName))
	writeRows(t, filepath.Join(fx.dir, ResultsName), rows)
}

// live is what open prints for the users of network n: their live
// passwords (generation gen).
func (fx *groupFixture) live(n, gen int) []OpenRow {
	var out []OpenRow
	for _, s := range fx.usersOf(n, gen) {
		out = append(out, OpenRow{UserID: s.UserID, Password: s.Password, Status: OpenUpdated, Generation: gen})
	}
	return out
}

// TestOpenGroups opens a folder sealed per group with each network's key:
// that network's users alone, live, the other files counted as not opened;
// the global key opens every user. A key that opens nothing is an error; a
// file missing from a group the key opens is noticed, and so is a whole
// group missing from a folder the global key opens.
func TestOpenGroups(t *testing.T) {
	fx := newGroupFixture(t, 1)
	fx.results(t, 1)
	n1, n2, global := fx.files[1].Path, fx.files[2].Path, fx.files[0].Path

	all := append(append(fx.live(0, 1), fx.live(1, 1)...), fx.live(2, 1)...)
	slices.SortFunc(all, func(a, b OpenRow) int { return a.UserID - b.UserID })
	for _, tt := range []struct {
		name      string
		paths     []string
		ids       []age.Identity
		want      []OpenRow
		notOpened []string
	}{
		{"network 1's key", []string{fx.dir}, fx.ids1, fx.live(1, 1), []string{global, n2}},
		{"network 2's ssh key", []string{fx.dir}, fx.ids2a, fx.live(2, 1), []string{global, n1}},
		{"network 2's other key", []string{fx.dir}, fx.ids2b, fx.live(2, 1), []string{global, n1}},
		{"the global key", []string{fx.dir}, fx.globalIDs, all, nil},
		{"network 1's file alone", []string{n1}, fx.ids1, fx.live(1, 1), nil},
		{"the global key, network 1's file alone", []string{n1}, fx.globalIDs, fx.live(1, 1), nil},
		{"two keys", []string{fx.dir}, append(slices.Clone(fx.ids1), fx.ids2b...), append(fx.live(1, 1), fx.live(2, 1)...), []string{global}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := OpenSealed(tt.paths, tt.ids, false)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(tt.want)
			slices.SortFunc(want, func(a, b OpenRow) int { return a.UserID - b.UserID })
			if !slices.Equal(o.Rows, want) {
				t.Errorf("rows\n%s\nwant\n%s", dump(o.Rows), dump(want))
			}
			slices.Sort(o.NotOpened)
			wantNot := slices.Sorted(slices.Values(tt.notOpened))
			if !slices.Equal(o.NotOpened, wantNot) {
				t.Errorf("not opened %v, want %v", o.NotOpened, wantNot)
			}
			if o.Files != len(fx.files)-len(wantNot) && tt.paths[0] == fx.dir {
				t.Errorf("%d files read", o.Files)
			}
		})
	}

	t.Run("a key that opens nothing", func(t *testing.T) {
		other := []age.Identity{mustX25519(t)}
		if _, err := OpenSealed([]string{fx.dir}, other, false); err == nil || !strings.Contains(err.Error(), "none of the identities can open any of the 3 sealed files") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("a generation missing from a group the key opens", func(t *testing.T) {
		// Network 1's users were resealed in generation 2, which is live,
		// and its file is gone.
		fx.results(t, 1)
		rows, err := ReadResults(filepath.Join(fx.dir, ResultsName))
		if err != nil {
			t.Fatal(err)
		}
		for i := range rows {
			if rows[i].SealedFor == "network-1" {
				rows[i].Generation = 2
			}
		}
		_ = os.Remove(filepath.Join(fx.dir, ResultsName))
		writeRows(t, filepath.Join(fx.dir, ResultsName), rows)
		defer fx.results(t, 1)
		want := filepath.Join(fx.dir, "passwords-g0002-network-1.age")
		for _, ids := range [][]age.Identity{fx.ids1, fx.globalIDs} {
			if _, err := OpenSealed([]string{fx.dir}, ids, false); err == nil || !strings.Contains(err.Error(), "add "+want) {
				t.Errorf("err %v, want one naming %s", err, want)
			}
		}
		// Network 2's key does not open network 1's files: not its concern.
		if o, err := OpenSealed([]string{fx.dir}, fx.ids2a, false); err != nil || !slices.Equal(o.Rows, fx.live(2, 1)) {
			t.Errorf("network 2: %v", err)
		}
	})
	t.Run("a whole group missing", func(t *testing.T) {
		saved, _ := os.ReadFile(n2)
		defer os.WriteFile(n2, saved, 0o600)
		if err := os.Remove(n2); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenSealed([]string{fx.dir}, fx.globalIDs, false); err == nil || !strings.Contains(err.Error(), "add "+n2) {
			t.Errorf("global key: err %v, want one naming %s", err, n2)
		}
		// A team handed its own files (and results.csv) opens them.
		if o, err := OpenSealed([]string{fx.dir}, fx.ids1, false); err != nil || !slices.Equal(o.Rows, fx.live(1, 1)) {
			t.Errorf("network 1: %v", err)
		}
	})
}
