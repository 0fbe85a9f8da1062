// Package secret holds Password, a string type that refuses to print itself.
//
// A password exists in memory, in the request body and in the sealed file,
// nowhere else. Password makes the accidental routes (a log attribute, a %v
// of a struct, an error message, JSON) print "[redacted]" instead; the only
// way to the characters is an explicit call to Reveal.
//
// In memory a password has several copies (the generator's string, the
// plan's buffer, the request body, net/http's and crypto/tls's buffers,
// age's plaintext chunks), and Go strings cannot be zeroed: the buffers
// pwrotate owns are zeroed after use, the others stay in freed memory until
// reused. DisableCoreDumps keeps all of them off disk if the process
// crashes.
package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Password prints in place of its value.
const Redacted = "[redacted]"

// Password is a password that redacts itself in fmt, slog, JSON and text
// encodings. Note that fmt cannot call methods on unexported struct fields:
// a struct that holds a Password in an unexported field must redact itself.
type Password string

// Reveal returns the password's characters. Call it only to build a request
// body or a sealed file.
func (p Password) Reveal() string { return string(p) }

// Empty reports whether no password is set.
func (p Password) Empty() bool { return p == "" }

// String returns Redacted.
func (p Password) String() string { return Redacted }

// GoString returns Redacted.
func (p Password) GoString() string { return Redacted }

// Format prints Redacted for every verb.
func (p Password) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue makes slog print Redacted.
func (p Password) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText makes encoding/json and friends print Redacted.
func (p Password) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
