//! When each job runs next.
//!
//! At start every job is due at once. After that each runs on a fixed grid: `start + offset +
//! k·interval`, where `offset` is drawn once per job, uniformly in `[0, splay)`. A fleet
//! restarted together therefore spreads over the splay instead of stampeding the server, and
//! an agent's own runs never drift: over any stretch of time the number of runs is exactly
//! what the interval says. The agent sleeps until the earliest deadline; there is no polling.

use std::time::Duration;

use tokio::time::Instant;

/// The agent's periodic jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    Heartbeat,
    Inventory,
    Telemetry,
}

impl Job {
    pub const ALL: [Job; 3] = [Job::Heartbeat, Job::Inventory, Job::Telemetry];

    pub fn as_str(self) -> &'static str {
        match self {
            Job::Heartbeat => "heartbeat",
            Job::Inventory => "inventory",
            Job::Telemetry => "telemetry",
        }
    }
}

/// How often each job runs and how far runs are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub heartbeat: Duration,
    pub inventory: Duration,
    pub telemetry: Duration,
    pub splay: Duration,
}

impl Intervals {
    pub fn of(&self, job: Job) -> Duration {
        match job {
            Job::Heartbeat => self.heartbeat,
            Job::Inventory => self.inventory,
            Job::Telemetry => self.telemetry,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    job: Job,
    /// Where the grid starts: the agent's start plus this job's random offset.
    origin: Instant,
    interval: Duration,
    /// Runs completed on the grid so far (the run at start is run 0).
    runs: u64,
    next: Instant,
}

/// The deadlines of the three jobs.
#[derive(Debug, Clone)]
pub struct Schedule {
    slots: [Slot; 3],
}

impl Schedule {
    /// Every job due at `now`; later runs offset by `offset(job)`, which the caller draws
    /// uniformly from `[0, splay)` (see [`random_offset`]).
    pub fn new(
        now: Instant,
        intervals: Intervals,
        mut offset: impl FnMut(Job) -> Duration,
    ) -> Self {
        let slots = Job::ALL.map(|job| Slot {
            job,
            origin: now + offset(job).min(intervals.splay),
            interval: intervals.of(job),
            runs: 0,
            next: now,
        });
        Schedule { slots }
    }

    /// The job due first and when. Ties go to the heartbeat, then inventory.
    pub fn next(&self) -> (Job, Instant) {
        let slot = self
            .slots
            .iter()
            .min_by_key(|s| (s.next, s.job))
            .expect("three slots");
        (slot.job, slot.next)
    }

    /// Marks `job` as run and moves its deadline to the next grid point after `now`; grid
    /// points missed while the machine was suspended are skipped, not run in a burst.
    pub fn complete(&mut self, job: Job, now: Instant) {
        let slot = self.slot_mut(job);
        slot.runs += 1;
        let mut next = grid_point(slot.origin, slot.interval, slot.runs);
        while next <= now {
            slot.runs += 1;
            next = grid_point(slot.origin, slot.interval, slot.runs);
        }
        slot.next = next;
    }

    /// Changes the intervals (a reloaded configuration). A job whose interval changed starts
    /// a new grid from `now` plus a fresh `offset(job)` (drawn from the splay, so a fleet
    /// reloaded together does not fall into step); a job already due stays due.
    pub fn set_intervals(
        &mut self,
        intervals: Intervals,
        now: Instant,
        mut offset: impl FnMut(Job) -> Duration,
    ) {
        for slot in &mut self.slots {
            let interval = intervals.of(slot.job);
            if interval != slot.interval {
                slot.origin = now + offset(slot.job).min(intervals.splay);
                slot.interval = interval;
                slot.runs = 1;
                let next = grid_point(slot.origin, slot.interval, 1);
                slot.next = if slot.next <= now { slot.next } else { next };
            }
        }
    }

    /// Makes `job` due now (a `scan_now` request, or a re-enrolment that needs a full
    /// inventory).
    pub fn run_now(&mut self, job: Job, now: Instant) {
        let slot = self.slot_mut(job);
        slot.next = slot.next.min(now);
    }

    fn slot_mut(&mut self, job: Job) -> &mut Slot {
        self.slots
            .iter_mut()
            .find(|s| s.job == job)
            .expect("every job has a slot")
    }
}

fn grid_point(origin: Instant, interval: Duration, n: u64) -> Instant {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    origin + interval.saturating_mul(n)
}

/// A uniformly random offset in `[0, splay)` from the system's CSPRNG.
pub fn random_offset(splay: Duration) -> Duration {
    let nanos = u64::try_from(splay.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(crate::random::u64() % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn defaults() -> Intervals {
        Intervals {
            heartbeat: Duration::from_secs(60),
            inventory: Duration::from_secs(3_600),
            telemetry: Duration::from_secs(600),
            splay: Duration::from_secs(30),
        }
    }

    /// Runs the schedule over `span` of paused tokio time, sleeping until each deadline as
    /// the agent does, and counts the runs per job.
    async fn simulate(intervals: Intervals, span: Duration, offset: Duration) -> [u64; 3] {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, intervals, |_| offset);
        let mut counts = [0u64; 3];
        loop {
            let (job, at) = schedule.next();
            if at >= start + span {
                return counts;
            }
            tokio::time::sleep_until(at).await;
            counts[job as usize] += 1;
            schedule.complete(job, Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_simulated_day_runs_each_job_exactly_as_often_as_its_interval_says() {
        // Run at start, then at offset + k·interval for every k with that point inside the day.
        let offset = Duration::from_secs(17);
        let counts = simulate(defaults(), DAY, offset).await;
        let expected = |interval: u64| 1 + (86_400 - 17 - 1) / interval;
        assert_eq!(counts, [expected(60), expected(3_600), expected(600)]);
        assert_eq!(counts, [1_440, 24, 144]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_count_does_not_depend_on_the_splay_drawn() {
        for offset in [0, 1, 29] {
            let counts = simulate(defaults(), DAY, Duration::from_secs(offset)).await;
            assert_eq!(counts, [1_440, 24, 144], "offset {offset}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn later_runs_are_offset_by_the_splay_but_never_drift() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, defaults(), |_| Duration::from_secs(7));
        assert_eq!(
            schedule.next(),
            (Job::Heartbeat, start),
            "everything is due at start"
        );
        // A run that takes a while does not push the grid.
        schedule.complete(Job::Heartbeat, start + Duration::from_secs(5));
        schedule.complete(Job::Inventory, start + Duration::from_secs(9));
        schedule.complete(Job::Telemetry, start + Duration::from_secs(1));
        assert_eq!(
            schedule.next(),
            (Job::Heartbeat, start + Duration::from_secs(67))
        );
        schedule.complete(Job::Heartbeat, start + Duration::from_secs(70));
        assert_eq!(
            schedule.next(),
            (Job::Heartbeat, start + Duration::from_secs(127))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn missed_runs_after_a_suspend_are_skipped_not_burst() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, defaults(), |_| Duration::ZERO);
        schedule.complete(Job::Heartbeat, start);
        // The machine slept for an hour: one heartbeat now, then back on the grid.
        schedule.complete(Job::Heartbeat, start + Duration::from_secs(3_630));
        let next = schedule.slots[0].next;
        assert_eq!(next, start + Duration::from_secs(3_660));
    }

    #[tokio::test(start_paused = true)]
    async fn new_intervals_take_effect_from_now() {
        let start = Instant::now();
        let mut schedule = Schedule::new(start, defaults(), |_| Duration::ZERO);
        for job in Job::ALL {
            schedule.complete(job, start);
        }
        let later = start + Duration::from_secs(10);
        let faster = Intervals {
            heartbeat: Duration::from_secs(15),
            ..defaults()
        };
        schedule.set_intervals(faster, later, |_| Duration::from_secs(3));
        // A new grid from the reload plus a fresh offset, so a fleet reloaded together
        // spreads out again.
        assert_eq!(
            schedule.next(),
            (Job::Heartbeat, later + Duration::from_secs(18))
        );
        schedule.run_now(Job::Inventory, later);
        assert_eq!(schedule.next(), (Job::Inventory, later));
    }

    #[test]
    fn offsets_stay_below_the_splay() {
        let splay = Duration::from_millis(250);
        for _ in 0..200 {
            assert!(random_offset(splay) < splay);
        }
        assert_eq!(random_offset(Duration::ZERO), Duration::ZERO);
    }
}
