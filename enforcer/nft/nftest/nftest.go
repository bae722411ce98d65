package nftest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Require stops the test unless it runs as root and every binary named in
// what is on PATH. Under CI=true a missing requirement fails the test, so
// that a misconfigured runner cannot turn the kernel tests into silent skips.
func Require(t testing.TB, what ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range what {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) == 0 {
		return
	}
	reason := "needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is a failure, not a skip)", reason)
	}
	t.Skipf("%s", reason)
}

// NS is a named network namespace created for one test.
type NS struct {
	Name string
	fd   int
}

// NewNS creates a namespace named wgt-<random> with lo up. t.Cleanup closes
// its fd and deletes it, which also removes every link inside it.
func NewNS(t testing.TB) *NS {
	t.Helper()
	name := "wgt-" + randomHex(t, 5)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, fd: -1}
	t.Cleanup(func() {
		if ns.fd >= 0 {
			_ = unix.Close(ns.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	ns.fd = fd
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Fd is an open descriptor of the namespace, valid until the test ends;
// pass it to nftables.WithNetNSFd.
func (ns *NS) Fd() int { return ns.fd }

// Do runs fn on an OS thread switched into the namespace. Sockets created by
// fn stay in the namespace after Do returns. fn must not start goroutines
// that expect to be in the namespace: they run on other threads.
func (ns *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current namespace: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", ns.Name, err)
	}
	fnErr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// The thread stays locked on purpose: when the goroutine ends, the
		// runtime kills a locked thread instead of reusing it in the wrong
		// namespace.
		return errors.Join(fnErr, fmt.Errorf("leave namespace %s: %w", ns.Name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Listen opens a listener inside the namespace.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace.
func (ns *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial connects from inside the namespace. addr must hold an IP literal: a
// name lookup would run on other threads, outside the namespace.
func (ns *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return ns.DialFrom(ctx, network, "", addr)
}

// DialFrom is Dial from the local address src ("" for any), which is how
// a test sends with another of the namespace's addresses, or forges one
// between namespaces it made.
func (ns *NS) DialFrom(ctx context.Context, network, src, addr string) (net.Conn, error) {
	var d net.Dialer
	if src != "" {
		ip := net.ParseIP(src)
		if strings.HasPrefix(network, "udp") {
			d.LocalAddr = &net.UDPAddr{IP: ip}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Command prepares name args... to run inside the namespace.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs args[0] with args[1:] inside the namespace and returns its
// combined output; any failure ends the test.
func (ns *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("nftest: Run in %s without a command", ns.Name)
	}
	out, err := ns.Command(context.Background(), args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Link joins a and b with a veth pair, adds the addresses (IPv6 without
// duplicate address detection, so they are usable at once) and sets both
// ends up. The pair disappears with the namespaces.
func Link(t testing.TB, a *NS, aAddrs []netip.Prefix, b *NS, bAddrs []netip.Prefix) {
	t.Helper()
	suffix := randomHex(t, 4)
	aDev, bDev := "wga"+suffix, "wgb"+suffix
	a.Run(t, "ip", "link", "add", aDev, "type", "veth", "peer", "name", bDev, "netns", b.Name)
	for _, side := range []struct {
		ns    *NS
		dev   string
		addrs []netip.Prefix
	}{{a, aDev, aAddrs}, {b, bDev, bAddrs}} {
		for _, p := range side.addrs {
			args := []string{"ip", "addr", "add", p.String(), "dev", side.dev}
			if p.Addr().Is6() && !p.Addr().Is4In6() {
				args = append(args, "nodad")
			}
			side.ns.Run(t, args...)
		}
		side.ns.Run(t, "ip", "link", "set", side.dev, "up")
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random name: %v", err)
	}
	return hex.EncodeToString(b)
}
