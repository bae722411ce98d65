package nft

import "errors"

// ErrInconsistentDump means the kernel kept answering a read of the
// blocked sets with a torn dump (an element twice, or the ruleset changed
// meanwhile). Nothing is wrong with the sets; a later List can succeed.
var ErrInconsistentDump = errors.New("inconsistent set dump")
