package remote

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/wormgate/wormgate/enforcer/store"
)

// protoVersion changes when a request or reply changes incompatibly;
// the hello carries it so that a helper from another build is refused.
const protoVersion = 1

// op is what a request asks of the record.
type op uint8

const (
	opLoad op = iota + 1
	opCommit
	// The fleet's queue of decisions waiting for NATS.
	opFleetQueue
	opCommitFleetQueue
)

type request struct {
	Op     op
	Now    time.Time
	Limits store.Limits
	Change store.Change
	// FleetPut and FleetDone are opCommitFleetQueue's.
	FleetPut  map[uint64][]byte
	FleetDone []uint64
}

// reply answers one request; the first reply of a stream is the hello.
type reply struct {
	Proto    int
	Snapshot store.Snapshot
	// FleetQueue is opFleetQueue's.
	FleetQueue map[uint64][]byte
	// Recovered is the store's Recovered after the request: Load may
	// move an unreadable file aside.
	Recovered string
	Err       *wireError
}

// wireError is an error that crossed the pipe: its text, and the
// sentinel it wrapped as a code, so that errors.Is works on this side.
type wireError struct {
	Code uint8
	Msg  string
}

// sentinels are the errors whose identity callers test with errors.Is,
// by their code on the wire. Codes are never reused.
var sentinels = map[uint8]error{
	1: store.ErrStoreLocked,
	2: store.ErrCorrupt,
	3: store.ErrCorruptRecord,
}

func toWire(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Msg: err.Error()}
	for code, s := range sentinels {
		if errors.Is(err, s) {
			w.Code = code
			break
		}
	}
	return w
}

func (w *wireError) err() error {
	if w == nil {
		return nil
	}
	return &remoteError{msg: w.Msg, sentinel: sentinels[w.Code]}
}

// remoteError is an error of the helper: the same text, and the same
// sentinel for errors.Is.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// codec is one end of the pipe.
type codec struct {
	enc *gob.Encoder
	dec *gob.Decoder
}

func newCodec(r io.Reader, w io.Writer) *codec {
	return &codec{enc: gob.NewEncoder(w), dec: gob.NewDecoder(r)}
}

func (c *codec) send(v any) error {
	if err := c.enc.Encode(v); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

func (c *codec) receive(v any) error {
	if err := c.dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return err
		}
		return fmt.Errorf("receive: %w", err)
	}
	return nil
}
