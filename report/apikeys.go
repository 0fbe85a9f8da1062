package report

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"pwrotate/rotate/secret"
)

// API keys are chosen by the server, so they are sealed on receipt, in
// batches: each batch is its own age file OUT/apikeys-NNNNN.age whose
// plaintext is the CSV "userId,apiKey,obtainedAt".

// apiKeyRecord is one row of a sealed key batch's plaintext.
type apiKeyRecord struct {
	UserID     count        `csv:"userId"`
	APIKey     passwordCell `csv:"apiKey"`
	ObtainedAt stamp        `csv:"obtainedAt"`
}

// apiKeysHeader is the header row of a sealed key batch.
var apiKeysHeader = CSVHeader[apiKeyRecord]()

// SealedKey is one row of a sealed key batch.
type SealedKey struct {
	// UserID is the user whose key it is.
	UserID int
	// Key is the user's new API key.
	Key secret.Password
	// ObtainedAt is when pwrotate received the key (from key-generate, or
	// from a read-back that settled an unknown outcome).
	ObtainedAt time.Time
}

// APIKeysName is the file name of sealed key batch n, e.g.
// "apikeys-00001.age".
func APIKeysName(n int) string {
	return fmt.Sprintf("%s%05d%s", apiKeysPrefix, n, sealedSuffix)
}

// apiKeysBatch returns the batch number of a file named APIKeysName(n).
func apiKeysBatch(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, apiKeysPrefix)
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, sealedSuffix); !ok {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 || APIKeysName(n) != name {
		return 0, false
	}
	return n, true
}

// IsAPIKeysFile reports whether name is a sealed key batch or its
// temporary file.
func IsAPIKeysFile(name string) bool {
	_, ok := apiKeysBatch(strings.TrimSuffix(name, tmpSuffix))
	return ok
}

// APIKeyBatches returns the numbers of the complete sealed key batches in
// dir, ascending.
func APIKeyBatches(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing sealed keys: %w", err)
	}
	var ns []int
	for _, e := range entries {
		if n, ok := apiKeysBatch(e.Name()); ok && e.Type().IsRegular() {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	return ns, nil
}

// SealAPIKeys writes keys, encrypted with age to recips, as
// dir/APIKeysName(n), durably (see Seal), and returns the path. An
// existing batch n is never replaced.
func SealAPIKeys(dir string, n int, recips []age.Recipient, keys []SealedKey) (string, error) {
	if n < 1 {
		return "", fmt.Errorf("sealing keys: batch %d is not positive", n)
	}
	if len(recips) == 0 {
		return "", errors.New("sealing keys: no recipients")
	}
	final := filepath.Join(dir, APIKeysName(n))
	return final, sealFile(final, func(w io.Writer) error {
		enc, err := age.Encrypt(w, recips...)
		if err != nil {
			return fmt.Errorf("encrypting: %w", err)
		}
		bw := bufio.NewWriterSize(enc, 64<<10)
		buf := make([]byte, 0, 256)
		defer func() { clear(buf[:cap(buf)]) }()
		buf = append(buf, strings.Join(apiKeysHeader, ",")...)
		buf = append(buf, '\n')
		for _, k := range keys {
			if k.UserID < 1 || k.UserID > maxUserID {
				return fmt.Errorf("user id %d out of range", k.UserID)
			}
			if k.Key.Empty() {
				return fmt.Errorf("user %d: empty key", k.UserID)
			}
			buf = strconv.AppendInt(buf, int64(k.UserID), 10)
			buf = append(buf, ',')
			buf = appendCSVField(buf, k.Key.Reveal())
			buf = append(buf, ',')
			at, _ := stamp{k.ObtainedAt}.MarshalCSV() // the cell apiKeyRecord reads back
			buf = append(buf, at...)
			buf = append(buf, '\n')
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return fmt.Errorf("encrypting: %w", err)
		}
		return nil
	})
}

// ReadSealedAPIKeys decrypts one sealed key batch with ids. Errors name the
// file and the plaintext line, never a key.
func ReadSealedAPIKeys(path string, ids []age.Identity) ([]SealedKey, error) {
	return readSealedAPIKeys(path, nil, ids)
}

// readSealedAPIKeys is ReadSealedAPIKeys reading the ciphertext from
// sealed, or from the file path when sealed is nil.
func readSealedAPIKeys(path string, sealed io.Reader, ids []age.Identity) ([]SealedKey, error) {
	dec := newRowDecoder[apiKeyRecord]()
	defer dec.reset()
	var out []SealedKey
	err := readSealedCSVFrom(path, sealed, ids, apiKeysHeader, func(line int, rec []string) error {
		// The errors name the column, never a cell: it may be a key.
		k, err := dec.decode(rec)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, badCell(err, apiKeysHeader))
		}
		switch {
		case k.UserID < 1 || k.UserID > maxUserID:
			return fmt.Errorf("line %d: bad userId", line)
		case k.APIKey.Empty():
			return fmt.Errorf("line %d: empty key", line)
		case k.ObtainedAt.t.IsZero():
			return fmt.Errorf("line %d: bad obtainedAt", line)
		}
		out = append(out, SealedKey{UserID: int(k.UserID), Key: k.APIKey.Password, ObtainedAt: k.ObtainedAt.t})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readSealedCSV decrypts the sealed file path and calls row for each
// record after the header, which must be header. Its errors never hold a
// field's content.
func readSealedCSV(path string, ids []age.Identity, header []string, row func(line int, rec []string) error) error {
	return readSealedCSVFrom(path, nil, ids, header, row)
}

// readSealedCSVFrom is readSealedCSV reading the ciphertext from sealed, or
// from the file path when sealed is nil.
func readSealedCSVFrom(path string, sealed io.Reader, ids []age.Identity, header []string, row func(line int, rec []string) error) error {
	if len(ids) == 0 {
		return fmt.Errorf("reading %s: no identities", path)
	}
	if sealed == nil {
		f, err := OpenFile(path, os.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("reading sealed file: %w", err)
		}
		defer f.Close()
		sealed = f
	}
	plain, err := age.Decrypt(bufio.NewReaderSize(sealed, 64<<10), ids...)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return fmt.Errorf("reading %s: none of the identities can open it (sealed to other recipients): %w", path, err)
		}
		return fmt.Errorf("reading %s: %w", path, err)
	}
	cr := csv.NewReader(plain)
	cr.FieldsPerRecord = len(header)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return fmt.Errorf("reading %s: line 1: %w", path, csvErr(err))
	}
	if !slices.Equal(head, header) {
		return fmt.Errorf("reading %s: line 1: not the header %s", path, strings.Join(header, ","))
	}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, csvErr(err))
		}
		line, _ := cr.FieldPos(0)
		if err := row(line, rec); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
}

// OpenAPIKeys decrypts the sealed key batches of the output folders (and
// their shard-* folders) or .age batch files in paths, and returns the live
// key of each user, sorted by userId: see OpenAPIKeysVouched.
func OpenAPIKeys(paths []string, ids []age.Identity) ([]SealedKey, error) {
	o, err := OpenAPIKeysVouched(paths, ids)
	return o.Keys, err
}

// OpenedAPIKeys is what OpenAPIKeysVouched found.
type OpenedAPIKeys struct {
	// Keys is the live key of each user, sorted by userId.
	Keys []SealedKey
	// Unvouched names the batch files that the key log of their folder does
	// not vouch for (KeyLog.RecordBatch): planted by whoever could write the
	// folder (age does not authenticate the sender), written by a version
	// of pwrotate that did not vouch, or sealed just before a kill.
	Unvouched []string
	// FromUnvouched lists the users, ascending, whose key in Keys comes
	// from an unvouched batch: no vouched batch holds a key for them.
	FromUnvouched []int
	// Altered names the batch files whose name the key log vouches for
	// but whose content is not the one it vouched for: their keys are not
	// used at all.
	Altered []string
}

// OpenAPIKeysVouched decrypts the sealed key batches of the output folders
// (and their shard-* folders) or .age batch files in paths. The live key of
// a user is the one obtained last among the batches that the key log
// (apikeys-log.csv) of their folder vouches for; only a user that no
// vouched batch holds gets the one obtained last among the others. A batch
// whose name the log vouches for with another sha256 was altered: its
// keys are not used.
func OpenAPIKeysVouched(paths []string, ids []age.Identity) (OpenedAPIKeys, error) {
	var res OpenedAPIKeys
	keys, err := openAPIKeys(paths, ids, &res)
	res.Keys = keys
	return res, err
}

// openAPIKeys is OpenAPIKeysVouched; it sets o's Unvouched and
// FromUnvouched and returns the keys.
func openAPIKeys(paths []string, ids []age.Identity, o *OpenedAPIKeys) ([]SealedKey, error) {
	if len(paths) == 0 {
		return nil, errors.New("open: no paths given")
	}
	var files []string
	addDir := func(dir string) error {
		ns, err := APIKeyBatches(dir)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		for _, n := range ns {
			files = append(files, filepath.Join(dir, APIKeysName(n)))
		}
		return nil
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
		if !st.IsDir() {
			if !IsAPIKeysFile(filepath.Base(p)) {
				return nil, fmt.Errorf("open: %s is neither a folder nor a sealed key batch (apikeys-NNNNN.age)", p)
			}
			files = append(files, p)
			continue
		}
		if err := addDir(p); err != nil {
			return nil, err
		}
		shards, _ := filepath.Glob(filepath.Join(p, "shard-*"))
		for _, s := range shards {
			if st, err := os.Stat(s); err == nil && st.IsDir() {
				if err := addDir(s); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("open: no sealed API keys (apikeys-*.age) in %s", strings.Join(paths, ", "))
	}
	// vouched holds, per folder, the batches its key log vouches for.
	vouched := map[string]map[string]string{}
	latest := map[int]SealedKey{}   // from vouched batches
	fallback := map[int]SealedKey{} // from the others
	for _, f := range files {
		dir := filepath.Dir(f)
		batches, ok := vouched[dir]
		if !ok {
			var err error
			if batches, err = KeyLogBatches(filepath.Join(dir, KeyLogName)); err != nil {
				return nil, fmt.Errorf("open: %w", err)
			}
			vouched[dir] = batches
		}
		data, err := ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("open: reading sealed file: %w", err)
		}
		sum := sha256.Sum256(data)
		into := latest
		switch want, named := batches[filepath.Base(f)]; {
		case named && want != hex.EncodeToString(sum[:]):
			o.Altered = append(o.Altered, f)
			continue
		case !named:
			into = fallback
			o.Unvouched = append(o.Unvouched, f)
		}
		ks, err := readSealedAPIKeys(f, bytes.NewReader(data), ids)
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if old, ok := into[k.UserID]; !ok || k.ObtainedAt.After(old.ObtainedAt) {
				into[k.UserID] = k
			}
		}
	}
	for id, k := range fallback {
		if _, ok := latest[id]; !ok {
			latest[id] = k
			o.FromUnvouched = append(o.FromUnvouched, id)
		}
	}
	slices.Sort(o.FromUnvouched)
	out := make([]SealedKey, 0, len(latest))
	for _, k := range latest {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b SealedKey) int { return cmp.Compare(a.UserID, b.UserID) })
	return out, nil
}

// WriteAPIKeysCSV writes keys as CSV "userId,apiKey" with a header row; the
// keys are written as they are.
func WriteAPIKeysCSV(w io.Writer, keys []SealedKey) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"userId", "apiKey"}); err != nil {
		return fmt.Errorf("writing keys: %w", err)
	}
	for _, k := range keys {
		if err := cw.Write([]string{strconv.Itoa(k.UserID), k.Key.Reveal()}); err != nil {
			return fmt.Errorf("writing keys: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing keys: %w", err)
	}
	return nil
}

// KeyDigest returns the hex sha256 of an API key: what the key log records
// instead of the key.
func KeyDigest(k secret.Password) string {
	sum := sha256.Sum256([]byte(k.Reveal()))
	return hex.EncodeToString(sum[:])
}
