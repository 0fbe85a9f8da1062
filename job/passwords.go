package job

import (
	"math"
	"sync/atomic"

	"pwrotate/report"
	"pwrotate/rotate/secret"
)

// passwords calls use with the password of each pending user, in order:
// the input's password, else a new one; fromInput says which.
func (r *Runner) passwords(p *plan, use func(i int, pw secret.Password, fromInput bool) error) error {
	// Generated a chunk at a time, on every CPU (rotate.Generator.Fill):
	// the plan's passwords are ready sooner, and only a chunk's strings are
	// held beside the arena.
	const chunk = 4096
	gen := make([]secret.Password, 0, min(chunk, len(p.pending)))
	defer clear(gen[:cap(gen)])
	for start := 0; start < len(p.pending); start += chunk {
		end := min(start+chunk, len(p.pending))
		gen = gen[:0]
		for _, idx := range p.pending[start:end] {
			if p.records[idx].Password.Empty() {
				gen = append(gen, "")
			}
		}
		if err := r.cfg.Generator.Fill(gen); err != nil {
			return fatal("generating a password: %w", err)
		}
		k := 0
		for i := start; i < end; i++ {
			rec := &p.records[p.pending[i]]
			var err error
			if rec.Password.Empty() {
				err = use(i, gen[k], false)
				k++
			} else {
				err = use(i, rec.Password, true)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// pwArena holds a plan's passwords in one buffer, in pending order: one
// allocation instead of one per user (a plan can be millions long). wipe
// zeroes that buffer when the run ends. That is hygiene, not a guarantee:
// it does not reach the copies made on the way, which stay in freed memory
// until it is reused: the generator's and the input's strings, the
// secret.Password that at returns (a conversion copies), the request body's
// copies in net/http's and crypto/tls's buffers, age's plaintext chunks,
// goroutine stacks copied as they grow, and pages the kernel swapped out.
// What keeps them off disk on a crash is secret.DisableCoreDumps.
type pwArena struct {
	buf []byte
	end []uint32 // end[i] is where password i ends in buf
}

func (a *pwArena) add(pw secret.Password) error {
	if len(a.buf)+len(pw.Reveal()) > math.MaxUint32 {
		return fatal("the plan's passwords exceed 4 GiB: split the input")
	}
	a.buf = append(a.buf, pw.Reveal()...)
	a.end = append(a.end, uint32(len(a.buf)))
	return nil
}

func (a *pwArena) at(i int) secret.Password {
	start := uint32(0)
	if i > 0 {
		start = a.end[i-1]
	}
	return secret.Password(a.buf[start:a.end[i]])
}

// wipe zeroes the arena's buffer; see pwArena for the copies it does not
// reach.
func (a *pwArena) wipe() { clear(a.buf) }

// sealPending gives every pending record its password of generation gen
// (generated, or the input's) and seals them, one file per group
// (report.SealGroups: without a recipients map, one file), every file
// fsynced before the first request that carries one of its passwords. The
// passwords stay in p.pw for the pool; the caller wipes them.
func (r *Runner) sealPending(out *report.Folder, p *plan, gen int) error {
	if len(p.pending) == 0 {
		return nil
	}
	cfg := r.cfg
	p.source = make([]bool, len(p.pending))
	p.pw.end = make([]uint32, 0, len(p.pending))
	p.pw.buf = make([]byte, 0, len(p.pending)*cfg.Generator.Shape().Length)
	err := r.passwords(p, func(i int, pw secret.Password, fromInput bool) error {
		p.source[i] = fromInput
		return p.pw.add(pw)
	})
	if err != nil {
		return err
	}
	half := int64(len(p.pending) / 2)
	var sealing atomic.Int64
	files, err := report.SealGroups(out.Path, gen, cfg.Recipients, cfg.RecipientsMap, len(p.pending),
		func(i int) int { return int(p.group(i)) },
		func(i int) (int, secret.Password) {
			if sealing.Add(1)-1 == half {
				cfg.Hook("sealing", 1)
			}
			return int(p.todo[i].userID), p.pw.at(i)
		})
	if err != nil {
		return fatal("sealing generation %d: %w", gen, err)
	}
	for _, f := range files {
		r.log.Debug("sealed file", "file", f.Path, "group", f.Group.String(), "passwords", f.Users, "recipients", f.Recipients)
	}
	if len(files) == 1 {
		r.log.Info("sealed", "file", files[0].Path, "generation", gen, "passwords", len(p.pending))
	} else {
		r.log.Info("sealed", "files", len(files), "generation", gen, "passwords", len(p.pending), "groups", cfg.RecipientsMap.Column())
	}
	cfg.Hook("sealed", 1)
	return r.sealEscrow(out, p, gen)
}
