package job

import "time"

// SetReleaseHook makes l call f, under its lock, with the time it lets each
// call go: the exact moments its one-second window counts.
func (l *Limiter) SetReleaseHook(f func(time.Time)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onRelease = f
}
