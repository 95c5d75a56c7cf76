//! The telemetry chart: CPU, memory and disk percent over a time span, as the coordinates of
//! an inline SVG the template draws. Only numbers and fixed labels come out of here, so the
//! SVG needs no escaping exceptions and no script.

use std::fmt::Write as _;

use crate::store::MetricsRow;

/// The SVG's user-space size; the plot sits inside the margins.
pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 220.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// At most this many points per line: samples are averaged into as many time buckets.
const MAX_POINTS: usize = 360;

/// A line is broken where two samples are further apart than this many times the usual
/// interval (an agent that was down is not drawn as a straight ramp).
const GAP_FACTOR: i64 = 3;
const MIN_GAP_S: i64 = 1800;

/// Which figure of a sample a line draws.
type Figure = fn(&MetricsRow) -> Option<f64>;

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub width: f64,
    pub height: f64,
    pub lines: Vec<Line>,
    pub grid: Vec<Mark>,
    pub ticks: Vec<Mark>,
    /// The plot's edges, for the axes.
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub samples: usize,
}

/// One series: `class` picks its colour in the stylesheet; each segment is an SVG `points`
/// list.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub class: &'static str,
    pub label: &'static str,
    pub segments: Vec<String>,
    /// The latest value, percent.
    pub latest: Option<f64>,
}

/// A grid line or an axis tick: its position and label.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at: f64,
    pub label: String,
}

impl Chart {
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }
}

/// The chart of `samples` (oldest first) over `[from, to)`, unix seconds.
pub fn telemetry(samples: &[MetricsRow], from: i64, to: i64) -> Chart {
    let span = to.saturating_sub(from).max(1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + (t - from as f64) / span as f64 * plot_width;
    let y = |p: f64| TOP + (1.0 - p.clamp(0.0, 100.0) / 100.0) * plot_height;
    let gap = gap_threshold(samples);
    let series: [(&'static str, &'static str, Figure); 3] = [
        ("cpu", "CPU", |m| m.cpu_usage),
        ("memory", "Memory", |m| m.memory_usage),
        ("disk", "Disk", |m| m.disk_usage),
    ];
    let lines = series
        .into_iter()
        .map(|(class, label, value)| {
            let points = bucketed(samples, from, span, value);
            let mut segments = Vec::new();
            let mut current = String::new();
            let mut last_t: Option<f64> = None;
            for &(t, v) in &points {
                if last_t.is_some_and(|l| t - l > gap as f64) && !current.is_empty() {
                    segments.push(finish(std::mem::take(&mut current)));
                }
                if !current.is_empty() {
                    current.push(' ');
                }
                let _ = write!(current, "{:.1},{:.1}", x(t), y(v));
                last_t = Some(t);
            }
            if !current.is_empty() {
                segments.push(finish(current));
            }
            Line {
                class,
                label,
                segments,
                latest: samples
                    .iter()
                    .rev()
                    .find_map(|m| value(m).filter(|v| v.is_finite())),
            }
        })
        .collect();
    let grid = [0.0, 25.0, 50.0, 75.0, 100.0]
        .into_iter()
        .map(|p| Mark {
            at: y(p),
            label: format!("{p:.0}%"),
        })
        .collect();
    let hours = span / 3600;
    let step_h = if hours > 12 { 6 } else { (hours / 4).max(1) };
    let ticks = (0..)
        .map(|i| i * step_h)
        .take_while(|h| *h <= hours)
        .map(|h| Mark {
            at: x((to - h * 3600) as f64),
            label: if h == 0 {
                "now".to_owned()
            } else {
                format!("−{h} h")
            },
        })
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        lines,
        grid,
        ticks,
        left: LEFT,
        right: WIDTH - RIGHT,
        top: TOP,
        bottom: HEIGHT - BOTTOM,
        samples: samples.len(),
    }
}

/// A single point is drawn as a zero-length segment, which round line caps show as a dot.
fn finish(segment: String) -> String {
    if segment.contains(' ') {
        segment
    } else {
        format!("{segment} {segment}")
    }
}

/// The value of each non-empty time bucket, averaged, at the bucket's mean time.
fn bucketed(samples: &[MetricsRow], from: i64, span: i64, value: Figure) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64, u32)> = vec![(0.0, 0.0, 0); MAX_POINTS];
    for sample in samples {
        let Some(v) = value(sample).filter(|v| v.is_finite()) else {
            continue;
        };
        let offset = sample.sampled_at.saturating_sub(from).clamp(0, span - 1);
        let index = (offset as i128 * MAX_POINTS as i128 / span as i128) as usize;
        let bucket = &mut buckets[index.min(MAX_POINTS - 1)];
        bucket.0 += sample.sampled_at as f64;
        bucket.1 += v;
        bucket.2 += 1;
    }
    buckets
        .into_iter()
        .filter(|b| b.2 > 0)
        .map(|(t, v, n)| (t / f64::from(n), v / f64::from(n)))
        .collect()
}

/// How far apart two samples may be and still be joined: a few times the median interval.
fn gap_threshold(samples: &[MetricsRow]) -> i64 {
    let mut intervals: Vec<i64> = samples
        .windows(2)
        .map(|w| w[1].sampled_at.saturating_sub(w[0].sampled_at))
        .filter(|d| *d > 0)
        .collect();
    if intervals.is_empty() {
        return MIN_GAP_S;
    }
    let middle = intervals.len() / 2;
    let median = *intervals.select_nth_unstable(middle).1;
    median.saturating_mul(GAP_FACTOR).max(MIN_GAP_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, cpu: Option<f64>) -> MetricsRow {
        MetricsRow {
            sampled_at: at,
            cpu_usage: cpu,
            memory_usage: Some(50.0),
            disk_usage: None,
            data: "{}".into(),
        }
    }

    #[test]
    fn an_empty_chart_has_axes_and_no_lines() {
        let chart = telemetry(&[], 0, 86_400);
        assert!(chart.is_empty());
        assert!(chart.lines.iter().all(|l| l.segments.is_empty()));
        assert_eq!(chart.grid.len(), 5);
        let labels: Vec<_> = chart.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["now", "−6 h", "−12 h", "−18 h", "−24 h"]);
        assert_eq!(chart.ticks[0].at, WIDTH - RIGHT);
        assert_eq!(chart.ticks[4].at, LEFT);
    }

    #[test]
    fn samples_become_points_inside_the_plot() {
        let samples: Vec<_> = (0..144)
            .map(|i| sample(i * 600, Some(if i % 2 == 0 { 0.0 } else { 100.0 })))
            .collect();
        let chart = telemetry(&samples, 0, 86_400);
        let cpu = &chart.lines[0];
        assert_eq!(cpu.segments.len(), 1);
        assert_eq!(cpu.latest, Some(100.0));
        for point in cpu.segments[0].split(' ') {
            let (x, y) = point.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "{y}");
        }
        // Disk has no figures: no line, no latest value.
        assert!(chart.lines[2].segments.is_empty());
        assert_eq!(chart.lines[2].latest, None);
    }

    #[test]
    fn many_samples_are_averaged_into_buckets() {
        let samples: Vec<_> = (0..86_400)
            .step_by(10)
            .map(|t| sample(t, Some(30.0)))
            .collect();
        let chart = telemetry(&samples, 0, 86_400);
        assert_eq!(chart.lines[0].segments[0].split(' ').count(), MAX_POINTS);
    }

    #[test]
    fn a_long_silence_breaks_the_line() {
        let mut samples: Vec<_> = (0..10).map(|i| sample(i * 600, Some(10.0))).collect();
        samples.extend((0..10).map(|i| sample(50_000 + i * 600, Some(10.0))));
        samples.push(sample(80_000, Some(10.0)));
        let chart = telemetry(&samples, 0, 86_400);
        let segments = &chart.lines[0].segments;
        assert_eq!(segments.len(), 3);
        // The lone last sample is a dot: one point, twice.
        let lone: Vec<_> = segments[2].split(' ').collect();
        assert_eq!(lone.len(), 2);
        assert_eq!(lone[0], lone[1]);
    }

    #[test]
    fn out_of_range_values_and_times_stay_in_the_plot() {
        let samples = [
            sample(-5, Some(-20.0)),
            sample(10, Some(500.0)),
            sample(i64::MAX, Some(f64::INFINITY)),
            sample(i64::MIN, Some(1.0)),
            sample(20, Some(f64::NAN)),
        ];
        let chart = telemetry(&samples, 0, 86_400);
        assert!(!chart.lines[0].segments[0].contains("NaN"));
        assert!(!chart.lines[0].segments[0].contains("inf"));
    }
}
