//go:build linux

package nft

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/wormgate/wormgate/enforcer"
)

const (
	// listAttempts bounds the dumps of one List; a set's hash table
	// settles within milliseconds after a big change.
	listAttempts = 5
	// listBackoff is the first pause between attempts; it doubles.
	listBackoff = 10 * time.Millisecond
)

// list dumps both blocked sets and returns them only when the dump is
// consistent.
//
// A set dump is not a snapshot. The kernel answers it in several parts
// (one per read of about 32 KiB), and each part walks the set's hash table
// (nft_set_rhash) from the start, skipping as many elements as the earlier
// parts returned. The table is resized by a kernel worker after the fact:
// it grows after many adds and shrinks after many deletes, and Restore's
// flush and refill of the same keys briefly holds every key twice. When a
// resize moves elements between two parts, the skip lands elsewhere: some
// elements come twice and as many never come. Within one part, a resize
// restarts the walk and repeats elements. None of this is flagged with
// NLM_F_DUMP_INTR, which the kernel sets only when the ruleset generation
// changes (another transaction), and google/nftables' GetSetElements
// ignores that flag anyway.
//
// So an element seen twice marks the dump as torn, and a changed ruleset
// generation stands in for NLM_F_DUMP_INTR; either way the dump is
// repeated after a short pause. Deduplicating alone would not do: the
// elements missed in the same dump would stay missing.
func (k *kernel) list(ctx context.Context) ([]enforcer.Element, error) {
	pause := listBackoff
	for attempt := 1; ; attempt++ {
		out, why, err := k.dump()
		if err != nil {
			return nil, err
		}
		if why == "" {
			return out, nil
		}
		if attempt == listAttempts {
			return nil, fmt.Errorf("%w: %s in each of %d attempts", ErrInconsistentDump, why, attempt)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		pause *= 2
	}
}

// dump reads the sets once; why is not empty when the result cannot be
// trusted. The canaries are left out.
func (k *kernel) dump() (out []enforcer.Element, why string, err error) {
	k.dumps++
	gen, err := k.genID()
	if err != nil {
		return nil, "", err
	}
	seen := make(map[netip.Addr]struct{})
	for _, s := range []*nftables.Set{k.set4, k.set6} {
		elems, err := k.conn.GetSetElements(s)
		if err != nil {
			return nil, "", fmt.Errorf("set %s: %w", s.Name, err)
		}
		for _, e := range elems {
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok {
				return nil, "", fmt.Errorf("set %s: element key of %d bytes", s.Name, len(e.Key))
			}
			if _, dup := seen[a]; dup {
				why = fmt.Sprintf("set %s: %v returned twice", s.Name, a)
			}
			seen[a] = struct{}{}
			if !isCanary(a) {
				out = append(out, enforcer.Element{Addr: a, Timeout: e.Expires})
			}
		}
	}
	nets, err := k.listNets()
	if err != nil {
		return nil, "", err
	}
	out = append(out, nets...)
	after, err := k.genID()
	if err != nil {
		return nil, "", err
	}
	if after != gen {
		why = fmt.Sprintf("ruleset changed during the dump (generation %d to %d)", gen, after)
	}
	return out, why, nil
}
