package report

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gocarina/gocsv"

	"pwrotate/rotate/secret"
)

// codecRows are results rows that exercise every cell type: sanitized
// text, raw IDs, empty and non-empty optional counts, zero and non-UTC
// times.
func codecRows() []Row {
	paris := time.FixedZone("CET", 3600)
	return append(sampleRows(),
		Row{Line: 9, RawUserID: "=1+1\nx", Status: Invalid, Error: "@SUM(A1)\r\n\u202e"},
		Row{Line: 10, RawUserID: " padded ", Status: Invalid, Error: strings.Repeat("é", 400)},
		Row{Line: 11, UserID: 3, Status: Failed, Attempts: 300, HTTPStatus: 503, ErrorCode: "-x",
			Error: `say "hi", then \.`, PasswordSource: "input", FinishedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, paris)},
	)
}

// TestRowCodecsAgree pins the reflection-free paths (Append's cells,
// RewriteSorted's decode, Seal's writer) to what gocsv writes and reads
// for the same row structs.
func TestRowCodecsAgree(t *testing.T) {
	t.Run("headers come from the csv tags", func(t *testing.T) {
		for name, tt := range map[string]struct{ got, want []string }{
			"results": {ResultsHeader, strings.Split("line,userId,status,generation,attempts,httpStatus,errorCode,error,passwordSource,sessionsReset,finishedAt,apiKeyRotated,sealedFor,delivered", ",")},
			"sealed":  {sealedHeader, []string{"userId", "password", "generation"}},
			"open":    {CSVHeader[openRecord](), []string{"userId", "password", "status", "generation"}},
		} {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("%s header %q, want %q", name, tt.got, tt.want)
			}
		}
		if n := reflect.TypeFor[resultsRecord]().NumField(); n != len(ResultsHeader) {
			t.Errorf("resultsRecord has %d fields, header %d columns", n, len(ResultsHeader))
		}
	})
	t.Run("results: Append writes gocsv's bytes", func(t *testing.T) {
		for _, r := range codecRows() {
			fast, viaGocsv := encodeBoth(t, r)
			if fast != viaGocsv {
				t.Errorf("line %d: Append writes %q, gocsv %q", r.Line, fast, viaGocsv)
			}
		}
	})
	t.Run("results: the scan reads what gocsv reads", func(t *testing.T) {
		rr := newRowReader()
		for _, r := range codecRows() {
			fast, _ := encodeBoth(t, r)
			rec, err := csv.NewReader(strings.NewReader(fast)).Read()
			if err != nil {
				t.Fatal(err)
			}
			a, errA := parseRow(rec)
			b, errB := rr.read(rec)
			if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
				t.Errorf("line %d: scan %+v (%v), gocsv %+v (%v)", r.Line, a, errA, b, errB)
			}
		}
	})
	t.Run("sealed: gocsv reads what Seal writes", func(t *testing.T) {
		var plain bytes.Buffer
		m := map[int]secret.Password{1: "Aa1! inner space", 2: "\tTab1a!", 3: `q"uo,te1A`, 4: "lf\n1Aa!", 5: "plainA1!"}
		w := &plainRecorder{}
		if err := writeSealedRows(w, 7, pairs(m)); err != nil {
			t.Fatal(err)
		}
		plain.Write(w.b)
		cr := csv.NewReader(&plain)
		cr.FieldsPerRecord = len(sealedHeader)
		all, err := cr.ReadAll()
		if err != nil || !reflect.DeepEqual(all[0], sealedHeader) {
			t.Fatalf("plaintext %q: %v", w.b, err)
		}
		var got []sealedRecord
		if err := gocsv.UnmarshalCSV(csv.NewReader(bytes.NewReader(w.b)), &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(m) {
			t.Fatalf("%d rows, want %d", len(got), len(m))
		}
		for _, s := range got {
			if s.Generation != 7 || s.Password.Password != m[int(s.UserID)] {
				t.Errorf("user %d: generation %d, password differs", s.UserID, s.Generation)
			}
		}
	})
}

// encodeBoth returns r's results line as Append writes it and as gocsv
// marshals its resultsRecord.
func encodeBoth(t *testing.T, r Row) (fast, viaGocsv string) {
	t.Helper()
	var a, b bytes.Buffer
	cw := csv.NewWriter(&a)
	rec := make([]string, len(ResultsHeader))
	r.record(rec)
	if err := cw.Write(rec); err != nil {
		t.Fatal(err)
	}
	cw.Flush()
	rows := []resultsRecord{r.csvRecord()}
	if err := gocsv.MarshalCSVWithoutHeaders(&rows, csv.NewWriter(&b)); err != nil {
		t.Fatal(err)
	}
	return a.String(), b.String()
}

// plainRecorder collects the plaintext that writeSealed hands to age.
type plainRecorder struct{ b []byte }

func (p *plainRecorder) Write(b []byte) (int, error) { p.b = append(p.b, b...); return len(b), nil }

// FuzzResultsRecord checks that any results line decodes the same through
// gocsv and through the scan, and that a decodable one encodes the same.
func FuzzResultsRecord(f *testing.F) {
	for _, r := range codecRows() {
		rec := make([]string, len(ResultsHeader))
		r.record(rec)
		f.Add(strings.Join(rec, ","))
	}
	f.Add("+5,007,updated,01,1,0200,,,generated,,2025-03-04T07:06:07.5+02:00")
	f.Add("0,x,done,-1,a,,,,guess,yes,yesterday")
	f.Add("1,0x10,failed,1_0,1.5, 2,,,,,")
	f.Fuzz(func(t *testing.T, line string) {
		cr := csv.NewReader(strings.NewReader(line))
		cr.FieldsPerRecord = len(ResultsHeader)
		rec, err := cr.Read()
		if err != nil {
			return
		}
		a, errA := parseRow(rec)
		b, errB := newRowReader().read(rec)
		if fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Fatalf("scan says %v, gocsv %v", errA, errB)
		}
		if errA != nil {
			return
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("scan %+v, gocsv %+v", a, b)
		}
		if fast, viaGocsv := encodeBoth(t, a); fast != viaGocsv {
			t.Fatalf("Append writes %q, gocsv %q", fast, viaGocsv)
		}
	})
}

// TestPasswordCellNeverPrints checks that a sealed or open row prints no
// password through fmt, slog or gocsv's errors, while gocsv writes it.
func TestPasswordCellNeverPrints(t *testing.T) {
	const pw = "Hunter2!secret"
	s := sealedRecord{UserID: 7, Password: passwordCell{secret.Password(pw)}, Generation: 1}
	o := openRecord{UserID: 7, Password: passwordCell{secret.Password(pw)}, Status: OpenUpdated, Generation: 1}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "s", s, "o", o)
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v %v", s, o), "%+v": fmt.Sprintf("%+v %+v", s, o), "%#v": fmt.Sprintf("%#v %#v", s, o),
		"slog": logged.String(),
	} {
		if strings.Contains(out, pw) {
			t.Errorf("%s printed the password: %s", name, out)
		}
	}
	out, err := gocsv.MarshalString(&[]sealedRecord{s})
	if err != nil || out != "userId,password,generation\n7,"+pw+",1\n" {
		t.Fatalf("gocsv wrote %q, %v", out, err)
	}

	// A password in any column: the decoding error names the column only.
	dec := newRowDecoder[sealedRecord]()
	for _, rec := range [][]string{{pw, "x", "1"}, {"1", "x", pw}, {"1", "", "1"}} {
		_, err := dec.decode(rec)
		if err == nil {
			t.Fatalf("%d: decoded a bad row", len(rec))
		}
		msg := badCell(err, sealedHeader).Error()
		if strings.Contains(msg, pw) || !strings.HasPrefix(msg, "bad ") {
			t.Errorf("error %q", msg)
		}
	}
}

// TestWipeBuffer checks that the sealing buffer holds no plaintext after
// it is flushed.
func TestWipeBuffer(t *testing.T) {
	bw := bufio.NewWriterSize(io.Discard, 4096)
	bw.WriteString("1,Hunter2!secret,1\n")
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	wipeBuffer(bw)
	b := bw.AvailableBuffer()
	if got := b[:cap(b)]; bytes.Contains(got, []byte("Hunter2")) || len(bytes.Trim(got, "\x00")) != 0 {
		t.Fatal("plaintext left in the buffer")
	}
}

// BenchmarkRowCodec compares, for one row, gocsv's reflection with the
// direct calls of the cell methods that Append and Seal use (DESIGN.md,
// "CSV rows").
func BenchmarkRowCodec(b *testing.B) {
	r := benchResultRows(1)[0]
	b.Run("results/direct", func(b *testing.B) {
		cw := csv.NewWriter(io.Discard)
		rec := make([]string, len(ResultsHeader))
		b.ReportAllocs()
		for b.Loop() {
			r.record(rec)
			_ = cw.Write(rec)
		}
	})
	b.Run("results/gocsv", func(b *testing.B) {
		cw := csv.NewWriter(io.Discard)
		rows := make([]resultsRecord, 1)
		b.ReportAllocs()
		for b.Loop() {
			rows[0] = r.csvRecord()
			_ = gocsv.MarshalCSVWithoutHeaders(&rows, cw)
		}
	})
	// Sealed rows: 1,000 a file, as BenchmarkSeal writes them.
	const n = 1000
	const pw = secret.Password("Xq7#mZ2!pLr9^Tw4kV8_abcd")
	b.Run("sealed-1000/direct", func(b *testing.B) {
		rows := func(yield func(int, secret.Password) bool) {
			for i := range n {
				if !yield(1_000_000+i, pw) {
					return
				}
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			_ = writeSealedRows(io.Discard, 1, rows)
		}
	})
	b.Run("sealed-1000/gocsv", func(b *testing.B) {
		rows := make([]sealedRecord, n)
		for i := range rows {
			rows[i] = sealedRecord{UserID: count(1_000_000 + i), Password: passwordCell{pw}, Generation: 1}
		}
		b.ReportAllocs()
		for b.Loop() {
			_ = gocsv.MarshalCSV(&rows, csv.NewWriter(bufio.NewWriterSize(io.Discard, 64<<10)))
		}
	})
}

// TestEveryResultsColumnCoded sets one field of resultsRecord at a time
// and checks that cells and decode handle it as gocsv does: a field added
// to the struct but forgotten in cells or decode fails here.
func TestEveryResultsColumnCoded(t *testing.T) {
	typ := reflect.TypeFor[resultsRecord]()
	for i := range typ.NumField() {
		t.Run(typ.Field(i).Name, func(t *testing.T) {
			var rec resultsRecord
			f := reflect.ValueOf(&rec).Elem().Field(i)
			if u, ok := f.Addr().Interface().(gocsv.TypeUnmarshaller); ok {
				if u.UnmarshalCSV("42") != nil {
					if err := u.UnmarshalCSV("2026-01-02T03:04:05Z"); err != nil {
						t.Fatalf("no sample value for %s", f.Type())
					}
				}
			} else if f.Kind() == reflect.String {
				f.SetString("x")
			} else {
				t.Fatalf("%s is neither a cell type nor a string", f.Type())
			}
			cells := make([]string, len(ResultsHeader))
			rec.cells(cells)
			var buf bytes.Buffer
			if err := gocsv.MarshalCSVWithoutHeaders(&[]resultsRecord{rec}, csv.NewWriter(&buf)); err != nil {
				t.Fatal(err)
			}
			want, err := csv.NewReader(&buf).Read()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cells, want) || cells[i] == "" {
				t.Fatalf("cells %q, gocsv %q", cells, want)
			}
			var back resultsRecord
			if err := back.decode(cells); err != nil || !reflect.DeepEqual(back, rec) {
				t.Fatalf("decode: %+v (%v), want %+v", back, err, rec)
			}
		})
	}
}
