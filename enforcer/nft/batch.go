//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Element messages are built here rather than by google/nftables: its
// SetElement has no way to send NFTA_SET_ELEM_EXPIRATION, which is what
// makes the kernel restart the timeout of an element it already holds, and
// it allocates several buffers per element, which shows at 100k elements.

const (
	typeNewSetElem = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM)
	typeDelSetElem = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELSETELEM)
	typeGetSetElem = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM)
	typeGetGen     = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN)
	typeNewGen     = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN)

	// maxElemBytes is the largest element on the wire: an IPv6 key with
	// flags, timeout and expiration. The list of elements is one attribute
	// with a 16-bit length, so chunk of them must stay below 64 KiB.
	maxElemBytes = 4 + (4 + 4 + 16) + (4 + 4) + (4 + 8) + (4 + 8)
)

// A longer chunk would overflow the attribute length and the kernel would
// see a truncated list: refuse to build.
var _ = [1]struct{}{}[max(0, chunk*maxElemBytes+1024-0xffff)]

var errAttrTooLong = errors.New("netlink attribute longer than 64 KiB")

// elem is one validated element on its way to the kernel.
type elem struct {
	addr    netip.Addr
	timeout time.Duration
	refresh bool
	// end marks the first address after an interval (interval sets only).
	end bool
}

// elemWrite says which attributes an element message carries.
type elemWrite uint8

const (
	// keysOnly writes bare keys: for deletes and for the add that makes a
	// following delete safe.
	keysOnly elemWrite = iota
	// withTimeout writes keys with their timeout.
	withTimeout
	// withExpiration also sets the expiration to the timeout, which on
	// Linux 6.10 and later restarts the clock of an element that is
	// already in the set.
	withExpiration
)

// attrEncoder appends netlink attributes to one buffer.
type attrEncoder struct {
	b   []byte
	err error
}

func (e *attrEncoder) attr(typ uint16, data []byte) {
	off := e.begin(typ)
	e.b = append(e.b, data...)
	e.end(off)
}

func (e *attrEncoder) u64(typ uint16, v uint64) {
	off := e.begin(typ)
	e.b = binary.BigEndian.AppendUint64(e.b, v)
	e.end(off)
}

func (e *attrEncoder) str(typ uint16, s string) {
	off := e.begin(typ)
	e.b = append(e.b, s...)
	e.b = append(e.b, 0)
	e.end(off)
}

// begin opens an attribute whose length end fills in.
func (e *attrEncoder) begin(typ uint16) int {
	off := len(e.b)
	e.b = binary.NativeEndian.AppendUint16(e.b, 0)
	e.b = binary.NativeEndian.AppendUint16(e.b, typ)
	return off
}

func (e *attrEncoder) end(off int) {
	n := len(e.b) - off
	if n > 0xffff {
		if e.err == nil {
			e.err = fmt.Errorf("%w: %d bytes", errAttrTooLong, n)
		}
		return
	}
	binary.NativeEndian.PutUint16(e.b[off:], uint16(n))
	for len(e.b)%4 != 0 {
		e.b = append(e.b, 0)
	}
}

// elemMsg builds one NEWSETELEM or DELSETELEM message for the elements of
// part, with the same attributes in the same order as google/nftables'
// SetAddElements, plus the expiration when asked for.
func elemMsg(typ netlink.HeaderType, s *nftables.Set, part []elem, w elemWrite) (netlink.Message, error) {
	per := 4 + 8 + 16 + 8
	if w >= withTimeout {
		per += 12
	}
	if w == withExpiration {
		per += 12
	}
	e := attrEncoder{b: make([]byte, 0, 64+len(s.Name)+len(s.Table.Name)+per*len(part))}
	e.b = append(e.b, byte(s.Table.Family), unix.NFNETLINK_V0, 0, 0)
	e.str(unix.NFTA_SET_ELEM_LIST_SET, s.Name)
	e.attr(unix.NFTA_SET_ELEM_LIST_SET_ID, binary.BigEndian.AppendUint32(nil, s.ID))
	e.str(unix.NFTA_SET_ELEM_LIST_TABLE, s.Table.Name)
	list := e.begin(unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED)
	for i, el := range part {
		item := e.begin(uint16(i+1) | unix.NLA_F_NESTED)
		key := e.begin(unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED)
		val := e.begin(unix.NFTA_DATA_VALUE)
		if el.addr.Is4() {
			a := el.addr.As4()
			e.b = append(e.b, a[:]...)
		} else {
			a := el.addr.As16()
			e.b = append(e.b, a[:]...)
		}
		e.end(val)
		e.end(key)
		if el.end {
			e.attr(unix.NFTA_SET_ELEM_FLAGS, binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END))
		}
		if w >= withTimeout && el.timeout > 0 {
			ms := uint64(el.timeout.Milliseconds())
			e.u64(unix.NFTA_SET_ELEM_TIMEOUT, ms)
			if w == withExpiration {
				e.u64(unix.NFTA_SET_ELEM_EXPIRATION, ms)
			}
		}
		e.end(item)
	}
	e.end(list)
	if e.err != nil {
		return netlink.Message{}, fmt.Errorf("set %s: %w", s.Name, e.err)
	}
	return netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | netlink.Create},
		Data:   e.b,
	}, nil
}

// appendElemMsgs appends one message per chunk of elems.
func appendElemMsgs(msgs []netlink.Message, typ netlink.HeaderType, s *nftables.Set, elems []elem, w elemWrite) ([]netlink.Message, error) {
	for start := 0; start < len(elems); start += chunk {
		m, err := elemMsg(typ, s, elems[start:min(start+chunk, len(elems))], w)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// record returns the messages that fn queues on a google/nftables Conn,
// without sending them, so that they can go out in one batch with
// element messages built here.
func record(fn func(c *nftables.Conn) error) ([]netlink.Message, error) {
	var out []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) >= 2 && req[0].Header.Type == netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) {
			for _, m := range req[1 : len(req)-1] {
				// The real connection numbers them when they are sent.
				m.Header.Length, m.Header.Sequence, m.Header.PID = 0, 0, 0
				out = append(out, m)
			}
		}
		return nil, nil
	}))
	if err != nil {
		return nil, err
	}
	if err := fn(c); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// sendBatch sends msgs as one nfnetlink batch in one sendmsg and waits
// for the acknowledgement of each. The kernel commits the batch
// atomically: all of it or nothing. The first error is returned; unread
// replies stay on the socket, which is why kernel.do replaces the
// connection after an error. A big batch is sent with the monitor out of
// the event group (quietly).
func (k *kernel) sendBatch(msgs []netlink.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	size := 0
	for _, m := range msgs {
		size += 16 + len(m.Data)
	}
	if err := k.fitSendBuffer(size); err != nil {
		return err
	}
	if k.watch.mon != nil && size > quietAbove {
		return k.sendQuietly(msgs)
	}
	_, err := k.send(msgs)
	return err
}

// send is sendBatch's exchange. When the batch's first message asks for
// an echo and the batch committed a change, the kernel sends the ruleset
// generation of the commit back, and send returns it (0 otherwise).
func (k *kernel) send(msgs []netlink.Message) (gen uint32, err error) {
	batch := make([]netlink.Message, 0, len(msgs)+2)
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_BEGIN))
	batch = append(batch, msgs...)
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_END))
	sent, err := k.nl.SendMessages(batch)
	if err != nil {
		return 0, fmt.Errorf("send batch: %w", err)
	}
	want := make(map[uint32]struct{}, len(sent))
	for _, m := range sent {
		if m.Header.Flags&netlink.Acknowledge != 0 {
			want[m.Header.Sequence] = struct{}{}
		}
	}
	for len(want) > 0 {
		replies, err := k.nl.Receive()
		if err != nil {
			return 0, fmt.Errorf("batch: %w", err)
		}
		for _, r := range replies {
			switch r.Header.Type {
			case netlink.Error:
				delete(want, r.Header.Sequence)
			case typeNewGen:
				if gen, err = parseGen(r); err != nil {
					return 0, err
				}
			}
		}
	}
	return gen, nil
}

// sendQuietly sends a batch with the monitor out of the event group: with
// any listener the kernel writes an event for each element, which makes a
// restore of 100k elements take 1.1 s instead of 0.25 s
// (BenchmarkNFTablesRestore100k). Whether anyone else committed meanwhile
// shows in the ruleset generation, which moves by one per commit: the
// batch's own is echoed back, any other in between went unseen. Then only
// the checks that need no events can tell what it was: the next check
// compares the objects and looks for the canaries (a flush or a replaced
// table is found that way), and the log says that single elements changed
// meanwhile would only show in the enforcer's audit.
func (k *kernel) sendQuietly(msgs []netlink.Message) error {
	m := k.watch.mon
	before, err := k.genID()
	if err != nil {
		return err
	}
	if err := m.conn.LeaveGroup(unix.NFNLGRP_NFTABLES); err != nil {
		return fmt.Errorf("event monitor: leave group: %w", err)
	}
	// The kernel echoes the generation when the first message of the batch
	// (not the batch header) asks for it; adding the table that exists
	// changes nothing.
	head, err := record(func(c *nftables.Conn) error { c.AddTable(k.table); return nil })
	if err != nil {
		return err
	}
	head[0].Header.Flags |= netlink.Echo
	ours, err := k.send(append(head, msgs...))
	if jerr := m.conn.JoinGroup(unix.NFNLGRP_NFTABLES); jerr != nil {
		k.closeMonitor()
		k.watch.err = fmt.Errorf("join group: %w", jerr)
		k.changedBy("event monitor failed: " + k.watch.err.Error())
	}
	unseen := -1 // unknown after a failed batch: its replies are not all read
	if err == nil {
		after, gerr := k.genID()
		if gerr != nil {
			return gerr
		}
		unseen = int(after - before)
		if ours != 0 {
			unseen--
		}
	}
	if unseen != 0 {
		k.watch.gen = 0
		k.log.Warn("nftables: other processes changed the ruleset while a large batch was written; "+
			"changed tables or sets show at the next check, single elements of wormgate's sets only in the audit",
			"changes", unseen)
	}
	return err
}

func batchMsg(typ int) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
	}
}

// fitSendBuffer raises the send buffer when a batch would not fit: the
// whole batch goes out in one sendmsg.
func (k *kernel) fitSendBuffer(size int) error {
	// Twice the batch leaves room for the headers; SO_SNDBUFFORCE doubles
	// it again for the kernel's bookkeeping.
	need := 2*size + 1<<20
	if need <= k.sndBuf || k.testing {
		return nil
	}
	if err := setBuffer(k.nl, unix.SO_SNDBUFFORCE, need, k.nl.SetWriteBuffer); err != nil {
		return fmt.Errorf("raise send buffer: %w", err)
	}
	k.sndBuf = need
	return nil
}

// genID reads the ruleset generation, which every committed transaction
// advances.
func (k *kernel) genID() (uint32, error) {
	replies, err := k.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: typeGetGen, Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("read generation: %w", err)
	}
	for _, r := range replies {
		if r.Header.Type == typeNewGen {
			return parseGen(r)
		}
	}
	return 0, errors.New("read generation: no generation in the reply")
}

// parseGen reads the generation from a NEWGEN message.
func parseGen(r netlink.Message) (uint32, error) {
	if len(r.Data) >= 4 {
		ad, err := netlink.NewAttributeDecoder(r.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("read generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("read generation: %w", err)
		}
	}
	return 0, errors.New("read generation: no generation in the message")
}
