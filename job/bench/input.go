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
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing input: %w", err)
	}
	w := bufio.NewWriter(f)
	levels := []string{"Root", "TechOps", "NetOps", "NetworkAdmin", "NetworkUser", "MailboxAdmin", "MailboxUser", "TPUser", "General", "Other"}
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
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing input: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing input: %w", err)
	}
	return nil
}

// writeGroupFiles writes a users CSV of n consecutive IDs with a networkId
// column, the users split into groups networks of consecutive IDs, and a
// recipients map giving each network a new recipient of its own.
func writeGroupFiles(input, mapFile string, n, groups int) error {
	var in, m []byte
	in = append(in, "userId,networkId\n"...)
	for i := range n {
		in = fmt.Appendf(in, "%d,%d\n", firstUserID+i, i*groups/n+1)
	}
	if err := os.WriteFile(input, in, 0o600); err != nil {
		return fmt.Errorf("writing input: %w", err)
	}
	f, err := os.OpenFile(mapFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing the recipients map: %w", err)
	}
	w := bufio.NewWriter(f)
	w.WriteString("networkId,recipient\n")
	for g := 1; g <= groups; g++ {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			f.Close()
			return fmt.Errorf("age identity: %w", err)
		}
		m = fmt.Appendf(m[:0], "%d,%s\n", g, id.Recipient())
		w.Write(m)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing the recipients map: %w", err)
	}
	return f.Close()
}
