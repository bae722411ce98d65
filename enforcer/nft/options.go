package nft

// Option adjusts Open.
type Option func(*options)

// WithNetNS makes the firewall work in the network namespace open at fd
// instead of the current one; tests use it.
func WithNetNS(fd int) Option { return func(o *options) { o.netnsFd = fd } }
