package nft

import "github.com/mdlayher/netlink/nltest"

// Option adjusts Open.
type Option func(*options)

type options struct {
	netnsFd int
	// testDial replaces the netlink socket with a fake (unit tests
	// without root).
	testDial nltest.Func
	// timeoutUpdate is detected from the kernel release unless a test
	// sets it.
	timeoutUpdate bool
}

// WithNetNS makes the firewall work in the network namespace open at fd
// instead of the current one; tests use it.
func WithNetNS(fd int) Option { return func(o *options) { o.netnsFd = fd } }
