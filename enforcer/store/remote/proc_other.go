//go:build !linux

package remote

import (
	"os"
	"os/exec"
)

// selfExe is unused outside Linux: no path names the running program.
const selfExe = ""

// Executable is the file to start the helper from: this program.
func Executable() (string, error) { return os.Executable() }

// startProcess starts cmd; the helper also exits when its stdin closes,
// which is what happens when this process dies.
func startProcess(cmd *exec.Cmd) error { return cmd.Start() }
