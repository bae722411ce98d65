package nftest

import (
	"context"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestNSIsolationAndLink(t *testing.T) {
	Require(t, "ip")
	a, b := NewNS(t), NewNS(t)
	Link(t,
		a, []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("2001:db8:1::1/64")},
		b, []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")})
	l, err := a.Listen("tcp", ":2525")
	if err != nil {
		t.Fatalf("Listen in %s: %v", a.Name, err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, target := range []string{"198.51.100.1:2525", "[2001:db8:1::1]:2525"} {
		c, err := b.Dial(ctx, "tcp", target)
		if err != nil {
			t.Fatalf("Dial %s from %s: %v", target, b.Name, err)
		}
		_ = c.Close()
	}
	// The listener lives in a, not in b and not on the host.
	if c, err := b.Dial(ctx, "tcp", "127.0.0.1:2525"); err == nil {
		c.Close()
		t.Errorf("listener of %s reachable on loopback of %s", a.Name, b.Name)
	}
	if out := a.Run(t, "ip", "-br", "addr"); !strings.Contains(out, "198.51.100.1/24") {
		t.Errorf("ip addr in %s lacks 198.51.100.1/24:\n%s", a.Name, out)
	}
	// Do switches back: with the thread pinned around Do, the same thread
	// is in the host's namespace again afterwards.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self := func() string {
		t.Helper()
		l, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	host := self()
	var inside string
	if err := a.Do(func() error { inside = self(); return nil }); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if inside == host {
		t.Errorf("Do ran in the host namespace %s", host)
	}
	if now := self(); now != host {
		t.Errorf("thread in namespace %s after Do, want %s", now, host)
	}
}

func TestNSCleanupDeletesNamespace(t *testing.T) {
	Require(t, "ip")
	var name string
	t.Run("inner", func(t *testing.T) {
		name = NewNS(t).Name
		if _, err := os.Stat("/var/run/netns/" + name); err != nil {
			t.Fatalf("namespace %s missing: %v", name, err)
		}
	})
	if _, err := os.Stat("/var/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still there after its test ended (stat: %v)", name, err)
	}
}
