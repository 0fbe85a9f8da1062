package input

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"pwrotate/rotate"
)

// fuzzReasons are the only shapes an Invalid reason may take: user data
// appears only in the quoted userId cell.
var fuzzReasons = regexp.MustCompile(`^(userId "(.*)" is not an integer in 1\.\.2147483647` +
	`|userId is empty` +
	`|userId is not an integer in 1\.\.2147483647 \(the cell is not shown: it may hold a password\)` +
	`|cannot be parsed: (bare " in non-quoted-field|extraneous or missing " in quoted-field) \(line \d+, column \d+\)` +
	`|field \d+ is not valid UTF-8` +
	`|too few fields \(\d+\): the userId column is field \d+` +
	`|duplicate of line \d+` +
	`|password breaks the rule: missing (lowercase|uppercase|digit|symbol)(, (lowercase|uppercase|digit|symbol))*` +
	`|password contains a control character` +
	`|password begins or ends with a space)$`)

// FuzzReadInput checks that no input makes ReadInput panic, hang or break
// its promises: lines increasing, valid ids in range and never repeating
// an earlier record's (valid or not), no given password in a reason, the
// same outcome however the source splits reads.
// Limits are lowered so that small inputs reach them.
func FuzzReadInput(f *testing.F) {
	f.Add([]byte("userId,newPassword\n1,Aa1!aaaa\n2,\n"))
	f.Add([]byte("userId,login,authLevel\n1,svc-a,Root\n2\nx,b,General\n1,dup,TechOps\n"))
	lim := inputLimits{field: 64, record: 256, records: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := readInput(bytes.NewReader(data), "fuzz.csv", lim)
		in2, err2 := readInput(iotest.OneByteReader(bytes.NewReader(data)), "fuzz.csv", lim)
		if (err == nil) != (err2 == nil) || (err != nil && len(data) <= inputSniffBytes && err.Error() != err2.Error()) {
			t.Fatalf("outcome depends on read sizes: %v vs %v", err, err2)
		}
		if err == nil && !reflect.DeepEqual(in, in2) {
			t.Fatalf("result depends on read sizes")
		}
		given := fuzzGivenPasswords(data)
		if err != nil {
			var ie *Error
			if !errors.As(err, &ie) || ie.Name != "fuzz.csv" {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			msg := err.Error()
			for _, pw := range given {
				if len(pw) >= 8 && len(rotate.MissingClasses(pw)) == 0 && strings.Contains(msg, pw) {
					t.Fatalf("error shows a given password: %s", msg)
				}
			}
			return
		}
		if sum := sha256.Sum256(data); in.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("SHA256 %s is not that of the input", in.SHA256)
		}
		if len(in.Records) == 0 || len(in.Records) > lim.records {
			t.Fatalf("%d records", len(in.Records))
		}
		if (in.HasLogin && len(in.loginEnd) != len(in.Records)) || (!in.HasLogin && in.loginEnd != nil) ||
			(in.HasAuthLevel && len(in.levels) != len(in.Records)) || (!in.HasAuthLevel && in.levels != nil) {
			t.Fatalf("%d records, %d logins, %d levels: not parallel", len(in.Records), len(in.loginEnd), len(in.levels))
		}
		for i := range in.Records {
			if in.Records[i].Invalid != "" && (in.Login(i) != "" || in.Level(i) != rotate.LevelUnknown) {
				t.Fatalf("record %d is invalid but has a login or level", i)
			}
		}
		lines := bytes.Count(data, []byte("\n")) + 1
		prev := 1
		ids := make(map[int]bool) // of every earlier record, valid or not
		for _, r := range in.Records {
			if r.Line <= prev || r.Line > lines {
				t.Fatalf("record line %d after line %d (input has %d lines)", r.Line, prev, lines)
			}
			prev = r.Line
			seen := ids[r.UserID]
			if r.UserID != 0 {
				ids[r.UserID] = true
			}
			if r.Invalid == "" {
				if r.UserID < 1 || r.UserID > maxInputUserID || seen {
					t.Fatalf("line %d: valid id %d out of range or repeating an earlier record", r.Line, r.UserID)
				}
				if id, ok := parseInputUserID(r.RawUserID); !ok || id != r.UserID {
					t.Fatalf("line %d: RawUserID %q for id %d", r.Line, r.RawUserID, r.UserID)
				}
				if pw := r.Password.Reveal(); pw != "" && passwordReason(pw) != "" {
					t.Fatalf("line %d: valid record with a password breaking the rule", r.Line)
				}
				continue
			}
			if !r.Password.Empty() {
				t.Fatalf("line %d: invalid record keeps its password", r.Line)
			}
			m := fuzzReasons.FindStringSubmatch(r.Invalid)
			if m == nil {
				t.Fatalf("line %d: unexpected reason %q", r.Line, r.Invalid)
			}
			var shown []string // user data the record shows (a parsed id is not a secret)
			if r.UserID == 0 {
				shown = append(shown, r.RawUserID)
			}
			if m[2] != "" {
				q, err := strconv.Unquote(`"` + m[2] + `"`)
				if err != nil {
					t.Fatalf("line %d: reason quotes badly: %q", r.Line, r.Invalid)
				}
				shown = append(shown, q)
			}
			for _, s := range shown {
				s = strings.TrimSuffix(s, "…")
				for _, pw := range given {
					tp := strings.Trim(pw, " \t")
					if tp != "" && (s == tp || len(rotate.MissingClasses(pw)) == 0 && strings.Contains(s, pw)) {
						t.Fatalf("line %d: %q shows a given password", r.Line, r.Invalid)
					}
				}
			}
		}
	})
}

// fuzzGivenPasswords parses data on its own and returns the cells of the
// password column.
func fuzzGivenPasswords(data []byte) []string {
	cr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, inputBOM)))
	cr.FieldsPerRecord = -1
	pwCol := -1
	var header bool
	var given []string
	for {
		rec, err := cr.Read()
		var pe *csv.ParseError
		if err != nil && !errors.As(err, &pe) || err == io.EOF {
			return given
		}
		if !header {
			if pe != nil {
				return nil
			}
			if blankRecord(rec) {
				continue
			}
			header = true
			for i, c := range rec {
				switch n := normalizeInputColumn(c); {
				case n == "newpassword":
					pwCol = i
				case n == "password" && pwCol < 0:
					pwCol = i
				}
			}
			continue
		}
		if pwCol >= 0 && pwCol < len(rec) {
			given = append(given, rec[pwCol])
		}
	}
}
