package report

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

// testKey is a key pair made for one test: the recipient string, and an
// identity file as `age -d -i` takes it.
type testKey struct {
	name      string
	recipient string
	identity  string // file content
}

// rsaKey is generated once: 2048-bit RSA generation is slow under -race.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// testKeys returns one freshly generated key of every kind pwrotate seals to.
func testKeys(t testing.TB) []testKey {
	t.Helper()
	x, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pq, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []testKey{
		{"x25519", x.Recipient().String(), "# test-only key\n" + x.String() + "\n"},
		{"pq-hybrid", pq.Recipient().String(), pq.String() + "\n"},
		{"ssh-ed25519", authorizedKey(t, edPriv.Public()), opensshPEM(t, edPriv)},
		{"ssh-rsa", authorizedKey(t, &rsaKey().PublicKey), opensshPEM(t, rsaKey())},
		{"ssh-rsa-pkcs1", authorizedKey(t, &rsaKey().PublicKey), string(pem.EncodeToMemory(&pem.Block{
			Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey()),
		}))},
	}
}

func authorizedKey(t testing.TB, pub any) string {
	t.Helper()
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " test-only@example"
}

func opensshPEM(t testing.TB, priv any) string {
	t.Helper()
	b, err := ssh.MarshalPrivateKey(priv, "test-only")
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(b))
}

// writeTemp writes content to a new 0600 file in dir.
func writeTemp(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
