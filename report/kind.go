package report

import "errors"

// Kinds of error the command tells apart (errors.Is) to say what to do
// next; the hint is chosen by kind, never by the message's text.
var (
	// ErrNotEmpty: a new run's output folder already holds files.
	ErrNotEmpty = errors.New("output folder is not empty")
	// ErrDryRunFolder: the output folder holds a dry run's plan.
	ErrDryRunFolder = errors.New("output folder holds a dry run's plan")
)

// Kind marks err as being of kind, so that errors.Is(err, kind) holds,
// without changing its message.
func Kind(kind, err error) error { return &kindError{kind: kind, err: err} }

type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }
