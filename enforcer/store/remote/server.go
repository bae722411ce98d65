package remote

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/wormgate/wormgate/enforcer/store"
)

// errUnknownOp answers a request this helper does not know.
var errUnknownOp = errors.New("unknown record request")

// Store is the record the helper serves (a *store.Store).
type Store interface {
	// Load returns what the record holds that is live at now, within lim.
	Load(now time.Time, lim store.Limits) (store.Snapshot, error)
	// Commit writes c in one fsynced transaction, or not at all.
	Commit(c store.Change) error
	// Recovered names the file an unreadable record was moved to, or "".
	Recovered() string
	// FleetQueue returns the fleet's queued decisions.
	FleetQueue() (map[uint64][]byte, error)
	// CommitFleetQueue adds put and removes done in one fsynced
	// transaction.
	CommitFleetQueue(put map[uint64][]byte, done []uint64) error
}

// Serve sends the hello on w, then answers every request read from r
// with st, one at a time, until r ends (the client closed it, or died):
// then it returns nil. It does not close st.
func Serve(r io.Reader, w io.Writer, st Store) error {
	c := newCodec(r, w)
	if err := c.send(reply{Proto: protoVersion, Recovered: st.Recovered()}); err != nil {
		return fmt.Errorf("record helper: hello: %w", err)
	}
	for {
		var req request
		if err := c.receive(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("record helper: %w", err)
		}
		var rep reply
		switch req.Op {
		case opLoad:
			snap, err := st.Load(req.Now, req.Limits)
			rep.Snapshot, rep.Err = snap, toWire(err)
		case opCommit:
			rep.Err = toWire(st.Commit(req.Change))
		case opFleetQueue:
			q, err := st.FleetQueue()
			rep.FleetQueue, rep.Err = q, toWire(err)
		case opCommitFleetQueue:
			rep.Err = toWire(st.CommitFleetQueue(req.FleetPut, req.FleetDone))
		default:
			rep.Err = toWire(fmt.Errorf("%w: %d", errUnknownOp, req.Op))
		}
		rep.Recovered = st.Recovered()
		if err := c.send(rep); err != nil {
			return fmt.Errorf("record helper: %w", err)
		}
	}
}

// ServeDir opens the record in dir and serves it (see Serve), closing it
// when r ends. A failure to open it is sent to the client as the hello,
// and the client reports it: ServeDir then returns nil, so that the
// same error is not logged twice. It returns an error only when the
// client could not be told.
func ServeDir(r io.Reader, w io.Writer, dir string) error {
	st, err := store.Open(dir)
	if err != nil {
		if serr := newCodec(r, w).send(reply{Proto: protoVersion, Err: toWire(err)}); serr != nil {
			return fmt.Errorf("record helper: %w; telling the client: %w", err, serr)
		}
		return nil
	}
	serr := Serve(r, w, st)
	return errors.Join(serr, st.Close())
}
