// Package directory writes a listing of ECGrid users (`pwrotate users`, and
// the snapshot of `pwrotate run --select`) as a CSV that `pwrotate run
// --input` takes as it is: one row per user, sorted by userId, every cell
// safe to open in a spreadsheet. The file holds names and emails, so it is
// written atomically with mode 0600.
package directory

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/gocarina/gocsv"

	"pwrotate/report"
)

// User is one listed ECGrid user, as the export writes it (the listing's
// UserIDInfo: the caller converts its own type).
type User struct {
	UserID    int
	Login     string
	Email     string
	FirstName string
	LastName  string
	NetworkID int // 0: not given
	MailboxID int // 0: not given
	AuthLevel string
	Status    string
}

// Users converts a listing's users, of any type with User's fields in
// User's order, to Users.
func Users[T ~struct {
	UserID    int
	Login     string
	Email     string
	FirstName string
	LastName  string
	NetworkID int
	MailboxID int
	AuthLevel string
	Status    string
}](us []T) []User {
	out := make([]User, len(us))
	for i, u := range us {
		out[i] = User(u)
	}
	return out
}

// userRow is one row of the export, marshalled by gocsv: the csv tags are
// the header.
type userRow struct {
	UserID    int             `csv:"userId"`
	Login     report.SafeText `csv:"login"`
	Email     report.SafeText `csv:"email"`
	FirstName report.SafeText `csv:"firstName"`
	LastName  report.SafeText `csv:"lastName"`
	NetworkID report.OptCount `csv:"networkId"`
	MailboxID report.OptCount `csv:"mailboxId"`
	AuthLevel report.SafeText `csv:"authLevel"`
	Status    report.SafeText `csv:"status"`
}

// Header is the export's header row.
var Header = report.CSVHeader[userRow]()

// Write writes users to w as CSV: Header, then one row per user in userId
// order (users is sorted in place). Text cells go through report.SafeCell (a
// cell starting with = + - @ gets a leading ', control characters become
// spaces, long text is cut); an ID of 0 is an empty cell. A userId that is
// not in 1..2147483647 or that appears twice is an error, and nothing
// after the rows before it is written.
func Write(w io.Writer, users []User) error {
	slices.SortFunc(users, func(a, b User) int { return a.UserID - b.UserID })
	for i, u := range users {
		if u.UserID < 1 || u.UserID > 1<<31-1 {
			return fmt.Errorf("user export: userId %d is not a valid ID", u.UserID)
		}
		if i > 0 && users[i-1].UserID == u.UserID {
			return fmt.Errorf("user export: user %d listed twice", u.UserID)
		}
	}
	// Rows go to gocsv 256 at a time: a listing can hold millions of users.
	cw := csv.NewWriter(w)
	batch := make([]userRow, 0, min(len(users), 256))
	marshal := gocsv.MarshalCSV // the first call writes the header
	for first := true; first || len(users) > 0; first = false {
		batch = batch[:0]
		for len(users) > 0 && len(batch) < cap(batch) {
			u := users[0]
			users = users[1:]
			batch = append(batch, userRow{
				UserID: u.UserID, Login: report.SafeText(u.Login), Email: report.SafeText(u.Email),
				FirstName: report.SafeText(u.FirstName), LastName: report.SafeText(u.LastName),
				NetworkID: report.OptCount(u.NetworkID), MailboxID: report.OptCount(u.MailboxID),
				AuthLevel: report.SafeText(u.AuthLevel), Status: report.SafeText(u.Status),
			})
		}
		if err := marshal(&batch, cw); err != nil {
			return fmt.Errorf("user export: %w", err)
		}
		marshal = gocsv.MarshalCSVWithoutHeaders
	}
	return nil
}

// WriteFile writes the export to path atomically (a temporary file in the
// same folder, fsynced, renamed over path, the folder fsynced), mode 0600:
// path holds its old content or the whole export, never a part.
func WriteFile(path string, users []User) error {
	return report.WriteFileAtomicFunc(path, 0o600, func(w io.Writer) error {
		return Write(w, users)
	})
}

// WriteTo writes the export to path, or to stdout when path is "-" (then
// buffered, and flushed at the end).
func WriteTo(path string, stdout io.Writer, users []User) error {
	if path != "-" {
		return WriteFile(path, users)
	}
	if stdout == nil {
		stdout = os.Stdout
	}
	bw := bufio.NewWriterSize(stdout, 64<<10)
	if err := Write(bw, users); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("user export: %w", err)
	}
	return nil
}
