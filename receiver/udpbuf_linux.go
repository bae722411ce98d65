package receiver

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// setReadBuffer raises the socket's receive buffer to want bytes but never
// lowers it (go-syslog's SetReadBuffer(64 KiB) shrank Linux's default). It
// tries SO_RCVBUFFORCE first, which passes net.core.rmem_max when the
// process has CAP_NET_ADMIN, and returns the size the kernel reports.
func setReadBuffer(c *net.UDPConn, want int) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("set udp read buffer: %w", err)
	}
	var got int
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		cur, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if err != nil {
			serr = err
			return
		}
		if cur >= want {
			got = cur
			return
		}
		// The kernel doubles the value for bookkeeping and reports the
		// doubled size, so ask for half of the wanted buffer.
		ask := (want + 1) / 2
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ask); err != nil {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, ask); err != nil {
				serr = err
				return
			}
		}
		got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		if serr == nil && got < cur {
			// Never end up below where we started.
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, cur/2)
			got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		}
	})
	if cerr != nil {
		return 0, fmt.Errorf("set udp read buffer: %w", cerr)
	}
	if serr != nil {
		return got, fmt.Errorf("set udp read buffer: %w", serr)
	}
	return got, nil
}
