package report

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"io"
	"math/big"
	"slices"
	"strings"
	"testing"
	"testing/cryptotest"

	"filippo.io/age"
)

// TestX25519RecipientOpens checks that what x25519Recipient seals opens
// with age's own X25519 identity, alone and beside age's recipients, and
// that it decodes the recipient's key as age's identity derives it.
func TestX25519RecipientOpens(t *testing.T) {
	for i := range 20 {
		id, other := mustX25519(t), mustX25519(t)
		r, err := newX25519Recipient(id.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		if r.String() != id.Recipient().String() {
			t.Fatalf("String() = %s, want %s", r, id.Recipient())
		}
		secret, err := bech32Data(strings.ToLower(id.String()), "age-secret-key-")
		if err != nil {
			t.Fatal(err)
		}
		priv, err := ecdh.X25519().NewPrivateKey(secret)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(priv.PublicKey().Bytes(), r.theirs) {
			t.Fatalf("key %d: decoded public key is not the identity's", i)
		}
		for name, recips := range map[string][]age.Recipient{
			"alone":        {r},
			"beside age's": {other.Recipient(), r},
		} {
			var sealed bytes.Buffer
			w, err := age.Encrypt(&sealed, recips...)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(w, "userId,password,generation\n")
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(sealed.Bytes(), []byte("\n-> X25519 ")) {
				t.Fatalf("%s: no X25519 stanza", name)
			}
			for _, ident := range []age.Identity{id, other} {
				if ident == age.Identity(other) && len(recips) == 1 {
					continue
				}
				rd, err := age.Decrypt(bytes.NewReader(sealed.Bytes()), ident)
				if err != nil {
					t.Fatalf("%s: age cannot open it: %v", name, err)
				}
				if got, _ := io.ReadAll(rd); string(got) != "userId,password,generation\n" {
					t.Fatalf("%s: opened %q", name, got)
				}
			}
			if _, err := age.Decrypt(bytes.NewReader(sealed.Bytes()), mustX25519(t)); err == nil {
				t.Fatalf("%s: a stranger's key opened it", name)
			}
		}
	}
}

func TestBech32Data(t *testing.T) {
	good := mustX25519(t).Recipient().String()
	for _, tc := range []struct {
		name, s string
		ok      bool
	}{
		{"recipient", good, true},
		{"other prefix", "xyz1" + good[4:], false},
		{"too short", "age1qqq", false},
		{"not bech32", "age1" + strings.Repeat("b", len(good)-4), false},
		// The last data character carries 4 padding bits: 'l' (31) sets them.
		{"padding not zero", good[:len(good)-7] + "l" + good[len(good)-6:], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bech32Data(tc.s, "age")
			if (err == nil) != tc.ok {
				t.Fatalf("bech32Data(%q) error %v, want ok %v", tc.s, err, tc.ok)
			}
			if tc.ok && len(b) != 32 {
				t.Fatalf("%d bytes", len(b))
			}
		})
	}
}

// TestX25519RecipientMatchesAge checks that, given the same randomness,
// x25519Recipient writes the very stanza age's X25519Recipient writes.
func TestX25519RecipientMatchesAge(t *testing.T) {
	fileKey := bytes.Repeat([]byte{0x42}, 16)
	for seed := range uint64(50) {
		id := mustX25519(t)
		ours, err := newX25519Recipient(id.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		cryptotest.SetGlobalRandom(t, seed)
		want, err := id.Recipient().Wrap(fileKey)
		if err != nil {
			t.Fatal(err)
		}
		cryptotest.SetGlobalRandom(t, seed)
		got, err := ours.Wrap(fileKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || len(want) != 1 || got[0].Type != want[0].Type ||
			!slices.Equal(got[0].Args, want[0].Args) || !bytes.Equal(got[0].Body, want[0].Body) {
			t.Fatalf("seed %d: stanza %+v, age writes %+v", seed, got, want)
		}
	}
}

// TestX25519RecipientRefusesLowOrder checks that a recipient age parses
// but whose shared secret would be all zeros (a point of low order) makes
// the wrap fail, as age's does, so that sealing stops before anything is
// sent.
func TestX25519RecipientRefusesLowOrder(t *testing.T) {
	for name, s := range map[string]string{
		"u=0": "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5cu47z",
		"u=1": "age1qyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqj7vrya",
	} {
		t.Run(name, func(t *testing.T) {
			r, err := age.ParseX25519Recipient(s)
			if err != nil {
				t.Fatalf("age refuses it: %v", err)
			}
			if _, err := r.Wrap(make([]byte, 16)); err == nil {
				t.Fatal("age wraps to it: the test's premise is wrong")
			}
			// Parsed (the key is well formed), refused at the wrap.
			ours, err := newX25519Recipient(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ours.Wrap(make([]byte, 16)); err == nil {
				t.Fatal("wrapped a file key to a low-order point")
			}
		})
	}
}

// x25519LowOrder are the u-coordinates of the points of small order on
// Curve25519 and its twist, with non-canonical encodings (libsodium's
// list, as golang.org/x/crypto/curve25519's tests hold it).
var x25519LowOrder = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
}

// TestX25519ScalarMultMatchesECDH compares the ladder copied from
// crypto/ecdh with crypto/ecdh itself: random scalars against random
// 32-byte strings (points of the curve or of its twist, high bit set or
// not, canonical or not), keys, and the points of low order, for which
// both give all zeros.
func TestX25519ScalarMultMatchesECDH(t *testing.T) {
	check := func(t *testing.T, scalar, point []byte) {
		t.Helper()
		got := make([]byte, 32)
		x25519ScalarMult(got, scalar, point)
		priv, err := ecdh.X25519().NewPrivateKey(scalar)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ecdh.X25519().NewPublicKey(point)
		if err != nil {
			t.Fatal(err)
		}
		want, err := priv.ECDH(pub)
		if err != nil { // low order: crypto/ecdh refuses all zeros
			want = make([]byte, 32)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("X25519(%x, %x) = %x, crypto/ecdh gives %x", scalar, point, got, want)
		}
	}
	t.Run("random", func(t *testing.T) {
		for range 2000 {
			scalar, point := make([]byte, 32), make([]byte, 32)
			rand.Read(scalar)
			rand.Read(point)
			check(t, scalar, point)
		}
	})
	t.Run("keys", func(t *testing.T) {
		for range 200 {
			scalar := make([]byte, 32)
			rand.Read(scalar)
			check(t, scalar, mustPublic(t))
		}
	})
	t.Run("low order", func(t *testing.T) {
		for _, h := range x25519LowOrder {
			point := mustHex32(t, h)
			for _, high := range []byte{0, 0x80} {
				p := bytes.Clone(point)
				p[31] |= high
				scalar := make([]byte, 32)
				rand.Read(scalar)
				got := make([]byte, 32)
				x25519ScalarMult(got, scalar, p)
				if !bytes.Equal(got, make([]byte, 32)) {
					t.Fatalf("X25519(·, %x) = %x, want all zeros", p, got)
				}
				check(t, scalar, p)
			}
		}
	})
}

// mustHex32 decodes s, 32 bytes in hex.
func mustHex32(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad 32-byte hex %q", s)
	}
	return b
}

// mustPublic returns the public key of a fresh X25519 key pair.
func mustPublic(t *testing.T) []byte {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

// TestX25519ShareMatchesECDH checks that the fixed-base Edwards
// computation of an ephemeral share gives crypto/ecdh's public key, for
// random scalars and for the extremes of the clamped range.
func TestX25519ShareMatchesECDH(t *testing.T) {
	var scalars [][32]byte
	for range 2000 {
		var s [32]byte
		rand.Read(s[:])
		scalars = append(scalars, s)
	}
	var zero, ones [32]byte
	for i := range ones {
		ones[i] = 0xff
	}
	scalars = append(scalars, zero, ones)
	// Clamped scalars next to 4l…7l, the multiples of the basepoint's
	// order l in the clamped range, where reducing mod l matters most.
	l, _ := new(big.Int).SetString("1000000000000000000000000000000014def9dea2f79cd65812631a5cf5d3ed", 16)
	for m := int64(4); m <= 7; m++ {
		for d := int64(-64); d <= 64; d += 8 {
			k := new(big.Int).Add(new(big.Int).Mul(big.NewInt(m), l), big.NewInt(d))
			k.Rsh(k, 3).Lsh(k, 3) // a multiple of 8, as clamping makes it
			if k.BitLen() != 255 {
				continue // outside [2^254, 2^255)
			}
			var s [32]byte
			k.FillBytes(s[:])
			slices.Reverse(s[:]) // little-endian
			scalars = append(scalars, s)
		}
	}
	for _, s := range scalars {
		priv, err := ecdh.X25519().NewPrivateKey(s[:])
		if err != nil {
			t.Fatal(err)
		}
		if got, want := x25519Share(&s), priv.PublicKey().Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("share of %x = %x, crypto/ecdh gives %x", s, got, want)
		}
	}
}

// TestX25519RFC7748 checks the ladder and the fixed-base share against
// RFC 7748's vectors (section 5.2: two scalar multiplications, and the
// iteration from u = 9 after 1 and 1,000 steps; section 6.1: Alice's
// public key), which come from neither crypto/ecdh nor age.
func TestX25519RFC7748(t *testing.T) {
	for _, tc := range []struct{ name, scalar, u, want string }{
		{"5.2 first", "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
			"e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
			"c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
		{"5.2 second", "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
			"e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
			"95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make([]byte, 32)
			x25519ScalarMult(got, mustHex32(t, tc.scalar), mustHex32(t, tc.u))
			if want := mustHex32(t, tc.want); !bytes.Equal(got, want) {
				t.Fatalf("got %x, want %x", got, want)
			}
		})
	}
	t.Run("5.2 iterated", func(t *testing.T) {
		k := mustHex32(t, "0900000000000000000000000000000000000000000000000000000000000000")
		u := bytes.Clone(k)
		for i := 1; i <= 1000; i++ {
			out := make([]byte, 32)
			x25519ScalarMult(out, k, u)
			u, k = k, out
			if i == 1 && !bytes.Equal(k, mustHex32(t, "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")) {
				t.Fatalf("after 1 step: %x", k)
			}
		}
		if want := mustHex32(t, "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"); !bytes.Equal(k, want) {
			t.Fatalf("after 1,000 steps: %x, want %x", k, want)
		}
	})
	t.Run("6.1 Alice's share", func(t *testing.T) {
		var a [32]byte
		copy(a[:], mustHex32(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
		if got, want := x25519Share(&a), mustHex32(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"); !bytes.Equal(got, want) {
			t.Fatalf("got %x, want %x", got, want)
		}
	})
}

// BenchmarkX25519Wrap compares the cost of one X25519 stanza written by
// age's recipient and by x25519Recipient.
func BenchmarkX25519Wrap(b *testing.B) {
	id := mustX25519(b)
	ours, err := newX25519Recipient(id.Recipient())
	if err != nil {
		b.Fatal(err)
	}
	fileKey := make([]byte, 16)
	for _, r := range []struct {
		name string
		r    age.Recipient
	}{{"age", id.Recipient()}, {"pwrotate", ours}} {
		b.Run(r.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := r.r.Wrap(fileKey); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
