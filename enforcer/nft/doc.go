// Package nft is the enforcer's Firewall on Linux's nftables, through
// github.com/google/nftables: wormgate's own inet table with two sets of
// blocked addresses (per-element timeouts), a set of ports and one chain
// on prerouting at raw priority. It never touches another table. One
// goroutine owns the netlink connection; writes are chunked batches.
//
// On other systems Open fails with ErrUnsupported, so that everything that
// needs no firewall (`wormgate check`) builds and runs there.
package nft
