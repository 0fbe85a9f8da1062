package input

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"pwrotate/rotate"
)

// want is the expected shape of one record.
type want struct {
	line     int
	id       int
	raw      string
	password string
	invalid  string // "" = valid; else a substring of Invalid
}

func readString(t *testing.T, s string) (*Input, error) {
	t.Helper()
	return Read(strings.NewReader(s), "test.csv")
}

func checkRecords(t *testing.T, got []Record, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("got %d records, want %d:\n%s", len(got), len(wants), dumpRecords(got))
	}
	for i, w := range wants {
		r := got[i]
		if r.Line != w.line || r.UserID != w.id || r.Password.Reveal() != w.password {
			t.Errorf("record %d: line %d id %d password ok=%v; want line %d id %d (password of %d bytes)",
				i, r.Line, r.UserID, r.Password.Reveal() == w.password, w.line, w.id, len(w.password))
		}
		if w.raw != "" && r.RawUserID != w.raw {
			t.Errorf("record %d: RawUserID %q, want %q", i, r.RawUserID, w.raw)
		}
		switch {
		case w.invalid == "" && r.Invalid != "":
			t.Errorf("record %d (line %d): unexpectedly invalid: %s", i, r.Line, r.Invalid)
		case w.invalid != "" && !strings.Contains(r.Invalid, w.invalid):
			t.Errorf("record %d (line %d): Invalid %q, want it to contain %q", i, r.Line, r.Invalid, w.invalid)
		}
	}
}

func dumpRecords(rs []Record) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  line %d id %d raw %q invalid %q\n", r.Line, r.UserID, r.RawUserID, r.Invalid)
	}
	return b.String()
}

func TestReadInputHeaderAliases(t *testing.T) {
	tests := []struct {
		header   string
		row      string
		wantID   int
		wantPw   string
		hasPw    bool
		wantCols []string
	}{
		{"UserID", "7", 7, "", false, []string{"UserID"}},
		{"user_id", "7", 7, "", false, nil},
		{" User-Id ", "7", 7, "", false, []string{" User-Id "}},
		{"USERID,NEWPASSWORD", "7,Aa1!aaaa", 7, "Aa1!aaaa", true, nil},
		{"userId,newPassword", "7,Aa1!aaaa", 7, "Aa1!aaaa", true, nil},
		{"userId,Password", "7,Aa1!aaaa", 7, "Aa1!aaaa", true, nil},
		{"userId,new_password", "7,Aa1!aaaa", 7, "Aa1!aaaa", true, nil},
		{"password,userId,newPassword", "Bb2!old,7,Aa1!new", 7, "Aa1!new", true, nil},
		{"newPassword,userId,password", "Aa1!new,7,Bb2!old", 7, "Aa1!new", true, nil},
		{"name,email,userId,notes", "bob,b@x,7,hi", 7, "", false, []string{"name", "email", "userId", "notes"}},
		{"userId,passwordHint", "7,Aa1!hint", 7, "", false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.header, func(t *testing.T) {
			in, err := readString(t, tc.header+"\n"+tc.row+"\n")
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, in.Records, []want{{line: 2, id: tc.wantID, password: tc.wantPw}})
			if in.HasPasswords != tc.hasPw {
				t.Errorf("HasPasswords = %v, want %v", in.HasPasswords, tc.hasPw)
			}
			if tc.wantCols != nil && !slices.Equal(in.Columns, tc.wantCols) {
				t.Errorf("Columns = %q, want %q", in.Columns, tc.wantCols)
			}
		})
	}
}

func TestReadInputFixtures(t *testing.T) {
	tests := []struct {
		file  string
		cols  []string
		hasPw bool
		want  []want
	}{
		{"basic.csv", []string{"userId", "newPassword", "name"}, true, []want{
			{line: 2, id: 1042, raw: "1042"},
			{line: 3, id: 1043, password: "Tr0ub4dor&3x"},
			{line: 4, id: 1044, raw: "1044"},
			{line: 5, id: 45, raw: "0045", password: "Xk9#mpL2vq!w"},
		}},
		{"excel_bom_crlf.csv", []string{"User ID", "Password", "Name"}, true, []want{
			{line: 2, id: 1001, password: `Pa,ss"w0rd`},
			{line: 4, id: 1002},
			{line: 6, id: 1003, invalid: "password contains a control character"},
		}},
		{"quoted_multiline.csv", []string{"userId", "note", "new_password"}, true, []want{
			{line: 3, id: 2001},
			{line: 4, id: 2002},
			{line: 7, id: 2003, password: "Str0ng!pass"},
			{line: 10, id: 2004},
		}},
		{"invalid_reasons.csv", []string{"user-id", "password"}, true, []want{
			{line: 2, raw: "abc", invalid: `userId "abc" is not an integer in 1..2147483647`},
			{line: 3, raw: "-5", invalid: `userId "-5" is not an integer`},
			{line: 4, raw: "+7", invalid: `userId "+7" is not an integer`},
			{line: 5, raw: "0", invalid: `userId "0" is not an integer`},
			{line: 6, raw: "2147483648", invalid: `userId "2147483648" is not an integer`},
			{line: 7, raw: "1.0", invalid: `userId "1.0" is not an integer`},
			{line: 8, raw: "0x1F", invalid: `userId "0x1F" is not an integer`},
			{line: 9, invalid: "userId is empty"},
			{line: 10, id: 3001, invalid: "password breaks the rule: missing uppercase, digit, symbol"},
			{line: 11, id: 3001, invalid: "duplicate of line 10"}, // the earlier 3001 is invalid: still a repeat
			{line: 12, id: 3002, password: "Aa1!good"},
			{line: 13, id: 3002, invalid: "duplicate of line 12"},
			{line: 14, id: 3003, invalid: "password breaks the rule: missing uppercase"},
			{line: 15, id: 3004, invalid: "password begins or ends with a space"},
			{line: 16, id: 3005, invalid: `cannot be parsed: bare " in non-quoted-field (line 16, column 7)`},
			{line: 17, id: 3006, invalid: `cannot be parsed: extraneous or missing " in quoted-field`},
			{line: 18, id: 3007}, // no password cell: one is generated
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", "input", tc.file)
			in, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, in.Records, tc.want)
			if !slices.Equal(in.Columns, tc.cols) {
				t.Errorf("Columns = %q, want %q", in.Columns, tc.cols)
			}
			if in.HasPasswords != tc.hasPw || in.Name != path {
				t.Errorf("HasPasswords %v Name %q; want %v %q", in.HasPasswords, in.Name, tc.hasPw, path)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(data); in.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("SHA256 = %s, want the sha256 of the file", in.SHA256)
			}
		})
	}
}

func TestReadInputRecords(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []want
	}{
		{"crlf", "userId\r\n1\r\n2\r\n", []want{{line: 2, id: 1}, {line: 3, id: 2}}},
		{"no final newline", "userId\n1\n2", []want{{line: 2, id: 1}, {line: 3, id: 2}}},
		{"blank lines", "\n\nuserId\n\n1\n\r\n\n2\n\n", []want{{line: 5, id: 1}, {line: 8, id: 2}}},
		{"empty rows skipped", "userId,name\n,\n1,a\n  ,\t\n", []want{{line: 3, id: 1}}},
		{"spaces and tabs around id", "userId\n  12  \n\t13\t\n", []want{{line: 2, id: 12, raw: "12"}, {line: 3, id: 13, raw: "13"}}},
		{"quoted id", "userId\n\" 14 \"\n", []want{{line: 2, id: 14}}},
		{"leading zeros", "userId\n0042\n42\n", []want{{line: 2, id: 42, raw: "0042"}, {line: 3, id: 42, invalid: "duplicate of line 2"}}},
		{"max id", "userId\n2147483647\n", []want{{line: 2, id: 2147483647}}},
		{"quoted newline keeps start line", "userId,note\n1,\"a\nb\nc\"\n2,x\n", []want{{line: 2, id: 1}, {line: 5, id: 2}}},
		{"quoted comma", "note,userId\n\"a,b\",3\n", []want{{line: 2, id: 3}}},
		{"extra fields", "userId\n1,x,y,z\n", []want{{line: 2, id: 1}}},
		{"too few fields", "name,userId\nbob\nann,2\n", []want{{line: 2, invalid: "too few fields (1): the userId column is field 2"}, {line: 3, id: 2}}},
		{"invalid utf8 field", "userId,name\n5,\xff\xfe\n6,ok\n", []want{{line: 2, id: 5, invalid: "field 2 is not valid UTF-8"}, {line: 3, id: 6}}},
		{"invalid utf8 id", "userId\n\xff\n", []want{{line: 2, raw: "\uFFFD", invalid: "field 1 is not valid UTF-8"}}},
		{"non-ascii digits", "userId\n١٢\n", []want{{line: 2, invalid: `userId "١٢" is not an integer`}}},
		{"control chars shown safely", "userId\na\u202eb\n", []want{{line: 2, raw: "a\uFFFDb", invalid: "userId \"a\uFFFDb\""}}},
		{"long id truncated", "userId\n" + strings.Repeat("z", 100) + "\n", []want{{line: 2, raw: strings.Repeat("z", 32) + "…", invalid: "userId \"" + strings.Repeat("z", 32) + "…\" is not"}}},
		{"duplicate of first parsable", "userId,password\n9,bad\n9,Aa1!ok\n9,Bb2!ok\n9,\n", []want{
			{line: 2, id: 9, invalid: "password breaks the rule"},
			{line: 3, id: 9, invalid: "duplicate of line 2"},
			{line: 4, id: 9, invalid: "duplicate of line 2"},
			{line: 5, id: 9, invalid: "duplicate of line 2"},
		}},
		{"duplicate of invalid password", "userId,password\n5,abc\n5,\n", []want{
			{line: 2, id: 5, invalid: "password breaks the rule"},
			{line: 3, id: 5, invalid: "duplicate of line 2"},
		}},
		{"duplicate of unparsable record", "userId,password\n6,a\"b\n6,\n", []want{
			{line: 2, id: 6, invalid: "cannot be parsed"},
			{line: 3, id: 6, invalid: "duplicate of line 2"},
		}},
		{"duplicate of bad utf8 record", "userId,name\n7,\xff\n7,ok\n", []want{
			{line: 2, id: 7, invalid: "not valid UTF-8"},
			{line: 3, id: 7, invalid: "duplicate of line 2"},
		}},
		{"repeat invalid on its own keeps its reason", "userId,password\n8,\n8,short\n", []want{
			{line: 2, id: 8},
			{line: 3, id: 8, invalid: "password breaks the rule"},
		}},
		{"unparsable ids are not duplicates", "userId\nabc\nabc\n\n10\n", []want{
			{line: 2, raw: "abc", invalid: `userId "abc"`},
			{line: 3, raw: "abc", invalid: `userId "abc"`},
			{line: 5, id: 10},
		}},
		{"bare quote then recovery", "userId,password\n1,a\"b\n2,\n", []want{{line: 2, id: 1, invalid: "cannot be parsed"}, {line: 3, id: 2}}},
		{"extraneous quote on last line", "userId,password\n1,\n2,\"Aa1!\"x", []want{{line: 2, id: 1}, {line: 3, id: 2, invalid: "cannot be parsed"}}},
		{"extraneous quote multiline last", "userId,password\n1,\"Aa1!\nx\"y\n", []want{{line: 2, id: 1, invalid: "cannot be parsed"}}},
		{"password with symbols only outside ascii", "userId,password\n1,Aa1é\n", []want{{line: 2, id: 1, password: "Aa1é"}}},
		{"password with tab", "userId,password\n1,\"Aa1\tx\"\n", []want{{line: 2, id: 1, invalid: "control character"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := readString(t, tc.input)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, in.Records, tc.want)
			// The result must not depend on how the source chunks its reads.
			in2, err := Read(iotest.OneByteReader(strings.NewReader(tc.input)), "test.csv")
			if err != nil {
				t.Fatalf("one byte at a time: %v", err)
			}
			if !reflect.DeepEqual(in, in2) {
				t.Errorf("one byte at a time gives another result:\n%s\nvs\n%s", dumpRecords(in.Records), dumpRecords(in2.Records))
			}
		})
	}
}

func TestReadInputFatal(t *testing.T) {
	big := strings.Repeat("x", maxInputFieldBytes+1)
	tests := []struct {
		name     string
		input    string
		line     int
		is       error  // errors.Is target, or nil
		contains string // substring of Error()
	}{
		{"empty", "", 0, errInputNoHeader, "reading input test.csv: input has no header"},
		{"only blank lines", "\n\r\n\n", 0, errInputNoHeader, "input has no header"},
		{"only bom", "\ufeff", 0, errInputNoHeader, "input has no header"},
		{"header only", "userId,newPassword\n", 0, ErrNoRecords, "input has no records"},
		{"header and blank rows", "userId,name\n\n,\n \n", 0, ErrNoRecords, "input has no records"},
		{"no userId column", "id,name\n1,a\n", 1, ErrNoUserIDColumn, `line 1: no userId column (columns seen: "id", "name")`},
		{"many columns listed", "a,b,c,d,e,f,g,h,i,j,k,l\n", 1, ErrNoUserIDColumn, `"j" and 2 more)`},
		{"long column truncated", strings.Repeat("h", 50) + "\n1\n", 1, ErrNoUserIDColumn, strings.Repeat("h", 32) + "…"},
		{"headerless data", "1042,x\n", 1, ErrNoUserIDColumn, "the first line looks like data, not a header"},
		{"two userId columns", "userId,user_id\n1,2\n", 1, nil, "columns 1 and 2 are both"},
		{"two password columns", "userId,password,Password\n1,a,b\n", 1, nil, "columns 2 and 3 are both"},
		{"header parse error", "user\"Id\n1\n", 1, nil, "header cannot be parsed"},
		{"header invalid utf8", "userId,na\xffme\n1,a\n", 1, errInputHeaderUTF8, "header is not valid UTF-8"},
		{"field over 1 KiB", "userId,note\n1,a\n2," + big + "\n", 3, errInputFieldTooLong, "line 3: field over 1 KiB"},
		{"quoted field over 1 KiB", "userId,note\n1,\"\n" + big + "\"\n", 2, errInputFieldTooLong, "field over 1 KiB"},
		{"header field over 1 KiB", "userId," + big + "\n1,a\n", 1, errInputFieldTooLong, "field over 1 KiB"},
		{"field of exactly 1 KiB is fine", "userId,n\n1," + big[1:] + "\n", -1, nil, ""},
		{"NUL in header", "user\x00Id\n1\n", 1, errInputNUL, "line 1: NUL byte: this looks like a binary file, not CSV"},
		{"NUL later", "userId\n1\n2\n\x003\n", 4, errInputNUL, "line 4: NUL byte"},
		{"binary", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 3, errInputNUL, "NUL byte"},
		{"unclosed quote", "userId,password\n1,\"abc\n2,x\n3,y\n", 2, errInputUnclosedQuote, "line 2: a quote opened in the record starting here never closes"},
		{"unclosed quote crlf", "userId,password\r\n1,x\r\n2,\"abc\r\n3,y\r\n", 3, errInputUnclosedQuote, "never closes"},
		{"unclosed quote no final newline", "userId,password\n1,\"abc", 2, errInputUnclosedQuote, "never closes"},
		{"unclosed quote trailing cr", "userId,password\n1,\"abc\r", 2, errInputUnclosedQuote, "never closes"},
		{"unclosed quote then blank", "userId,password\n1,\"abc\n\n", 2, errInputUnclosedQuote, "never closes"},
		{"unclosed quote then cr", "userId,password\n1,\"abc\n\r", 2, errInputUnclosedQuote, "never closes"},
		{"unclosed empty quote", "userId,password\n1,\"", 2, errInputUnclosedQuote, "never closes"},
		{"unclosed quote in header", "\"userId\n1\n", 1, errInputUnclosedQuote, "never closes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunked := range []bool{false, true} {
				var r io.Reader = strings.NewReader(tc.input)
				if chunked {
					r = iotest.OneByteReader(r)
				}
				_, err := Read(r, "test.csv")
				if tc.line < 0 {
					if err != nil {
						t.Fatalf("unexpected error: %v", err)
					}
					continue
				}
				var ie *Error
				if !errors.As(err, &ie) {
					t.Fatalf("chunked=%v: error %v (%T), want *Error", chunked, err, err)
				}
				if ie.Line != tc.line || ie.Name != "test.csv" {
					t.Errorf("chunked=%v: Line %d Name %q, want %d test.csv (%v)", chunked, ie.Line, ie.Name, tc.line, err)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("chunked=%v: %v is not %v", chunked, err, tc.is)
				}
				if !strings.Contains(err.Error(), tc.contains) {
					t.Errorf("chunked=%v: error %q does not contain %q", chunked, err, tc.contains)
				}
			}
		})
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// repeatReader yields prefix, then pattern over and over, size bytes in all.
type repeatReader struct {
	prefix  []byte
	pattern byte
	size    int64
	off     int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.off < r.size {
		if r.off < int64(len(r.prefix)) {
			p[n] = r.prefix[r.off]
		} else {
			p[n] = r.pattern
		}
		n++
		r.off++
	}
	return n, nil
}

func TestReadInputLimits(t *testing.T) {
	// Stops after the budget: a record over 64 KiB is never buffered whole.
	const stopWithin = maxInputRecordBytes + 2*inputBufSize
	t.Run("50 MB single line", func(t *testing.T) {
		src := &countingReader{r: &repeatReader{prefix: []byte("userId\n1\n2"), pattern: '9', size: 50 << 20}}
		start := time.Now()
		_, err := Read(src, "big.csv")
		if !errors.Is(err, errInputRecordTooLong) || !strings.Contains(err.Error(), "big.csv: line 3: record over 64 KiB") {
			t.Fatalf("err = %v, want record over 64 KiB on line 3", err)
		}
		if src.n > stopWithin {
			t.Errorf("read %d bytes before failing, want at most %d", src.n, stopWithin)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("50 MB single line, not yet split into fields", func(t *testing.T) {
		// One field of 50 MB: the field limit alone would come too late.
		src := &countingReader{r: &repeatReader{prefix: []byte("userId,note\n\n\n1,"), pattern: 'x', size: 50 << 20}}
		_, err := Read(src, "big.csv")
		if !errors.Is(err, errInputRecordTooLong) || !strings.Contains(err.Error(), "line 4:") {
			t.Fatalf("err = %v, want record over 64 KiB on line 4", err)
		}
		if src.n > stopWithin {
			t.Errorf("read %d bytes before failing, want at most %d", src.n, stopWithin)
		}
	})
	t.Run("never-closing quote in a large file", func(t *testing.T) {
		var b bytes.Buffer
		b.WriteString("userId,note\n1,a\n2,\"oops\n")
		for i := 3; b.Len() < 20<<20; i++ {
			b.WriteString(strconv.Itoa(i))
			b.WriteString(",short\n")
		}
		src := &countingReader{r: bytes.NewReader(b.Bytes())}
		_, err := Read(src, "q.csv")
		if !errors.Is(err, errInputRecordTooLong) || !strings.Contains(err.Error(), "line 3: record over 64 KiB") {
			t.Fatalf("err = %v, want record over 64 KiB on line 3", err)
		}
		if src.n > stopWithin {
			t.Errorf("read %d bytes before failing, want at most %d", src.n, stopWithin)
		}
	})
	t.Run("many blank lines are not a record", func(t *testing.T) {
		in, err := readString(t, "userId\n1\n"+strings.Repeat("\r\n", 100_000)+"2\n")
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, in.Records, []want{{line: 2, id: 1}, {line: 100_003, id: 2}})
	})
	// A record of exactly 64 KiB (line break included) passes; one byte more fails.
	for _, extra := range []int{0, 1} {
		t.Run(fmt.Sprintf("record of 64 KiB + %d", extra), func(t *testing.T) {
			rec := "7"
			for len(rec)+1001 <= maxInputRecordBytes-1 {
				rec += "," + strings.Repeat("f", 1000)
			}
			rec += "," + strings.Repeat("g", maxInputRecordBytes-1-len(rec)-1+extra) + "\n"
			if len(rec) != maxInputRecordBytes+extra {
				t.Fatalf("built %d bytes", len(rec))
			}
			for _, chunked := range []bool{false, true} {
				var r io.Reader = strings.NewReader("userId\n" + rec + "8\n")
				if chunked {
					r = iotest.OneByteReader(r)
				}
				in, err := Read(r, "t.csv")
				if extra == 0 {
					if err != nil {
						t.Fatal(err)
					}
					checkRecords(t, in.Records, []want{{line: 2, id: 7}, {line: 3, id: 8}})
				} else if !errors.Is(err, errInputRecordTooLong) || !strings.Contains(err.Error(), "line 2:") {
					t.Fatalf("chunked=%v: err = %v, want record over 64 KiB on line 2", chunked, err)
				}
			}
		})
	}
	t.Run("many columns", func(t *testing.T) {
		in, err := readString(t, "userId\n1"+strings.Repeat(",", 30_000)+"\n")
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, in.Records, []want{{line: 2, id: 1}})
		_, err = readString(t, "userId\n1"+strings.Repeat(",x", 40_000)+"\n")
		if !errors.Is(err, errInputRecordTooLong) {
			t.Fatalf("err = %v, want record over 64 KiB", err)
		}
	})
	t.Run("too many records", func(t *testing.T) {
		lim := defaultInputLimits
		lim.records = 3
		in, err := readInput(strings.NewReader("userId\n1\n2\n\n3\n"), "t.csv", lim)
		if err != nil || len(in.Records) != 3 {
			t.Fatalf("3 records at a limit of 3: %v", err)
		}
		_, err = readInput(strings.NewReader("userId\n1\n2\nx\n\n4\n5\n"), "t.csv", lim)
		if !errors.Is(err, errInputTooManyRecords) || !strings.Contains(err.Error(), "line 6: more than 10000000 records") {
			t.Fatalf("err = %v, want too many records on line 6", err)
		}
	})
}

func TestReadInputReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	tests := []struct {
		name string
		r    io.Reader
		is   error
		line int
	}{
		{"error mid-way", io.MultiReader(strings.NewReader("userId\n1\n2"), iotest.ErrReader(boom)), boom, 3},
		{"error at once", iotest.ErrReader(boom), boom, 1},
		{"timeout", iotest.TimeoutReader(strings.NewReader("userId\n1\n2\n")), iotest.ErrTimeout, 4},
		{"data with error", iotest.DataErrReader(io.MultiReader(strings.NewReader("userId\n1\n"), iotest.ErrReader(boom))), boom, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(tc.r, "stdin")
			var ie *Error
			if !errors.As(err, &ie) || !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want an *Error wrapping %v", err, tc.is)
			}
			if ie.Line != tc.line || !strings.HasPrefix(err.Error(), "reading input stdin: line ") {
				t.Errorf("err = %v (line %d), want line %d", err, ie.Line, tc.line)
			}
		})
	}
}

func TestReadInputFile(t *testing.T) {
	dir := t.TempDir()
	t.Run("directory", func(t *testing.T) {
		_, err := ReadFile(dir)
		if !errors.Is(err, errInputIsDirectory) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("err = %v, want is a directory naming %s", err, dir)
		}
	})
	t.Run("missing", func(t *testing.T) {
		p := filepath.Join(dir, "nope.csv")
		_, err := ReadFile(p)
		if !errors.Is(err, os.ErrNotExist) || err.Error() != "reading input "+p+": opening: no such file or directory" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		p := filepath.Join(dir, "secret.csv")
		if err := os.WriteFile(p, []byte("userId\n1\n"), 0o000); err != nil {
			t.Fatal(err)
		}
		if f, err := os.Open(p); err == nil {
			_ = f.Close()
			t.Skip("running with privileges that read a mode 000 file")
		}
		_, err := ReadFile(p)
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), p) {
			t.Fatalf("err = %v, want permission denied naming %s", err, p)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		p := filepath.Join(dir, "stdin.csv")
		if err := os.WriteFile(p, []byte("userId\n5\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		old := os.Stdin
		os.Stdin = f
		defer func() { os.Stdin = old }()
		in, err := ReadFile("-")
		if err != nil {
			t.Fatal(err)
		}
		if in.Name != "stdin" || len(in.Records) != 1 || in.Records[0].UserID != 5 {
			t.Fatalf("got %+v", in)
		}
	})
}

func TestInputErrorMessage(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Name: "users.csv", Line: 12, Err: errInputFieldTooLong}, "reading input users.csv: line 12: field over 1 KiB"},
		{&Error{Name: "stdin", Err: ErrNoRecords}, "reading input stdin: input has no records"},
		{&Error{Name: "a\nb.csv", Err: errInputNoHeader}, "reading input a\uFFFDb.csv: input has no header"},
		{&Error{Err: errInputNoHeader}, "reading input: input has no header"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("got %q", got)
			}
		})
	}
}

// TestReadInputNeverLeaksPasswords feeds files where passwords sit where
// they should not and checks that no message, RawUserID or print shows them.
func TestReadInputNeverLeaksPasswords(t *testing.T) {
	tests := []struct {
		file    string
		secrets []string
		fatal   bool
	}{
		{"swapped_columns.csv", []string{"Zq7!swapped-secret", "hunter2", "Kx8?fine-secret", "Wy3#other-secret", "plainpass", "laterpass"}, false},
		{"headerless.csv", []string{"Hq4!headerless-secret", "Hq4!another-secret"}, true},
		{"no_userid_column.csv", []string{"Qz5!looks-like-a-password"}, true},
		{"invalid_reasons.csv", []string{"Aa1!good", "Bb2!good", "short", "lowercase1!", "Aa1!spaces", "Aa1!ok", "Hidden9"}, false},
		{"excel_bom_crlf.csv", []string{`Pa,ss"w0rd`, "Multi", "Line9!"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			in, err := ReadFile(filepath.Join("testdata", "input", tc.file))
			var texts []string
			if tc.fatal {
				if err == nil {
					t.Fatal("no error")
				}
				texts = append(texts, err.Error(), fmt.Sprintf("%v %+v %#v", err, err, err))
			} else {
				if err != nil {
					t.Fatal(err)
				}
				texts = append(texts, fmt.Sprintf("%v %+v %#v", in, *in, in.Records))
				for _, r := range in.Records {
					texts = append(texts, r.Invalid, r.RawUserID, fmt.Sprint(r))
				}
			}
			for _, s := range tc.secrets {
				for _, text := range texts {
					if strings.Contains(text, s) {
						t.Errorf("%q shows a secret: %s", s, text)
					}
				}
			}
		})
	}
	t.Run("swapped columns are still reported", func(t *testing.T) {
		in, err := ReadFile(filepath.Join("testdata", "input", "swapped_columns.csv"))
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, in.Records, []want{
			{line: 2, raw: inputHiddenCell, invalid: "userId is not an integer in 1..2147483647 (the cell is not shown: it may hold a password)"},
			{line: 3, raw: inputHiddenCell, invalid: "(the cell is not shown"},
			{line: 4, id: 4003, password: "Kx8?fine-secret"},
			{line: 5, raw: "oops9", invalid: `userId "oops9" is not an integer`},
			{line: 6, raw: inputHiddenCell, invalid: "(the cell is not shown"},
			{line: 7, id: 4005, invalid: "password breaks the rule"},
			{line: 8, raw: inputHiddenCell, invalid: "(the cell is not shown"},
			{line: 9, raw: inputHiddenCell, invalid: "(the cell is not shown"},
			{line: 10, id: 4006, invalid: "password breaks the rule"},
		})
	})
}

func TestPasswordRuleProblems(t *testing.T) {
	tests := []struct {
		pw   string
		want []string
	}{
		{"Aa1!", nil},
		{"Tr0ub4dor&3", nil},
		{"Aa1 ", nil},
		{"Aa1é", nil},
		{"", []string{"lowercase", "uppercase", "digit", "symbol"}},
		{"abc", []string{"uppercase", "digit", "symbol"}},
		{"ABC1!", []string{"lowercase"}},
		{"abcABC!", []string{"digit"}},
		{"abcABC1", []string{"symbol"}},
		{"ÀÉ1!", []string{"lowercase", "uppercase"}},
	}
	for _, tc := range tests {
		t.Run(tc.pw, func(t *testing.T) {
			if got := rotate.MissingClasses(tc.pw); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseInputUserID(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"1", 1, true},
		{"2147483647", 2147483647, true},
		{"0002147483647", 2147483647, true},
		{"007", 7, true},
		{"2147483648", 0, false},
		{"99999999999999999999999", 0, false},
		{"0", 0, false},
		{"000", 0, false},
		{"", 0, false},
		{"+1", 0, false},
		{"-1", 0, false},
		{"1.0", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"1 2", 0, false},
		{" 1", 0, false},
		{"１", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseInputUserID(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("got %d %v, want %d %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func bigInput(n int) []byte {
	var b bytes.Buffer
	b.WriteString("userId,newPassword,name\n")
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		if i%2 == 0 {
			fmt.Fprintf(&b, ",Xy%d!pw-%d", i, i)
		} else {
			b.WriteString(",")
		}
		b.WriteString(",Some Name\n")
	}
	return b.Bytes()
}

func TestReadInputAllocations(t *testing.T) {
	data := bigInput(20_000)
	var in *Input
	allocs := testing.AllocsPerRun(3, func() {
		var err error
		in, err = Read(bytes.NewReader(data), "big.csv")
		if err != nil {
			t.Fatal(err)
		}
	})
	if len(in.Records) != 20_000 {
		t.Fatalf("got %d records", len(in.Records))
	}
	if last := in.Records[19_999]; last.Invalid != "" || last.Password.Reveal() != "Xy20000!pw-20000" {
		t.Fatalf("last record: %+v", last)
	}
	// encoding/csv makes one string per record; ours are the Records
	// chunks, the arena chunks and the duplicate check: far less than one
	// per record.
	if per := allocs / 20_000; per > 1.1 {
		t.Errorf("%.2f allocations per record", per)
	}
}

func BenchmarkReadInput(b *testing.B) {
	const n = 200_000
	data := bigInput(n)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		in, err := Read(bytes.NewReader(data), "bench.csv")
		if err != nil || len(in.Records) != n {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// TestReadInputLoginAndAuthLevel: the login and authLevel columns are kept
// per valid record, matched like the other columns.
func TestReadInputLoginAndAuthLevel(t *testing.T) {
	tests := []struct {
		name, csv          string
		hasLogin, hasLevel bool
		logins             []string
		levels             []rotate.AuthLevel
		wantErr            string
	}{
		{
			name:     "export columns",
			csv:      "userId,login,email,authLevel,status\n1, svc-edi ,a@b,Root,Active\n2,bob,b@b, networkadmin ,Active\n3,,c@b,Wizard,Active\nx,eve,e@b,Root,Active\n",
			hasLogin: true, hasLevel: true,
			logins: []string{"svc-edi", "bob", "", ""},
			levels: []rotate.AuthLevel{rotate.LevelRoot, rotate.LevelNetworkAdmin, rotate.LevelUnknown, rotate.LevelUnknown},
		},
		{
			name:     "aliases",
			csv:      "User ID,LOGIN,Auth_Level\n1,Alice,TechOps\n2,bob\n",
			hasLogin: true, hasLevel: true,
			logins: []string{"Alice", "bob"},
			levels: []rotate.AuthLevel{rotate.LevelTechOps, rotate.LevelUnknown},
		},
		{
			name:   "neither",
			csv:    "userId,name\n1,Alice\n",
			logins: []string{""}, levels: []rotate.AuthLevel{rotate.LevelUnknown},
		},
		{name: "two login columns", csv: "userId,login,Login\n1,a,b\n", wantErr: "columns 2 and 3 are both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := readString(t, tt.csv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if in.HasLogin != tt.hasLogin || in.HasAuthLevel != tt.hasLevel {
				t.Errorf("HasLogin %v HasAuthLevel %v, want %v %v", in.HasLogin, in.HasAuthLevel, tt.hasLogin, tt.hasLevel)
			}
			for i := range in.Records {
				if in.Login(i) != tt.logins[i] || in.Level(i) != tt.levels[i] {
					t.Errorf("record %d: login %q level %v, want %q %v", i, in.Login(i), in.Level(i), tt.logins[i], tt.levels[i])
				}
			}
		})
	}
}

// TestReadGroupColumn: the group column (--recipients-map) is kept only
// when asked for, matched as every column is; a cell that is not an ID,
// and an invalid record, have no group; two such columns are refused.
func TestReadGroupColumn(t *testing.T) {
	const csv = "User ID,login, Network_Id ,mailboxId\n" +
		"1000,a,12,101\n" +
		"1001,b, 7 ,102\n" +
		"1002,c,,103\n" +
		"1003,d,x,104\n" +
		"1004,e,0,105\n" +
		"abc,f,9,106\n" +
		"1005,g,2147483648,107\n"
	in, err := ReadOptions(strings.NewReader(csv), "users.csv", Options{GroupColumn: "networkId"})
	if err != nil {
		t.Fatal(err)
	}
	if in.GroupColumn != " Network_Id " {
		t.Errorf("GroupColumn %q", in.GroupColumn)
	}
	var got []int
	for i := range in.Records {
		got = append(got, in.Group(i))
	}
	if want := []int{12, 7, 0, 0, 0, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("groups %v, want %v", got, want)
	}
	mb, err := ReadOptions(strings.NewReader(csv), "users.csv", Options{GroupColumn: "mailboxId"})
	if err != nil || mb.Group(0) != 101 || mb.Group(6) != 107 {
		t.Errorf("mailboxId: %v", err)
	}
	plain, err := ReadOptions(strings.NewReader(csv), "users.csv", Options{})
	if err != nil || plain.GroupColumn != "" || plain.Group(0) != 0 {
		t.Errorf("not asked for: %q %d %v", plain.GroupColumn, plain.Group(0), err)
	}
	none, err := ReadOptions(strings.NewReader("userId\n1000\n"), "ids.csv", Options{GroupColumn: "networkId"})
	if err != nil || none.GroupColumn != "" || none.Group(0) != 0 {
		t.Errorf("no such column: %q %v", none.GroupColumn, err)
	}
	_, err = ReadOptions(strings.NewReader("userId,networkId,network id\n1000,1,2\n"), "two.csv", Options{GroupColumn: "networkId"})
	if err == nil || !strings.Contains(err.Error(), "columns 2 and 3") {
		t.Errorf("two networkId columns: %v", err)
	}
}
