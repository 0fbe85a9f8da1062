package rotate

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"testing"

	"pwrotate/rotate/secret"
)

func TestNewGeneratorRejectsImpossibleShapes(t *testing.T) {
	ok := DefaultShape()
	with := func(f func(*Shape)) Shape { s := ok; f(&s); return s }
	tests := []struct {
		name    string
		shape   Shape
		wantErr string // substring; "" means accepted
	}{
		{"default", ok, ""},
		{"minimum", Shape{Length: 12, Digits: 1, Symbols: 1, SymbolSet: "!"}, ""},
		{"tightest", Shape{Length: 12, Digits: 5, Symbols: 5, SymbolSet: "!"}, ""},
		{"maximum", Shape{Length: 1024, Digits: 1, Symbols: 1, SymbolSet: "!"}, ""},
		{"all allowed punctuation", with(func(s *Shape) { s.SymbolSet = "!#$%&()*+-./:;<=>?@[]^_{|}~" }), ""},
		{"too short", with(func(s *Shape) { s.Length = 3 }), "--length 3: must be at least 12"},
		{"11", with(func(s *Shape) { s.Length = 11; s.Digits, s.Symbols = 1, 1 }), "--length 11: must be at least 12"},
		{"too long", with(func(s *Shape) { s.Length = 1025 }), "--length 1025: must be at most 1024"},
		{"no digits", with(func(s *Shape) { s.Digits = 0 }), "--digits 0: must be at least 1"},
		{"negative digits", with(func(s *Shape) { s.Digits = -2 }), "--digits -2"},
		{"no symbols", with(func(s *Shape) { s.Symbols = 0 }), "--symbols 0: must be at least 1"},
		{"no room for two letters", Shape{Length: 12, Digits: 6, Symbols: 5, SymbolSet: "!"}, "--digits 6 and --symbols 5"},
		{"digits fill it", Shape{Length: 12, Digits: 12, Symbols: 1, SymbolSet: "!"}, "--digits 12 and --symbols 1"},
		{"overflowing sum", Shape{Length: 24, Digits: 1 << 62, Symbols: 1 << 62, SymbolSet: "!"}, "--digits"},
		{"empty set", with(func(s *Shape) { s.SymbolSet = "" }), "--symbol-set: must not be empty"},
		{"letter", with(func(s *Shape) { s.SymbolSet = "!a" }), `--symbol-set: 'a' is not allowed`},
		{"digit", with(func(s *Shape) { s.SymbolSet = "7!" }), `'7' is not allowed`},
		{"space", with(func(s *Shape) { s.SymbolSet = "! #" }), "space is not allowed"},
		{"double quote", with(func(s *Shape) { s.SymbolSet = `!"` }), `'"' is not allowed`},
		{"comma", with(func(s *Shape) { s.SymbolSet = "!," }), `',' is not allowed`},
		{"single quote", with(func(s *Shape) { s.SymbolSet = "!'" }), `'\'' is not allowed`},
		{"backquote", with(func(s *Shape) { s.SymbolSet = "!`" }), "'`' is not allowed"},
		{"backslash", with(func(s *Shape) { s.SymbolSet = `!\` }), `'\\' is not allowed`},
		{"tab", with(func(s *Shape) { s.SymbolSet = "!\t" }), "control character 0x09"},
		{"DEL", with(func(s *Shape) { s.SymbolSet = "!\x7f" }), "control character 0x7f"},
		{"non-ASCII", with(func(s *Shape) { s.SymbolSet = "!§" }), "non-ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewGenerator(tt.shape)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewGenerator(%+v) = %v, want success", tt.shape, err)
				}
				if g == nil {
					t.Fatal("nil generator")
				}
				return
			}
			if err == nil {
				t.Fatalf("NewGenerator(%+v) succeeded, want error containing %q", tt.shape, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewGeneratorRemovesDuplicateSymbols(t *testing.T) {
	g, err := NewGenerator(Shape{Length: 16, Digits: 2, Symbols: 2, SymbolSet: "!!#!##~"})
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Shape().SymbolSet; got != "!#~" {
		t.Fatalf("symbol set = %q, want %q", got, "!#~")
	}
}

// TestGenerateProperties draws 100,000+ passwords over several shapes and
// checks every one against the rule, its length and its class counts.
func TestGenerateProperties(t *testing.T) {
	tests := []struct {
		name  string
		shape Shape
		n     int
	}{
		{"default", DefaultShape(), 30_000},
		{"minimum", Shape{Length: 12, Digits: 1, Symbols: 1, SymbolSet: "!"}, 40_000},
		// Two letters only: half the draws lack a case and are redrawn;
		// every symbol is a formula character.
		{"tight formula symbols", Shape{Length: 12, Digits: 5, Symbols: 5, SymbolSet: "=+-@"}, 25_000},
		{"long wide set", Shape{Length: 64, Digits: 10, Symbols: 20, SymbolSet: "!#$%&()*+-./:;<=>?@[]^_{|}~"}, 5_000},
		// Nearly all symbols, all of them formula characters: redrawing
		// until the first character is fine would take ~700 draws.
		{"extreme", Shape{Length: 256, Digits: 1, Symbols: 253, SymbolSet: "=@"}, 300},
	}
	total := 0
	for _, tt := range tests {
		total += tt.n
	}
	if total < 100_000 {
		t.Fatalf("only %d passwords drawn", total)
	}
	for _, tt := range tests {
		for _, how := range drawWays {
			t.Run(tt.name+"/"+how.name, func(t *testing.T) {
				t.Parallel()
				g, err := NewGenerator(tt.shape)
				if err != nil {
					t.Fatal(err)
				}
				set := g.Shape().SymbolSet
				seen := make(map[string]bool, tt.n)
				symbolsSeen := map[rune]bool{}
				firstUpper, firstLower := false, false
				for i, p := range how.draw(t, g, tt.n) {
					pw := p.Reveal()
					if problem := checkShape(pw, tt.shape, set); problem != "" {
						// The password is a test artefact; still, print its
						// index, not the password.
						t.Fatalf("password %d: %s", i, problem)
					}
					if seen[pw] {
						t.Fatalf("password %d repeats an earlier one", i)
					}
					seen[pw] = true
					for _, r := range pw {
						if strings.ContainsRune(set, r) {
							symbolsSeen[r] = true
						}
					}
					firstUpper = firstUpper || isUpper(pw[0])
					firstLower = firstLower || isLower(pw[0])
				}
				if len(symbolsSeen) != len(set) {
					t.Errorf("%d of %d symbols ever drawn", len(symbolsSeen), len(set))
				}
				if !firstUpper || !firstLower {
					t.Errorf("first character never upper (%v) or never lower (%v)", !firstUpper, !firstLower)
				}
			})
		}
	}
}

// drawWays are the two ways to draw passwords: Generate one at a time,
// and Fill (in parallel, through buffered randomness).
var drawWays = []struct {
	name string
	draw func(t *testing.T, g *Generator, n int) []secret.Password
}{
	{"Generate", func(t *testing.T, g *Generator, n int) []secret.Password {
		out := make([]secret.Password, n)
		for i := range out {
			p, err := g.Generate()
			if err != nil {
				t.Fatal(err)
			}
			out[i] = p
		}
		return out
	}},
	{"Fill", func(t *testing.T, g *Generator, n int) []secret.Password {
		out := make([]secret.Password, n)
		if err := g.Fill(out); err != nil {
			t.Fatal(err)
		}
		for i, p := range out {
			if p.Empty() {
				t.Fatalf("Fill left password %d of %d empty", i, n)
			}
		}
		return out
	}},
}

func TestFillSizes(t *testing.T) {
	g, err := NewGenerator(DefaultShape())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, fillShare - 1, fillShare + 1, 3*fillShare + 7} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			out := make([]secret.Password, n)
			if err := g.Fill(out); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for i, p := range out {
				if problem := checkShape(p.Reveal(), g.Shape(), g.Shape().SymbolSet); problem != "" {
					t.Fatalf("password %d of %d: %s", i, n, problem)
				}
				seen[p.Reveal()] = true
			}
			if len(seen) != n {
				t.Fatalf("%d distinct passwords of %d", len(seen), n)
			}
		})
	}
}

// TestRandBlocks: reads across block boundaries are served in full, what
// was handed out is zeroed in the block, and wipe zeroes the rest.
func TestRandBlocks(t *testing.T) {
	var b randBlocks
	got := make([]byte, 0, 3*len(b.buf))
	for _, n := range []int{1, 7, len(b.buf) - 8, 5000, 1} {
		p := make([]byte, n)
		if k, err := b.Read(p); k != n || err != nil {
			t.Fatalf("Read(%d bytes) = %d, %v", n, k, err)
		}
		got = append(got, p...)
		consumed := len(b.buf) - len(b.unread)
		if !bytes.Equal(b.buf[:consumed], make([]byte, consumed)) {
			t.Fatalf("after Read(%d): the %d bytes handed out are still in the block", n, consumed)
		}
	}
	if zeros := bytes.Count(got, []byte{0}); zeros > len(got)/64 {
		t.Fatalf("%d zero bytes in %d random bytes", zeros, len(got))
	}
	if len(b.unread) == 0 || bytes.Equal(b.unread, make([]byte, len(b.unread))) {
		t.Fatal("test needs unread random bytes left in the block")
	}
	b.wipe()
	if !bytes.Equal(b.buf[:], make([]byte, len(b.buf))) || len(b.unread) != 0 {
		t.Fatal("wipe left bytes in the block")
	}
}

// checkShape returns what is wrong with pw for shape s (symbols from set),
// or "".
func checkShape(pw string, s Shape, set string) string {
	if len(pw) != s.Length {
		return "wrong length"
	}
	if err := CheckPolicy(pw); err != nil {
		return err.Error()
	}
	if strings.ContainsAny(pw[:1], "=+-@") {
		return "begins with a formula character"
	}
	var digits, symbols int
	for i := 0; i < len(pw); i++ {
		c := pw[i]
		switch {
		case isDigit(c):
			digits++
		case isLower(c), isUpper(c):
		case strings.IndexByte(set, c) >= 0:
			symbols++
		default:
			return "character outside letters, digits and the symbol set"
		}
	}
	if digits != s.Digits {
		return "wrong digit count"
	}
	if symbols != s.Symbols {
		return "wrong symbol count"
	}
	return ""
}

func TestGenerateConcurrent(t *testing.T) {
	g, err := NewGenerator(DefaultShape())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				p, err := g.Generate()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[p.Reveal()] {
					t.Error("a password repeats")
				}
				seen[p.Reveal()] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 1600 {
		t.Fatalf("%d distinct passwords, want 1600", len(seen))
	}
}

func TestCheckPolicy(t *testing.T) {
	tests := []struct {
		name    string
		pw      string
		missing []string // classes the error must name; nil means valid
	}{
		{"all four", "aB3!", nil},
		{"long valid", "correct-Horse-battery-5taple", nil},
		{"non-ASCII counts as a symbol", "aB3é", nil},
		{"space counts as a symbol", "aB3 ", nil},
		{"no lower", "AB3!", []string{"lowercase"}},
		{"no upper", "ab3!", []string{"uppercase"}},
		{"no digit", "aB!!", []string{"digit"}},
		{"no symbol", "aB34", []string{"symbol"}},
		{"letters only", "Password", []string{"digit", "symbol"}},
		{"empty", "", []string{"lowercase", "uppercase", "digit", "symbol"}},
		{"digits only", "123456789012", []string{"lowercase", "uppercase", "symbol"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPolicy(tt.pw)
			if tt.missing == nil {
				if err != nil {
					t.Fatalf("CheckPolicy = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckPolicy = nil, want an error")
			}
			msg := err.Error()
			for _, m := range tt.missing {
				if !strings.Contains(msg, m) {
					t.Errorf("error %q does not name %q", msg, m)
				}
			}
			for _, m := range []string{"lowercase", "uppercase", "digit", "symbol"} {
				if !contains(tt.missing, m) && strings.Contains(msg, m) {
					t.Errorf("error %q names %q, which is present", msg, m)
				}
			}
			if tt.pw != "" && strings.Contains(msg, tt.pw) {
				t.Error("error echoes the password")
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// BenchmarkFill draws passwords as a run does, 4096 at a time (ns/op is
// per password).
func BenchmarkFill(b *testing.B) {
	g, err := NewGenerator(DefaultShape())
	if err != nil {
		b.Fatal(err)
	}
	out := make([]secret.Password, 4096)
	n := 0
	for b.Loop() {
		if n%len(out) == 0 {
			if err := g.Fill(out); err != nil {
				b.Fatal(err)
			}
		}
		n++
	}
}

func BenchmarkGenerate(b *testing.B) {
	g, err := NewGenerator(DefaultShape())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := g.Generate()
		if err != nil {
			b.Fatal(err)
		}
		if err := CheckPolicy(p.Reveal()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestGenerateUniformPositions: digits, symbols and letters are spread
// over every position alike (a uniform arrangement), and every letter of
// both cases and every digit is drawn. Bounds are 14 standard deviations
// wide: a failure means a bias, not bad luck.
func TestGenerateUniformPositions(t *testing.T) {
	const n = 30_000
	g, err := NewGenerator(DefaultShape())
	if err != nil {
		t.Fatal(err)
	}
	s := g.Shape()
	for _, how := range drawWays {
		t.Run(how.name, func(t *testing.T) {
			digitsAt := make([]int, s.Length)
			symbolsAt := make([]int, s.Length)
			chars := map[byte]int{}
			for _, p := range how.draw(t, g, n) {
				pw := p.Reveal()
				for i := 0; i < len(pw); i++ {
					chars[pw[i]]++
					switch {
					case isDigit(pw[i]):
						digitsAt[i]++
					case !isLower(pw[i]) && !isUpper(pw[i]):
						symbolsAt[i]++
					}
				}
			}
			wantD, wantS := float64(s.Digits)/float64(s.Length), float64(s.Symbols)/float64(s.Length)
			for i := range s.Length {
				if f := float64(digitsAt[i]) / n; f < wantD-0.03 || f > wantD+0.03 {
					t.Errorf("position %d holds a digit in %.3f of passwords, want %.3f", i, f, wantD)
				}
				if f := float64(symbolsAt[i]) / n; f < wantS-0.03 || f > wantS+0.03 {
					t.Errorf("position %d holds a symbol in %.3f of passwords, want %.3f", i, f, wantS)
				}
			}
			if want := 52 + 10 + len(s.SymbolSet); len(chars) != want {
				t.Errorf("%d distinct characters drawn, want %d", len(chars), want)
			}
		})
	}
}
