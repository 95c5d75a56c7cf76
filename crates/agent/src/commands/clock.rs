//! Time as the command queue sees it: an injectable [`Clock`] (UTC now and the host's time
//! zone) and the maintenance window, a `[start, end)` span of local time of day that may cross
//! midnight.

use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Where the queue gets the time from; tests move a [`ManualClock`] instead of waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// The host's time zone, in which the maintenance window is read.
    fn time_zone(&self) -> TimeZone;
}

/// The system's clock and time zone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn time_zone(&self) -> TimeZone {
        TimeZone::system()
    }
}

/// A clock that stands still until told to move (tests), in a fixed time zone.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
    tz: TimeZone,
}

impl ManualClock {
    pub fn new(now: Timestamp, tz: TimeZone) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(now)),
            tz,
        }
    }

    pub fn set(&self, now: Timestamp) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now
            .checked_add(jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn time_zone(&self) -> TimeZone {
        self.tz.clone()
    }
}

/// The maintenance window: local minutes after midnight, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    /// The window of `[scheduling] maintenance_window_start/_end`, if both are set.
    pub fn from_config(start: Option<u32>, end: Option<u32>) -> Option<Window> {
        Some(Window {
            start: start?,
            end: end?,
        })
    }

    /// Whether the local time of day `minute` (0..1440) is in the window; when `end` is before
    /// `start` the window crosses midnight.
    pub fn contains_minute(&self, minute: u32) -> bool {
        if self.start <= self.end {
            self.start <= minute && minute < self.end
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Whether `now` is in the window in time zone `tz`.
    pub fn contains(&self, now: Timestamp, tz: &TimeZone) -> bool {
        let local = now.to_zoned(tz.clone());
        let minute =
            u32::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
        self.contains_minute(minute)
    }

    /// `02:00–04:00`, for reasons.
    pub fn describe(&self) -> String {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        format!("{}–{}", hm(self.start), hm(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_window_within_a_day_is_start_inclusive_end_exclusive() {
        let w = Window {
            start: 2 * 60,
            end: 4 * 60,
        };
        assert!(!w.contains_minute(119));
        assert!(w.contains_minute(120));
        assert!(w.contains_minute(239));
        assert!(!w.contains_minute(240));
    }

    #[test]
    fn a_window_crossing_midnight_covers_both_sides() {
        let w = Window {
            start: 23 * 60 + 30,
            end: 60 + 15,
        };
        for inside in [23 * 60 + 30, 23 * 60 + 59, 0, 60 + 14] {
            assert!(w.contains_minute(inside), "{inside}");
        }
        for outside in [60 + 15, 12 * 60, 23 * 60 + 29] {
            assert!(!w.contains_minute(outside), "{outside}");
        }
    }

    #[test]
    fn the_window_is_read_in_the_hosts_time_zone() {
        let w = Window {
            start: 2 * 60,
            end: 4 * 60,
        };
        let tz = TimeZone::fixed(jiff::tz::offset(1));
        // 01:30 UTC is 02:30 at UTC+1.
        assert!(w.contains(at("2026-01-10T01:30:00Z"), &tz));
        assert!(!w.contains(at("2026-01-10T03:30:00Z"), &tz));
        assert!(w.contains(at("2026-01-10T03:30:00Z"), &TimeZone::UTC));
    }
}
