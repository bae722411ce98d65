// Package lab proves that the files in deploy/ work together: its tests
// drive lab.sh, which replays the 2003 worm outbreak with the real Postfix
// (deploy/header_checks, deploy/body_checks), the real rsyslog
// (deploy/rsyslog-forward.conf) and the real wormgate (deploy/example.yaml)
// in network namespaces, and they install the .deb that build-deb.sh makes.
// The package has no code of its own: only tests.
package lab
