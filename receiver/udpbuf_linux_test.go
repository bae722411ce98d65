package receiver

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func rcvbuf(t *testing.T, c *net.UDPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestSetReadBufferNeverShrinks guards against go-syslog's mistake of
// setting 64 KiB, which is below Linux's default receive buffer.
func TestSetReadBufferNeverShrinks(t *testing.T) {
	for _, want := range []int{16 << 10, 64 << 10, 4 << 20} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		before := rcvbuf(t, c)
		got, err := setReadBuffer(c, want)
		if err != nil {
			t.Fatalf("setReadBuffer(%d): %v", want, err)
		}
		after := rcvbuf(t, c)
		_ = c.Close()
		if after < before {
			t.Errorf("setReadBuffer(%d): buffer shrank from %d to %d", want, before, after)
		}
		if got != after {
			t.Errorf("setReadBuffer(%d) reported %d, kernel says %d", want, got, after)
		}
		// Without CAP_NET_ADMIN the kernel caps at 2*rmem_max.
		limit := want
		if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil && os.Geteuid() != 0 {
			if m, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				limit = min(limit, 2*m)
			}
		}
		if after < limit {
			t.Errorf("setReadBuffer(%d): buffer is %d, want at least %d", want, after, limit)
		}
	}
}
