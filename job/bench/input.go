package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"

	"filippo.io/age"
)

// writeInput writes a users CSV of n consecutive IDs; with export, in the
// columns of 'pwrotate users', AuthLevels in turn.
func writeInput(path string, n int, export bool) error {
	levels := []string{"Root", "TechOps", "NetOps", "NetworkAdmin", "NetworkUser", "MailboxAdmin", "MailboxUser", "TPUser", "General", "Other"}
	return writeBuffered(path, "input", func(w *bufio.Writer) error {
		if export {
			w.WriteString("userId,login,email,firstName,lastName,networkId,mailboxId,authLevel,status\n")
		} else {
			w.WriteString("userId\n")
		}
		var buf []byte
		for i := range n {
			buf = strconv.AppendInt(buf[:0], int64(firstUserID+i), 10)
			if export {
				buf = fmt.Appendf(buf, ",user-%d,user%d@example.com,First%d,Last%d,1,%d,%s,Active", i, i, i, i, i%50, levels[i%len(levels)])
			}
			buf = append(buf, '\n')
			w.Write(buf)
		}
		return nil
	})
}

// writeGroupFiles writes a users CSV of n consecutive IDs with a networkId
// column, the users split into groups networks of consecutive IDs, and a
// recipients map giving each network a new recipient of its own.
func writeGroupFiles(input, mapFile string, n, groups int) error {
	err := writeBuffered(input, "input", func(w *bufio.Writer) error {
		w.WriteString("userId,networkId\n")
		for i := range n {
			fmt.Fprintf(w, "%d,%d\n", firstUserID+i, i*groups/n+1)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeBuffered(mapFile, "the recipients map", func(w *bufio.Writer) error {
		w.WriteString("networkId,recipient\n")
		for g := 1; g <= groups; g++ {
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return fmt.Errorf("age identity: %w", err)
			}
			fmt.Fprintf(w, "%d,%s\n", g, id.Recipient())
		}
		return nil
	})
}

// writeBuffered writes path (0600, replacing it) through a buffer that
// fill writes; what names the file in errors.
func writeBuffered(path, what string, fill func(w *bufio.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing %s: %w", what, err)
	}
	w := bufio.NewWriter(f)
	if err := fill(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", what, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", what, err)
	}
	return nil
}
