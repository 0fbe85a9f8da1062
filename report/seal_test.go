package report

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"pwrotate/rotate/secret"
)

// testPasswords includes characters that need CSV quoting.
var testPasswords = map[int]secret.Password{
	1042:       "Xq7#mZ2!pLr9^Tw4kV8_",
	7:          `a,b"c D1!`,
	2147483647: " Lead1ng-space~",
	55:         "=Formula1a",
}

func pairs(m map[int]secret.Password) iter.Seq2[int, secret.Password] {
	return func(yield func(int, secret.Password) bool) {
		for _, id := range slices.Sorted(func(y func(int) bool) {
			for k := range m {
				if !y(k) {
					return
				}
			}
		}) {
			if !yield(id, m[id]) {
				return
			}
		}
	}
}

func wantSealed(m map[int]secret.Password, gen int) []Sealed {
	var out []Sealed
	for id, pw := range m {
		out = append(out, Sealed{UserID: id, Password: pw, Generation: gen})
	}
	slices.SortFunc(out, func(a, b Sealed) int { return a.UserID - b.UserID })
	return out
}

func TestSealRoundTrip(t *testing.T) {
	for _, k := range testKeys(t) {
		t.Run(k.name, func(t *testing.T) {
			dir := t.TempDir()
			keyDir := t.TempDir()
			recips, err := ParseRecipients([]string{k.recipient}, nil)
			if err != nil {
				t.Fatal(err)
			}
			path, err := Seal(dir, 3, recips, pairs(testPasswords))
			if err != nil {
				t.Fatal(err)
			}
			if path != filepath.Join(dir, "passwords-g0003.age") {
				t.Fatalf("path %s", path)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", st.Mode().Perm())
			}
			assertNoTemp(t, dir)

			raw, _ := os.ReadFile(path)
			if !bytes.HasPrefix(raw, []byte("age-encryption.org/v1\n")) {
				t.Errorf("not an age file")
			}
			for _, pw := range testPasswords {
				if bytes.Contains(raw, []byte(pw.Reveal())) {
					t.Errorf("a plaintext password is in the sealed file")
				}
			}
			if bytes.Contains(raw, []byte("userId,password")) {
				t.Errorf("plaintext header in the sealed file")
			}

			ids, err := ParseIdentities([]string{writeTemp(t, keyDir, "TEST-ONLY-identity", k.identity)})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadSealed(path, ids)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, wantSealed(testPasswords, 3)) {
				t.Fatalf("ReadSealed: got %d rows, not the sealed ones", len(got))
			}

			// age's own Decrypt, and a plain CSV parser.
			f, _ := os.Open(path)
			defer f.Close()
			plain, err := age.Decrypt(f, ids...)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := csv.NewReader(plain).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(recs[0], []string{"userId", "password", "generation"}) {
				t.Fatalf("header %q", recs[0])
			}
			for _, rec := range recs[1:] {
				id, _ := strconv.Atoi(rec[0])
				if secret.Password(rec[1]) != testPasswords[id] || rec[2] != "3" {
					t.Errorf("user %s: row does not match what was sealed", rec[0])
				}
			}
			if len(recs) != len(testPasswords)+1 {
				t.Errorf("%d records", len(recs))
			}

			ageCLI(t, path, strings.HasPrefix(k.recipient, "age1pq1"), filepath.Join(keyDir, "TEST-ONLY-identity"))
		})
	}
}

// ageCLI decrypts path with the stock age binary when it is installed and
// can read it: an age older than v1.3 cannot open a file sealed to a
// post-quantum recipient (pq), and that check is then skipped, naming the
// version, unless PWROTATE_REQUIRE_AGE=1.
func ageCLI(t *testing.T, path string, pq bool, identityFile string) {
	t.Helper()
	bin, tooOld, err := stockAge(pq)
	if err != nil {
		t.Fatal(err)
	}
	const install = "go install filippo.io/age/cmd/age@$(go list -m -f '{{.Version}}' filippo.io/age)"
	switch {
	case tooOld != "" && requireStockAge():
		t.Fatalf("%s; PWROTATE_REQUIRE_AGE=1 needs one that can (%s)", tooOld, install)
	case tooOld != "":
		t.Skipf("%s: skipping the check with the stock CLI (PWROTATE_REQUIRE_AGE=1 makes this a failure)", tooOld)
	case bin == "" && requireStockAge():
		t.Fatalf("age binary not on PATH; PWROTATE_REQUIRE_AGE=1 needs it (%s)", install)
	case bin == "":
		t.Log("age binary not on PATH: skipping the check with the stock CLI")
		return
	}
	out, err := exec.Command(bin, "-d", "-i", identityFile, path).Output()
	if err != nil {
		t.Fatalf("%s -d: %v", bin, err)
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(recs) != len(testPasswords)+1 {
		t.Fatalf("age -d output: %d records, %v", len(recs), err)
	}
}

func TestSealMultipleRecipients(t *testing.T) {
	keys := testKeys(t)
	// Every classic recipient at once; each identity alone opens the file.
	var values []string
	for _, k := range keys {
		if k.name != "pq-hybrid" {
			values = append(values, k.recipient)
		}
	}
	recips, err := ParseRecipients(values, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, err := Seal(dir, 1, recips, pairs(testPasswords))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.name == "pq-hybrid" {
			continue
		}
		ids, err := ParseIdentities([]string{writeTemp(t, t.TempDir(), "id", k.identity)})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ReadSealed(path, ids); err != nil || len(got) != len(testPasswords) {
			t.Errorf("%s: %d rows, %v", k.name, len(got), err)
		}
	}
	// The PQ identity does not open it, and says so without detail.
	pqIDs, err := ParseIdentities([]string{writeTemp(t, t.TempDir(), "id", keys[1].identity)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSealed(path, pqIDs); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("wrong identity: %v", err)
	}
}

func TestSealRefusesToReplace(t *testing.T) {
	dir := t.TempDir()
	recips, _ := ParseRecipients([]string{testKeys(t)[0].recipient}, nil)
	first, err := Seal(dir, 1, recips, pairs(testPasswords))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(first)
	if _, err := Seal(dir, 1, recips, pairs(testPasswords)); err == nil {
		t.Fatal("Seal replaced an existing generation")
	}
	if after, _ := os.ReadFile(first); !bytes.Equal(before, after) {
		t.Fatal("existing sealed file changed")
	}
	if _, err := Seal(dir, 0, recips, pairs(testPasswords)); err == nil {
		t.Fatal("generation 0 accepted")
	}
	if _, err := Seal(dir, 2, nil, pairs(testPasswords)); err == nil {
		t.Fatal("no recipients accepted")
	}
}

func TestSealBadRowLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	recips, _ := ParseRecipients([]string{testKeys(t)[0].recipient}, nil)
	for name, m := range map[string]map[int]secret.Password{
		"empty password": {1: "Aa1!aaaaaaaa", 2: ""},
		"bad id":         {0: "Aa1!aaaaaaaa"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Seal(dir, 1, recips, pairs(m)); err == nil {
				t.Fatal("Seal accepted a bad row")
			} else if strings.Contains(err.Error(), "Aa1!") {
				t.Fatal("error holds a password")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Fatalf("left %v", entries)
			}
		})
	}
}

func TestSealedGenerations(t *testing.T) {
	dir := t.TempDir()
	recips, _ := ParseRecipients([]string{testKeys(t)[0].recipient}, nil)
	for _, g := range []int{2, 1, 10} {
		if _, err := Seal(dir, g, recips, pairs(testPasswords)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"passwords-g0003.age.tmp", "passwords-g1.age", "other.age", "passwords-g0004.agex"} {
		writeTemp(t, dir, name, "x")
	}
	gens, err := SealedGenerations(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gens, []int{1, 2, 10}) {
		t.Fatalf("gens %v", gens)
	}
	if _, err := os.Stat(filepath.Join(dir, "passwords-g0003.age.tmp")); !os.IsNotExist(err) {
		t.Fatal("leftover .age.tmp not removed")
	}
	if gens, err := SealedGenerations(filepath.Join(dir, "absent")); err != nil || len(gens) != 0 {
		t.Fatalf("absent dir: %v %v", gens, err)
	}
	if SealedName(1) != "passwords-g0001.age" || SealedName(12345) != "passwords-g12345.age" {
		t.Fatal("SealedName")
	}
}

// TestSealStreams checks that sealing 200,000 rows allocates far less than
// their plaintext: nothing is buffered per row.
func TestSealStreams(t *testing.T) {
	const n = 200_000
	pw := secret.Password(strings.Repeat("Ab1!", 10)) // 40 characters
	rows := func(yield func(int, secret.Password) bool) {
		for i := 1; i <= n; i++ {
			if !yield(i, pw) {
				return
			}
		}
	}
	recips, _ := ParseRecipients([]string{testKeys(t)[0].recipient}, nil)
	dir := t.TempDir()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	path, err := Seal(dir, 1, recips, rows)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("sealed %d rows: %d bytes on disk, %d bytes allocated", n, st.Size(), allocated)
	if st.Size() < n*45 {
		t.Fatalf("file too small: %d", st.Size())
	}
	if allocated > 2<<20 {
		t.Fatalf("allocated %d bytes for %d bytes of plaintext: Seal does not stream", allocated, st.Size())
	}
}

// BenchmarkSeal measures sealing throughput in plaintext bytes: "file" is
// Seal itself (fsyncs included), "stream" the CSV and age encryption alone.
func BenchmarkSeal(b *testing.B) {
	const n = 100_000
	pw := secret.Password("Xq7#mZ2!pLr9^Tw4kV8_abcd")
	rows := func(yield func(int, secret.Password) bool) {
		for i := 1; i <= n; i++ {
			if !yield(1_000_000+i, pw) {
				return
			}
		}
	}
	size := int64(len("userId,password,generation\n"))
	for i := 1; i <= n; i++ {
		size += int64(len(fmt.Sprintf("%d,%s,1\n", 1_000_000+i, pw.Reveal())))
	}
	recips, _ := ParseRecipients([]string{testKeys(b)[0].recipient}, nil)
	b.Run("file", func(b *testing.B) {
		dir := b.TempDir()
		b.SetBytes(size)
		gen := 0
		for b.Loop() {
			gen++
			if _, err := Seal(dir, gen, recips, rows); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stream", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if err := writeSealed(io.Discard, 1, recips, rows); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestParseRecipients(t *testing.T) {
	keys := testKeys(t)
	x, pq, ed, rsa := keys[0], keys[1], keys[2], keys[3]
	secretX, _ := age.GenerateX25519Identity()
	secretLine := secretX.String()
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	sshPrivate := opensshPEM(t, edPriv)
	dir := t.TempDir()

	good := writeTemp(t, dir, "good", "# team keys\n\n"+x.recipient+"\n  "+ed.recipient+"  \r\n# end\n")
	withSecret := writeTemp(t, dir, "secret", "# keys\n"+x.recipient+"\n"+secretLine+"\n")
	withPEM := writeTemp(t, dir, "pem", sshPrivate)
	empty := writeTemp(t, dir, "empty", "# nothing here\n\n")
	garbage := writeTemp(t, dir, "garbage", x.recipient+"\nhunter2-not-a-key\n")

	tests := []struct {
		name   string
		values []string
		files  []string
		want   int
		errHas []string
		noEcho []string
	}{
		{name: "x25519", values: []string{x.recipient}, want: 1},
		{name: "pq", values: []string{pq.recipient}, want: 1},
		{name: "ssh", values: []string{ed.recipient, rsa.recipient}, want: 2},
		{name: "file", files: []string{good}, want: 2},
		{name: "values and file", values: []string{rsa.recipient}, files: []string{good}, want: 3},
		{name: "nothing", errHas: []string{"no age recipients"}},
		{name: "secret key value", values: []string{x.recipient, secretLine},
			errHas: []string{"--recipient #2", "is a secret key, not a recipient: remove it"}, noEcho: []string{secretLine, secretLine[20:40]}},
		{name: "lowercase secret key", values: []string{strings.ToLower(secretLine)},
			errHas: []string{"secret key"}, noEcho: []string{strings.ToLower(secretLine)[20:40]}},
		{name: "secret key in file", files: []string{withSecret},
			errHas: []string{withSecret, "line 3 is a secret key, not a recipient: remove it"}, noEcho: []string{secretLine[20:40]}},
		{name: "ssh private key file", files: []string{withPEM},
			errHas: []string{withPEM, "line 1 is a secret key"}, noEcho: []string{strings.Split(sshPrivate, "\n")[1][:30]}},
		{name: "empty file", files: []string{empty}, errHas: []string{empty, "no recipients"}},
		{name: "missing file", files: []string{filepath.Join(dir, "absent")}, errHas: []string{"absent"}},
		{name: "garbage line", files: []string{garbage}, errHas: []string{garbage, "line 2 is not a recipient"}, noEcho: []string{"hunter2"}},
		{name: "bad age1", values: []string{"age1qqqqhunter2"}, errHas: []string{"--recipient #1", "not a valid age recipient"}, noEcho: []string{"hunter2"}},
		{name: "bad ssh", values: []string{"ssh-ed25519 AAAAhunter2"}, errHas: []string{"not a valid ssh-ed25519 public key"}, noEcho: []string{"hunter2"}},
		{name: "ecdsa", values: []string{"ecdsa-sha2-nistp256 AAAAhunter2"}, errHas: []string{"type age cannot encrypt to"}, noEcho: []string{"hunter2"}},
		{name: "mixed pq and classic", values: []string{x.recipient, pq.recipient}, errHas: []string{"cannot be mixed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecipients(tt.values, tt.files)
			if tt.errHas == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != tt.want {
					t.Fatalf("%d recipients, want %d", len(got), tt.want)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tt.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			for _, s := range tt.noEcho {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error echoes the value: %q", err)
				}
			}
		})
	}
}

func TestParseIdentities(t *testing.T) {
	keys := testKeys(t)
	dir := t.TempDir()
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(edPriv, "test-only", []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	encrypted := writeTemp(t, dir, "encrypted", string(pem.EncodeToMemory(enc)))
	both := writeTemp(t, dir, "both", keys[0].identity+"\n# second\n"+keys[0].identity)
	recipient := writeTemp(t, dir, "recipient", keys[0].recipient+"\n")
	badLine := writeTemp(t, dir, "bad", "# ok\nAGE-SECRET-KEY-1HUNTER2HUNTER2\n")
	junk := writeTemp(t, dir, "junk", "hunter2\n")
	badPEM := writeTemp(t, dir, "badpem", "-----BEGIN OPENSSH PRIVATE KEY-----\nhunter2\n-----END OPENSSH PRIVATE KEY-----\n")
	ageEncrypted := writeTemp(t, dir, "ageenc", "age-encryption.org/v1\n-> scrypt xx\n")

	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			ids, err := ParseIdentities([]string{writeTemp(t, t.TempDir(), "id", k.identity)})
			if err != nil || len(ids) != 1 {
				t.Fatalf("%d identities, %v", len(ids), err)
			}
		})
	}
	t.Run("two in one file", func(t *testing.T) {
		if ids, err := ParseIdentities([]string{both}); err != nil || len(ids) != 2 {
			t.Fatalf("%d identities, %v", len(ids), err)
		}
	})
	for _, tt := range []struct {
		name   string
		files  []string
		errHas []string
	}{
		{"none", nil, []string{"no identities"}},
		{"encrypted ssh", []string{encrypted}, []string{encrypted, "passphrase-protected", "decrypt"}},
		{"recipient", []string{recipient}, []string{recipient, "line 1 is a public key"}},
		{"malformed", []string{badLine}, []string{badLine, "line 2 is a malformed"}},
		{"junk", []string{junk}, []string{junk, "line 1 is not an age identity"}},
		{"bad pem", []string{badPEM}, []string{badPEM, "not a usable SSH private key"}},
		{"age encrypted", []string{ageEncrypted}, []string{"decrypt it first"}},
		{"missing", []string{filepath.Join(dir, "absent")}, []string{"absent"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIdentities(tt.files)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tt.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if strings.Contains(strings.ToLower(err.Error()), "hunter2") {
				t.Errorf("error echoes key material: %q", err)
			}
		})
	}
}

func TestReadSealedErrors(t *testing.T) {
	k := testKeys(t)[0]
	ids, _ := ParseIdentities([]string{writeTemp(t, t.TempDir(), "id", k.identity)})
	recips, _ := ParseRecipients([]string{k.recipient}, nil)
	dir := t.TempDir()
	path, err := Seal(dir, 1, recips, pairs(testPasswords))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	truncated := writeTemp(t, dir, "truncated.age", string(raw[:len(raw)-10]))
	if _, err := ReadSealed(truncated, ids); err == nil || !strings.Contains(err.Error(), truncated) {
		t.Fatalf("truncated file: %v", err)
	}
	// A plaintext that is not our CSV.
	var buf bytes.Buffer
	w, _ := age.Encrypt(&buf, recips...)
	fmt.Fprint(w, "userId,password,generation\n12,Secret1!xyz,notanumber\n")
	w.Close()
	bad := writeTemp(t, dir, "bad.age", buf.String())
	_, err = ReadSealed(bad, ids)
	if err == nil || !strings.Contains(err.Error(), "line 2") || strings.Contains(err.Error(), "Secret1!") {
		t.Fatalf("bad row: %v", err)
	}
}

// TestWriteSealedFile checks both ways a sealed file gets its name: written
// unnamed and linked (Linux), or written as "<final>.tmp" and renamed. Only
// a complete file ever has the final name, an existing file is never
// replaced, and a failure leaves nothing behind.
func TestWriteSealedFile(t *testing.T) {
	writers := map[string]func(string, func(io.Writer) error) error{
		"unnamed": writeSealedFile,
		"renamed": writeSealedFileRenamed,
	}
	for wname, write := range writers {
		for _, tc := range []struct {
			name string
			// during runs inside fill, with the folder and the final name.
			during  func(t *testing.T, dir, final string) error
			wantErr string
			want    []string // the folder's names afterwards
		}{
			{"complete", func(t *testing.T, dir, final string) error {
				entries, _ := os.ReadDir(dir)
				if wname == "unnamed" && runtime.GOOS == "linux" && len(entries) != 0 {
					t.Errorf("while writing, the folder holds %v; want nothing (O_TMPFILE)", entries)
				}
				if _, err := os.Lstat(final); err == nil {
					t.Error("the final name exists before the file is complete")
				}
				return nil
			}, "", []string{"f.age"}},
			{"fill fails", func(*testing.T, string, string) error {
				return errors.New("no more rows")
			}, "no more rows", nil},
			{"final appears", func(_ *testing.T, _, final string) error {
				return os.WriteFile(final, []byte("theirs"), 0o600)
			}, "refusing to replace it", []string{"f.age"}},
			{"fill panics", func(*testing.T, string, string) error {
				panic("a bug in a row source")
			}, "panic", nil},
		} {
			t.Run(wname+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				final := filepath.Join(dir, "f.age")
				err := func() (err error) {
					defer func() {
						if p := recover(); p != nil {
							err = fmt.Errorf("panic: %v", p)
						}
					}()
					return write(final, func(w io.Writer) error {
						if _, err := io.WriteString(w, "ciphertext"); err != nil {
							return err
						}
						return tc.during(t, dir, final)
					})
				}()
				if tc.wantErr == "" && err != nil {
					t.Fatal(err)
				}
				if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				var names []string
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					names = append(names, e.Name())
				}
				if !slices.Equal(names, tc.want) {
					t.Fatalf("folder holds %v, want %v", names, tc.want)
				}
				if tc.want == nil {
					return
				}
				data, _ := os.ReadFile(final)
				st, _ := os.Stat(final)
				switch {
				case tc.wantErr == "" && string(data) != "ciphertext":
					t.Fatalf("file holds %q", data)
				case tc.wantErr != "" && string(data) != "theirs":
					t.Fatalf("the existing file was replaced: %q", data)
				case tc.wantErr == "" && st.Mode().Perm() != 0o600:
					t.Fatalf("mode %v, want 0600", st.Mode().Perm())
				}
			})
		}
	}
}
