package remote

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// selfExe is this process's own executable, also after a package
// upgrade replaced the file: the helper is always the daemon's build.
const selfExe = "/proc/self/exe"

// Executable is the file to start the helper from: this program.
func Executable() (string, error) { return selfExe, nil }

// forker is a goroutine locked to its thread for good. Pdeathsig is
// sent when the thread that forked the child exits, not the process;
// Go ends a thread when a goroutine exits locked to it, so any other
// thread could die under a running helper.
var forker = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for fn := range ch {
			fn()
		}
	}()
	return ch
})

// startProcess starts cmd so that the kernel kills it when this process
// dies, also by SIGKILL: no orphan keeps the record's lock.
func startProcess(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan error, 1)
	forker() <- func() { done <- cmd.Start() }
	return <-done
}
