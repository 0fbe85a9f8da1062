//go:build linux

package job

import (
	"io/fs"
	"syscall"
	"time"
)

// changeTime returns fi's status change time (ctime): set by the kernel to
// the current time on every write, rename or utimes call, so that, unlike
// the modification time, nobody but root (through the clock) can set it
// back. The zero time when fi does not say.
func changeTime(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Unix())
	}
	return time.Time{}
}
