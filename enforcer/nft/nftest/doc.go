// Package nftest gives tests throwaway network namespaces, so that nftables
// rules, sockets and veth links under test never touch the host's own
// ruleset or routes. Every namespace and link is removed in t.Cleanup, also
// when the test fails.
package nftest
