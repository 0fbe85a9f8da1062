package rotate

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"runtime"
	"strings"
	"sync"

	"github.com/sethvargo/go-password/password"

	"pwrotate/rotate/secret"
)

// Limits on a password shape.
const (
	// MinLength is the shortest generated password allowed.
	MinLength = 12
	// MaxLength is the longest generated password allowed.
	MaxLength = 1024
	// DefaultSymbolSet is the default --symbol-set.
	DefaultSymbolSet = "!#%*.:?^_~"
	// forbiddenSymbols are ASCII punctuation characters refused in a symbol
	// set: they quote or escape in CSV, JSON, shells and spreadsheets.
	forbiddenSymbols = "\"'`,\\"
	// formulaStarts are the characters a generated password never begins
	// with (a spreadsheet would read the cell as a formula).
	formulaStarts = "=+-@"
	// maxDraws bounds the redraw loop of Generate. A shape that
	// NewGenerator accepts has at least two letters, so a draw has both
	// cases with probability at least 1/2: reaching this bound means the
	// random source is broken.
	maxDraws = 200
)

// Shape is the shape of a generated password; its fields are the flags
// --length, --digits, --symbols and --symbol-set.
type Shape struct {
	Length    int    // total characters (--length)
	Digits    int    // exact number of digits (--digits)
	Symbols   int    // exact number of symbols (--symbols)
	SymbolSet string // symbols to draw from (--symbol-set)
}

// DefaultShape returns the default shape: 24 characters, 4 digits, 4
// symbols from DefaultSymbolSet.
func DefaultShape() Shape {
	return Shape{Length: 24, Digits: 4, Symbols: 4, SymbolSet: DefaultSymbolSet}
}

// Generator draws random passwords of one Shape that pass CheckPolicy and do
// not begin with a spreadsheet formula character. It is safe for concurrent
// use.
type Generator struct {
	shape Shape
	gen   *password.Generator
}

// NewGenerator validates s and returns a Generator for it. A shape is
// rejected, with an error naming the flag, when: Length is outside
// [MinLength, MaxLength]; Digits or Symbols is below 1; Digits+Symbols
// leaves no room for a lowercase and an uppercase letter; or SymbolSet is
// empty or holds anything but printable ASCII punctuation (letters, digits,
// space, control and non-ASCII characters are refused, and so are the
// quoting characters " ' ` , and \). Duplicate symbols are removed.
func NewGenerator(s Shape) (*Generator, error) {
	switch {
	case s.Length < MinLength:
		return nil, fmt.Errorf("--length %d: must be at least %d", s.Length, MinLength)
	case s.Length > MaxLength:
		return nil, fmt.Errorf("--length %d: must be at most %d", s.Length, MaxLength)
	case s.Digits < 1:
		return nil, fmt.Errorf("--digits %d: must be at least 1", s.Digits)
	case s.Symbols < 1:
		return nil, fmt.Errorf("--symbols %d: must be at least 1", s.Symbols)
	case s.Digits > s.Length-2 || s.Symbols > s.Length-2 || s.Digits+s.Symbols > s.Length-2:
		return nil, fmt.Errorf("--digits %d and --symbols %d: together at most --length minus 2 (%d), to leave room for a lowercase and an uppercase letter",
			s.Digits, s.Symbols, s.Length-2)
	}
	set, err := normalizeSymbolSet(s.SymbolSet)
	if err != nil {
		return nil, err
	}
	s.SymbolSet = set
	gen, err := password.NewGenerator(&password.GeneratorInput{Symbols: set})
	if err != nil {
		return nil, fmt.Errorf("creating the password generator: %w", err)
	}
	return &Generator{shape: s, gen: gen}, nil
}

// normalizeSymbolSet checks a --symbol-set and removes duplicates, keeping
// the first occurrence of each symbol.
func normalizeSymbolSet(set string) (string, error) {
	if set == "" {
		return "", errors.New("--symbol-set: must not be empty")
	}
	var b strings.Builder
	var seen [128]bool
	for i := 0; i < len(set); i++ {
		c := set[i]
		if !isAllowedSymbol(c) {
			return "", fmt.Errorf("--symbol-set: %s is not allowed: use printable ASCII punctuation except %s",
				describeByte(c), "\" ' ` , \\")
		}
		if !seen[c] {
			seen[c] = true
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// isAllowedSymbol reports whether c may be in a symbol set.
func isAllowedSymbol(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	if isLower(c) || isUpper(c) || isDigit(c) {
		return false
	}
	return strings.IndexByte(forbiddenSymbols, c) < 0
}

// describeByte names a rejected byte of a symbol set without printing
// control or non-ASCII bytes raw.
func describeByte(c byte) string {
	switch {
	case c == ' ':
		return "space"
	case c < ' ' || c == 0x7f:
		return fmt.Sprintf("control character 0x%02x", c)
	case c >= 0x80:
		return "a non-ASCII character"
	default:
		return fmt.Sprintf("%q", rune(c))
	}
}

// Shape returns the generator's shape, with the symbol set normalized.
func (g *Generator) Shape() Shape { return g.shape }

// Generate returns a new random password of the generator's shape. It has
// exactly Shape.Digits digits and Shape.Symbols symbols, letters elsewhere,
// passes CheckPolicy, and does not begin with = + - or @. It is safe for
// concurrent use.
func (g *Generator) Generate() (secret.Password, error) {
	return g.draw(g.gen, rand.Reader)
}

// fillShare is the fewest passwords Fill gives one goroutine.
const fillShare = 256

// Fill puts len(dst) new passwords, as Generate draws them, into dst. It
// draws on up to GOMAXPROCS goroutines, each through its own go-password
// generator reading crypto/rand in 4 KiB blocks (one read of the kernel's
// generator per 80 or so passwords instead of one per character). Every
// block is zeroed as it is consumed and when Fill returns.
func (g *Generator) Fill(dst []secret.Password) error {
	workers := min(runtime.GOMAXPROCS(0), (len(dst)+fillShare-1)/fillShare)
	if workers <= 1 {
		return g.fill(dst)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	per := (len(dst) + workers - 1) / workers
	for w := range workers {
		part := dst[min(w*per, len(dst)):min((w+1)*per, len(dst))]
		wg.Go(func() { errs[w] = g.fill(part) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// fill draws len(dst) passwords on this goroutine.
func (g *Generator) fill(dst []secret.Password) error {
	src := new(randBlocks)
	defer src.wipe()
	gen, err := password.NewGenerator(&password.GeneratorInput{Symbols: g.shape.SymbolSet, Reader: src})
	if err != nil {
		return fmt.Errorf("creating the password generator: %w", err)
	}
	for i := range dst {
		if dst[i], err = g.draw(gen, src); err != nil {
			return err
		}
	}
	return nil
}

// randBlocks reads crypto/rand a block at a time. It is not safe for
// concurrent use.
type randBlocks struct {
	buf    [4096]byte
	unread []byte // the rest of buf not yet handed out
}

// Read fills p from the block, reading a new block when it runs out, and
// zeroes what it hands out. crypto/rand.Read does not fail (Go 1.24).
func (b *randBlocks) Read(p []byte) (int, error) {
	for done := 0; done < len(p); {
		if len(b.unread) == 0 {
			if _, err := rand.Read(b.buf[:]); err != nil {
				return done, err
			}
			b.unread = b.buf[:]
		}
		c := copy(p[done:], b.unread)
		clear(b.unread[:c])
		b.unread = b.unread[c:]
		done += c
	}
	return len(p), nil
}

// wipe zeroes the unread part of the block.
func (b *randBlocks) wipe() { clear(b.buf[:]); b.unread = nil }

// draw returns one password drawn by gen (whose randomness is src): see
// Generate.
func (g *Generator) draw(gen *password.Generator, src io.Reader) (secret.Password, error) {
	s := g.shape
	for range maxDraws {
		pw, err := gen.Generate(s.Length, s.Digits, s.Symbols, false, true)
		if err != nil {
			// go-password errors describe the shape or the random
			// source, never the characters drawn.
			return "", fmt.Errorf("generating a password: %w", err)
		}
		if CheckPolicy(pw) != nil {
			continue
		}
		if strings.IndexByte(formulaStarts, pw[0]) >= 0 {
			// Redrawing would take thousands of draws for shapes that are
			// nearly all symbols; swap the first character with a random
			// letter instead, which keeps every count and the rule.
			if pw, err = swapFirstWithLetter(pw, src); err != nil {
				return "", fmt.Errorf("generating a password: %w", err)
			}
		}
		return secret.Password(pw), nil
	}
	return "", fmt.Errorf("generating a password: no compliant password in %d draws", maxDraws)
}

// swapFirstWithLetter swaps pw[0] with a letter of pw chosen uniformly at
// random (from src). pw has at least one letter.
func swapFirstWithLetter(pw string, src io.Reader) (string, error) {
	b := []byte(pw)
	var letters []int
	for i, c := range b {
		if isLower(c) || isUpper(c) {
			letters = append(letters, i)
		}
	}
	if len(letters) == 0 {
		return "", errors.New("no letter to move to the front")
	}
	n, err := rand.Int(src, big.NewInt(int64(len(letters))))
	if err != nil {
		return "", fmt.Errorf("reading randomness: %w", err)
	}
	j := letters[n.Int64()]
	b[0], b[j] = b[j], b[0]
	s := string(b)
	clear(b) // the returned string is a copy, and Go strings cannot be zeroed
	return s, nil
}

// CheckPolicy reports whether pw follows the ECGrid password rule: at least
// one lowercase letter, one uppercase letter, one digit and one character
// outside [a-zA-Z0-9]. The error names the missing classes and never
// contains pw. CheckPolicy does not check the length or the first
// character: those are rules for generated passwords.
func CheckPolicy(pw string) error {
	if missing := MissingClasses(pw); len(missing) > 0 {
		return fmt.Errorf("password breaks the rule: missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// MissingClasses returns the character classes of the password rule that
// pw lacks, in the order "lowercase", "uppercase", "digit", "symbol" (a
// symbol is any character outside [a-zA-Z0-9]); none if pw meets the rule.
func MissingClasses(pw string) []string {
	var lower, upper, digit, other bool
	for i := 0; i < len(pw); i++ {
		switch c := pw[i]; {
		case isLower(c):
			lower = true
		case isUpper(c):
			upper = true
		case isDigit(c):
			digit = true
		default:
			other = true
		}
	}
	var missing []string
	for _, class := range []struct {
		ok   bool
		name string
	}{{lower, "lowercase"}, {upper, "uppercase"}, {digit, "digit"}, {other, "symbol"}} {
		if !class.ok {
			missing = append(missing, class.name)
		}
	}
	return missing
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
