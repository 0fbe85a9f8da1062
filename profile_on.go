//go:build pprof

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// With the pprof build tag (the bench's --cpuprofile builds with it; a
// release build never has it), PWROTATE_CPUPROFILE=FILE writes a CPU
// profile of the whole process to FILE. A CPU profile holds stacks and
// sample counts only, never a password or the API key.
func init() {
	startProfile = func() func() {
		path := os.Getenv("PWROTATE_CPUPROFILE")
		if path == "" {
			return func() {}
		}
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pwrotate: warning: cpu profile: %v\n", err)
			return func() {}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "pwrotate: warning: cpu profile: %v\n", err)
			f.Close()
			return func() {}
		}
		return func() {
			pprof.StopCPUProfile()
			f.Close()
		}
	}
}
