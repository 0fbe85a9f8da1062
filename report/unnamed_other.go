//go:build !linux

package report

import "os"

// createUnnamed reports that files without a name are Linux's: elsewhere
// sealed files are written under a temporary name and renamed.
func createUnnamed(dir string) (f *os.File, link func(final string) error, ok bool, err error) {
	return nil, nil, false, nil
}

// renameNoReplace renames old to new unless new exists: a check and a
// rename, which a file appearing in between is not protected from.
func renameNoReplace(old, new string) error { return checkAndRename(old, new) }
