//go:build linux

package nft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/wormgate/wormgate/enforcer"
)

// The monitor notices changes to wormgate's table made by anyone else,
// without reading the sets: the kernel announces every committed change
// to the nftables multicast group (what nft monitor shows), one message
// per element, each carrying the netlink port ID of the socket whose
// batch made it. A socket filter drops the event datagrams of wormgate's
// own connection before they are queued (a datagram only ever holds the
// events of one batch), and what is left is read without blocking before
// each operation: any event that names wormgate's table marks the ruleset
// as changed until the next restore. Events for other tables cost the
// read of one attribute; they never lead to reading wormgate's sets.
//
// Element expiry makes no event and does not move the ruleset generation
// (TestMonitorIgnoresOwnWritesAndExpiry), so expiry never counts as a
// change. When the kernel had to drop events (a full queue: ENOBUFS),
// nobody can say what they were, so that counts as a change. Writing
// events costs the kernel time for each element, which big batches avoid
// by leaving the group while they run (see sendQuietly).
//
// google/nftables' Monitor is not used: it decodes every event into
// objects on a goroutine of its own and hands them over on a channel
// (100k allocations at a foreign flush of 100k elements, and a blocked
// goroutine when nobody reads), and it can neither filter wormgate's own
// events nor leave the group for a while.

const (
	// monitorBuf is the queue of the monitor socket. Foreign events are
	// the only ones queued, and the queue is read every second; a foreign
	// flush of a big set may still fill it, which counts as a change anyway.
	monitorBuf = 4 << 20
	// monitorRead is the read buffer: events come in datagrams of at most
	// NLMSG_GOODSIZE (a page or two).
	monitorRead = 64 << 10
	// quietAbove is the size of a batch (about 5,000 addresses) above
	// which it is sent quietly (see sendQuietly).
	quietAbove = 256 << 10
)

// monitor is the event subscription; only the owner goroutine uses it.
type monitor struct {
	conn  *netlink.Conn
	table []byte // the table name as the kernel sends it, NUL-terminated
	buf   []byte
}

// openMonitor subscribes to nftables events in the namespace at nsFd (0:
// the current one) and drops those sent by the socket with port ID own.
func openMonitor(nsFd int, table string, own uint32) (*monitor, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: nsFd})
	if err != nil {
		return nil, fmt.Errorf("event monitor: %w", err)
	}
	m := &monitor{conn: c, table: append([]byte(table), 0), buf: make([]byte, monitorRead)}
	if err := setBuffer(c, unix.SO_RCVBUFFORCE, monitorBuf, c.SetReadBuffer); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("event monitor: receive buffer: %w", err)
	}
	if err := m.ignore(own); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("event monitor: join group: %w", err)
	}
	return m, nil
}

// ignore makes the kernel drop event datagrams whose first message comes
// from port ID own (wormgate's connection), with a classic BPF program:
//
//	ld [12]            ; nlmsg_pid, loaded big-endian
//	jeq #own, drop
//	ret #-1            ; keep
//	drop: ret #0
func (m *monitor) ignore(own uint32) error {
	// The header is in host order; BPF loads in network order.
	pid := binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, own))
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 12},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: pid},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	raw, err := m.conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("event monitor: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil {
		return fmt.Errorf("event monitor: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("event monitor: attach filter: %w", serr)
	}
	return nil
}

// drain reads every queued event without waiting and calls changed with a
// description of each one that names wormgate's table, and when the
// kernel dropped events. It returns an error when the socket is broken.
func (m *monitor) drain(changed func(string)) error {
	raw, err := m.conn.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var n, flags int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, flags, _, rerr = unix.Recvmsg(int(fd), m.buf, nil, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			return true
		}); err != nil {
			return err
		}
		switch {
		case errors.Is(rerr, unix.EAGAIN):
			return nil
		case errors.Is(rerr, unix.ENOBUFS):
			// Reported once; what is still queued is read on.
			changed("the kernel dropped events (queue full)")
			continue
		case rerr != nil:
			return fmt.Errorf("read events: %w", rerr)
		case flags&unix.MSG_TRUNC != 0 || n > len(m.buf):
			changed("an event too long to read")
			continue
		}
		m.scan(m.buf[:n], changed)
	}
}

// scan walks the messages of one datagram.
func (m *monitor) scan(b []byte, changed func(string)) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			changed("a malformed event")
			return
		}
		typ := binary.NativeEndian.Uint16(b[4:])
		if typ>>8 == unix.NFNL_SUBSYS_NFTABLES {
			if what := m.about(typ&0xff, b[unix.NLMSG_HDRLEN:l]); what != "" {
				changed(fmt.Sprintf("%s (netlink port %d)", what, binary.NativeEndian.Uint32(b[12:])))
			}
		}
		b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
	}
}

// about describes an event that names wormgate's table, or returns "".
// Every nftables object message carries its table as attribute 1; the
// set of an element message is attribute 2.
func (m *monitor) about(msg uint16, data []byte) string {
	if msg == unix.NFT_MSG_NEWGEN || len(data) < 4 || data[0] != unix.NFPROTO_INET {
		return ""
	}
	var table, set []byte
	for a := data[4:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a))
		if l < 4 || l > len(a) {
			break
		}
		switch binary.NativeEndian.Uint16(a[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER) {
		case 1:
			table = a[4:l]
		case 2:
			set = a[4:l]
		}
		a = a[min(len(a), (l+3)&^3):]
	}
	if !bytes.Equal(table, m.table) {
		return ""
	}
	switch msg {
	case unix.NFT_MSG_NEWSETELEM:
		return fmt.Sprintf("element added to set %s by another process", bytes.TrimRight(set, "\x00"))
	case unix.NFT_MSG_DELSETELEM:
		return fmt.Sprintf("element deleted from set %s by another process", bytes.TrimRight(set, "\x00"))
	}
	return fmt.Sprintf("table changed by another process (nftables message %d)", msg)
}

func (m *monitor) close() error { return m.conn.Close() }

// portID is the netlink port ID the kernel gave c's socket, which it
// writes into the header of every event caused by c's batches.
func portID(c *netlink.Conn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var sa unix.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("getsockname: %w", serr)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return 0, fmt.Errorf("getsockname: %T is not a netlink address", sa)
	}
	return nl.Pid, nil
}

// watch is what the kernel side knows about changes made by others.
type watch struct {
	mon *monitor
	// pid is the port ID of the connection whose events mon drops; 0
	// once that connection was replaced, until see updates the filter.
	pid uint32
	// opened: a monitor ran before, so a new one may have missed events.
	opened bool
	// err is why no monitor runs.
	err error
	// changed is the first change by someone else seen since the last
	// restore; "" when there was none.
	changed string
	// gen is the ruleset generation at the last check that found the
	// objects in order; 0 before that.
	gen uint32
}

// see reads the monitor's events before each operation, opening it again
// or pointing its filter at a replaced connection first. It never fails:
// writes go ahead whatever becomes of the monitor, and check reports it.
func (k *kernel) see() {
	if k.testing {
		return
	}
	w := &k.watch
	if w.mon == nil || w.pid == 0 {
		if err := k.follow(); err != nil {
			w.err = err
			return
		}
	}
	if err := w.mon.drain(k.changedBy); err != nil {
		k.changedBy("event monitor failed: " + err.Error())
		k.closeMonitor()
		w.err = err
	}
}

// follow opens the monitor, or points its filter at the current
// connection.
func (k *kernel) follow() error {
	pid, err := portID(k.nl)
	if err != nil {
		return fmt.Errorf("event monitor: %w", err)
	}
	w := &k.watch
	if w.mon != nil {
		if err := w.mon.ignore(pid); err != nil {
			k.closeMonitor()
			return err
		}
		w.pid = pid
		return nil
	}
	m, err := openMonitor(k.nsFd, k.table.Name, pid)
	if err != nil {
		return err
	}
	if w.opened {
		k.changedBy("event monitor reopened: changes while it was closed are unknown")
	}
	w.mon, w.pid, w.opened, w.err = m, pid, true, nil
	return nil
}

func (k *kernel) closeMonitor() {
	if k.watch.mon != nil {
		_ = k.watch.mon.close()
		k.watch.mon, k.watch.pid = nil, 0
	}
}

// changedBy records a change by someone else; the first one is kept as
// the reason Check gives until the next restore.
func (k *kernel) changedBy(why string) {
	if k.watch.changed == "" {
		k.watch.changed = why
	}
}

// restored forgets the changes seen so far: a restore overwrote them.
func (k *kernel) restored() { k.watch.changed = "" }

// The canaries are one element in each address set, without a timeout, at
// an address no packet comes from: the limited broadcast address and an
// IPv6 multicast address. A set that someone flushed, or a table that was
// replaced, lacks its canary, which one lookup per set finds out without
// reading the set: a second way to see what the monitor sees, that does
// not depend on events. List and every count leave them out.
var (
	canary4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	canary6 = netip.AddrFrom16([16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff,
		8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff})
)

func isCanary(a netip.Addr) bool { return a == canary4 || a == canary6 }

// addCanaries adds the canaries (a no-op where they are).
func (k *kernel) addCanaries(c *nftables.Conn) error {
	for _, s := range []*nftables.Set{k.set4, k.set6} {
		if err := c.SetAddElements(s, []nftables.SetElement{{Key: k.canary(s).AsSlice()}}); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	return nil
}

func (k *kernel) canary(s *nftables.Set) netip.Addr {
	if s == k.set4 {
		return canary4
	}
	return canary6
}

// checkCanaries looks each canary up; a missing one wraps ErrDrift.
func (k *kernel) checkCanaries() error {
	for _, s := range []*nftables.Set{k.set4, k.set6} {
		m, err := elemMsg(typeGetSetElem, s, []elem{{addr: k.canary(s)}}, keysOnly)
		if err != nil {
			return err
		}
		m.Header.Flags = netlink.Request
		replies, err := k.nl.Execute(m)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("read set %s: %w", s.Name, err)
		}
		if err != nil || !slices.ContainsFunc(replies, func(r netlink.Message) bool { return r.Header.Type == typeNewSetElem }) {
			return fmt.Errorf("%w: set %s lost its canary element: flushed or replaced", enforcer.ErrDrift, s.Name)
		}
	}
	return nil
}
