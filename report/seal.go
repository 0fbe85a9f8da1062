package report

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"

	"pwrotate/rotate/secret"
)

// maxKeyFileBytes bounds the recipients and identity files read.
const maxKeyFileBytes = 1 << 20

// maxKeyLineBytes bounds one line of a recipients or identities file (as
// age and sshd do).
const maxKeyLineBytes = 16 << 10

// ParseRecipients parses the age recipients given as --recipient values and
// in --recipients-file files (one a line; blank lines and lines starting
// with '#' skipped). A recipient is an X25519 key (age1…), a post-quantum
// hybrid key (age1pq1…), or an SSH public key ("ssh-ed25519 …", "ssh-rsa …"
// of at least 2048 bits). Errors name the flag or the file and line but
// never echo the value: a secret key pasted by mistake is called out as
// such. Post-quantum and classic recipients cannot be mixed. Having no
// recipient at all is an error.
func ParseRecipients(values []string, files []string) ([]age.Recipient, error) {
	var recips []age.Recipient
	for i, v := range values {
		r, err := parseRecipient(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("--recipient #%d %w", i+1, err)
		}
		recips = append(recips, r)
	}
	for _, name := range files {
		rs, err := parseRecipientsFile(name)
		if err != nil {
			return nil, err
		}
		recips = append(recips, rs...)
	}
	if len(recips) == 0 {
		return nil, errors.New("no age recipients: give --recipient or --recipients-file")
	}
	pq := 0
	for _, r := range recips {
		if _, ok := r.(*age.HybridRecipient); ok {
			pq++
		}
	}
	if pq != 0 && pq != len(recips) {
		return nil, errors.New("recipients: post-quantum (age1pq1…) and classic recipients cannot be mixed: the file would not be safe against quantum computers")
	}
	return recips, nil
}

// parseRecipientsFile parses one recipients file.
func parseRecipientsFile(name string) ([]age.Recipient, error) {
	data, err := readKeyFile(name)
	if err != nil {
		return nil, fmt.Errorf("--recipients-file %s: %w", name, err)
	}
	var recips []age.Recipient
	err = eachKeyLine(data, func(n int, line string) error {
		r, err := parseRecipient(line)
		if err != nil {
			return fmt.Errorf("line %d %w", n, err)
		}
		recips = append(recips, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("--recipients-file %s: %w", name, err)
	}
	if len(recips) == 0 {
		return nil, fmt.Errorf("--recipients-file %s has no recipients", name)
	}
	return recips, nil
}

// eachKeyLine calls fn with each line of a key file (1-based number,
// trimmed), skipping blank lines and # comments. Its errors name the line,
// never its content.
func eachKeyLine(data []byte, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxKeyLineBytes)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d is too long", n+1)
		}
		return err
	}
	return nil
}

// readKeyFile reads a small key file whole.
func readKeyFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFileBytes {
		return nil, errors.New("file is too large")
	}
	return data, nil
}

// looksSecret reports whether s looks like private key material.
func looksSecret(s string) bool {
	u := strings.ToUpper(s)
	return strings.HasPrefix(u, "AGE-SECRET-KEY") || strings.HasPrefix(u, "AGE-PLUGIN-") ||
		strings.Contains(u, "PRIVATE KEY")
}

// parseRecipient parses one recipient. Its errors complete a sentence that
// starts with where the value came from ("line 3 …") and never hold the
// value. The underlying parse errors are dropped on purpose: age quotes the
// value in them.
func parseRecipient(s string) (age.Recipient, error) {
	if looksSecret(s) {
		return nil, errors.New("is a secret key, not a recipient: remove it (and treat that key as exposed)")
	}
	switch {
	case s == "":
		return nil, errors.New("is empty")
	case strings.HasPrefix(s, "age1pq1"):
		r, err := age.ParseHybridRecipient(s)
		if err != nil {
			return nil, errors.New("is not a valid post-quantum age recipient (age1pq1…)")
		}
		return r, nil
	case strings.HasPrefix(s, "age1"):
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, errors.New("is not a valid age recipient (age1…; plugin recipients are not supported)")
		}
		fast, err := newX25519Recipient(r)
		if err != nil {
			return nil, errors.New("is not a valid age recipient (age1…)")
		}
		return fast, nil
	case strings.HasPrefix(s, "ssh-ed25519 "), strings.HasPrefix(s, "ssh-rsa "):
		typ, _, _ := strings.Cut(s, " ")
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
		if err != nil || pk.Type() != typ {
			return nil, fmt.Errorf("is not a valid %s public key", typ)
		}
		r, err := agessh.ParseRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("is not a usable %s recipient (RSA keys need at least 2048 bits)", typ)
		}
		return r, nil
	case strings.HasPrefix(s, "ssh-"), strings.HasPrefix(s, "ecdsa-"), strings.HasPrefix(s, "sk-"):
		return nil, errors.New("is an SSH key of a type age cannot encrypt to (use ssh-ed25519 or ssh-rsa)")
	default:
		return nil, errors.New("is not a recipient (want age1…, age1pq1…, ssh-ed25519 … or ssh-rsa …)")
	}
}

// Sealed is one row of a sealed file.
type Sealed struct {
	// UserID is the user.
	UserID int
	// Password is the password sealed for that user.
	Password secret.Password
	// Generation is the generation the password belongs to.
	Generation int
}

// sealedHeader is the header row of a sealed file's plaintext CSV: the csv
// tags of sealedRecord.
var sealedHeader = CSVHeader[sealedRecord]()

// SealedName is the file name of the sealed passwords of generation gen,
// e.g. "passwords-g0001.age".
func SealedName(gen int) string {
	return fmt.Sprintf("%s%04d%s", sealedPrefix, gen, sealedSuffix)
}

// SealedGroupName is the file name of group g's passwords of generation
// gen: SealedName(gen) for the global group, else the group follows the
// generation, e.g. "passwords-g0001-network-12.age", so that the files of
// one group are "passwords-g*-network-12.age".
func SealedGroupName(gen int, g Group) string {
	if g.Global() {
		return SealedName(gen)
	}
	return fmt.Sprintf("%s%04d-%s%s", sealedPrefix, gen, g, sealedSuffix)
}

// ParseSealedName returns the generation and the group of a file named
// SealedGroupName(gen, g) (SealedName(gen): the global group).
func ParseSealedName(name string) (gen int, g Group, ok bool) {
	rest, ok := strings.CutPrefix(name, sealedPrefix)
	if !ok {
		return 0, Group{}, false
	}
	if rest, ok = strings.CutSuffix(rest, sealedSuffix); !ok {
		return 0, Group{}, false
	}
	digits, group, grouped := strings.Cut(rest, "-")
	gen, err := strconv.Atoi(digits)
	if err != nil || gen < 1 {
		return 0, Group{}, false
	}
	if grouped {
		if g, err = ParseGroup(group); err != nil || g.Global() {
			return 0, Group{}, false
		}
	}
	if SealedGroupName(gen, g) != name {
		return 0, Group{}, false
	}
	return gen, g, true
}

// sealedGen returns the generation of a file named SealedGroupName(gen, g).
func sealedGen(name string) (int, bool) {
	gen, _, ok := ParseSealedName(name)
	return gen, ok
}

// Seal writes the passwords of generation gen, encrypted with age to
// recips, as dir/SealedName(gen), and returns that path. rows yields
// (userId, password) pairs; the plaintext is the CSV
// "userId,password,generation" with a header row, streamed: memory use does
// not grow with the number of rows. The ciphertext goes to a file (0600)
// that gets the final name only once fsynced (see sealFile), and the folder
// is fsynced: only a complete, durable file ever has the final name. An
// existing sealed file of that generation is never replaced.
func Seal(dir string, gen int, recips []age.Recipient, rows iter.Seq2[int, secret.Password]) (string, error) {
	if gen < 1 {
		return "", fmt.Errorf("sealing: generation %d is not positive", gen)
	}
	if len(recips) == 0 {
		return "", errors.New("sealing: no recipients")
	}
	final := filepath.Join(dir, SealedName(gen))
	return final, sealFile(final, func(w io.Writer) error {
		return writeSealed(w, gen, recips, rows)
	})
}

// sealFile writes a new sealed file final: fill streams the age ciphertext
// into a file without a name (O_TMPFILE, on Linux) or named "<final>.tmp"
// (0600), which is fsynced and then linked or renamed as final, and the
// folder is fsynced: only a complete, durable file ever has the final name.
// An existing file final is never replaced.
func sealFile(final string, fill func(w io.Writer) error) error {
	if err := writeSealedFile(final, fill); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(final)); err != nil {
		// The file is complete under its final name; only the durability of
		// the name is in doubt. Keep it, and report.
		return fmt.Errorf("sealing %s: %w", final, err)
	}
	return nil
}

// writeSealedFile is sealFile without the fsync of the folder: the caller
// fsyncs it once the files it writes are all named. The file is written
// without a name (O_TMPFILE) and linked as final once fsynced, or, where
// that is not available, under "<final>.tmp" and renamed.
func writeSealedFile(final string, fill func(w io.Writer) error) (err error) {
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("sealing: %s already exists: refusing to replace sealed secrets", final)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sealing: %w", err)
	}
	f, link, ok, err := createUnnamed(filepath.Dir(final))
	if err != nil {
		return fmt.Errorf("sealing: %w", err)
	}
	if !ok {
		return writeSealedFileRenamed(final, fill)
	}
	done := false
	defer func() {
		if !done { // an error, or a panic in fill
			_ = f.Close()
		}
	}()
	if err := fillAndSync(f, final, fill); err != nil {
		return err
	}
	if err := link(final); err != nil {
		return fmt.Errorf("sealing: %w", err)
	}
	// The link count the link set is the inode's: a file system without
	// a journal (ext2, ext4 without one) writes it only with the file, not
	// with the folder's fsync, so the file is fsynced once more, or a
	// crash could leave the name on an inode that is free on disk.
	if err := f.Sync(); err != nil {
		_ = os.Remove(final)
		return fmt.Errorf("sealing %s: fsync: %w", final, err)
	}
	done = true
	if err := f.Close(); err != nil {
		_ = os.Remove(final)
		return fmt.Errorf("sealing %s: %w", final, err)
	}
	return nil
}

// fillAndSync writes the ciphertext of final into f and fsyncs it.
func fillAndSync(f *os.File, final string, fill func(w io.Writer) error) error {
	if err := fill(f); err != nil {
		return fmt.Errorf("sealing %s: %w", final, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sealing %s: fsync: %w", final, err)
	}
	return nil
}

// writeSealedFileRenamed is writeSealedFile through a temporary name:
// "<final>.tmp" (0600) is written, fsynced and renamed to final, never
// replacing it.
func writeSealedFileRenamed(final string, fill func(w io.Writer) error) (err error) {
	tmp := final + tmpSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sealing: removing leftover %s: %w", tmp, err)
	}
	f, err := OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("sealing: %w", err)
	}
	done := false
	defer func() {
		if !done { // an error, or a panic in fill
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := fillAndSync(f, final, fill); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sealing %s: %w", final, err)
	}
	if err := renameNoReplace(tmp, final); err != nil {
		return fmt.Errorf("sealing: %w", err)
	}
	done = true
	return nil
}

// checkAndRename renames old to new unless new exists, where the file
// system cannot refuse to replace it by itself: a file appearing between
// the check and the rename is replaced.
func checkAndRename(old, new string) error {
	if _, err := os.Lstat(new); err == nil {
		return errAppeared(new)
	}
	return os.Rename(old, new)
}

// errAppeared reports that the name a sealed file was to take appeared
// while it was written.
func errAppeared(name string) error {
	return fmt.Errorf("%s appeared while sealing: refusing to replace it: %w", name, fs.ErrExist)
}

// writeSealed streams the encrypted CSV to w.
func writeSealed(w io.Writer, gen int, recips []age.Recipient, rows iter.Seq2[int, secret.Password]) error {
	return writeSealedWith(w, gen, recips, rows, &sealScratch{})
}

// sealScratch is the memory writeSealed reuses from one file to the next
// (SealGroups writes many small files): the plaintext's buffers, zeroed
// after each file, and the ciphertext's.
type sealScratch struct {
	bw  *bufio.Writer
	buf []byte
	cw  *bufio.Writer
}

// cipherBuf is the size of the buffer between age and the file. age
// writes its header a line at a time, so without it a small file costs a
// dozen write calls; age's 64 KiB chunks, but for the first, go past it
// uncopied.
const cipherBuf = 4 << 10

// writeSealedWith is writeSealed with the scratch memory sc.
func writeSealedWith(w io.Writer, gen int, recips []age.Recipient, rows iter.Seq2[int, secret.Password], sc *sealScratch) error {
	if sc.cw == nil {
		// Made on nil, then Reset: NewWriterSize would return w itself
		// were it a large enough *bufio.Writer, and Reset(nil) would cut
		// the caller's writer off.
		sc.cw = bufio.NewWriterSize(nil, cipherBuf)
	}
	sc.cw.Reset(w)
	defer sc.cw.Reset(nil)
	enc, err := age.Encrypt(sc.cw, recips...)
	if err != nil {
		return fmt.Errorf("encrypting: %w", err)
	}
	if err := writeSealedRowsWith(enc, gen, rows, sc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encrypting: %w", err)
	}
	if err := sc.cw.Flush(); err != nil {
		return fmt.Errorf("encrypting: %w", err)
	}
	return nil
}

// writeSealedRows writes the plaintext CSV of a sealed file to w.
func writeSealedRows(w io.Writer, gen int, rows iter.Seq2[int, secret.Password]) error {
	return writeSealedRowsWith(w, gen, rows, &sealScratch{})
}

// writeSealedRowsWith is writeSealedRows with the scratch memory sc.
func writeSealedRowsWith(w io.Writer, gen int, rows iter.Seq2[int, secret.Password], sc *sealScratch) error {
	// Rows are sealedRecords, written without reflection (gocsv costs twice
	// as much and allocates per cell, BenchmarkRowCodec): built in one
	// reused buffer and handed to age in 64 KiB pieces, no allocation per
	// row. age buffers and encrypts in 64 KiB chunks, so plaintext only
	// exists in memory. The row buffer and the bufio buffer are zeroed at
	// the end; age's chunk buffer keeps its last plaintext until the garbage
	// collector frees it (not zeroed). ReadSealed reads the rows back with
	// gocsv (TestRowCodecsAgree).
	if sc.bw == nil {
		sc.bw = bufio.NewWriterSize(w, 64<<10)
		sc.buf = make([]byte, 0, 256)
	} else {
		sc.bw.Reset(w)
	}
	bw := sc.bw
	genCell := strconv.Itoa(gen)
	buf := sc.buf[:0]
	defer func() { sc.buf = buf[:0] }()
	buf = append(buf, strings.Join(sealedHeader, ",")...)
	buf = append(buf, '\n')
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	for id, pw := range rows {
		if id < 1 || id > maxUserID {
			return fmt.Errorf("user id %d out of range", id)
		}
		if pw.Empty() {
			return fmt.Errorf("user %d: empty password", id)
		}
		buf = strconv.AppendInt(buf[:0], int64(id), 10)
		buf = append(buf, ',')
		buf = appendCSVField(buf, pw.Reveal())
		buf = append(buf, ',')
		buf = append(buf, genCell...)
		buf = append(buf, '\n')
		if _, err := bw.Write(buf); err != nil {
			clear(buf[:cap(buf)])
			wipeBuffer(bw)
			return err
		}
	}
	clear(buf[:cap(buf)])
	if err := bw.Flush(); err != nil {
		return err
	}
	wipeBuffer(bw)
	return nil
}

// wipeBuffer overwrites the buffer of bw, which held plaintext rows. Only
// for a buffer that is flushed, or whose content is dropped.
func wipeBuffer(bw *bufio.Writer) {
	bw.Reset(nil)
	b := bw.AvailableBuffer()
	clear(b[:cap(b)])
}

// appendCSVField appends s to buf as an RFC 4180 field, quoted when it
// holds a comma, a quote, a line break or a space.
func appendCSVField(buf []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '"', '\r', '\n', ' ', '\t':
			plain = false
		}
	}
	if plain {
		return append(buf, s...)
	}
	buf = append(buf, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			buf = append(buf, '"')
		}
		buf = append(buf, s[i])
	}
	return append(buf, '"')
}

// SealedGenerations returns the generations of the complete sealed files in
// dir (of every group), ascending, each once, and removes the leftover "*.age.tmp" files of an
// interrupted Seal. A missing dir has no generations.
func SealedGenerations(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing sealed files: %w", err)
	}
	var gens []int
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, sealedSuffix+tmpSuffix) && !e.IsDir() {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("removing leftover %s: %w", name, err)
			}
			continue
		}
		if gen, ok := sealedGen(name); ok && e.Type().IsRegular() {
			gens = append(gens, gen)
		}
	}
	slices.Sort(gens)
	return slices.Compact(gens), nil
}

// SealedFiles returns the names of the complete sealed password files in
// dir (of every group), sorted by generation, then the global group first,
// then by group. A missing dir has none.
func SealedFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing sealed files: %w", err)
	}
	type file struct {
		name string
		gen  int
		g    Group
	}
	var files []file
	for _, e := range entries {
		if gen, g, ok := ParseSealedName(e.Name()); ok && e.Type().IsRegular() {
			files = append(files, file{e.Name(), gen, g})
		}
	}
	slices.SortFunc(files, func(a, b file) int {
		return cmp.Or(cmp.Compare(a.gen, b.gen), cmp.Compare(a.g.Kind, b.g.Kind), cmp.Compare(a.g.ID, b.g.ID))
	})
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.name
	}
	return names, nil
}

// CondenseSealed returns paths (outputs of a run) with the files of the
// groups of one generation in one folder, when there are more than a few,
// as one pattern with their number, e.g. "OUT/passwords-g0001-network-*.age
// (1000 files)": for a screen or a log line, not to open. The order is
// kept (the pattern stands where its first file was).
func CondenseSealed(paths []string) []string {
	type key struct {
		dir  string
		gen  int
		kind GroupKind
	}
	const few = 4
	count := map[key]int{}
	keyOf := func(p string) (key, bool) {
		gen, g, ok := ParseSealedName(filepath.Base(p))
		if !ok || g.Global() {
			return key{}, false
		}
		return key{filepath.Dir(p), gen, g.Kind}, true
	}
	for _, p := range paths {
		if k, ok := keyOf(p); ok {
			count[k]++
		}
	}
	out := make([]string, 0, len(paths))
	done := map[key]bool{}
	for _, p := range paths {
		k, ok := keyOf(p)
		switch {
		case !ok || count[k] <= few:
			out = append(out, p)
		case !done[k]:
			done[k] = true
			pattern := fmt.Sprintf("%s%04d-%s-*%s", sealedPrefix, k.gen, k.kind, sealedSuffix)
			out = append(out, fmt.Sprintf("%s (%d files)", filepath.Join(k.dir, pattern), count[k]))
		}
	}
	return out
}

// ParseIdentities reads the identities that open sealed files, as
// `age -d -i` does: each file is an age identity file (AGE-SECRET-KEY-1…
// and AGE-SECRET-KEY-PQ-1… lines, '#' comments) or an unencrypted OpenSSH
// or PEM private key (ed25519 or RSA). A passphrase-protected key is an
// error that says to decrypt it first. Errors name the file and line, never
// key material.
func ParseIdentities(files []string) ([]age.Identity, error) {
	if len(files) == 0 {
		return nil, errors.New("no identities: give --identity FILE")
	}
	var ids []age.Identity
	for _, name := range files {
		got, err := parseIdentityFile(name)
		if err != nil {
			return nil, err
		}
		ids = append(ids, got...)
	}
	return ids, nil
}

// parseIdentityFile reads one identity file.
func parseIdentityFile(name string) ([]age.Identity, error) {
	data, err := readKeyFile(name)
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", name, err)
	}
	defer clear(data) // the file's bytes; the parsed identities hold their own copies
	trimmed := bytes.TrimSpace(data)
	switch {
	case bytes.HasPrefix(trimmed, []byte("age-encryption.org/")),
		bytes.HasPrefix(trimmed, []byte("-----BEGIN AGE ENCRYPTED FILE-----")):
		return nil, fmt.Errorf("identity file %s is itself encrypted with age: decrypt it first (age -d) to a private place", name)
	case bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		id, err := agessh.ParseIdentity(data)
		var missing *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &missing):
			return nil, fmt.Errorf("identity file %s is a passphrase-protected SSH key: decrypt a copy first (ssh-keygen -p -N '' -f COPY) and pass that copy", name)
		case err != nil:
			// The ssh package's messages are not guaranteed free of key
			// material: say what is supported instead.
			return nil, fmt.Errorf("identity file %s is not a usable SSH private key (age supports unencrypted ssh-ed25519 and ssh-rsa keys)", name)
		}
		return []age.Identity{id}, nil
	}
	var ids []age.Identity
	err = eachKeyLine(data, func(n int, line string) error {
		u := strings.ToUpper(line)
		var id age.Identity
		var err error
		switch {
		case strings.HasPrefix(u, "AGE-SECRET-KEY-PQ-1"):
			id, err = age.ParseHybridIdentity(line)
		case strings.HasPrefix(u, "AGE-SECRET-KEY-1"):
			id, err = age.ParseX25519Identity(line)
		case strings.HasPrefix(u, "AGE-PLUGIN-"):
			return fmt.Errorf("line %d is an age plugin identity: plugins are not supported", n)
		case strings.HasPrefix(line, "age1"), strings.HasPrefix(line, "ssh-"):
			return fmt.Errorf("line %d is a public key (recipient), not an identity", n)
		default:
			return fmt.Errorf("line %d is not an age identity", n)
		}
		if err != nil {
			return fmt.Errorf("line %d is a malformed age secret key", n)
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", name, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("identity file %s has no identities", name)
	}
	return ids, nil
}

// ReadSealed decrypts one sealed file with ids and returns its rows.
// Errors name the file and the plaintext line, never a password.
func ReadSealed(path string, ids []age.Identity) ([]Sealed, error) {
	dec := newRowDecoder[sealedRecord]()
	defer dec.reset()
	var out []Sealed
	err := readSealedCSV(path, ids, sealedHeader, func(line int, rec []string) error {
		// The errors name the column, never a cell: it may be a password.
		s, err := dec.decode(rec)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, badCell(err, sealedHeader))
		}
		switch {
		case s.UserID < 1 || s.UserID > maxUserID:
			return fmt.Errorf("line %d: bad userId", line)
		case s.Generation < 1:
			return fmt.Errorf("line %d: bad generation", line)
		}
		out = append(out, Sealed{UserID: int(s.UserID), Password: s.Password.Password, Generation: int(s.Generation)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// csvErr keeps the position of a CSV parse error and drops nothing else:
// csv.ParseError holds no field content.
func csvErr(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("line %d: %w", pe.StartLine, pe.Err)
	}
	return err
}
