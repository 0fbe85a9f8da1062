package report

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"filippo.io/age"
)

// DemoIdentity returns the age recipient of dir's demo identity, creating the
// identity file (0600) if it is not there yet.
func DemoIdentity(dir string) (age.Recipient, string, error) {
	path := filepath.Join(dir, DemoIdentityName)
	if b, err := ReadFile(path); err == nil {
		ids, err := age.ParseIdentities(bytes.NewReader(b))
		if err != nil {
			return nil, "", fmt.Errorf("demo identity %s: %w", path, err)
		}
		x, ok := ids[0].(*age.X25519Identity)
		if !ok {
			return nil, "", fmt.Errorf("demo identity %s: not an X25519 identity", path)
		}
		return x.Recipient(), path, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	body := fmt.Sprintf("# pwrotate --demo identity: it opens this folder's sealed passwords.\n# public key: %s\n%s\n", id.Recipient(), id)
	f, err := OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, "", err
	}
	if _, err := f.WriteString(body); err != nil {
		f.Close()
		return nil, "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, "", err
	}
	if err := f.Close(); err != nil {
		return nil, "", err
	}
	return id.Recipient(), path, nil
}
