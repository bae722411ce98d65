// Package natstest runs a real NATS JetStream cluster for tests: the
// nats-server module that go.mod names as a tool, built once per test
// binary, one process per node, each with its own store directory.
package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// Binary builds the nats-server of go.mod's tool directive once per test
// binary and returns its path. Without the go command (or the module in
// the cache and no proxy) the test fails under CI=true and skips
// otherwise.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if _, err := exec.LookPath("go"); err != nil {
			buildErr = fmt.Errorf("needs the go command to build nats-server: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "natstest-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", binary, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build nats-server: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true, so this is a failure, not a skip)", buildErr)
		}
		t.Skipf("%v", buildErr)
	}
	return binary
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
}

// Options place a cluster.
type Options struct {
	// Host is the address the nodes serve clients on (default 127.0.0.1);
	// routes always use 127.0.0.1.
	Host string
	// Ports are the client ports, one per node (default: free ports).
	Ports []int
	// Command wraps a process start, to run the nodes in a namespace
	// (default exec.Command).
	Command func(name string, args ...string) *exec.Cmd
	// Extra is configuration added to every node's file (a tls block).
	Extra string
}

// Node is one nats-server process.
type Node struct {
	Name string
	// URL is nats://host:port for clients.
	URL  string
	conf string
	cmd  *exec.Cmd
	done chan struct{}
	log  *lockedBuf
	opts Options
}

// Cluster is a JetStream cluster of Nodes.
type Cluster struct {
	Nodes []*Node
}

// URLs are the nodes' client URLs.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.URL
	}
	return out
}

// Start runs an n-node JetStream cluster and waits until it takes a
// replicated write. Every node is killed when the test ends.
func Start(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	bin := Binary(t)
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Command == nil {
		o.Command = exec.Command
	}
	if len(o.Ports) == 0 {
		o.Ports = freePorts(t, n)
	}
	routePorts := freePorts(t, n)
	dir := t.TempDir()
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	c := &Cluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(dir, name+".conf")
		body := fmt.Sprintf(`server_name: %s
listen: "%s:%d"
ping_interval: "2s"
ping_max: 2
jetstream {
  store_dir: "%s"
  max_memory_store: 64MB
  max_file_store: 2GB
}
`, name, o.Host, o.Ports[i], filepath.Join(dir, name))
		body += o.Extra + "\n"
		if n > 1 {
			body += fmt.Sprintf("cluster {\n  name: wormgate-test\n  listen: \"127.0.0.1:%d\"\n  no_advertise: true\n  routes: [%s]\n}\n", routePorts[i], strings.Join(routes, ", "))
		}
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		node := &Node{Name: name, URL: fmt.Sprintf("nats://%s:%d", o.Host, o.Ports[i]), conf: conf, opts: o, log: &lockedBuf{}}
		node.start(t, bin)
		c.Nodes = append(c.Nodes, node)
	}
	return c
}

func (nd *Node) start(t testing.TB, bin string) {
	t.Helper()
	nd.cmd = nd.opts.Command(bin, "-c", nd.conf)
	nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
	nd.done = make(chan struct{})
	if err := nd.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", nd.Name, err)
	}
	done := nd.done
	cmd := nd.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		nd.Kill()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", nd.Name, nd.log.tail(4000))
		}
	})
}

// Kill ends the node at once (SIGKILL), as a crash would.
func (nd *Node) Kill() {
	select {
	case <-nd.done:
		return
	default:
	}
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.done
}

// Restart starts a killed node again with its store.
func (nd *Node) Restart(t testing.TB) {
	t.Helper()
	nd.Kill()
	nd.start(t, Binary(t))
}

// WaitReady waits until the cluster, reached through dial (nil: the
// host's own network), takes a write to an R3 stream, or fails the test.
func (c *Cluster) WaitReady(t testing.TB, dial func(ctx context.Context, network, addr string) (net.Conn, error), within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		last = c.tryWrite(dial)
		if last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, nd := range c.Nodes {
		t.Logf("%s log (tail):\n%s", nd.Name, nd.log.tail(2000))
	}
	t.Fatalf("NATS cluster not ready after %v: %v", within, last)
}

func (c *Cluster) tryWrite(dial func(ctx context.Context, network, addr string) (net.Conn, error)) error {
	opts := []nats.Option{nats.Timeout(time.Second)}
	if dial != nil {
		opts = append(opts, nats.SetCustomDialer(dialer(dial)))
	}
	nc, err := nats.Connect(strings.Join(c.URLs(), ","), opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "natstest_ready", Subjects: []string{"natstest.ready"}, Replicas: len(c.Nodes), Storage: jetstream.MemoryStorage})
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, "natstest.ready", []byte("ok")); err != nil {
		return err
	}
	return js.DeleteStream(ctx, s.CachedInfo().Config.Name)
}

// dialer adapts a namespace's dial function to nats.CustomDialer.
type dialer func(ctx context.Context, network, addr string) (net.Conn, error)

func (d dialer) Dial(network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return d(ctx, network, address)
}

// freePorts reserves n loopback ports and releases them for the nodes.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 1<<20 {
		l.b = append([]byte(nil), l.b[len(l.b)-1<<19:]...)
	}
	return len(p), nil
}

func (l *lockedBuf) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.b) > n {
		return string(l.b[len(l.b)-n:])
	}
	return string(l.b)
}
