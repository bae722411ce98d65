package enforcer

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/wormgate/wormgate/enforcer/policy"
)

// The timeline keeps, per rule, offences and new bans in minute buckets
// for a day and in hour buckets for a week: about 25 kB a rule, whatever
// the flood, so that the dashboard can draw an outbreak's wave without
// walking the offence history (which forgets an address's older events).
const (
	timelineMinutes = 24 * 60
	timelineHours   = 7 * 24
	// maxTimelineRules bounds the series; rules past it (a config
	// reloaded with ever new names) are summed up as otherRule.
	maxTimelineRules = 256
	otherRule        = "(other)"
)

// TimelineRange is a span the dashboard shows, with the step that keeps
// it at a few hundred points at most.
type TimelineRange struct {
	Span, Step time.Duration
}

// The ranges Timeline serves.
var (
	Range1h  = TimelineRange{Span: time.Hour, Step: time.Minute}
	Range24h = TimelineRange{Span: 24 * time.Hour, Step: 5 * time.Minute}
	Range7d  = TimelineRange{Span: 7 * 24 * time.Hour, Step: time.Hour}
)

// Timeline is offences and new bans per rule per step.
type Timeline struct {
	// Start is the first bucket's start; bucket i covers
	// [Start+i*Step, Start+(i+1)*Step), the last one is under way.
	Start time.Time     `json:"start"`
	Step  time.Duration `json:"-"`
	// StepSeconds is Step for JSON readers.
	StepSeconds float64 `json:"step_seconds"`
	// Rules are in name order, only those with something in the span.
	Rules []RuleSeries `json:"rules"`
}

// RuleSeries is one rule's buckets.
type RuleSeries struct {
	Rule string `json:"rule"`
	// Offences counts every offence the enforcer saw, whatever its
	// verdict; Bans the new bans among them (not extensions).
	Offences []uint32 `json:"offences"`
	Bans     []uint32 `json:"bans"`
	// TotalOffences and TotalBans sum the buckets.
	TotalOffences uint64 `json:"total_offences"`
	TotalBans     uint64 `json:"total_bans"`
}

// tlBucket counts one minute or hour; at is its number since the epoch,
// so that a slot left over from an earlier lap of the ring reads as
// empty.
type tlBucket struct {
	at             int64
	offences, bans uint32
}

type tlSeries struct {
	minutes [timelineMinutes]tlBucket
	hours   [timelineHours]tlBucket
}

// timeline is safe for concurrent use; its lock is its own, so that
// drawing a chart never holds up the ban path.
type timeline struct {
	mu    sync.Mutex
	rules map[string]*tlSeries
}

func newTimeline() *timeline { return &timeline{rules: make(map[string]*tlSeries)} }

// note counts one offence of rule at t, and a new ban when banned.
func (tl *timeline) note(rule string, t time.Time, banned bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.noteLocked(rule, t, banned)
}

func (tl *timeline) noteLocked(rule string, t time.Time, banned bool) {
	s, ok := tl.rules[rule]
	if !ok {
		if len(tl.rules) >= maxTimelineRules {
			rule = otherRule
			s = tl.rules[rule]
		}
		if s == nil {
			s = new(tlSeries)
			tl.rules[rule] = s
		}
	}
	unix := t.Unix()
	add := func(b *tlBucket, at int64) {
		if b.at != at {
			*b = tlBucket{at: at}
		}
		b.offences++
		if banned {
			b.bans++
		}
	}
	m, h := floorDiv(unix, 60), floorDiv(unix, 3600)
	add(&s.minutes[mod(m, timelineMinutes)], m)
	add(&s.hours[mod(h, timelineHours)], h)
}

// seed counts the offences of a restored offence history: the timeline
// itself is not recorded, so after a restart it shows what the history
// kept (an address's newest events only, see EventsConfig).
func (tl *timeline) seed(evs []policy.Event) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, ev := range evs {
		if ev.Rule == manualRule || ev.Rule == "" {
			continue
		}
		tl.noteLocked(ev.Rule, ev.Time, ev.Verdict == policy.VerdictBan.String())
	}
}

// get returns the buckets of r that end at now.
func (tl *timeline) get(r TimelineRange, now time.Time) Timeline {
	step := int64(r.Step / time.Second)
	n := int64(r.Span / r.Step)
	last := floorDiv(now.Unix(), step) * step
	first := last - (n-1)*step
	out := Timeline{Start: time.Unix(first, 0).UTC(), Step: r.Step, StepSeconds: r.Step.Seconds(), Rules: []RuleSeries{}}
	// Minute buckets serve steps of whole minutes up to a day back,
	// hour buckets the rest.
	unit, ring := int64(60), timelineMinutes
	if step%3600 == 0 && r.Span > 24*time.Hour {
		unit, ring = 3600, timelineHours
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for rule, s := range tl.rules {
		buckets := s.minutes[:]
		if unit == 3600 {
			buckets = s.hours[:]
		}
		rs := RuleSeries{Rule: rule, Offences: make([]uint32, n), Bans: make([]uint32, n)}
		for i := range n {
			start := first + i*step
			for at := start / unit; at < (start+step)/unit; at++ {
				b := buckets[mod(at, ring)]
				if b.at != at {
					continue
				}
				rs.Offences[i] += b.offences
				rs.Bans[i] += b.bans
				rs.TotalOffences += uint64(b.offences)
				rs.TotalBans += uint64(b.bans)
			}
		}
		if rs.TotalOffences > 0 {
			out.Rules = append(out.Rules, rs)
		}
	}
	slices.SortFunc(out.Rules, func(a, b RuleSeries) int { return cmp.Compare(a.Rule, b.Rule) })
	return out
}

// Timeline returns offences and new bans per rule in r up to now. r
// must be one of Range1h, Range24h and Range7d (or another whole number
// of minutes per step up to a day, or of hours per step up to a week).
func (e *Enforcer) Timeline(r TimelineRange) Timeline {
	return e.timeline.get(r, e.now())
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func mod(a int64, n int) int {
	m := a % int64(n)
	if m < 0 {
		m += int64(n)
	}
	return int(m)
}
