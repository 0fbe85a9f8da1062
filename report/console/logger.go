// Package console holds what an operator sees on stderr: the slog logger
// (text on a terminal, JSON otherwise) and the progress display (a live bar on
// a terminal, a periodic log line otherwise).
//
// Nothing here knows about passwords: callers log secret.Password values,
// which redact themselves.
package console

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"
)

// NewLogger returns a logger writing to w at level and above. format is the
// --log-format flag: "auto" (text if isTerminal, else JSON), "text" or
// "json"; anything else is an error naming --log-format.
//
// When a progress bar is shown, pass Progress.LogWriter as w so that log
// lines and the bar do not tangle.
func NewLogger(w io.Writer, format string, isTerminal bool, level slog.Level) (*slog.Logger, error) {
	if format == "auto" {
		format = "json"
		if isTerminal {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want auto, text or json", format)
	}
}

// IsTerminal reports whether f is a terminal. A nil f is not.
func IsTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
