// Package remote runs the durable record (enforcer/store) in a helper
// process and speaks to it over a pipe.
//
// Why a process: a write or fsync on a frozen or hung filesystem
// (fsfreeze, a dead NFS or iSCSI server) puts the thread into an
// uninterruptible sleep, and a Linux process cannot finish exiting while
// one of its threads is in that state. In-process, a hung state disk
// would make `wormgate serve` ignore SIGTERM until the disk comes back.
// In a helper, only the helper hangs: the daemon abandons it (SIGKILL,
// which takes effect when the disk answers) and exits on time; the kernel
// keeps every ban and the next start adopts what the record lacks.
//
// The protocol is one gob stream each way: the helper first sends a
// hello (the result of opening the record), then answers each request
// with one reply, in order. Change and Snapshot travel as whole values,
// so fields added to them need no protocol change. Closing the request
// stream asks the helper to close the record and exit.
package remote
