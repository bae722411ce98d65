package main

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerOf names the process at the other end of a unix socket by its uid
// and pid (SO_PEERCRED), for the log of operator writes.
func peerOf(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ""
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return ""
	}
	return fmt.Sprintf("uid %d (pid %d)", cred.Uid, cred.Pid)
}
