package report

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"filippo.io/age"

	"pwrotate/rotate/secret"
)

// sealWorkers is how many group files SealGroups writes at once. Each file
// costs an fsync (about 0.27 ms one at a time on the machine of
// docs/performance.md, 0.12 ms each with 8 in flight) and one X25519 per
// recipient, which several files in the making spread over the CPUs. Each
// holds about 200 KiB of buffers (age's chunk and ours), so memory stays
// bounded however many groups there are.
const sealWorkers = 8

// SealedGroup is one file SealGroups wrote.
type SealedGroup struct {
	// Path is the file's path: dir/SealedGroupName(gen, Group).
	Path string
	// Group is the group whose users it holds.
	Group Group
	// Users counts them.
	Users int
	// Recipients counts the recipients it is sealed to (the group's and
	// the global ones).
	Recipients int
}

// SealGroups seals the n passwords of generation gen, one file per group:
// user i (0 ≤ i < n) has the userId and password row(i), and is in the
// group m.GroupOf(groupOf(i)), groupOf giving its networkId or mailboxId
// (m's Kind; 0 when unknown). A group's file is encrypted to the group's
// recipients in m and to every global recipient; the global group's file
// (users m does not map, every user when m is nil) to the global
// recipients alone, under SealedName(gen) as before maps existed. Within a
// file users keep the order of i. Each file is written as Seal writes one
// (streamed, fsynced, named, never replacing a file), several at once;
// the folder is fsynced once, after the last file is named: when SealGroups
// returns nil every file is durable. On an error the files this call
// completed are removed (their passwords were never sent) and the error
// names the file.
//
// Memory does not grow with the number of groups: users are bucketed by
// group first (a 4-byte index a user), then each group's file is written
// whole, at most sealWorkers at a time. groupOf and row may be called from
// several goroutines at once; row is called once for each i.
//
// The files returned are sorted: the global group first, then by group ID.
func SealGroups(dir string, gen int, global []age.Recipient, m *RecipientsMap, n int,
	groupOf func(i int) int, row func(i int) (int, secret.Password)) ([]SealedGroup, error) {
	if gen < 1 {
		return nil, fmt.Errorf("sealing: generation %d is not positive", gen)
	}
	if len(global) == 0 {
		return nil, errors.New("sealing: no recipients")
	}
	if n <= 0 {
		return nil, nil
	}
	buckets, perm := bucketByGroup(m, n, groupOf)
	files := make([]SealedGroup, len(buckets))
	errs := make([]error, len(buckets))
	var next atomic.Int32
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range min(sealWorkers, len(buckets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sc sealScratch
			for !failed.Load() {
				k := int(next.Add(1)) - 1
				if k >= len(buckets) {
					return
				}
				b := buckets[k]
				recips := m.sealTo(b.group, global)
				final := filepath.Join(dir, SealedGroupName(gen, b.group))
				err := writeSealedFile(final, func(w io.Writer) error {
					return writeSealedWith(w, gen, recips, func(yield func(int, secret.Password) bool) {
						for j := b.start; j < b.start+b.n; j++ {
							i := j
							if perm != nil {
								i = int(perm[j])
							}
							if !yield(row(i)) {
								return
							}
						}
					}, &sc)
				})
				if err != nil {
					errs[k] = err
					failed.Store(true)
					return
				}
				files[k] = SealedGroup{Path: final, Group: b.group, Users: b.n, Recipients: len(recips)}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, f := range files {
			if f.Path != "" {
				_ = os.Remove(f.Path)
			}
		}
		_ = SyncDir(dir)
		return nil, err
	}
	if err := SyncDir(dir); err != nil {
		// The files are complete under their final names; only the
		// durability of the names is in doubt. Keep them, and report.
		return files, fmt.Errorf("sealing generation %d: %w", gen, err)
	}
	return files, nil
}

// groupBucket is one group's users: perm[start:start+n].
type groupBucket struct {
	group    Group
	start, n int
}

// bucketByGroup sorts the users 0..n-1 by group, stably (a counting
// sort): the buckets (the global group first, then by ID) and perm, the
// users in bucket order. perm is nil when there is one group: user i is
// then at i.
func bucketByGroup(m *RecipientsMap, n int, groupOf func(i int) int) ([]groupBucket, []int32) {
	if m == nil || len(m.groups) == 0 {
		return []groupBucket{{n: n}}, nil
	}
	index := map[int]int{} // group ID (0: global) → bucket
	var buckets []groupBucket
	for i := range n {
		g := m.GroupOf(groupOf(i))
		k, ok := index[g.ID]
		if !ok {
			k = len(buckets)
			index[g.ID] = k
			buckets = append(buckets, groupBucket{group: g})
		}
		buckets[k].n++
	}
	if len(buckets) == 1 {
		return buckets, nil
	}
	slices.SortFunc(buckets, func(a, b groupBucket) int { return cmp.Compare(a.group.ID, b.group.ID) })
	fill := make([]int, len(buckets)) // next free slot of each bucket, by bucket
	start := 0
	for k := range buckets {
		buckets[k].start = start
		fill[k] = start
		index[buckets[k].group.ID] = k
		start += buckets[k].n
	}
	perm := make([]int32, n)
	for i := range n {
		k := index[m.GroupOf(groupOf(i)).ID]
		perm[fill[k]] = int32(i)
		fill[k]++
	}
	return buckets, perm
}
