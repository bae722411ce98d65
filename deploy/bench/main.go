// Command bench is the Go half of imtcp-vs-wormgate.sh: it turns the
// generated mail log (cmd/wormgate/bench) into the byte streams an MX
// host's rsyslog would send, sends them over one or more TCP connections
// as fast as the receiver takes them, and waits until the receiver has
// processed the last message, so that the script can compare rsyslog's
// imtcp with `wormgate serve` on the same stream.
//
//	bench -log maillog -format lf|octet -conns 1|4 -check-input FILE
//	bench -log maillog -format ... -conns ... -addr HOST:PORT \
//	      -rsyslog-out FILE -rsyslog-end FILE          (rsyslog is done when ...)
//	bench -log maillog -format ... -conns ... -addr HOST:PORT \
//	      -metrics URL -events N                      (wormgate is done when ...)
//	bench -free-port
//
// Each connection carries the lines of some MX hosts (host i on connection
// i mod conns, so every host's lines stay in order, as queue-ID
// correlation needs) and ends with one marker line from the host
// "benchend": a postscreen PREGREET from a documentation address, which
// rsyslog's filter writes to a file of its own and wormgate recognises
// as an event. Done means:
//   - rsyslog: the end file holds one marker per connection and the output
//     file every other line; the time of the last write is the later
//     modification time of the two files;
//   - wormgate: /metrics shows every message received over TCP and
//     wormgate_events_total at the count `wormgate check` found on the same
//     lines (-check-input writes them). The markers are the last lines of
//     every connection and the pipeline matches in arrival order, so the
//     last marker matched means every line was. A scrape costs wormgate
//     about a millisecond of CPU, so /metrics is polled rarely at first
//     and every 5 ms near the predicted end; done may come up to that
//     late, never early.
//
// The time is from just before the first byte is written to done; with
// -pid, the CPU time the receiver used in between is reported too. The
// result is one line of key=value pairs on standard output.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// markerHost is the HOSTNAME of the last line of every connection.
const markerHost = "benchend"

// stamp5424 is the timestamp of the generated log and of rsyslog's
// RFC 5424 template.
const stamp5424 = "2006-01-02T15:04:05.000000-07:00"

// pollEvery is how often rsyslog's files are checked.
const pollEvery = 10 * time.Millisecond

var errUsage = errors.New("usage")

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	log, format, addr, checkInput string
	rsOut, rsEnd, metricsURL      string
	bansOut                       string
	conns, events, pid            int
	timeout                       time.Duration
	freePort                      bool
}

func run() error {
	var o options
	flag.StringVar(&o.log, "log", "", "generated mail log (RFC 3339 timestamps, as cmd/wormgate/bench writes it)")
	flag.StringVar(&o.format, "format", "lf", "wire format: lf (RSYSLOG_TraditionalForwardFormat, LF-terminated) or octet (RFC 5424, RFC 6587 octet counting)")
	flag.IntVar(&o.conns, "conns", 1, "TCP connections")
	flag.StringVar(&o.checkInput, "check-input", "", "write the lines that would be sent, markers included, as a log file for `wormgate check`, and exit")
	flag.StringVar(&o.addr, "addr", "", "receiver host:port")
	flag.StringVar(&o.rsOut, "rsyslog-out", "", "rsyslog's output file")
	flag.StringVar(&o.rsEnd, "rsyslog-end", "", "rsyslog's file for the marker lines")
	flag.StringVar(&o.metricsURL, "metrics", "", "wormgate's /metrics URL")
	flag.StringVar(&o.bansOut, "bans-out", "", "with -metrics: write the addresses of /api/v1/bans to this file, sorted, one a line")
	flag.IntVar(&o.events, "events", 0, "wormgate_events_total when every line is matched (from `wormgate check`)")
	flag.IntVar(&o.pid, "pid", 0, "the receiver's process ID, to report the CPU time it used from the first byte to done (Linux)")
	flag.DurationVar(&o.timeout, "timeout", 120*time.Second, "give up waiting after this long")
	flag.BoolVar(&o.freePort, "free-port", false, "print a free TCP port on 127.0.0.1 and exit")
	flag.Parse()
	if o.freePort {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
		return nil
	}
	if o.log == "" || o.conns < 1 || (o.format != "lf" && o.format != "octet") {
		return fmt.Errorf("%w: -log FILE, -format lf|octet, -conns N >= 1", errUsage)
	}
	lines, err := readLog(o.log)
	if err != nil {
		return err
	}
	streams, markers := split(lines, o.conns)
	if o.checkInput != "" {
		// In the log's own order: serve keeps each host's order, not the
		// interleaving of hosts, and neither may matter.
		return writeCheckInput(o.checkInput, append(lines, markers...), o.format)
	}
	var wait func(start, deadline time.Time) (time.Time, string, error)
	switch {
	case o.addr == "":
		return fmt.Errorf("%w: -addr, or -check-input", errUsage)
	case o.rsOut != "" && o.rsEnd != "":
		wait = func(_, deadline time.Time) (time.Time, string, error) {
			return waitRsyslog(o.rsOut, o.rsEnd, len(lines), o.conns, deadline)
		}
	case o.metricsURL != "" && o.events > 0:
		wait = func(start, deadline time.Time) (time.Time, string, error) {
			return waitWormgate(o.metricsURL, len(lines)+o.conns, o.events, start, deadline)
		}
	default:
		return fmt.Errorf("%w: -rsyslog-out and -rsyslog-end, or -metrics and -events", errUsage)
	}
	wire := make([][]byte, len(streams))
	size := 0
	for i, s := range streams {
		if wire[i], err = encode(s, o.format, true); err != nil {
			return err
		}
		size += len(wire[i])
	}
	cpu0, err := cpuSeconds(o.pid)
	if err != nil {
		return err
	}
	start, err := send(o.addr, wire)
	if err != nil {
		return err
	}
	done, extra, err := wait(start, start.Add(o.timeout))
	if err != nil {
		return err
	}
	cpu1, err := cpuSeconds(o.pid)
	if err != nil {
		return err
	}
	fmt.Printf("messages=%d bytes=%d conns=%d format=%s seconds=%.3f cpu=%.2f%s\n",
		len(lines)+o.conns, size, o.conns, o.format, done.Sub(start).Seconds(), cpu1-cpu0, extra)
	if o.bansOut != "" {
		return writeBans(strings.TrimSuffix(o.metricsURL, "/metrics")+"/api/v1/bans", o.bansOut)
	}
	return nil
}

// logLine is one line of the generated log, cut into its fields.
type logLine struct {
	time             time.Time
	host, prog, text string
	pid              int
}

func readLog(path string) ([]logLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		l, ok := cut(sc.Text())
		if !ok {
			return nil, fmt.Errorf("%s:%d: not a line of the generated log", path, n)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// cut reads "TIMESTAMP HOST PROG[PID]: TEXT".
func cut(s string) (logLine, bool) {
	ts, rest, ok1 := strings.Cut(s, " ")
	host, rest, ok2 := strings.Cut(rest, " ")
	tag, text, ok3 := strings.Cut(rest, ": ")
	prog, pid, ok4 := strings.Cut(tag, "[")
	if !ok1 || !ok2 || !ok3 || !ok4 || !strings.HasSuffix(pid, "]") {
		return logLine{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	n, err2 := strconv.Atoi(strings.TrimSuffix(pid, "]"))
	if err != nil || err2 != nil {
		return logLine{}, false
	}
	return logLine{time: t, host: host, prog: prog, pid: n, text: text}, true
}

// split deals the hosts out over conns streams, in order of first
// appearance, and ends each stream with a marker line.
func split(lines []logLine, conns int) (streams [][]logLine, markers []logLine) {
	hostConn := map[string]int{}
	streams = make([][]logLine, conns)
	for _, l := range lines {
		c, ok := hostConn[l.host]
		if !ok {
			c = len(hostConn) % conns
			hostConn[l.host] = c
		}
		streams[c] = append(streams[c], l)
	}
	last := lines[len(lines)-1].time
	for i := range streams {
		// A pregreet is an event with a client of its own: the marker
		// bans a documentation address, in serve and in check alike.
		m := logLine{
			time: last, host: markerHost, prog: "postfix/postscreen", pid: 1 + i,
			text: fmt.Sprintf("PREGREET 11 after 0.1 from [192.0.2.%d]:4242: EHLO bench\\r\\n", 240+i),
		}
		streams[i] = append(streams[i], m)
		markers = append(markers, m)
	}
	return streams, markers
}

// writeCheckInput writes the lines as they go on the wire, without octet
// counts: `wormgate check` reads syslog lines with a <PRI> as well.
func writeCheckInput(path string, lines []logLine, format string) error {
	b, err := encode(lines, format, false)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// encode writes a stream as rsyslog's omfwd would: lf is
// RSYSLOG_TraditionalForwardFormat with LF framing; octet is
// RSYSLOG_SyslogProtocol23Format (whose template ends in LF, inside the
// frame) with octet counting. PRI 22 is mail.info.
func encode(lines []logLine, format string, counted bool) ([]byte, error) {
	var b bytes.Buffer
	var frame []byte
	for _, l := range lines {
		frame = frame[:0]
		switch format {
		case "lf":
			frame = append(frame, "<22>"...)
			frame = l.time.AppendFormat(frame, time.Stamp)
			frame = fmt.Appendf(frame, " %s %s[%d]: %s\n", l.host, l.prog, l.pid, l.text)
			b.Write(frame)
		case "octet":
			frame = append(frame, "<22>1 "...)
			frame = l.time.AppendFormat(frame, stamp5424)
			frame = fmt.Appendf(frame, " %s %s %d - - %s\n", l.host, l.prog, l.pid, l.text)
			if counted {
				fmt.Fprintf(&b, "%d ", len(frame))
			}
			b.Write(frame)
		default:
			return nil, fmt.Errorf("%w: format %q", errUsage, format)
		}
	}
	return b.Bytes(), nil
}

// send connects every stream first, then writes them all at once; it
// returns the time just before the first write.
func send(addr string, wire [][]byte) (time.Time, error) {
	conns := make([]net.Conn, len(wire))
	for i := range wire {
		c, err := dial(addr)
		if err != nil {
			return time.Time{}, err
		}
		defer c.Close()
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make([]error, len(wire))
	start := time.Now()
	for i, c := range conns {
		wg.Go(func() {
			if _, err := c.Write(wire[i]); err != nil {
				errs[i] = fmt.Errorf("send: %w", err)
				return
			}
			errs[i] = c.(*net.TCPConn).CloseWrite()
		})
	}
	wg.Wait()
	return start, errors.Join(errs...)
}

// dial connects, retrying for a while: the receiver may still be starting.
func dial(addr string) (net.Conn, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(pollEvery)
	}
}

// waitRsyslog waits for every marker in end, then checks that out has
// every other line; done is the later write of the two files.
func waitRsyslog(out, end string, lines, conns int, deadline time.Time) (time.Time, string, error) {
	for {
		b, err := os.ReadFile(end)
		if err == nil && bytes.Count(b, []byte("\n")) >= conns {
			break
		}
		if time.Now().After(deadline) {
			return time.Time{}, "", fmt.Errorf("rsyslog: %d of %d markers in %s before the timeout", bytes.Count(b, []byte("\n")), conns, end)
		}
		time.Sleep(pollEvery)
	}
	var got int
	for {
		n, err := countLines(out)
		if err != nil {
			return time.Time{}, "", err
		}
		got = n
		if got >= lines || time.Now().After(deadline) {
			break
		}
		time.Sleep(pollEvery)
	}
	var done time.Time
	for _, p := range []string{out, end} {
		st, err := os.Stat(p)
		if err != nil {
			return time.Time{}, "", err
		}
		if st.ModTime().After(done) {
			done = st.ModTime()
		}
	}
	return done, fmt.Sprintf(" written=%d dropped=%d", got, lines-got), nil
}

func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += bytes.Count(buf[:k], []byte("\n"))
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// waitWormgate polls /metrics until every message is received and every
// event matched; it reports the drop counters.
func waitWormgate(url string, messages, events int, start, deadline time.Time) (time.Time, string, error) {
	const key = `wormgate_syslog_messages_total{transport="tcp"}`
	var m map[string]float64
	for {
		var err error
		m, err = scrape(url)
		if err != nil {
			return time.Time{}, "", err
		}
		if m[key] >= float64(messages) && sumOf(m, "wormgate_events_total{") >= float64(events) {
			break
		}
		if time.Now().After(deadline) {
			return time.Time{}, "", fmt.Errorf("wormgate: %v of %d messages, %v of %d events before the timeout",
				m[key], messages, sumOf(m, "wormgate_events_total{"), events)
		}
		// A scrape costs wormgate about a millisecond of CPU: poll
		// rarely while most of the stream is still to come, every 5 ms
		// near its end.
		wait := 100 * time.Millisecond
		if got := m[key] / float64(messages); got > 0 {
			left := time.Duration(float64(time.Since(start)) * (1 - got) / got)
			wait = min(max(left/2, 5*time.Millisecond), wait)
		}
		time.Sleep(wait)
	}
	done := time.Now()
	return done, fmt.Sprintf(" received=%.0f events=%.0f dropped=%.0f refused=%.0f",
		m[key], sumOf(m, "wormgate_events_total{"),
		sumOf(m, "wormgate_syslog_dropped_total{"), sumOf(m, "wormgate_bans_refused_total{")), nil
}

// writeBans writes the banned addresses the API lists, sorted.
func writeBans(url, path string) error {
	var addrs []string
	cursor := ""
	for {
		u := url + "?limit=1000"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		resp, err := http.Get(u)
		if err != nil {
			return fmt.Errorf("bans: %w", err)
		}
		var page struct {
			NextCursor string `json:"next_cursor"`
			Bans       []struct {
				Addr string `json:"addr"`
			} `json:"bans"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("bans: %w", err)
		}
		for _, b := range page.Bans {
			addrs = append(addrs, b.Addr+"\n")
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	slices.Sort(addrs)
	return os.WriteFile(path, []byte(strings.Join(addrs, "")), 0o644)
}

func sumOf(m map[string]float64, prefix string) float64 {
	s := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// cpuSeconds is the user and system time of process pid and all its
// threads so far; 0 for pid 0.
func cpuSeconds(pid int) (float64, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	// The command name, in parentheses, may hold spaces; utime and
	// stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time: short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu time: bad /proc/%d/stat", pid)
	}
	return (utime + stime) / 100, nil
}

// scrape reads the wormgate_ series of a Prometheus text exposition.
func scrape(url string) (map[string]float64, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	// Compressing the answer would cost the receiver more CPU.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "wormgate_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}
