package report

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"path/filepath"
	"strconv"
	"strings"

	"filippo.io/age"

	"pwrotate/rotate/secret"
)

// The delivery escrow (--deliver). A password that could not be delivered
// when its change was confirmed (the Kubernetes API unreachable, the run
// killed) is delivered by a later --resume, which must not change it again
// at ECGrid, and holds no identity that opens the sealed files. So each
// generation's passwords of users with targets are also sealed, before the
// first request that carries one, into OUT/deliver-gNNNN.age, encrypted to
// a passphrase that the run derives from the ECGrid API key and the run's
// ID (run.json): the resume, which is given the same key, derives it again.
// These are the passwords pwrotate writes into Kubernetes Secrets anyway;
// whoever holds the API key can already change every one of them. Its
// plaintext is the sealed files' CSV, userId,password,generation. A
// complete run whose passwords are all delivered removes its escrow files.

const (
	// escrowWorkFactor is the scrypt work factor of the escrow: the
	// passphrase is 256 random-looking bits, so the work factor protects
	// nothing, and a low one keeps sealing and opening fast.
	escrowWorkFactor = 10
)

// EscrowName is the file name of the delivery escrow of generation gen,
// e.g. "deliver-g0001.age".
func EscrowName(gen int) string {
	return fmt.Sprintf("%s%04d%s", escrowPrefix, gen, sealedSuffix)
}

// IsEscrowName reports whether name is a delivery escrow file's.
func IsEscrowName(name string) bool {
	_, ok := escrowGen(name)
	return ok
}

// escrowGen returns the generation of a file named EscrowName(gen).
func escrowGen(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, escrowPrefix)
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, sealedSuffix); !ok {
		return 0, false
	}
	gen, err := strconv.Atoi(digits)
	if err != nil || gen < 1 || EscrowName(gen) != name {
		return 0, false
	}
	return gen, true
}

// EscrowSecret derives, from the API key, the secret that escrow
// passphrases are made of; the API key itself goes no further.
func EscrowSecret(apiKey string) []byte {
	m := hmac.New(sha256.New, []byte(apiKey))
	m.Write([]byte("pwrotate delivery escrow v1"))
	return m.Sum(nil)
}

// EscrowPassphrase is the passphrase of the escrow files of the run runID,
// from EscrowSecret.
func EscrowPassphrase(escrowSecret []byte, runID string) secret.Password {
	m := hmac.New(sha256.New, escrowSecret)
	m.Write([]byte(runID))
	return secret.Password(hex.EncodeToString(m.Sum(nil)))
}

// SealEscrow writes the escrow of generation gen, dir/EscrowName(gen), as
// Seal writes a sealed file (fsynced, named, the folder fsynced; never
// replacing one), encrypted to passphrase. rows yields (userId, password).
func SealEscrow(dir string, gen int, passphrase secret.Password, rows iter.Seq2[int, secret.Password]) (string, error) {
	if gen < 1 {
		return "", fmt.Errorf("sealing the delivery escrow: generation %d is not positive", gen)
	}
	r, err := age.NewScryptRecipient(passphrase.Reveal())
	if err != nil {
		return "", fmt.Errorf("sealing the delivery escrow: %w", err)
	}
	r.SetWorkFactor(escrowWorkFactor)
	final := filepath.Join(dir, EscrowName(gen))
	return final, sealFile(final, func(w io.Writer) error {
		return writeSealed(w, gen, []age.Recipient{r}, rows)
	})
}

// ErrEscrowKey means an escrow file does not open with the passphrase: the
// API key differs from the one of the run that sealed it.
var ErrEscrowKey = errors.New("the delivery escrow does not open with this API key")

// OpenEscrow reads the escrow of generation gen in dir: the passwords by
// user.
func OpenEscrow(dir string, gen int, passphrase secret.Password) (map[int]secret.Password, error) {
	id, err := age.NewScryptIdentity(passphrase.Reveal())
	if err != nil {
		return nil, fmt.Errorf("opening the delivery escrow: %w", err)
	}
	id.SetMaxWorkFactor(escrowWorkFactor)
	path := filepath.Join(dir, EscrowName(gen))
	rows, err := ReadSealed(path, []age.Identity{id})
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return nil, fmt.Errorf("%s: %w (the run was started with another key?)", path, ErrEscrowKey)
		}
		return nil, err
	}
	out := make(map[int]secret.Password, len(rows))
	for _, r := range rows {
		if r.Generation != gen {
			return nil, fmt.Errorf("%s: a row of generation %d", path, r.Generation)
		}
		out[r.UserID] = r.Password
	}
	return out, nil
}
