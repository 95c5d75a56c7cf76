//! When each simulated agent's jobs fall due: the real agent's schedule
//! (`crates/agent/src/schedule.rs`) for N agents, kept in one queue instead of N timers.
//!
//! The agent runs every job at its start, then on a grid `start + offset + k·interval`
//! (`k ≥ 1`) with `offset` drawn once per job from `[0, splay)`. Two fleets are simulated:
//!
//! - [`Start::Steady`], the default: a fleet that has been running for a while. Agents started
//!   at unrelated times, so each job's grid phase is uniform over its interval and the request
//!   rate is flat from the first second: `agents / interval` per job.
//! - [`Start::Restart`]: a fleet (re)started together over `ramp`: each agent starts at a
//!   uniform time in `[0, ramp)`, runs all three jobs at once, then follows its grid. With a
//!   short ramp this is the stampede the splay is there to soften.
//!
//! Times are milliseconds since the load began. The queue is a binary heap of one entry per
//! agent and job (24 bytes each: 150,000 agents cost 11 MB), popped in due order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::rng::Rng;

/// A simulated agent's periodic jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    Heartbeat,
    Telemetry,
    Inventory,
}

impl Job {
    pub const ALL: [Job; 3] = [Job::Heartbeat, Job::Telemetry, Job::Inventory];
}

/// How often each job runs, and the splay of its grid: the agent's `[agent]`
/// `heartbeat_interval`, `collection_interval`, `inventory_interval` and `splay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub heartbeat: Duration,
    pub telemetry: Duration,
    pub inventory: Duration,
    pub splay: Duration,
}

impl Intervals {
    /// The agent's defaults (`crates/agent/src/config.rs`): heartbeat 60 s, telemetry 10 min,
    /// inventory 60 min, splay 30 s. At 150,000 agents: 2,500 heartbeats/s, 250 telemetry
    /// reports/s, 41.7 inventory reports/s.
    pub const AGENT_DEFAULTS: Intervals = Intervals {
        heartbeat: Duration::from_secs(60),
        telemetry: Duration::from_secs(600),
        inventory: Duration::from_secs(3600),
        splay: Duration::from_secs(30),
    };

    pub fn of(&self, job: Job) -> Duration {
        match job {
            Job::Heartbeat => self.heartbeat,
            Job::Telemetry => self.telemetry,
            Job::Inventory => self.inventory,
        }
    }

    /// The steady-state request rate of `job` for a fleet of `agents`, per second.
    pub fn rate(&self, job: Job, agents: u32) -> f64 {
        f64::from(agents) / self.of(job).as_secs_f64()
    }
}

/// How the simulated fleet started; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Steady,
    Restart { ramp: Duration },
}

/// One job of one agent that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub agent: u32,
    pub job: Job,
    /// When it was due, ms since the load began.
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: u64,
    agent: u32,
    job: Job,
    /// Where this job's grid starts, ms; runs after the first are at `origin + k·interval`.
    origin: u64,
}

/// The due times of every job of every agent.
#[derive(Debug)]
pub struct Schedule {
    intervals: Intervals,
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Schedule {
    /// `agents` agents (indexes `0..agents`) whose phases come from `seed`.
    pub fn new(agents: u32, intervals: Intervals, start: Start, seed: u64) -> Schedule {
        let mut heap = BinaryHeap::with_capacity(agents as usize * Job::ALL.len());
        for agent in 0..agents {
            let mut rng = Rng::new(&[seed, u64::from(agent), 0x5c4e_d01e]);
            let started = match start {
                Start::Steady => 0,
                Start::Restart { ramp } => rng.below(millis(ramp)),
            };
            for job in Job::ALL {
                let interval = millis(intervals.of(job)).max(1);
                let (at, origin) = match start {
                    // Phase uniform over the interval; the first run is on the grid.
                    Start::Steady => {
                        let phase = rng.below(interval);
                        (phase, phase)
                    }
                    Start::Restart { .. } => {
                        let offset = rng.below(millis(intervals.splay).max(1));
                        (started, started + offset)
                    }
                };
                heap.push(Reverse(Entry {
                    at,
                    agent,
                    job,
                    origin,
                }));
            }
        }
        Schedule { intervals, heap }
    }

    /// When the next job is due, ms since the load began.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The earliest job due at or before `now`, now rescheduled to its next grid point.
    pub fn pop_due(&mut self, now: u64) -> Option<Due> {
        let mut top = self.heap.peek_mut()?;
        let entry = top.0;
        if entry.at > now {
            return None;
        }
        let interval = millis(self.intervals.of(entry.job)).max(1);
        top.0.at = next_grid_point(entry.origin, interval, entry.at);
        drop(top);
        Some(Due {
            agent: entry.agent,
            job: entry.job,
            at: entry.at,
        })
    }
}

/// The first grid point `origin + k·interval`, `k ≥ 1`, after `after`. (Run 0 is the one at
/// the agent's start, which may precede `origin` by up to the splay.)
pub fn next_grid_point(origin: u64, interval: u64, after: u64) -> u64 {
    let k = if after < origin {
        1
    } else {
        (after - origin) / interval + 1
    };
    origin + k.max(1) * interval
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intervals(hb: u64, tel: u64, inv: u64, splay: u64) -> Intervals {
        Intervals {
            heartbeat: Duration::from_secs(hb),
            telemetry: Duration::from_secs(tel),
            inventory: Duration::from_secs(inv),
            splay: Duration::from_secs(splay),
        }
    }

    /// Counts the jobs run in `[0, span_ms)`, per job, and per second for heartbeats.
    fn simulate(schedule: &mut Schedule, span_ms: u64) -> ([u64; 3], Vec<u64>) {
        let mut counts = [0u64; 3];
        let mut per_second = vec![0u64; (span_ms / 1000) as usize];
        while let Some(at) = schedule.next_at() {
            if at >= span_ms {
                break;
            }
            let due = schedule.pop_due(at).unwrap();
            assert_eq!(due.at, at);
            counts[due.job as usize] += 1;
            if due.job == Job::Heartbeat {
                per_second[(at / 1000) as usize] += 1;
            }
        }
        (counts, per_second)
    }

    #[test]
    fn the_agents_defaults_give_the_issues_rates_at_150k() {
        let i = Intervals::AGENT_DEFAULTS;
        assert_eq!(i.rate(Job::Heartbeat, 150_000), 2_500.0);
        assert_eq!(i.rate(Job::Telemetry, 150_000), 250.0);
        assert!((i.rate(Job::Inventory, 150_000) - 41.67).abs() < 0.01);
    }

    #[test]
    fn a_steady_fleet_runs_each_job_at_its_rate_from_the_first_second() {
        let agents = 3_000;
        let mut s = Schedule::new(agents, intervals(60, 600, 3600, 30), Start::Steady, 1);
        let span = 1_200_000; // 20 minutes
        let (counts, per_second) = simulate(&mut s, span);
        // Exactly one run per interval per agent, give or take the one straddling the end.
        let expect = |interval: u64| u64::from(agents) * span / 1000 / interval;
        for (job, interval) in [(0, 60), (1, 600), (2, 3600)] {
            let n = counts[job];
            let e = expect(interval);
            let tolerance = (e as f64 * 0.1) as u64 + 60;
            assert!(n.abs_diff(e) <= tolerance, "job {job}: {n} vs {e}");
        }
        assert_eq!(counts[0], u64::from(agents) * 20);
        // Flat: 50 heartbeats/s expected; no second far off, none empty.
        let worst = per_second.iter().map(|&c| c.abs_diff(50)).max().unwrap();
        assert!(worst <= 30, "{worst}");
    }

    #[test]
    fn a_restarted_fleet_runs_everything_at_start_then_on_the_splayed_grid() {
        let agents = 1_000;
        let ramp = Duration::from_secs(10);
        let mut s = Schedule::new(
            agents,
            intervals(60, 600, 3600, 30),
            Start::Restart { ramp },
            2,
        );
        // Everything is due once within the ramp...
        let (counts, _) = simulate(&mut s, 10_000);
        assert_eq!(counts, [1_000; 3]);
        // ...and the second heartbeats come 60 s plus a splay in [0, 30) s after each start.
        let (counts, _) = simulate(&mut s, 60_000);
        assert_eq!(counts, [0; 3]);
        let (counts, _) = simulate(&mut s, 100_000);
        assert_eq!(counts, [1_000, 0, 0]);
    }

    #[test]
    fn grid_points_never_repeat_or_go_back() {
        assert_eq!(next_grid_point(5_000, 60_000, 1_000), 65_000);
        assert_eq!(next_grid_point(5_000, 60_000, 5_000), 65_000);
        assert_eq!(next_grid_point(5_000, 60_000, 64_999), 65_000);
        assert_eq!(next_grid_point(5_000, 60_000, 65_000), 125_000);
        // A run that happened late (the loadgen fell behind) is not repeated in a burst.
        assert_eq!(next_grid_point(0, 1_000, 10_500), 11_000);
    }

    #[test]
    fn the_same_seed_gives_the_same_phases() {
        let i = intervals(60, 600, 3600, 30);
        let mut a = Schedule::new(100, i, Start::Steady, 9);
        let mut b = Schedule::new(100, i, Start::Steady, 9);
        let mut c = Schedule::new(100, i, Start::Steady, 10);
        let take = |s: &mut Schedule| {
            (0..50)
                .map(|_| s.pop_due(u64::MAX).unwrap())
                .collect::<Vec<_>>()
        };
        let (da, db, dc) = (take(&mut a), take(&mut b), take(&mut c));
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }
}
