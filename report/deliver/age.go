package deliver

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseAge reads an --older-than value: whole days ("90d") or a Go
// duration ("36h", "90m"); it must be positive.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*365 {
			return 0, fmt.Errorf("%q: want whole days such as 90d, or a duration such as 36h", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want whole days such as 90d, or a positive duration such as 36h", s)
	}
	return d, nil
}

// FormatAge writes a duration as an operator reads an age: whole days from
// two days on ("12d"), else whole hours from two hours on ("36h"), else
// minutes ("45m"), else seconds.
func FormatAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d >= 2*time.Hour:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d >= 2*time.Minute:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	default:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
}
