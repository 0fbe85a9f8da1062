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
	"strconv"

	"pwrotate/report"
	"pwrotate/rotate"
)

// Header is the export's header row.
var Header = []string{"userId", "login", "email", "firstName", "lastName", "networkId", "mailboxId", "authLevel", "status"}

// Write writes users to w as CSV: Header, then one row per user in userId
// order (users is sorted in place). Text cells go through report.SafeCell (a
// cell starting with = + - @ gets a leading ', control characters become
// spaces, long text is cut); an ID of 0 is an empty cell. A userId that is
// not in 1..2147483647 or that appears twice is an error, and nothing
// after the rows before it is written.
func Write(w io.Writer, users []rotate.User) error {
	slices.SortFunc(users, func(a, b rotate.User) int { return a.UserID - b.UserID })
	for i, u := range users {
		if u.UserID < 1 || u.UserID > 1<<31-1 {
			return fmt.Errorf("user export: userId %d is not a valid ID", u.UserID)
		}
		if i > 0 && users[i-1].UserID == u.UserID {
			return fmt.Errorf("user export: user %d listed twice", u.UserID)
		}
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(Header); err != nil {
		return fmt.Errorf("user export: %w", err)
	}
	rec := make([]string, len(Header))
	for _, u := range users {
		rec[0] = strconv.Itoa(u.UserID)
		rec[1] = report.SafeCell(u.Login)
		rec[2] = report.SafeCell(u.Email)
		rec[3] = report.SafeCell(u.FirstName)
		rec[4] = report.SafeCell(u.LastName)
		rec[5] = idCell(u.NetworkID)
		rec[6] = idCell(u.MailboxID)
		rec[7] = report.SafeCell(u.AuthLevel)
		rec[8] = report.SafeCell(u.Status)
		if err := cw.Write(rec); err != nil {
			return fmt.Errorf("user export: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("user export: %w", err)
	}
	return nil
}

func idCell(id int) string {
	if id == 0 {
		return ""
	}
	return strconv.Itoa(id)
}

// WriteFile writes the export to path atomically (a temporary file in the
// same folder, fsynced, renamed over path, the folder fsynced), mode 0600:
// path holds its old content or the whole export, never a part.
func WriteFile(path string, users []rotate.User) error {
	return report.WriteFileAtomicFunc(path, 0o600, func(w io.Writer) error {
		return Write(w, users)
	})
}

// WriteTo writes the export to path, or to stdout when path is "-" (then
// buffered, and flushed at the end).
func WriteTo(path string, stdout io.Writer, users []rotate.User) error {
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
