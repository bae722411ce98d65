// Package nft is the enforcer's Firewall on Linux's nftables, through
// github.com/google/nftables: wormgate's own inet table with two sets of
// blocked addresses and two interval sets of blocked networks (per-element
// timeouts), a set of ports and one chain on prerouting at raw priority.
// It never touches another table. One goroutine owns the netlink
// connection; writes are chunked batches.
//
// Changes that others make to the table are noticed without reading the
// sets: a subscription to nftables' events (monitor.go), and a canary
// element in each address set whose absence shows a flush.
//
// On other systems Open fails with ErrUnsupported, so that everything that
// needs no firewall (`wormgate check`) builds and runs there.
package nft
