//go:build !linux

package receiver

import (
	"fmt"
	"net"
)

// setReadBuffer asks for want bytes; outside Linux the current size cannot
// be read portably, so the result is reported as granted.
func setReadBuffer(c *net.UDPConn, want int) (int, error) {
	if err := c.SetReadBuffer(want); err != nil {
		return 0, fmt.Errorf("set udp read buffer: %w", err)
	}
	return want, nil
}
