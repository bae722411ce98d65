package dryrun

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wormgate/wormgate/enforcer"
)

func TestDryRun(t *testing.T) {
	var logs bytes.Buffer
	d, now := newAt(&logs)
	ctx := context.Background()
	if err := d.Setup(ctx); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	err := d.Add(ctx, []enforcer.Element{
		{Addr: addr("192.0.2.1"), Timeout: time.Minute},
		{Addr: addr("::ffff:192.0.2.2"), Timeout: 1500 * time.Microsecond}, // 2 ms after rounding
		{Addr: addr("2001:db8::1"), Timeout: time.Hour},
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	for _, want := range []string{"would block", "addr=192.0.2.1", "addr=192.0.2.2", "addr=2001:db8::1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	list := func() []enforcer.Element { return listOf(t, d) }
	want := []enforcer.Element{
		{Addr: addr("192.0.2.1"), Timeout: time.Minute},
		{Addr: addr("192.0.2.2"), Timeout: 2 * time.Millisecond},
		{Addr: addr("2001:db8::1"), Timeout: time.Hour},
	}
	if diff := cmp.Diff(want, list(), addrCmp, prefixCmp); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	*now = now.Add(30 * time.Second) // 192.0.2.2 expires, the others run down
	if err := d.Add(ctx, []enforcer.Element{{Addr: addr("2001:db8::1"), Timeout: 10 * time.Second}}); err != nil {
		t.Fatalf("re-Add: %v", err)
	}
	want = []enforcer.Element{
		{Addr: addr("192.0.2.1"), Timeout: 30 * time.Second},
		{Addr: addr("2001:db8::1"), Timeout: 10 * time.Second},
	}
	if diff := cmp.Diff(want, list(), addrCmp, prefixCmp); diff != "" {
		t.Errorf("List after 30s and a re-Add (-want +got):\n%s", diff)
	}

	logs.Reset()
	if err := d.Delete(ctx, []netip.Addr{addr("::ffff:192.0.2.1"), addr("198.51.100.1")}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if !strings.Contains(logs.String(), "would unblock") || strings.Contains(logs.String(), "198.51.100.1") {
		t.Errorf("Delete logged %q, want one unblock of 192.0.2.1 only", logs.String())
	}
	if diff := cmp.Diff(want[1:], list(), addrCmp, prefixCmp); diff != "" {
		t.Errorf("List after Delete (-want +got):\n%s", diff)
	}

	for _, bad := range []enforcer.Element{{Addr: addr("192.0.2.3")}, {Addr: addr("192.0.2.3"), Timeout: -1}, {Timeout: time.Second}} {
		if err := d.Add(ctx, []enforcer.Element{bad}); !errors.Is(err, enforcer.ErrInvalidElement) {
			t.Errorf("Add(%v) = %v, want %v", bad, err, enforcer.ErrInvalidElement)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Add(ctx, want); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("Add after Close = %v, want %v", err, enforcer.ErrClosed)
	}
	if _, err := d.List(ctx); !errors.Is(err, enforcer.ErrClosed) {
		t.Errorf("List after Close = %v, want %v", err, enforcer.ErrClosed)
	}
}

func TestDryRunConcurrent(t *testing.T) {
	d := New(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 32 {
				a := netip.AddrFrom4([4]byte{203, 0, 113, byte(g*32 + i)})
				if err := d.Add(ctx, []enforcer.Element{{Addr: a, Timeout: time.Hour}}); err != nil {
					t.Errorf("Add: %v", err)
				}
				if i%2 == 1 {
					if err := d.Delete(ctx, []netip.Addr{a}); err != nil {
						t.Errorf("Delete: %v", err)
					}
				}
				if _, err := d.List(ctx); err != nil {
					t.Errorf("List: %v", err)
				}
			}
		})
	}
	wg.Wait()
	got, err := d.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 128 {
		t.Errorf("List has %d elements, want 128 (256 added, every second one deleted)", len(got))
	}
}

var addrCmp = cmpopts.EquateComparable(netip.Addr{})

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestDryRunNets(t *testing.T) {
	var logs bytes.Buffer
	d, _ := newAt(&logs)
	ctx := context.Background()
	p := netip.MustParsePrefix
	err := d.Add(ctx, []enforcer.Element{
		{Net: p("203.0.113.77/24"), Timeout: time.Hour},
		{Net: p("2001:db8::/48"), Timeout: time.Minute},
		{Net: p("192.0.2.9/32"), Timeout: time.Minute}, // one address: a host
		{Addr: addr("203.0.113.5"), Timeout: time.Minute},
	})
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if !strings.Contains(logs.String(), "addr=203.0.113.0/24") {
		t.Errorf("log lacks the network:\n%s", logs.String())
	}
	want := []enforcer.Element{
		{Addr: addr("192.0.2.9"), Timeout: time.Minute},
		{Addr: addr("203.0.113.0"), Net: p("203.0.113.0/24"), Timeout: time.Hour},
		{Addr: addr("203.0.113.5"), Timeout: time.Minute},
		{Addr: addr("2001:db8::"), Net: p("2001:db8::/48"), Timeout: time.Minute},
	}
	list := func() []enforcer.Element { return listOf(t, d) }
	if diff := cmp.Diff(want, list(), addrCmp, prefixCmp); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	// The same network again is a refresh; an overlapping one fails the
	// whole call, as in the kernel.
	if err := d.Add(ctx, []enforcer.Element{{Net: p("203.0.113.0/24"), Timeout: 2 * time.Hour, Refresh: true}}); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	for _, bad := range [][]enforcer.Element{
		{{Net: p("203.0.113.128/25"), Timeout: time.Hour}},
		{{Net: p("203.0.0.0/16"), Timeout: time.Hour}},
		{{Net: p("198.51.100.0/24"), Timeout: time.Hour}, {Net: p("198.51.100.0/23"), Timeout: time.Hour}},
	} {
		if err := d.Add(ctx, bad); !errors.Is(err, enforcer.ErrOverlap) {
			t.Errorf("Add(%v) = %v, want %v", bad, err, enforcer.ErrOverlap)
		}
	}
	if err := d.Restore(ctx, []enforcer.Element{{Net: p("10.0.0.0/8"), Timeout: time.Hour}, {Net: p("10.1.0.0/16"), Timeout: time.Hour}}); !errors.Is(err, enforcer.ErrOverlap) {
		t.Errorf("Restore of overlapping networks = %v, want %v", err, enforcer.ErrOverlap)
	}
	if err := d.DeleteNets(ctx, []netip.Prefix{p("203.0.113.0/25"), p("2001:db8::/48"), p("203.0.113.5/32"), p("10.0.0.0/8")}); err != nil {
		t.Fatalf("DeleteNets: %v", err)
	}
	want = []enforcer.Element{
		{Addr: addr("192.0.2.9"), Timeout: time.Minute},
		{Addr: addr("203.0.113.0"), Net: p("203.0.113.0/24"), Timeout: 2 * time.Hour},
	}
	if diff := cmp.Diff(want, list(), addrCmp, prefixCmp); diff != "" {
		t.Errorf("List after DeleteNets (-want +got):\n%s", diff)
	}
	if err := d.DeleteNets(ctx, []netip.Prefix{p("0.0.0.0/0")}); !errors.Is(err, enforcer.ErrInvalidElement) {
		t.Errorf("DeleteNets(0.0.0.0/0) = %v, want %v", err, enforcer.ErrInvalidElement)
	}
	logs.Reset()
	if err := d.SetPorts(ctx, []uint16{25, 587}); err != nil {
		t.Fatalf("SetPorts: %v", err)
	}
	if err := d.SetPorts(ctx, nil); err != nil {
		t.Fatalf("SetPorts(nil): %v", err)
	}
	if s := logs.String(); !strings.Contains(s, "ports=\"[25 587]\"") || !strings.Contains(s, "ports=all") {
		t.Errorf("SetPorts logged %q, want both port lists", s)
	}
}

var prefixCmp = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func listOf(t *testing.T, d *Firewall) []enforcer.Element {
	t.Helper()
	got, err := d.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return got
}

// newAt returns a dry run that logs to logs and whose clock stands at
// *now, which tests move.
func newAt(logs *bytes.Buffer) (*Firewall, *time.Time) {
	d := New(slog.New(slog.NewTextHandler(logs, nil)))
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d.now = func() time.Time { return now }
	return d, &now
}
