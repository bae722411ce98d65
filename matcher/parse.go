package matcher

import (
	"net/netip"
	"strings"
)

// This file holds Postfix's log grammar as plain string scanning: the
// matcher sees every mail log line and most of them are no event, so the
// common path must not run regular expressions or allocate.

// maxQueueIDLen bounds a queue ID; Postfix's long IDs are about 15 to 17
// characters.
const maxQueueIDLen = 32

// splitProgram returns the Postfix instance (the first path element, e.g.
// "postfix" or "postfix-out") and service (the last one) of a syslog tag
// such as "postfix/submission/smtpd". ok is false for other programs.
func splitProgram(program string) (instance, service string, ok bool) {
	if !strings.HasPrefix(program, "postfix") {
		return "", "", false
	}
	i := strings.IndexByte(program, '/')
	if i < 0 {
		return "", "", false
	}
	j := strings.LastIndexByte(program, '/')
	return program[:i], program[j+1:], true
}

// cutQueueID splits "QID: rest". A queue ID is either a short one (6 or
// more of [0-9A-F]) or a long one (10 or more of [0-9A-Za-z]); NOQUEUE is
// neither and is handled by the callers.
func cutQueueID(s string) (qid, rest string, ok bool) {
	n := 0
	var seen byte
	for n < len(s) && n <= maxQueueIDLen {
		c := qidClass[s[n]]
		if c == 0 {
			break
		}
		seen |= c
		n++
	}
	if n > maxQueueIDLen || n+1 >= len(s) || s[n] != ':' || s[n+1] != ' ' {
		return "", "", false
	}
	if n < 6 || (seen&qidLong != 0 && n < 10) {
		return "", "", false
	}
	return s[:n], s[n+2:], true
}

// Character classes of queue IDs: qidShort for [0-9A-F], which both forms
// use, qidLong for the rest of [0-9A-Za-z], which only long IDs use.
const (
	qidShort = 1 << iota
	qidLong
)

var qidClass = func() (t [256]byte) {
	for c := range 256 {
		switch {
		case '0' <= c && c <= '9', 'A' <= c && c <= 'F':
			t[c] = qidShort
		case 'G' <= c && c <= 'Z', 'a' <= c && c <= 'z':
			t[c] = qidLong
		}
	}
	return t
}()

// cutNamAddr parses the "name[addr]" or "name[addr]:port" that Postfix
// writes for a client at the start of s. name is "unknown", a verified
// host name, or empty (postscreen); it never holds '[', ']' or spaces.
func cutNamAddr(s string) (addr netip.Addr, rest string, ok bool) {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c == '[' {
			break
		}
		if c == ']' || c == ' ' || c == ',' || c == ';' {
			return netip.Addr{}, "", false
		}
	}
	if i == len(s) {
		return netip.Addr{}, "", false
	}
	j := strings.IndexByte(s[i+1:], ']')
	if j < 0 {
		return netip.Addr{}, "", false
	}
	a, err := netip.ParseAddr(s[i+1 : i+1+j])
	if err != nil {
		return netip.Addr{}, "", false
	}
	rest = s[i+1+j+1:]
	if len(rest) > 1 && rest[0] == ':' && isDigit(rest[1]) {
		k := 2
		for k < len(rest) && isDigit(rest[k]) {
			k++
		}
		rest = rest[k:]
	}
	return normalizeAddr(a), rest, true
}

// normalizeAddr makes one address one firewall entry: an IPv4 client on a
// dual-stack socket is logged as ::ffff:a.b.c.d, and a zone means nothing
// to a firewall set.
func normalizeAddr(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// clientStatus says what a client= record told about the message's origin.
type clientStatus int

const (
	// clientInvalid: the record names no usable address.
	clientInvalid clientStatus = iota
	// clientOK: the address is Postfix's own record of the origin.
	clientOK
	// clientAmbiguous: the record comes from a re-injection source, but its
	// original client cannot be read without trusting text that a client
	// may have written.
	clientAmbiguous
)

// parseClient parses the rest of "QID: client=..." as smtpd and qmqpd write
// it (smtpd.c, smtpd_sasl_proto.c's smtpd_sasl_mail_log):
//
//	client=NAMADDR[, sasl_method=M][, sasl_username=U][, sasl_sender=S]
//	      [, orig_queue_id=ID][, orig_client=NAMADDR]
//
// NAMADDR is "name[addr]" or "name[addr]:port", with a name that Postfix
// validated as a host name. Only the first NAMADDR is written before any
// client text: sasl_sender is the client's own MAIL FROM AUTH= parameter
// (accepted from unauthenticated clients too, and quoted, it can hold
// spaces, commas and brackets), so it can imitate ", orig_client=..." or
// hide the real one. Hence:
//   - a connecting client that is not a re-injection source is the origin,
//     whatever follows its NAMADDR;
//   - from a re-injection source (a content filter handing mail back with
//     XFORWARD) the origin is orig_client, trusted only when no
//     sasl_sender precedes it. orig_queue_id (XFORWARD IDENT) is neutered
//     by smtpd and cannot hold a space; sasl_method and sasl_username are
//     the re-injector's own authentication. Anything else is ambiguous.
//
// auth reports a successful SMTP AUTH of the origin: smtpd sets
// sasl_method only then, and writes it first, so the text right after
// the NAMADDR must be ", sasl_method=" and a method. Found anywhere later
// it may be sasl_sender's text (AUTH=", sasl_method=PLAIN"), which any
// client can write. XFORWARD carries no authentication, so an origin
// read from orig_client is never authenticated.
func parseClient(s string, reinjector func(netip.Addr) bool) (addr netip.Addr, auth bool, st clientStatus) {
	addr, rest, ok := cutNamAddr(s)
	if !ok || (rest != "" && !strings.HasPrefix(rest, ", ")) {
		return netip.Addr{}, false, clientInvalid
	}
	if reinjector == nil || !reinjector(addr) {
		return addr, saslMethodFirst(rest), clientOK
	}
	const origClient = ", orig_client="
	if strings.Contains(rest, ", sasl_sender=") {
		return netip.Addr{}, false, clientAmbiguous
	}
	i := strings.Index(rest, origClient)
	if i < 0 {
		// Mail the re-injector submitted itself, or a filter that does not
		// forward the client: the origin is unknown.
		return netip.Addr{}, false, clientAmbiguous
	}
	// The first orig_client must end the line: a second one, or any text
	// after it, is not Postfix's layout.
	orig, tail, ok := cutNamAddr(rest[i+len(origClient):])
	if !ok || tail != "" {
		return netip.Addr{}, false, clientAmbiguous
	}
	return orig, false, clientOK
}

// saslMethodFirst reports whether the rest of a client= record after its
// NAMADDR starts with a non-empty sasl_method (see parseClient).
func saslMethodFirst(rest string) bool {
	m, ok := strings.CutPrefix(rest, ", sasl_method=")
	return ok && m != "" && m[0] != ',' && m[0] != ' '
}

// parseAnchoredReject parses the rest of "NOQUEUE|QID: reject: " (or
// "milter-reject: ") as smtpd_check and postscreen write it:
// "STAGE from name[addr](:port)?: reply...". The address is read only at
// this position, which Postfix fills before any client-supplied text.
func parseAnchoredReject(s string) (netip.Addr, bool) {
	i := 0
	for i < len(s) && (('A' <= s[i] && s[i] <= 'Z') || s[i] == '-') {
		i++
	}
	if i == 0 || !strings.HasPrefix(s[i:], " from ") {
		return netip.Addr{}, false
	}
	addr, rest, ok := cutNamAddr(s[i+len(" from "):])
	if !ok || !strings.HasPrefix(rest, ": ") {
		return netip.Addr{}, false
	}
	return addr, true
}

// parseSASLFailure parses the rest of "warning: " as smtpd_sasl_glue
// writes it: "name[addr](:port)?: SASL METHOD authentication failed...".
func parseSASLFailure(s string) (ki int, addr netip.Addr, ok bool) {
	addr, rest, ok := cutNamAddr(s)
	if !ok || !strings.HasPrefix(rest, ": SASL ") {
		return 0, netip.Addr{}, false
	}
	rest = rest[len(": SASL "):]
	i := strings.IndexByte(rest, ' ')
	if i <= 0 || !strings.HasPrefix(rest[i:], " authentication failed") {
		return 0, netip.Addr{}, false
	}
	// The reason is the SASL backend's reply (smtpd_sasl_glue.c logs
	// sasl_reply): it tells a wrong password from a backend that is down.
	// Postfix appends ", sasl_username=" and the user name the client
	// sent, which must not choose the kind: a guesser would send the user
	// name "temporary" to pass for a backend failure. So the reason ends
	// at the first such field, which only shortens a backend's reply
	// that contained one, never lengthens the client's.
	reason := strings.TrimPrefix(rest[i+len(" authentication failed"):], ": ")
	if j := strings.Index(reason, ", sasl_username="); j >= 0 {
		reason = reason[:j]
	}
	reason = strings.ToLower(reason)
	for _, r := range saslBadMechanism {
		if strings.Contains(reason, r) {
			return kiSASLBadMechanism, addr, true
		}
	}
	for _, r := range saslServerFault {
		if strings.Contains(reason, r) {
			return kiSASLServerError, addr, true
		}
	}
	return kiSASLFailed, addr, true
}

// saslServerFault are SASL failure reasons (lower case) that are the
// server's fault: Dovecot or saslauthd down, restarting or overloaded.
var saslServerFault = []string{
	"connection lost to authentication server",
	"authentication server",
	"generic failure",
	"temporary",
	"temporarily",
	"internal error",
	"try again",
}

// saslBadMechanism are reasons for a mechanism the server did not offer.
var saslBadMechanism = []string{
	"invalid authentication mechanism",
	"no mechanism available",
}

// cutPostscreenAddr parses the "[addr]:port" that postscreen writes for
// every client (PSC_CLIENT_ADDR_PORT): no name, always a port.
func cutPostscreenAddr(s string) (netip.Addr, string, bool) {
	j := strings.IndexByte(s, ']')
	if !strings.HasPrefix(s, "[") || j < 0 || j+2 >= len(s) || s[j+1] != ':' || !isDigit(s[j+2]) {
		return netip.Addr{}, "", false
	}
	return cutNamAddr(s)
}

// cutNumber cuts a leading run of digits (with '.' if frac, for
// psc_format_delta_time's "0.12") followed by sep.
func cutNumber(s string, frac bool, sep string) (string, bool) {
	i := 0
	for i < len(s) && (isDigit(s[i]) || (frac && s[i] == '.')) {
		i++
	}
	if i == 0 || !strings.HasPrefix(s[i:], sep) {
		return "", false
	}
	return s[i+len(sep):], true
}

// parsePostscreen parses postscreen's own verdicts, which Postfix writes
// with the client before any client-supplied text (postscreen_early.c,
// postscreen_misc.c, postscreen_smtpd.c):
//
//	PREGREET %d after %s from [%s]:%s: %.100s
//	DNSBL rank %d for [%s]:%s
//	HANGUP after %s from [%s]:%s in %s
//	COMMAND TIME LIMIT from [%s]:%s after %s
//	COMMAND COUNT LIMIT from [%s]:%s after %s
//	COMMAND LENGTH LIMIT from [%s]:%s after %s
//	COMMAND PIPELINING from [%s]:%s after %.100s: %s
//	NON-SMTP COMMAND from [%s]:%s after %s: %.100s %s
//	BARE NEWLINE from [%s]:%s after %s
//
// The first byte picks the candidates: postscreen logs a line for every
// connection (CONNECT, PASS, DISCONNECT), and most are no verdict.
func parsePostscreen(s string) (ki int, addr netip.Addr, ok bool) {
	if s == "" {
		return 0, netip.Addr{}, false
	}
	var rest string
	switch s[0] {
	case 'P':
		if rest, ok = strings.CutPrefix(s, "PREGREET "); !ok {
			break
		}
		if rest, ok = cutNumber(rest, false, " after "); !ok {
			break
		}
		if rest, ok = cutNumber(rest, true, " from "); !ok {
			break
		}
		if addr, rest, ok = cutPostscreenAddr(rest); ok && strings.HasPrefix(rest, ": ") {
			return kiPostscreenPregreet, addr, true
		}
	case 'D':
		if rest, ok = strings.CutPrefix(s, "DNSBL rank "); !ok {
			break
		}
		if rest, ok = cutNumber(strings.TrimPrefix(rest, "-"), false, " for "); !ok {
			break
		}
		if addr, rest, ok = cutPostscreenAddr(rest); ok && rest == "" {
			return kiPostscreenDNSBL, addr, true
		}
	case 'H':
		if rest, ok = strings.CutPrefix(s, "HANGUP after "); !ok {
			break
		}
		if rest, ok = cutNumber(rest, true, " from "); !ok {
			break
		}
		if addr, rest, ok = cutPostscreenAddr(rest); ok && strings.HasPrefix(rest, " in ") {
			return kiPostscreenHangup, addr, true
		}
	case 'C', 'N', 'B':
		for _, v := range postscreenAfter {
			if rest, ok = strings.CutPrefix(s, v.prefix); ok {
				if addr, rest, ok = cutPostscreenAddr(rest); ok && strings.HasPrefix(rest, " after ") {
					return v.ki, addr, true
				}
				break
			}
		}
	}
	return 0, netip.Addr{}, false
}

// postscreenAfter are the verdicts of postscreen's SMTP engine, all
// "WHAT from [addr]:port after ...".
var postscreenAfter = [...]struct {
	prefix string
	ki     int
}{
	{"COMMAND TIME LIMIT from ", kiPostscreenCommandTimeLimit},
	{"COMMAND COUNT LIMIT from ", kiPostscreenCommandCountLimit},
	{"COMMAND LENGTH LIMIT from ", kiPostscreenCommandLengthLimit},
	{"COMMAND PIPELINING from ", kiPostscreenPipelining},
	{"NON-SMTP COMMAND from ", kiPostscreenNonSMTP},
	{"BARE NEWLINE from ", kiPostscreenBareNewline},
}

// parseSession parses smtpd's session records that start with a lower
// case word (smtpd.c); the client (state->namaddr) follows Postfix's own
// words and precedes anything the client wrote:
//
//	lost connection after STAGE from NAMADDR
//	too many errors after STAGE from NAMADDR
//	improper command pipelining after STAGE from NAMADDR: CLIENT TEXT
//	disconnect from NAMADDR STATISTICS
//
// Since Postfix 3.10 the first two start with "NOQUEUE: " or the queue
// ID; the caller cuts that and calls parseSessionEnd.
func parseSession(s string) (ki int, addr netip.Addr, ok bool) {
	switch s[0] {
	case 'l', 't':
		return parseSessionEnd(s)
	case 'i':
		rest, found := strings.CutPrefix(s, "improper command pipelining after ")
		if !found {
			break
		}
		if rest, found = cutStage(rest); !found {
			break
		}
		if rest, found = strings.CutPrefix(rest, " from "); !found {
			break
		}
		if addr, rest, ok = cutNamAddr(rest); ok && strings.HasPrefix(rest, ": ") {
			return kiSMTPDPipelining, addr, true
		}
	case 'd':
		if rest, found := strings.CutPrefix(s, "disconnect from "); found {
			return parseDisconnect(rest)
		}
	}
	return 0, netip.Addr{}, false
}

// parseSessionEnd parses smtpd's records of an abnormal end of session
// (smtpd.c), where the client ends the line:
//
//	lost connection after STAGE from NAMADDR
//	too many errors after STAGE from NAMADDR
//
// STAGE is a command name or CONNECT, or "DATA (%lu bytes)" or "BDAT
// (%lu bytes)". "timeout after" is no event: a slow network causes it.
func parseSessionEnd(s string) (ki int, addr netip.Addr, ok bool) {
	var rest string
	if r, found := strings.CutPrefix(s, "lost connection after "); found {
		ki, rest = kiSMTPDLostConnection, r
		if strings.HasPrefix(r, "AUTH ") {
			ki = kiSMTPDLostAuth
		}
	} else if r, found := strings.CutPrefix(s, "too many errors after "); found {
		ki, rest = kiSMTPDTooManyErrors, r
	} else {
		return 0, netip.Addr{}, false
	}
	rest, found := cutStage(rest)
	if !found {
		return 0, netip.Addr{}, false
	}
	if b, found := strings.CutPrefix(rest, " ("); found {
		if rest, found = cutNumber(b, false, " bytes)"); !found {
			return 0, netip.Addr{}, false
		}
	}
	if rest, found = strings.CutPrefix(rest, " from "); !found {
		return 0, netip.Addr{}, false
	}
	addr, tail, ok := cutNamAddr(rest)
	if !ok || tail != "" {
		return 0, netip.Addr{}, false
	}
	return ki, addr, true
}

// cutStage cuts the stage of smtpd's session records (state->where): an
// upper case command name, CONNECT, END-OF-MESSAGE, or UNKNOWN.
func cutStage(s string) (string, bool) {
	i := 0
	for i < len(s) && (('A' <= s[i] && s[i] <= 'Z') || s[i] == '-') {
		i++
	}
	return s[i:], i > 0
}

// parseDisconnect parses the rest of smtpd's "disconnect from " record:
// NAMADDR, then the session's command statistics, " name=N" or "
// name=N/M" (N of M succeeded) for each command that was used, in
// Postfix's own lower case names ("unknown" for the rest), then
// " commands=N[/M]" and perhaps " notes=bare_lf" (smtpd_format_cmd_stats).
// None of it is client text. A session with auth=N/M and N < M had
// failed AUTH commands.
//
// Every session ends with this record, so the cheap tests come first:
// a session without a failed command has no '/' at all.
func parseDisconnect(s string) (ki int, addr netip.Addr, ok bool) {
	if strings.IndexByte(s, '/') < 0 {
		return 0, netip.Addr{}, false
	}
	i := strings.Index(s, "auth=")
	if i < 1 || s[i-1] != ' ' {
		return 0, netip.Addr{}, false
	}
	addr, rest, ok := cutNamAddr(s)
	if !ok || len(rest) == 0 || rest[0] != ' ' || len(s)-len(rest) > i {
		return 0, netip.Addr{}, false
	}
	good, n, ok := digits(s[i+len("auth="):])
	if !ok || n == "" || n[0] != '/' {
		return 0, netip.Addr{}, false
	}
	total, n, ok := digits(n[1:])
	if !ok || (n != "" && n[0] != ' ') || good >= total {
		return 0, netip.Addr{}, false
	}
	return kiSMTPDAuthFailedSession, addr, true
}

// digits reads a decimal number of up to 9 digits at the start of s.
func digits(s string) (v int, rest string, ok bool) {
	i := 0
	for i < len(s) && i < 9 && isDigit(s[i]) {
		v = v*10 + int(s[i]-'0')
		i++
	}
	if i == 0 || (i < len(s) && isDigit(s[i])) {
		return 0, "", false
	}
	return v, s[i:], true
}

// parseWarning parses the rest of smtpd's "warning: " records that name a
// client at a position Postfix fills before any client text:
//
//	NAMADDR: SASL %s authentication failed: %s     (smtpd_sasl_glue.c)
//	non-SMTP command from NAMADDR: %.100s          (smtpd.c)
//	%s limit exceeded: %d from NAMADDR for service %s
func parseWarning(s string) (ki int, addr netip.Addr, ok bool) {
	if ki, addr, ok = parseSASLFailure(s); ok {
		return ki, addr, true
	}
	if rest, found := strings.CutPrefix(s, "non-SMTP command from "); found {
		if addr, rest, ok = cutNamAddr(rest); ok && strings.HasPrefix(rest, ": ") {
			return kiSMTPDNonSMTP, addr, true
		}
		return 0, netip.Addr{}, false
	}
	for _, l := range smtpdLimits {
		if rest, found := strings.CutPrefix(s, l); found {
			if rest, found = cutNumber(rest, false, " from "); !found {
				break
			}
			if addr, rest, ok = cutNamAddr(rest); ok && strings.HasPrefix(rest, " for service ") {
				return kiSMTPDRateLimit, addr, true
			}
			break
		}
	}
	return 0, netip.Addr{}, false
}

// smtpdLimits are the anvil limits that smtpd enforces, as it words them
// in "%s limit exceeded: %d from %s for service %s" (smtpd.c).
var smtpdLimits = [...]string{
	"Connection rate limit exceeded: ",
	"Connection concurrency limit exceeded: ",
	"Message delivery request rate limit exceeded: ",
	"Recipient address rate limit exceeded: ",
	"New TLS session rate limit exceeded: ",
	"AUTH command rate limit exceeded: ",
}

// adminText returns what follows the last ": " of a cleanup action line:
// cleanup_act_log writes the administrator's optional text last, after
// the header or body excerpt, sender, recipient and HELO, so nothing the
// client wrote can follow it. (An action without text has no such tail
// of its own; the last ": " then lies in client text, which can only
// select rules for that client's own message.)
func adminText(text string) string {
	if i := strings.LastIndex(text, ": "); i >= 0 {
		return text[i+2:]
	}
	return text
}

// queueActive reports whether the rest of a qmgr "QID: " line is the
// record of a message entering the active queue, which qmgr writes only
// for a message that was accepted and queued (qmgr_message.c):
//
//	from=<%s>, size=%ld, nrcpt=%d (queue active)
//
// The sender between the angle brackets is the client's MAIL FROM, but
// it cannot make another qmgr line end like this one: qmgr writes its
// own words after it ("status=expired, returned to sender").
func queueActive(s string) bool {
	if !strings.HasPrefix(s, "from=<") {
		return false
	}
	s, ok := strings.CutSuffix(s, " (queue active)")
	if !ok {
		return false
	}
	if s, ok = cutDigitsSuffix(s, ", nrcpt="); !ok {
		return false
	}
	if s, ok = cutDigitsSuffix(s, ", size="); !ok {
		return false
	}
	return strings.HasSuffix(s, ">")
}

// cutDigitsSuffix cuts a trailing run of digits preceded by sep.
func cutDigitsSuffix(s, sep string) (string, bool) {
	i := len(s)
	for i > 0 && isDigit(s[i-1]) {
		i--
	}
	if i == len(s) {
		return "", false
	}
	return strings.CutSuffix(s[:i], sep)
}
