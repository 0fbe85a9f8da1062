package report

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strings"

	"filippo.io/age"
	"filippo.io/edwards25519"
	"golang.org/x/crypto/chacha20poly1305"
)

// x25519Recipient wraps a file key for an X25519 recipient (age1…) as
// age's own X25519Recipient does, stanza for stanza (the "X25519" stanza of
// the age format: a fresh ephemeral key, HKDF-SHA-256 over the shared
// secret with salt ephemeral share ‖ recipient and the label
// "age-encryption.org/v1/X25519", ChaCha20-Poly1305 with a zero nonce),
// at a third to two fifths of age's CPU. age computes both the ephemeral
// share and the shared secret through x/crypto's curve25519.X25519, which
// derives the public key of its scalar each time before the result: four
// Montgomery ladders a stanza. Here the share comes from
// filippo.io/edwards25519's fixed-base table and the shared secret from one
// ladder (x25519ScalarMult, crypto/ecdh's). Sealing one file per group
// (docs/performance.md) spends most of its CPU there. It writes the very stanza age writes
// (TestX25519RecipientMatchesAge), and age's identities open what it seals
// (TestX25519RecipientOpens), as does the stock age command
// (TestSealRoundTrip, TestSealGroups).
type x25519Recipient struct {
	theirs []byte // the recipient's u-coordinate, 32 bytes
	text   string // the recipient as parsed, for String
}

// x25519Label is the age format's HKDF info string of X25519 stanzas.
const x25519Label = "age-encryption.org/v1/X25519"

// newX25519Recipient returns the recipient r, which age has parsed, for
// sealing at less cost.
func newX25519Recipient(r *age.X25519Recipient) (*x25519Recipient, error) {
	text := r.String()
	key, err := bech32Data(text, "age")
	if err != nil {
		return nil, err
	}
	// crypto/ecdh checks the length (and refuses X25519 in FIPS 140-only
	// mode, as age's recipient would).
	if _, err := ecdh.X25519().NewPublicKey(key); err != nil {
		return nil, err
	}
	return &x25519Recipient{theirs: key, text: text}, nil
}

// Wrap implements age.Recipient.
func (r *x25519Recipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	// The scalar, the shared secret and the wrap key are cleared when done,
	// as far as they are this function's: copies stay in edwards25519's,
	// HKDF's and the AEAD's state until the memory is reused, as they do
	// in age's recipient, and age holds the file key itself uncleared.
	var eph, shared [32]byte
	defer clear(eph[:])
	defer clear(shared[:])
	// The same 32 bytes age's recipient reads, in the same order.
	if _, err := rand.Read(eph[:]); err != nil {
		return nil, err
	}
	ours := x25519Share(&eph)
	x25519ScalarMult(shared[:], eph[:], r.theirs)
	// A point of low order gives all zeros: age refuses it, so does this.
	if subtle.ConstantTimeCompare(shared[:], make([]byte, 32)) == 1 {
		return nil, errors.New("X25519 recipient is a low-order point")
	}
	salt := append(append(make([]byte, 0, 64), ours...), r.theirs...)
	key, err := hkdf.Key(sha256.New, shared[:], salt, x25519Label, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, chacha20poly1305.NonceSize)
	return []*age.Stanza{{
		Type: "X25519",
		Args: []string{base64.RawStdEncoding.EncodeToString(ours)},
		Body: aead.Seal(nil, nonce, fileKey, nil),
	}}, nil
}

// x25519Share returns X25519(scalar, 9), the public share of scalar, from
// filippo.io/edwards25519's fixed-base table: the Edwards basepoint maps
// to u = 9 and has prime order, so the scalar clamped as X25519 clamps it
// (SetBytesWithClamping) and reduced gives the same point, whose
// u-coordinate BytesMontgomery returns (TestX25519ShareMatchesECDH).
func x25519Share(scalar *[32]byte) []byte {
	var s edwards25519.Scalar
	if _, err := s.SetBytesWithClamping(scalar[:]); err != nil {
		panic("x25519Share: " + err.Error()) // only for a length other than 32
	}
	var p edwards25519.Point
	return p.ScalarBaseMult(&s).BytesMontgomery()
}

// String returns the recipient as age writes it (age1…).
func (r *x25519Recipient) String() string { return r.text }

// bech32Charset maps bech32's 5-bit values to characters.
const bech32Charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

// bech32Data returns the data of s, a lowercase bech32 string with the
// human-readable part hrp that age has already parsed (its checksum
// verified): the 5-bit groups after the separator, without the 6
// characters of checksum, regrouped into bytes.
func bech32Data(s, hrp string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, hrp+"1")
	if !ok || len(rest) < 6 {
		return nil, errors.New("not a bech32 string")
	}
	rest = rest[:len(rest)-6]
	out := make([]byte, 0, len(rest)*5/8)
	var acc, bits uint
	for i := 0; i < len(rest); i++ {
		v := strings.IndexByte(bech32Charset, rest[i])
		if v < 0 {
			return nil, errors.New("not a bech32 string")
		}
		acc = acc<<5 | uint(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			out = append(out, byte(acc>>bits))
			acc &= 1<<bits - 1
		}
	}
	if bits >= 5 || acc != 0 {
		return nil, errors.New("bech32 padding is not zero")
	}
	return out, nil
}
