package nftest

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"time"
)

// Canaries are the elements without a timeout that wormgate keeps in
// blocked4 and blocked6 to notice a flushed set; they are no bans.
var Canaries = []string{"255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}

// Blocked reads wormgate's blocked4 and blocked6 sets of table (family
// inet) in the namespace called nsName with the nft tool, independently of
// wormgate's own code. It maps each address to its remaining time; an
// element without a timeout maps to 0. Wormgate's canaries (Canaries) are
// left out.
func Blocked(nsName, table string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, set := range []string{"blocked4", "blocked6"} {
		raw, err := exec.Command("ip", "netns", "exec", nsName, "nft", "-j", "list", "set", "inet", table, set).Output()
		if err != nil {
			return nil, fmt.Errorf("nft list set %s: %w", set, err)
		}
		var doc struct {
			Nftables []struct {
				Set *struct {
					Elem []json.RawMessage `json:"elem"`
				} `json:"set"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("nft json: %w\n%s", err, raw)
		}
		for _, o := range doc.Nftables {
			if o.Set == nil {
				continue
			}
			for _, r := range o.Set.Elem {
				// A plain address, or {"elem": {"val": addr, "expires": s}}.
				var a string
				if json.Unmarshal(r, &a) == nil {
					if !slices.Contains(Canaries, a) {
						out[a] = 0
					}
					continue
				}
				var e struct {
					Elem struct {
						Val     string `json:"val"`
						Expires int64  `json:"expires"`
					} `json:"elem"`
				}
				if err := json.Unmarshal(r, &e); err != nil || e.Elem.Val == "" {
					return nil, fmt.Errorf("nft element %s: %w", r, err)
				}
				out[e.Elem.Val] = time.Duration(e.Elem.Expires) * time.Second
			}
		}
	}
	return out, nil
}
