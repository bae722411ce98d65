package matcher

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/wormgate/wormgate/matcher/established"
	"github.com/wormgate/wormgate/receiver/syslog"
)

// Kind indexes, in the order of kinds.
const (
	kiCleanupReject = iota
	kiCleanupDiscard
	kiCleanupHold
	kiCleanupWarning
	kiMilterReject
	kiSMTPDReject
	kiSASLFailed
	kiSASLServerError
	kiSASLBadMechanism
	kiPostscreenPregreet
	kiPostscreenDNSBL
	kiPostscreenHangup
	kiSMTPDLostAuth
	kiSMTPDTooManyErrors
	kiSMTPDLostConnection
	kiSMTPDPipelining
	kiSMTPDNonSMTP
	kiSMTPDRateLimit
	kiSMTPDAuthFailedSession
	kiPostscreenCommandTimeLimit
	kiPostscreenCommandCountLimit
	kiPostscreenCommandLengthLimit
	kiPostscreenNonSMTP
	kiPostscreenBareNewline
	kiPostscreenPipelining
)

// queueKey identifies one message: queue IDs are unique only within one
// Postfix instance (its own queue directory) on one host, and short IDs
// are reused as soon as the queue file is gone. The host is the syslog
// sender's address (what the network says, invalid for a file) together
// with the HOSTNAME it wrote (what a file says), so that one MX can never
// stand in for another by writing its name, and MX hosts that send no
// name, or the same one, never share a key.
type queueKey struct {
	peer           netip.Addr
	host, instance string
	qid            string
}

// queued is what the queue table keeps about one message.
type queued struct {
	addr netip.Addr
	// auth: the client= record shows a successful SMTP AUTH.
	auth bool
}

// sessionKey identifies one smtpd session: an smtpd process serves one
// client at a time, so the process and the client name it (with the
// syslog sender and host, as for queue IDs).
type sessionKey struct {
	peer           netip.Addr
	host, instance string
	pid            int
	addr           netip.Addr
}

// maxSASLSessions bounds the sessions remembered with a SASL failure;
// each ends at its disconnect record, so only the sessions under way
// (a few hundred smtpd processes on a busy site) and those whose
// disconnect record was lost take room.
const maxSASLSessions = 10000

// ruleSet is one immutable generation of rules, swapped whole on reload.
type ruleSet struct {
	rules  []Rule
	byKind [numKinds][]*Rule
}

// Matcher correlates Postfix log messages and applies the rules. Match is
// for one goroutine; SetRules and Stats may be called from others.
type Matcher struct {
	rules atomic.Pointer[ruleSet]

	// reinjection lists the content filters whose client= records name the
	// original client in orig_client; fixed at New.
	reinjection []netip.Prefix

	// Owned by the goroutine that calls Match.
	queue *simplelru.LRU[queueKey, queued]
	// removed is the value of the queue entry that the last Remove took
	// out (set by the table's eviction callback, which Remove calls):
	// Remove returns no value, and a Peek first would hash the key's
	// strings twice.
	removed queued
	senders *established.Table
	// saslSessions are the sessions under way that logged a SASL
	// failure (see matchSMTPD).
	saslSessions *simplelru.LRU[sessionKey, struct{}]
	intern       map[string]string
	texts        textCache
	// learning: Learn is running, events are neither counted nor matched.
	learning bool

	events       [numKinds]atomic.Uint64
	matched      [numKinds]atomic.Uint64
	unattributed [numKinds]atomic.Uint64
	// unattributedBy counts them per syslog sender.
	unattributedBy senderCounts
	clients        atomic.Uint64
	ambiguous      atomic.Uint64
	queueLen       atomic.Int64
	evictions      atomic.Uint64
	accepted       atomic.Uint64
	sendersLen     atomic.Int64
	senderEvicts   atomic.Uint64
}

// Stats is a snapshot of the matcher's counters.
type Stats struct {
	// Events counts recognised Postfix events by kind, whether or not a
	// rule matched them.
	Events map[Kind]uint64
	// Matched counts offenses produced, by kind (one per matching rule).
	Matched map[Kind]uint64
	// Unattributed counts events that matched at least one rule but whose
	// client is unknown (no client= record seen for the queue ID, e.g. a
	// lost UDP datagram or a log started mid-stream), so nobody was banned.
	Unattributed map[Kind]uint64
	// Clients counts client= records stored in the queue table.
	Clients uint64
	// AmbiguousClients counts client= records from a re-injection source
	// whose original client could not be told apart from text a client
	// may have written (e.g. a MAIL FROM AUTH= value); the message's
	// events are unattributed.
	AmbiguousClients uint64
	// QueueEntries is the current size of the queue table.
	QueueEntries int
	// QueueEvictions counts records pushed out of the full queue table
	// before their message ended; a cleanup event for such a message
	// becomes unattributed.
	QueueEvictions uint64
	// Accepted counts accepted messages (qmgr's "(queue active)") whose
	// client was known, each counted for its client's standing.
	Accepted uint64
	// Senders is the current size of the established-sender table, and
	// SenderEvictions counts senders pushed out of it when full.
	Senders         int
	SenderEvictions uint64
}

// maxIntern bounds the strings interned for table keys (host and instance
// names, a handful per site).
const maxIntern = 1024

// New returns a Matcher for cfg, or an error naming the invalid field.
func New(cfg Config) (*Matcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("matcher: %w", err)
	}
	m := &Matcher{intern: make(map[string]string), reinjection: slices.Clone(cfg.ReinjectionSources)}
	q, err := simplelru.NewLRU(cfg.QueueTableSize, func(_ queueKey, v queued) { m.removed = v })
	if err != nil {
		return nil, fmt.Errorf("matcher: queue table: %w", err)
	}
	m.queue = q
	if m.saslSessions, err = simplelru.NewLRU[sessionKey, struct{}](maxSASLSessions, nil); err != nil {
		return nil, fmt.Errorf("matcher: session table: %w", err)
	}
	e := cfg.Established
	if m.senders, err = established.New(e.TableSize, e.MinMessages, e.MinSpan); err != nil {
		return nil, fmt.Errorf("matcher: sender table: %w", err)
	}
	m.rules.Store(compileRules(cfg.EffectiveRules()))
	return m, nil
}

// SetRules validates rules and then replaces the current rules at once
// (for a reload); the queue table and counters are kept. On error the old
// rules stay in force.
func (m *Matcher) SetRules(rules []Rule) error {
	if err := errors.Join(validateRules("rules", rules, make(map[string]string))...); err != nil {
		return fmt.Errorf("matcher: %w", err)
	}
	m.rules.Store(compileRules(rules))
	return nil
}

func compileRules(rules []Rule) *ruleSet {
	rs := &ruleSet{rules: cloneRules(rules)}
	for i := range rs.rules {
		r := &rs.rules[i]
		if len(r.Kinds) == 0 {
			for k := range rs.byKind {
				rs.byKind[k] = append(rs.byKind[k], r)
			}
			continue
		}
		var seen [numKinds]bool
		for _, k := range r.Kinds {
			if ki := k.index(); ki >= 0 && !seen[ki] {
				seen[ki] = true
				rs.byKind[ki] = append(rs.byKind[ki], r)
			}
		}
	}
	return rs
}

// Stats returns a snapshot of the counters.
func (m *Matcher) Stats() Stats {
	s := Stats{
		Events:           make(map[Kind]uint64, numKinds),
		Matched:          make(map[Kind]uint64, numKinds),
		Unattributed:     make(map[Kind]uint64, numKinds),
		Clients:          m.clients.Load(),
		AmbiguousClients: m.ambiguous.Load(),
		QueueEntries:     int(m.queueLen.Load()),
		QueueEvictions:   m.evictions.Load(),
		Accepted:         m.accepted.Load(),
		Senders:          int(m.sendersLen.Load()),
		SenderEvictions:  m.senderEvicts.Load(),
	}
	for i, k := range kinds {
		s.Events[k] = m.events[i].Load()
		s.Matched[k] = m.matched[i].Load()
		s.Unattributed[k] = m.unattributed[i].Load()
	}
	return s
}

// Match appends the offenses for msg to dst and returns it. It also
// updates the queue table from client=, reject and removed records, and
// from qmgr's records of accepted messages, which it counts in the sender
// table.
func (m *Matcher) Match(dst []Offense, msg syslog.Message) []Offense {
	instance, service, ok := splitProgram(msg.Program)
	if !ok {
		return dst
	}
	switch service {
	case "cleanup":
		return m.matchCleanup(dst, msg, instance)
	case "smtpd":
		return m.matchSMTPD(dst, msg, instance)
	case "postscreen":
		if rest, ok := strings.CutPrefix(msg.Text, "NOQUEUE: reject: "); ok {
			if addr, ok := parseAnchoredReject(rest); ok {
				return m.evaluate(dst, kiSMTPDReject, msg, "", queued{addr: addr})
			}
		} else if ki, addr, ok := parsePostscreen(msg.Text); ok {
			return m.evaluate(dst, ki, msg, "", queued{addr: addr})
		}
	case "qmqpd":
		if qid, rest, ok := cutQueueID(msg.Text); ok {
			if c, ok := strings.CutPrefix(rest, "client="); ok {
				m.remember(msg.Peer, msg.Host, instance, qid, c)
			}
		}
	case "qmgr":
		if qid, rest, ok := cutQueueID(msg.Text); ok {
			if rest == "removed" {
				m.forget(queueKey{msg.Peer, msg.Host, instance, qid})
			} else if queueActive(rest) {
				m.accept(queueKey{msg.Peer, msg.Host, instance, qid}, msg)
			}
		}
	}
	return dst
}

func (m *Matcher) session(msg syslog.Message, instance string, addr netip.Addr) sessionKey {
	return sessionKey{msg.Peer, m.internString(msg.Host), m.internString(instance), msg.PID, addr}
}

// Learn updates the queue and sender tables from msg as Match does,
// but neither counts nor matches its events: for the log before the
// time range a replay reports on, whose client= records and accepted
// messages the range's events need.
func (m *Matcher) Learn(msg syslog.Message) {
	m.learning = true
	m.Match(nil, msg)
	m.learning = false
}

func (m *Matcher) matchSMTPD(dst []Offense, msg syslog.Message, instance string) []Offense {
	text := msg.Text
	if text == "" {
		return dst
	}
	if rest, ok := strings.CutPrefix(text, "warning: "); ok {
		ki, addr, ok := parseWarning(rest)
		if !ok {
			return dst
		}
		if ki == kiSASLFailed || ki == kiSASLServerError || ki == kiSASLBadMechanism {
			m.saslSessions.Add(m.session(msg, instance, addr), struct{}{})
		}
		return m.evaluate(dst, ki, msg, "", queued{addr: addr})
	}
	// Session records start with a lower case word; so may long queue
	// IDs: fall through.
	if c := text[0]; c == 'd' || c == 'i' || c == 'l' || c == 't' {
		if ki, addr, ok := parseSession(text); ok {
			// A failed AUTH that smtpd logged a SASL failure for is
			// that failure's kind's to count: a wrong password once
			// (sasl_failed), a backend that is down never
			// (sasl_server_error). The session counts only where
			// nothing else does: AUTH where it is not offered, aborted
			// or malformed.
			if ki == kiSMTPDAuthFailedSession && m.saslSessions.Remove(m.session(msg, instance, addr)) {
				return dst
			}
			return m.evaluate(dst, ki, msg, "", queued{addr: addr})
		}
	}
	var qid, rest string
	if r, ok := strings.CutPrefix(text, "NOQUEUE: "); ok {
		rest = r
	} else if q, r, ok := cutQueueID(text); ok {
		qid, rest = q, r
		if c, ok := strings.CutPrefix(rest, "client="); ok {
			m.remember(msg.Peer, msg.Host, instance, qid, c)
			return dst
		}
	} else {
		return dst
	}
	var ki int
	var addr netip.Addr
	if r, ok := strings.CutPrefix(rest, "reject: "); ok {
		ki = kiSMTPDReject
		if addr, ok = parseAnchoredReject(r); !ok {
			return dst
		}
	} else if r, ok := strings.CutPrefix(rest, "milter-reject: "); ok {
		ki = kiMilterReject
		if addr, ok = parseAnchoredReject(r); !ok {
			return dst
		}
	} else if ki, addr, ok = parseSessionEnd(rest); !ok {
		// Postfix 3.10 and later put "NOQUEUE: " or the queue ID before
		// "lost connection" and "too many errors".
		return dst
	}
	client := queued{addr: addr}
	if qid != "" {
		// An event within a transaction: the message's client= record
		// tells whether the client authenticated.
		if q, ok := m.queue.Peek(queueKey{msg.Peer, msg.Host, instance, qid}); ok && q.addr == addr {
			client.auth = q.auth
		}
	}
	return m.evaluate(dst, ki, msg, qid, client)
}

func (m *Matcher) matchCleanup(dst []Offense, msg syslog.Message, instance string) []Offense {
	qid, rest, ok := cutQueueID(msg.Text)
	if !ok {
		return dst
	}
	var ki int
	ends := false // the action ends the message: its queue ID is free again
	switch {
	case strings.HasPrefix(rest, "reject: "):
		ki, ends = kiCleanupReject, true
	case strings.HasPrefix(rest, "discard: "):
		ki, ends = kiCleanupDiscard, true
	case strings.HasPrefix(rest, "milter-reject: "):
		ki, ends = kiMilterReject, true
	case strings.HasPrefix(rest, "hold: "):
		ki = kiCleanupHold
	case strings.HasPrefix(rest, "warning: "):
		ki = kiCleanupWarning
	default:
		return dst
	}
	// The address comes only from the client= record: the cleanup line
	// itself is attacker-written on both sides of the real address.
	key := queueKey{msg.Peer, msg.Host, instance, qid}
	client, _ := m.queue.Get(key)
	dst = m.evaluate(dst, ki, msg, qid, client)
	if ends {
		m.forget(key)
	}
	return dst
}

// evaluate counts an event and appends one offense per matching rule. An
// invalid client.addr means the event could not be attributed.
func (m *Matcher) evaluate(dst []Offense, ki int, msg syslog.Message, qid string, client queued) []Offense {
	if m.learning {
		return dst
	}
	addr := client.addr
	m.events[ki].Add(1)
	rs := m.rules.Load()
	matched := false
	var first Offense // the event's first offense, whose standing the others share
	subject := msg.Text
	if kinds[ki].adminText() {
		subject = adminText(subject)
	}
	var bits uint64
	cached := kinds[ki].adminText() && len(rs.byKind[ki]) <= 64
	if cached {
		bits = m.texts.patterns(rs, ki, subject)
	}
	for i, r := range rs.byKind[ki] {
		if len(r.Hosts) > 0 && !slices.Contains(r.Hosts, msg.Host) {
			continue
		}
		if !r.Program.empty() && !r.Program.MatchString(msg.Program) {
			continue
		}
		if cached {
			if bits&(1<<i) == 0 {
				continue
			}
		} else if !r.Pattern.MatchString(subject) {
			continue
		}
		if !addr.IsValid() {
			m.unattributed[ki].Add(1)
			m.unattributedBy.count(msg.Peer)
			return dst
		}
		if !matched {
			// Offenses outlive msg; do not pin the whole line for the ID.
			st := m.senders.Standing(addr)
			first = Offense{
				// Host is interned: a substring of the line would keep the
				// whole line alive as long as the offender is remembered.
				Addr: addr, Kind: kinds[ki], Host: m.internString(msg.Host), QueueID: strings.Clone(qid), Time: msg.Time,
				Text:          m.offenseText(ki, subject),
				Authenticated: client.auth, Accepted: st.Accepted, AcceptedSince: st.Since, Established: st.Established,
			}
			matched = true
		}
		off := first
		off.Rule = r.Name
		dst = append(dst, off)
		m.matched[ki].Add(1)
	}
	return dst
}

// remember records the client of a new message. A record that names no
// usable address still clears an older one for the same (reused) queue ID,
// so that a later event is unattributed rather than blamed on the
// previous holder of the ID.
func (m *Matcher) remember(peer netip.Addr, host, instance, qid, record string) {
	key := queueKey{peer, m.internString(host), m.internString(instance), strings.Clone(qid)}
	addr, auth, status := parseClient(record, m.isReinjector)
	if status != clientOK {
		if status == clientAmbiguous {
			m.ambiguous.Add(1)
		}
		m.forget(key)
		return
	}
	if m.queue.Add(key, queued{addr: addr, auth: auth}) {
		m.evictions.Add(1)
	}
	m.clients.Add(1)
	m.queueLen.Store(int64(m.queue.Len()))
}

// accept counts the message of key as accepted from its client: qmgr
// took it into the active queue. The queue entry is the one that smtpd's
// client= record made on the same syslog sender, host and instance, so
// another MX cannot count mail for a client it never received from.
//
// The entry ends here: no event of a queued message is attributed
// through it any more (cleanup and smtpd are done with it), and qmgr
// logs the same line again for every retry from the deferred queue,
// which must not count again; one message deferred for days would
// otherwise make its sender established.
func (m *Matcher) accept(key queueKey, msg syslog.Message) {
	if !m.queue.Remove(key) {
		return
	}
	m.queueLen.Store(int64(m.queue.Len()))
	m.accepted.Add(1)
	switch added, evicted := m.senders.Accept(m.removed.addr, msg.Time); {
	case evicted:
		m.senderEvicts.Add(1)
	case added:
		m.sendersLen.Store(int64(m.senders.Len()))
	}
}

func (m *Matcher) isReinjector(a netip.Addr) bool {
	for _, p := range m.reinjection {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (m *Matcher) forget(key queueKey) {
	if m.queue.Remove(key) {
		m.queueLen.Store(int64(m.queue.Len()))
	}
}

func (m *Matcher) internString(s string) string {
	if v, ok := m.intern[s]; ok {
		return v
	}
	if len(m.intern) >= maxIntern {
		clear(m.intern)
	}
	v := strings.Clone(s)
	m.intern[v] = v
	return v
}

// offenseText is the bounded text of an offense; an administrator's text
// (a header_checks reply, repeated through an outbreak) is shared.
func (m *Matcher) offenseText(ki int, subject string) string {
	t := subject[:min(len(subject), MaxOffenseText)]
	if kinds[ki].adminText() {
		return m.internString(t)
	}
	return strings.Clone(t)
}

// maxTexts bounds the administrator's texts remembered by textCache; past
// it the cache starts afresh.
const maxTexts = 1024

// textCache remembers which of a kind's rule patterns match an
// administrator's text (the tail of a cleanup line): an outbreak repeats
// a handful of header_checks texts thousands of times, and a pattern costs
// far more than a map lookup. It belongs to the goroutine that calls
// Match and is dropped with the rule set it was computed for.
type textCache struct {
	rs *ruleSet
	m  map[textKey]uint64
}

type textKey struct {
	ki   int
	text string
}

// patterns returns bit i set when rs.byKind[ki][i].Pattern matches text.
func (c *textCache) patterns(rs *ruleSet, ki int, text string) uint64 {
	if c.rs != rs {
		c.rs, c.m = rs, make(map[textKey]uint64)
	}
	if bits, ok := c.m[textKey{ki, text}]; ok {
		return bits
	}
	var bits uint64
	for i, r := range rs.byKind[ki] {
		if r.Pattern.MatchString(text) {
			bits |= 1 << i
		}
	}
	if len(c.m) >= maxTexts {
		clear(c.m)
	}
	// The key outlives the message: do not pin the whole line.
	c.m[textKey{ki, strings.Clone(text)}] = bits
	return bits
}

// maxSenderCounts bounds senderCounts; a site has a handful of MX hosts.
const maxSenderCounts = 1024

// senderCounts counts events per syslog sender, for the operator's per-MX
// view. Unattributed events are rare, so a mutex is cheap enough; the
// matcher's goroutine writes, the status readers read.
type senderCounts struct {
	mu sync.Mutex
	n  map[netip.Addr]uint64
}

func (c *senderCounts) count(peer netip.Addr) {
	if !peer.IsValid() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.n[peer]; ok || len(c.n) < maxSenderCounts {
		if c.n == nil {
			c.n = make(map[netip.Addr]uint64)
		}
		c.n[peer]++
	}
}

// UnattributedBySender returns, per syslog sender, the events that matched
// a rule but could not be attributed to a client, since start.
func (m *Matcher) UnattributedBySender() map[netip.Addr]uint64 {
	m.unattributedBy.mu.Lock()
	defer m.unattributedBy.mu.Unlock()
	return maps.Clone(m.unattributedBy.n)
}
