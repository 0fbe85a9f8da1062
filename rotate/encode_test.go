package rotate

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// marshalString is what encoding/json writes for s.
func marshalString(t testing.TB, s string) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	t.Run("every byte", func(t *testing.T) {
		for b := range 256 {
			for _, s := range []string{string([]byte{byte(b)}), "a" + string([]byte{byte(b)}) + "z"} {
				if got, want := appendJSONString(nil, s), marshalString(t, s); !bytes.Equal(got, want) {
					t.Fatalf("byte %#x: got %s, want %s", b, got, want)
				}
			}
		}
	})
	t.Run("every pair of bytes", func(t *testing.T) {
		buf := make([]byte, 2)
		for i := range 1 << 16 {
			buf[0], buf[1] = byte(i>>8), byte(i)
			s := string(buf)
			if got, want := appendJSONString(nil, s), marshalString(t, s); !bytes.Equal(got, want) {
				t.Fatalf("bytes % x: got %s, want %s", buf, got, want)
			}
		}
	})
	t.Run("runes", func(t *testing.T) {
		for r := rune(0); r <= utf8.MaxRune; r++ {
			// Every rune of the first planes, then a sample of the rest.
			if r > 0x3000 && r%97 != 0 && r != utf8.MaxRune && (r < 0xd7f0 || r > 0xe010) {
				continue
			}
			s := "x" + string(r) + "\u2028y\u2029<&>"
			if got, want := appendJSONString(nil, s), marshalString(t, s); !bytes.Equal(got, want) {
				t.Fatalf("rune %U: got %s, want %s", r, got, want)
			}
		}
	})
	t.Run("appends", func(t *testing.T) {
		if got := string(appendJSONString([]byte("pre:"), `a"b`)); got != `pre:"a\"b"` {
			t.Fatalf("got %s", got)
		}
	})
}

// FuzzAppendJSONString checks appendJSONString against encoding/json on
// any text, valid UTF-8 or not.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "Pw9!correct-Horse#42", "\x00\x1f\x7f", "<script>&amp;", "é\u2028\u2029😀", "\xff\xfe", "a\xe2\x80", `\"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := appendJSONString(nil, s), marshalString(t, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}

func TestPasswordBodyMatchesEncodingJSON(t *testing.T) {
	tests := []struct {
		name string
		id   int
		pw   string
	}{
		{"plain", 1042, "Pw9!correct-Horse#42"},
		{"largest id", 2147483647, "x"},
		{"id beyond int32", 1 << 40, "x"},
		{"quotes and backslashes", 7, `a"b\c`},
		{"html and controls", 8, "<b>&\t\n\x01\x7f"},
		{"unicode", 9, "pässwörd😀\u2028"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := json.Marshal(struct {
				UserID      int    `json:"userId"`
				NewPassword string `json:"newPassword"`
			}{tt.id, tt.pw})
			if err != nil {
				t.Fatal(err)
			}
			got := passwordBody(tt.id, tt.pw)
			if !bytes.Equal(got, want) {
				t.Fatalf("body differs from encoding/json (lengths %d, %d)", len(got), len(want))
			}
			var back struct {
				UserID      int    `json:"userId"`
				NewPassword string `json:"newPassword"`
			}
			if err := json.Unmarshal(got, &back); err != nil || back.UserID != tt.id || back.NewPassword != tt.pw {
				t.Fatal("body does not decode to the same id and password")
			}
		})
	}
}

func TestScrubber(t *testing.T) {
	c := &Client{key: testKey}
	pw := testPW.Reveal()
	tests := []struct {
		name, pw, in, want string
	}{
		{"neither", pw, "HTTP 400: nothing secret", "HTTP 400: nothing secret"},
		{"empty text", pw, "", ""},
		{"key", pw, "bad key " + testKey + "!", "bad key [redacted]!"},
		{"password", pw, "you sent " + pw, "you sent [redacted]"},
		{"both, twice", pw, pw + testKey + pw + " " + testKey, "[redacted][redacted][redacted] [redacted]"},
		{"no password given", "", "pw " + pw + " key " + testKey, "pw " + pw + " key [redacted]"},
		{"prefix of the key only", pw, testKey[:len(testKey)-1], testKey[:len(testKey)-1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scrub := c.scrubber(tt.pw)
			// Twice: the first use may build the replacer, the second reuses it.
			for range 2 {
				if got := scrub(tt.in); got != tt.want {
					t.Fatalf("scrub(%q) = %q, want %q", tt.in, got, tt.want)
				}
			}
		})
	}
	t.Run("no allocation without a secret", func(t *testing.T) {
		scrub := c.scrubber(pw)
		text := strings.Repeat("an ordinary server message ", 4)
		if n := testing.AllocsPerRun(100, func() { _ = scrub(text) }); n != 0 {
			t.Fatalf("%v allocations per clean text, want 0", n)
		}
	})
}

// jsonScalarReference is jsonScalar as it was before its fast paths.
func jsonScalarReference(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return strconv.FormatBool(b)
	}
	return ""
}

var jsonScalarSeeds = []string{
	"", "null", " null ", "nul", "nulll", `""`, `"x"`, `"InvalidParameter"`, `"a\"b"`, `"a\\b"`, `"\u00e9"`,
	`"é"`, "\"\xff\"", "\"a\x01\"", "\"tab\there\"", `"unterminated`, `"a"b"`, `"`, "42", "-1.5e3", "true",
	"false", "{}", "[1]", " \"padded\" ", `"\ud800"`, "\"\x7f\"",
	"0\v", "\v\"x\"", "\t\"x\"\n", // white space JSON has and has not
}

func TestJSONScalarSameAsUnmarshal(t *testing.T) {
	for _, raw := range jsonScalarSeeds {
		t.Run(raw, func(t *testing.T) {
			if got, want := jsonScalar(json.RawMessage(raw)), jsonScalarReference(json.RawMessage(raw)); got != want {
				t.Fatalf("jsonScalar(%q) = %q, want %q", raw, got, want)
			}
		})
	}
	if jsonScalar(nil) != "" {
		t.Fatal("nil raw value")
	}
}

// FuzzJSONScalar checks jsonScalar's fast paths against encoding/json.
func FuzzJSONScalar(f *testing.F) {
	for _, s := range jsonScalarSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if got, want := jsonScalar(raw), jsonScalarReference(raw); got != want {
			t.Fatalf("jsonScalar(%q) = %q, want %q", raw, got, want)
		}
	})
}

func TestJSONBool(t *testing.T) {
	tests := []struct {
		raw       string
		has, want bool
	}{
		{"", false, false},
		{"true", true, true},
		{"false", true, false},
		{"null", true, false},
		{" true ", true, true},
		{`"true"`, false, false},
		{"1", false, false},
		{"tru", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			has, v := jsonBool(json.RawMessage(tt.raw))
			var ref bool
			refHas := tt.raw != "" && json.Unmarshal([]byte(tt.raw), &ref) == nil
			if has != tt.has || v != tt.want || has != refHas || v != ref {
				t.Fatalf("jsonBool(%q) = %v, %v; want %v, %v (encoding/json %v, %v)", tt.raw, has, v, tt.want, tt.want, refHas, ref)
			}
		})
	}
}

// headerTamperer records each request's headers, then changes them in
// place before sending, as a careless transport might: the next request
// must not see the change.
type headerTamperer struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []http.Header
}

func (h *headerTamperer) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Header.Clone())
	h.mu.Unlock()
	for _, v := range r.Header {
		v[0] = "tampered"
	}
	r.Header.Set("X-Tamper", "1")
	return h.next.RoundTrip(r)
}

func TestRequestHeaders(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/me") {
			reply(200, meBody)(w, r)
			return
		}
		reply(200, okBody)(w, r)
	})
	tamper := &headerTamperer{next: http.DefaultTransport}
	e := newTestClient(t, api.srv.URL, func(c *Config) { c.HTTPClient = &http.Client{Transport: tamper} })
	ctx := t.Context()
	for range 2 {
		if _, out := e.c.Me(ctx); !out.OK {
			t.Fatalf("Me: %v", out.Err)
		}
		if out := e.c.ChangePassword(ctx, 1042, testPW); !out.OK {
			t.Fatalf("ChangePassword: %v", out.Err)
		}
		if out := e.c.ResetSessions(ctx, 7); !out.OK {
			t.Fatalf("ResetSessions: %v", out.Err)
		}
	}
	if len(tamper.seen) != 6 {
		t.Fatalf("%d requests, want 6", len(tamper.seen))
	}
	for i, h := range tamper.seen {
		wantType, wantN := "", 3
		if i%3 == 1 {
			wantType, wantN = "application/json", 4
		}
		if h.Get("X-API-Key") != testKey || h.Get("Accept") != "application/json" ||
			h.Get("User-Agent") != userAgent || h.Get("Content-Type") != wantType || len(h) != wantN {
			t.Errorf("request %d: %d headers, key ok %v, accept %q, agent %q, type %q", i, len(h),
				h.Get("X-API-Key") == testKey, h.Get("Accept"), h.Get("User-Agent"), h.Get("Content-Type"))
		}
	}
}
