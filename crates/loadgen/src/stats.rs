//! What the run measured: per endpoint the accepted requests, their latency (hdrhistogram)
//! and the failures by kind; how late the generator sent what was due; the processes'
//! resources. Rendered as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procfs::Usage;

/// The requests the simulated agents make, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Register,
    Heartbeat,
    Telemetry,
    InventoryFull,
    InventoryDelta,
    InventoryUnchanged,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Register => "register",
            Endpoint::Heartbeat => "heartbeat",
            Endpoint::Telemetry => "telemetry",
            Endpoint::InventoryFull => "inventory full",
            Endpoint::InventoryDelta => "inventory delta",
            Endpoint::InventoryUnchanged => "inventory unchanged",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Accepted,
    /// Any other status.
    Status(u16),
    /// No answer: connection refused or reset, timeout.
    Transport,
}

/// Latencies are recorded in microseconds up to this (a request cannot take longer than the
/// client's timeout anyway).
const MAX_LATENCY_US: u64 = 600_000_000;

#[derive(Debug, Clone)]
struct Counts {
    latency: Histogram<u64>,
    accepted: u64,
    /// Non-2xx answers by status.
    statuses: BTreeMap<u16, u64>,
    transport: u64,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            latency: histogram(),
            accepted: 0,
            statuses: BTreeMap::new(),
            transport: 0,
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Collects outcomes as requests finish.
#[derive(Debug, Clone)]
pub struct Recorder {
    endpoints: BTreeMap<Endpoint, Counts>,
    /// How late requests went out after they were due (the generator's own lag).
    lag: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            endpoints: BTreeMap::new(),
            lag: histogram(),
        }
    }
}

impl Recorder {
    /// `latency` is from sending the request to the end of the answer's body. Only accepted
    /// requests are in the latency figures; failures are counted by kind.
    pub fn record(&mut self, endpoint: Endpoint, outcome: Outcome, latency: Duration) {
        let counts = self.endpoints.entry(endpoint).or_insert_with(Counts::new);
        match outcome {
            Outcome::Accepted => {
                counts.accepted += 1;
                counts.latency.saturating_record(micros(latency));
            }
            Outcome::Status(status) => *counts.statuses.entry(status).or_default() += 1,
            Outcome::Transport => counts.transport += 1,
        }
    }

    pub fn record_lag(&mut self, lag: Duration) {
        self.lag.saturating_record(micros(lag));
    }

    /// All failures, whatever the endpoint.
    pub fn errors(&self) -> u64 {
        self.endpoints
            .values()
            .map(|c| c.transport + c.statuses.values().sum::<u64>())
            .sum()
    }

    pub fn accepted(&self, endpoint: Endpoint) -> u64 {
        self.endpoints.get(&endpoint).map_or(0, |c| c.accepted)
    }

    /// The figures over `elapsed`: one row per endpoint, then one for all of them.
    pub fn phase(&self, elapsed: Duration) -> Phase {
        let seconds = elapsed.as_secs_f64();
        let endpoints = self
            .endpoints
            .iter()
            .map(|(endpoint, c)| row(endpoint.as_str(), c, seconds))
            .collect();
        let mut all = Counts::new();
        for c in self.endpoints.values() {
            all.latency.add(&c.latency).expect("the same bounds");
            all.accepted += c.accepted;
            all.transport += c.transport;
            for (status, n) in &c.statuses {
                *all.statuses.entry(*status).or_default() += n;
            }
        }
        let (lag_p99_ms, lag_max_ms) = self.lag_ms();
        Phase {
            seconds,
            endpoints,
            all: row("all", &all, seconds),
            lag_p99_ms,
            lag_max_ms,
        }
    }

    /// The generator's lag: p99 and max, ms.
    pub fn lag_ms(&self) -> (f64, f64) {
        if self.lag.is_empty() {
            return (0.0, 0.0);
        }
        (
            self.lag.value_at_quantile(0.99) as f64 / 1000.0,
            self.lag.max() as f64 / 1000.0,
        )
    }
}

fn row(name: &'static str, c: &Counts, seconds: f64) -> EndpointSummary {
    let ms = |us: u64| us as f64 / 1000.0;
    let q = |q: f64| {
        if c.accepted == 0 {
            0.0
        } else {
            ms(c.latency.value_at_quantile(q))
        }
    };
    EndpointSummary {
        endpoint: name,
        accepted: c.accepted,
        accepted_per_s: if seconds > 0.0 {
            c.accepted as f64 / seconds
        } else {
            0.0
        },
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: if c.accepted == 0 {
            0.0
        } else {
            ms(c.latency.max())
        },
        errors: c.transport + c.statuses.values().sum::<u64>(),
        status_429: c.statuses.get(&429).copied().unwrap_or(0),
        status_503: c.statuses.get(&503).copied().unwrap_or(0),
        transport_errors: c.transport,
        statuses: c
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect(),
    }
}

/// One phase of the run (enrolment, load).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub seconds: f64,
    pub endpoints: Vec<EndpointSummary>,
    /// Every endpoint together.
    pub all: EndpointSummary,
    /// How late requests went out after they were due: the generator keeping up (or not).
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
}

impl Phase {
    pub fn errors(&self) -> u64 {
        self.all.errors
    }
}

/// One endpoint's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointSummary {
    pub endpoint: &'static str,
    pub accepted: u64,
    pub accepted_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Every non-2xx answer and transport failure.
    pub errors: u64,
    pub status_429: u64,
    pub status_503: u64,
    pub transport_errors: u64,
    /// Non-2xx answers by status.
    pub statuses: BTreeMap<String, u64>,
}

/// The steady-state rates the schedule asks for, per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Expected {
    pub heartbeat: f64,
    pub telemetry: f64,
    pub inventory: f64,
}

/// The whole run, as printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub server: String,
    pub agents: u32,
    /// Agents registered (and sent their first full inventory) in this run.
    pub enrolled: u32,
    pub template_packages: usize,
    pub expected_per_s: Expected,
    /// Registration and first inventories, when any agent needed them.
    pub enrolment: Option<Phase>,
    pub load: Phase,
    /// The server process over the load phase (`--server-pid`).
    pub server_process: Option<Usage>,
    /// This process over the load phase.
    pub loadgen_process: Option<Usage>,
}

impl Report {
    /// Failures over the whole run.
    pub fn errors(&self) -> u64 {
        self.load.errors() + self.enrolment.as_ref().map_or(0, Phase::errors)
    }

    /// The human-readable form.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} agents against {} ({} enrolled in this run), template with {} packages",
            self.agents, self.server, self.enrolled, self.template_packages
        );
        let _ = writeln!(
            out,
            "schedule asks for {:.1} heartbeats/s, {:.1} telemetry reports/s, {:.1} inventory reports/s",
            self.expected_per_s.heartbeat,
            self.expected_per_s.telemetry,
            self.expected_per_s.inventory
        );
        if let Some(enrolment) = &self.enrolment {
            let _ = writeln!(out, "\nenrolment ({:.1} s):", enrolment.seconds);
            phase_table(&mut out, enrolment);
        }
        let _ = writeln!(out, "\nload ({:.1} s):", self.load.seconds);
        phase_table(&mut out, &self.load);
        let _ = writeln!(
            out,
            "generator lag behind schedule: p99 {:.1} ms, max {:.1} ms",
            self.load.lag_p99_ms, self.load.lag_max_ms
        );
        for (name, usage) in [
            ("server", &self.server_process),
            ("loadgen", &self.loadgen_process),
        ] {
            if let Some(u) = usage {
                let _ = writeln!(
                    out,
                    "{name:8} CPU {:5.1} % of a core on average (max {:5.1} % over 1 s, {:.1} s in all); \
                     RSS {:.1} → {:.1} MiB (max {:.1}, VmHWM {:.1})",
                    u.cpu_percent,
                    u.cpu_percent_max,
                    u.cpu_seconds,
                    u.rss_start_mib,
                    u.rss_end_mib,
                    u.rss_max_mib,
                    u.hwm_mib
                );
            }
        }
        let _ = writeln!(out, "errors: {}", self.errors());
        out
    }
}

fn phase_table(out: &mut String, phase: &Phase) {
    let _ = writeln!(
        out,
        "  {:20} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5} {:>5} {:>6}",
        "endpoint",
        "accepted",
        "per s",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "errors",
        "429",
        "503",
        "transp"
    );
    for r in phase.endpoints.iter().chain(std::iter::once(&phase.all)) {
        let _ = writeln!(
            out,
            "  {:20} {:>9} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>7} {:>5} {:>5} {:>6}",
            r.endpoint,
            r.accepted,
            r.accepted_per_s,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.errors,
            r.status_429,
            r.status_503,
            r.transport_errors
        );
        let others: Vec<String> = r
            .statuses
            .iter()
            .filter(|(s, _)| *s != "429" && *s != "503")
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        if !others.is_empty() && r.endpoint != "all" {
            let _ = writeln!(out, "  {:20} other statuses: {}", "", others.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_latency_only_for_accepted_requests_and_failures_by_kind() {
        let mut r = Recorder::default();
        for ms in 1..=100 {
            r.record(
                Endpoint::Heartbeat,
                Outcome::Accepted,
                Duration::from_millis(ms),
            );
        }
        r.record(
            Endpoint::Heartbeat,
            Outcome::Status(429),
            Duration::from_secs(9),
        );
        r.record(Endpoint::Telemetry, Outcome::Status(503), Duration::ZERO);
        r.record(Endpoint::Telemetry, Outcome::Status(409), Duration::ZERO);
        r.record(Endpoint::Telemetry, Outcome::Transport, Duration::ZERO);
        r.record_lag(Duration::from_millis(3));
        let phase = r.phase(Duration::from_secs(10));
        let hb = &phase.endpoints[0];
        assert_eq!(
            (hb.endpoint, hb.accepted, hb.errors, hb.status_429),
            ("heartbeat", 100, 1, 1)
        );
        assert_eq!(hb.accepted_per_s, 10.0);
        assert!((hb.p50_ms - 50.0).abs() < 0.1, "{}", hb.p50_ms);
        assert!((hb.p99_ms - 99.0).abs() < 0.1, "{}", hb.p99_ms);
        assert!((hb.max_ms - 100.0).abs() < 0.1, "{}", hb.max_ms);
        let tel = &phase.endpoints[1];
        assert_eq!(
            (
                tel.accepted,
                tel.errors,
                tel.status_503,
                tel.transport_errors
            ),
            (0, 3, 1, 1)
        );
        assert_eq!(tel.statuses.get("409"), Some(&1));
        assert_eq!((phase.all.accepted, phase.all.errors), (100, 4));
        assert_eq!(r.errors(), 4);
        assert!((phase.lag_max_ms - 3.0).abs() < 0.01);
        let report = Report {
            server: "http://x".into(),
            agents: 1,
            enrolled: 0,
            template_packages: 0,
            expected_per_s: Expected {
                heartbeat: 1.0,
                telemetry: 1.0,
                inventory: 1.0,
            },
            enrolment: None,
            load: phase,
            server_process: None,
            loadgen_process: None,
        };
        let table = report.table();
        assert!(table.contains("409×1"), "{table}");
        assert!(table.contains("errors: 4"), "{table}");
        assert!(serde_json::to_value(&report).unwrap()["load"]["all"]["errors"] == 4);
    }
}
