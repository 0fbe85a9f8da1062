// Copyright 2022 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE-Go file.

package report

import "filippo.io/edwards25519/field"

// x25519ScalarMult sets dst to X25519(scalar, point), RFC 7748's
// Montgomery ladder in constant time. It is crypto/ecdh's x25519ScalarMult
// (Go 1.26, src/crypto/ecdh/x25519.go), unchanged but for the field
// package and the clearing of its clamped copy of the scalar at the end:
// filippo.io/edwards25519/field is the exported original of the standard
// library's internal one, the same arithmetic and the same assembly. It
// is copied because crypto/ecdh has no way to compute a shared secret
// without first computing the public key of the scalar, which
// x25519Recipient gets two to three times cheaper from a fixed-base
// table. TestX25519ScalarMultMatchesECDH compares it with crypto/ecdh,
// TestX25519RFC7748 with the RFC's vectors.
func x25519ScalarMult(dst, scalar, point []byte) {
	var e [32]byte

	copy(e[:], scalar[:])
	e[0] &= 248
	e[31] &= 127
	e[31] |= 64

	var x1, x2, z2, x3, z3, tmp0, tmp1 field.Element
	x1.SetBytes(point[:])
	x2.One()
	x3.Set(&x1)
	z3.One()

	swap := 0
	for pos := 254; pos >= 0; pos-- {
		b := e[pos/8] >> uint(pos&7)
		b &= 1
		swap ^= int(b)
		x2.Swap(&x3, swap)
		z2.Swap(&z3, swap)
		swap = int(b)

		tmp0.Subtract(&x3, &z3)
		tmp1.Subtract(&x2, &z2)
		x2.Add(&x2, &z2)
		z2.Add(&x3, &z3)
		z3.Multiply(&tmp0, &x2)
		z2.Multiply(&z2, &tmp1)
		tmp0.Square(&tmp1)
		tmp1.Square(&x2)
		x3.Add(&z3, &z2)
		z2.Subtract(&z3, &z2)
		x2.Multiply(&tmp1, &tmp0)
		tmp1.Subtract(&tmp1, &tmp0)
		z2.Square(&z2)

		z3.Mult32(&tmp1, 121666)
		x3.Square(&x3)
		tmp0.Add(&tmp0, &z3)
		z3.Multiply(&x1, &z2)
		z2.Multiply(&tmp1, &tmp0)
	}

	x2.Swap(&x3, swap)
	z2.Swap(&z3, swap)

	z2.Invert(&z2)
	x2.Multiply(&x2, &z2)
	copy(dst[:], x2.Bytes())
	clear(e[:])
}
