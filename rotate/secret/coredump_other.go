//go:build !linux

package secret

// DisableCoreDumps does nothing on this system: core dumps are disabled on
// Linux only (see coredump_linux.go).
func DisableCoreDumps() error { return nil }
