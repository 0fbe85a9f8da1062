package report

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestParseRecipientsMap(t *testing.T) {
	keys := testKeys(t)
	x, pq, ed, rsa := keys[0].recipient, keys[1].recipient, keys[2].recipient, keys[3].recipient
	x2 := mustX25519(t).Recipient().String()
	secretKey := mustX25519(t).String()
	global := mustParseRecipients(t, x)
	globalPQ := mustParseRecipients(t, pq)

	tests := []struct {
		name    string
		files   []string // contents
		global  []age.Recipient
		kind    GroupKind
		groups  map[int]int // ID → recipients
		wantErr string      // substring; also: the file and line named
	}{
		{name: "networks", files: []string{"networkId,recipient\n12," + x2 + "\n12," + ed + "\n7,\"" + rsa + "\"\n"},
			global: global, kind: ByNetwork, groups: map[int]int{12: 2, 7: 1}},
		{name: "mailboxes, header spelled otherwise, other columns", files: []string{"team, Mailbox_ID ,RECIPIENT\nops,3," + x2 + "\n"},
			global: global, kind: ByMailbox, groups: map[int]int{3: 1}},
		{name: "BOM CRLF blank lines comments spaces", files: []string{"\ufeffnetwork-id,recipient\r\n\r\n# the ops team\r\n 0012 , " + x2 + " \r\n,\r\n"},
			global: global, kind: ByNetwork, groups: map[int]int{12: 1}},
		{name: "a repeated row counts once, an SSH key without its comment too", files: []string{"networkId,recipient\n5," + x2 + "\n5," + x2 + "\n5," + ed + "\n5," + strings.TrimSuffix(ed, " test-only@example") + " other\n"},
			global: global, kind: ByNetwork, groups: map[int]int{5: 2}},
		{name: "two files, one key, the header again inside", files: []string{"networkId,recipient\n1," + x2 + "\nnetworkId,recipient\n2," + x2 + "\n", "NetworkId,Recipient\n1," + ed + "\n"},
			global: global, kind: ByNetwork, groups: map[int]int{1: 2, 2: 1}},
		{name: "post-quantum with post-quantum", files: []string{"networkId,recipient\n9," + pq + "\n"},
			global: globalPQ, kind: ByNetwork, groups: map[int]int{9: 1}},
		{name: "no global recipients (a dry run)", files: []string{"networkId,recipient\n9," + x + "\n"},
			kind: ByNetwork, groups: map[int]int{9: 1}},

		{name: "bad recipient", files: []string{"networkId,recipient\n1," + x2 + "\n2,age1nope\n"},
			global: global, wantErr: "line 3: recipient is not a valid age recipient"},
		{name: "secret key as recipient", files: []string{"networkId,recipient\n1," + secretKey + "\n"},
			global: global, wantErr: "line 2: recipient is a secret key"},
		{name: "empty recipient", files: []string{"networkId,recipient\n1,\n"},
			global: global, wantErr: "line 2: recipient is empty"},
		{name: "ID 0", files: []string{"networkId,recipient\n0," + x2 + "\n"},
			global: global, wantErr: "line 2: networkId is not an ID in 1..2147483647"},
		{name: "ID too large", files: []string{"mailboxId,recipient\n2147483648," + x2 + "\n"},
			global: global, wantErr: "line 2: mailboxId is not an ID in 1..2147483647"},
		{name: "ID not a number", files: []string{"networkId,recipient\n\n12a," + x2 + "\n"},
			global: global, wantErr: "line 3: networkId is not an ID"},
		{name: "columns swapped", files: []string{"networkId,recipient\n" + x2 + ",12\n"},
			global: global, wantErr: "line 2: networkId is not an ID"},
		{name: "header with both keys", files: []string{"networkId,mailboxId,recipient\n1,2," + x2 + "\n"},
			global: global, wantErr: "line 1: has both a networkId and a mailboxId column"},
		{name: "the other key's header inside", files: []string{"networkId,recipient\n1," + x2 + "\nmailboxId,recipient\n2," + x2 + "\n"},
			global: global, wantErr: "line 3: is a mailboxId header in a map keyed by networkId"},
		{name: "files of different keys", files: []string{"networkId,recipient\n1," + x2 + "\n", "mailboxId,recipient\n2," + x2 + "\n"},
			global: global, wantErr: "is keyed by mailboxId, but --recipients-map"},
		{name: "no key column", files: []string{"userId,recipient\n1," + x2 + "\n"},
			global: global, wantErr: "line 1: has no networkId or mailboxId column"},
		{name: "no recipient column", files: []string{"networkId,key\n1," + x2 + "\n"},
			global: global, wantErr: "line 1: has no recipient column"},
		{name: "no header", files: []string{"12," + x2 + "\n"},
			global: global, wantErr: "line 1: is not a header networkId,recipient"},
		{name: "two recipient columns", files: []string{"networkId,recipient,Recipient\n1," + x2 + "," + x2 + "\n"},
			global: global, wantErr: "line 1: columns 2 and 3 are both recipient"},
		{name: "empty", files: []string{"\n\n"}, global: global, wantErr: "is empty"},
		{name: "header only", files: []string{"networkId,recipient\n"}, global: global, wantErr: "has no rows"},
		{name: "too few fields", files: []string{"recipient,networkId\n" + x2 + "\n"},
			global: global, wantErr: "line 2: too few fields"},
		{name: "unclosed quote", files: []string{"networkId,recipient\n1,\"" + x2 + "\n"},
			global: global, wantErr: "line 2"},
		{name: "classic in a post-quantum run", files: []string{"networkId,recipient\n1," + x2 + "\n"},
			global: globalPQ, wantErr: "line 2: recipient is classic, but the others (and the global recipients) are post-quantum"},
		{name: "post-quantum and classic in the map", files: []string{"networkId,recipient\n1," + x2 + "\n2," + pq + "\n"},
			wantErr: "line 3: recipient is post-quantum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var paths []string
			for i, c := range tt.files {
				paths = append(paths, writeTemp(t, dir, "map"+string(rune('a'+i))+".csv", c))
			}
			m, err := ParseRecipientsMap(paths, tt.global)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "--recipients-map "+dir) {
					t.Errorf("error %q does not name the file", err)
				}
				for _, secretish := range []string{secretKey, "age1nope", x2, "12a"} {
					if strings.Contains(err.Error(), secretish) {
						t.Errorf("error %q echoes a cell", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind != tt.kind {
				t.Errorf("kind %v, want %v", m.Kind, tt.kind)
			}
			got := map[int]int{}
			for _, id := range m.Groups() {
				got[id] = m.Recipients(Group{Kind: m.Kind, ID: id})
			}
			if !mapsEqual(got, tt.groups) {
				t.Errorf("groups %v, want %v", got, tt.groups)
			}
		})
	}
	if m, err := ParseRecipientsMap(nil, global); m != nil || err != nil {
		t.Fatalf("no files: %v %v", m, err)
	}
	if _, err := ParseRecipientsMap([]string{filepath.Join(t.TempDir(), "absent.csv")}, global); err == nil || !strings.Contains(err.Error(), "absent.csv") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestRecipientsMapGroups(t *testing.T) {
	x := mustX25519(t).Recipient().String()
	dir := t.TempDir()
	a := writeTemp(t, dir, "a.csv", "networkId,recipient\n12,"+x+"\n")
	b := writeTemp(t, dir, "b.csv", "networkId,recipient\n7,"+x+"\n")
	m, err := ParseRecipientsMap([]string{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(a)
	if sum := sha256.Sum256(raw); m.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("one file's sha256 %s is not the file's", m.SHA256)
	}
	ab, err := ParseRecipientsMap([]string{a, b}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ba, err := ParseRecipientsMap([]string{b, a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ab.SHA256 != ba.SHA256 || ab.SHA256 == m.SHA256 {
		t.Errorf("sha256 of two files: %s and %s (one: %s)", ab.SHA256, ba.SHA256, m.SHA256)
	}
	if g := m.GroupOf(12); g != (Group{Kind: ByNetwork, ID: 12}) || g.String() != "network-12" || g.Global() {
		t.Errorf("GroupOf(12) = %v", g)
	}
	for _, id := range []int{0, 7} {
		if g := m.GroupOf(id); !g.Global() || g.String() != "global" {
			t.Errorf("GroupOf(%d) = %v, want the global group", id, g)
		}
	}
	var none *RecipientsMap
	if g := none.GroupOf(12); !g.Global() || none.Groups() != nil || none.Recipients(Group{Kind: ByNetwork, ID: 12}) != 0 {
		t.Error("a nil map has groups")
	}
	if !slices.Equal(ab.Groups(), []int{7, 12}) || ab.Rows != 2 {
		t.Errorf("groups %v rows %d", ab.Groups(), ab.Rows)
	}
}

func TestGroupNames(t *testing.T) {
	for _, tt := range []struct {
		s  string
		g  Group
		ok bool
	}{
		{"global", Group{}, true},
		{"", Group{}, true},
		{"network-12", Group{ByNetwork, 12}, true},
		{"mailbox-2147483647", Group{ByMailbox, 2147483647}, true},
		{"network-0", Group{}, false},
		{"network-012", Group{}, false},
		{"network-2147483648", Group{}, false},
		{"network-+1", Group{}, false},
		{"Network-1", Group{}, false},
		{"network", Group{}, false},
		{"team-1", Group{}, false},
	} {
		g, err := ParseGroup(tt.s)
		if (err == nil) != tt.ok || g != tt.g {
			t.Errorf("ParseGroup(%q) = %v, %v", tt.s, g, err)
		}
	}
	for _, tt := range []struct {
		name string
		gen  int
		g    Group
		ok   bool
	}{
		{"passwords-g0001.age", 1, Group{}, true},
		{"passwords-g0001-network-12.age", 1, Group{ByNetwork, 12}, true},
		{"passwords-g12345-mailbox-7.age", 12345, Group{ByMailbox, 7}, true},
		{"passwords-g0001-global.age", 0, Group{}, false},
		{"passwords-g1-network-12.age", 0, Group{}, false},
		{"passwords-g0001-network-012.age", 0, Group{}, false},
		{"passwords-g0001-network-12.age.tmp", 0, Group{}, false},
		{"passwords-g0000-network-12.age", 0, Group{}, false},
		{"passwords-g0001-network-12-x.age", 0, Group{}, false},
	} {
		gen, g, ok := ParseSealedName(tt.name)
		if ok != tt.ok || gen != tt.gen || g != tt.g {
			t.Errorf("ParseSealedName(%q) = %d, %v, %v", tt.name, gen, g, ok)
		}
		if tt.ok && SealedGroupName(gen, g) != tt.name {
			t.Errorf("SealedGroupName(%d, %v) = %s", gen, g, SealedGroupName(gen, g))
		}
	}
	if final, ok := TempFinal("passwords-g0002-network-3.age.tmp"); !ok || final != "passwords-g0002-network-3.age" {
		t.Errorf("TempFinal of a group file's temporary file: %q %v", final, ok)
	}
}

func mustX25519(t testing.TB) *age.X25519Identity {
	t.Helper()
	k, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustParseRecipients(t testing.TB, values ...string) []age.Recipient {
	t.Helper()
	r, err := ParseRecipients(values, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mapsEqual(a, b map[int]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestCondenseSealed: the files of many groups of one generation in one
// folder become one pattern; a few stay as they are; order is kept.
func TestCondenseSealed(t *testing.T) {
	in := []string{"out/results.csv", "out/passwords-g0001.age"}
	for n := 1; n <= 6; n++ {
		in = append(in, filepath.Join("out", SealedGroupName(1, Group{ByNetwork, n})))
	}
	in = append(in, "out/passwords-g0002-network-3.age", "out/shard-1/passwords-g0001-network-1.age", "out/apikeys-00001.age")
	want := []string{"out/results.csv", "out/passwords-g0001.age", "out/passwords-g0001-network-*.age (6 files)",
		"out/passwords-g0002-network-3.age", "out/shard-1/passwords-g0001-network-1.age", "out/apikeys-00001.age"}
	if got := CondenseSealed(in); !slices.Equal(got, want) {
		t.Errorf("CondenseSealed\n%q\nwant\n%q", got, want)
	}
	few := in[:6]
	if got := CondenseSealed(few); !slices.Equal(got, few) {
		t.Errorf("four group files condensed: %q", got)
	}
}
