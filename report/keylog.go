package report

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

const keyLogHeader = "userId,oldKeySha256\n"

// KeyLog is the append-only, fsynced log of the keys about to be replaced.
// A digest is durable in it before the key-generate it stands for is sent,
// so that an unknown outcome (a lost answer, a kill) is settled by reading
// the key back: the same digest means the key was not replaced.
type KeyLog struct {
	mu sync.Mutex
	f  *os.File
}

// OpenKeyLog opens the log at path (created 0600 with its header when
// missing) and returns it with the digest recorded last for each user. A
// torn last line (a kill during an append, never fsynced, so its generate
// was never sent) is cut off.
func OpenKeyLog(path string) (*KeyLog, map[int]string, error) {
	f, err := OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("key log: %w", err)
	}
	digests, err := readKeyLog(f, path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return &KeyLog{f: f}, digests, nil
}

// readKeyLog reads the open log f, cuts a torn last line off, writes the
// header into an empty log, and returns the digest recorded last for each
// user.
func readKeyLog(f *os.File, path string) (map[int]string, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("key log %s: %w", path, err)
	}
	if end := bytes.LastIndexByte(data, '\n') + 1; end < len(data) {
		if err := f.Truncate(int64(end)); err != nil {
			return nil, fmt.Errorf("key log %s: cutting a torn line: %w", path, err)
		}
		data = data[:end]
	}
	if len(data) == 0 {
		if _, err := f.WriteAt([]byte(keyLogHeader), 0); err != nil {
			return nil, fmt.Errorf("key log %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("key log %s: fsync: %w", path, err)
		}
		data = []byte(keyLogHeader)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return nil, fmt.Errorf("key log %s: %w", path, err)
	}
	digests, _, err := parseKeyLog(data, path)
	return digests, err
}

// parseKeyLog parses the complete lines of a key log: the digest recorded
// last for each user, and the batches vouched for (file name: sha256).
func parseKeyLog(data []byte, path string) (digests map[int]string, batches map[string]string, err error) {
	digests, batches = map[int]string{}, map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 {
			if line+"\n" != keyLogHeader {
				return nil, nil, fmt.Errorf("key log %s: line 1: not the header %s", path, strings.TrimSpace(keyLogHeader))
			}
			continue
		}
		ids, digest, ok := strings.Cut(line, ",")
		if _, batch := apiKeysBatch(ids); batch && ok && isHexDigest(digest) {
			batches[ids] = digest
			continue
		}
		id, err := strconv.Atoi(ids)
		if !ok || err != nil || id < 1 || id > maxUserID || !isHexDigest(digest) {
			return nil, nil, fmt.Errorf("key log %s: line %d: not userId,sha256 nor apikeys-NNNNN.age,sha256", path, n)
		}
		digests[id] = digest
	}
	return digests, batches, nil
}

// KeyLogBatches reads the key log at path without changing it and returns
// the sealed key batches it vouches for: file name → sha256 of the file.
// A missing log vouches for none; a torn last line is ignored.
func KeyLogBatches(path string) (map[string]string, error) {
	data, err := ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key log: %w", err)
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	if len(data) == 0 {
		return map[string]string{}, nil
	}
	_, batches, err := parseKeyLog(data, path)
	return batches, err
}

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// KeyLogEntry is one line of the key log.
type KeyLogEntry struct {
	// UserID is the user.
	UserID int
	// OldDigest is KeyDigest of the key live before the replacement.
	OldDigest string
}

// Record appends entries and fsyncs the log: when it returns nil, they are
// durable. It is safe for concurrent use.
func (l *KeyLog) Record(entries ...KeyLogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var b []byte
	for _, e := range entries {
		if e.UserID < 1 || e.UserID > maxUserID || !isHexDigest(e.OldDigest) {
			return fmt.Errorf("key log: bad entry for user %d", e.UserID)
		}
		b = strconv.AppendInt(b, int64(e.UserID), 10)
		b = append(b, ',')
		b = append(b, e.OldDigest...)
		b = append(b, '\n')
	}
	return l.append(b)
}

// RecordBatch vouches for the sealed key batch at path, complete and
// durable: it appends the batch's name and the sha256 of its content, and
// fsyncs. Call it before the rows that say the batch's keys are rotated.
// It is safe for concurrent use.
func (l *KeyLog) RecordBatch(path string) error {
	name := filepath.Base(path)
	if _, ok := apiKeysBatch(name); !ok {
		return fmt.Errorf("key log: %s is not a sealed key batch", name)
	}
	data, err := ReadFile(path)
	if err != nil {
		return fmt.Errorf("key log: vouching for %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	return l.append([]byte(name + "," + hex.EncodeToString(sum[:]) + "\n"))
}

// append writes b at the end of the log and fsyncs.
func (l *KeyLog) append(b []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("key log: closed")
	}
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("key log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("key log: fsync: %w", err)
	}
	return nil
}

// Close closes the log.
func (l *KeyLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
