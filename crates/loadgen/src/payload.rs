//! What the simulated agents send: one real scan as the template, varied per agent (hostname,
//! machine id, memory size, a few package versions, telemetry figures) and built with the
//! `muster_proto` types, which are the contract. Bodies over 1 KiB are gzip-compressed, as the
//! agent's client does.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use muster_proto::api::{
    AgentHealth, Heartbeat, InventoryUpload, MetricsReport, MetricsSample, RegisterRequest,
};
use muster_proto::data::{Package, SystemMetrics};
use muster_proto::inventory::inventory_hash;
use muster_proto::{DaemonReport, FunctionData, HostIdentity, Worker};
use serde::Serialize;
use uuid::Uuid;

use crate::fleet::Identity;
use crate::rng::Rng;

/// Bodies larger than this are gzip-compressed (the agent's `client::GZIP_THRESHOLD`).
pub const GZIP_THRESHOLD: usize = 1024;

/// Bodies larger than this are compressed at the fastest level (see [`Body::json`]).
const FAST_GZIP_ABOVE: usize = 64 * 1024;

/// The agent version the simulated agents claim.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A request body, ready to send.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub gzip: bool,
}

impl Body {
    /// JSON, gzip-compressed (default level, as the agent) when over [`GZIP_THRESHOLD`].
    pub fn json<T: Serialize>(value: &T) -> Body {
        let json = serde_json::to_vec(value).expect("the api types always serialize");
        if json.len() <= GZIP_THRESHOLD {
            return Body {
                bytes: json,
                gzip: false,
            };
        }
        // The agent compresses at the default level. Full inventories (~190 KB) are made
        // at the fastest level instead: 1.5 ms rather than 3.6 ms of the generator's CPU per
        // body, 33 KB rather than 24 KB on the wire, and the same inflating for the server.
        let level = if json.len() > FAST_GZIP_ABOVE {
            flate2::Compression::fast()
        } else {
            flate2::Compression::default()
        };
        let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 6), level);
        encoder.write_all(&json).expect("writing to memory");
        Body {
            bytes: encoder.finish().expect("writing to memory"),
            gzip: true,
        }
    }
}

/// The scan every agent's inventory is made from, and its telemetry sample.
#[derive(Debug, Clone)]
pub struct Template {
    /// The inventory workers only, without an agent id.
    inventory: DaemonReport,
    metrics: SystemMetrics,
    packages: usize,
}

impl Template {
    /// One scan of this machine, in-process (what `muster-agent scan` prints).
    pub fn scan() -> Template {
        let options = muster_collect::ScanOptions {
            telemetry_interval: Duration::from_millis(250),
            ..muster_collect::ScanOptions::default()
        };
        Template::from_report(muster_collect::scan(&options))
    }

    /// A `DaemonReport` in a JSON file (`muster-agent scan --output FILE`).
    pub fn load(path: &Path) -> anyhow::Result<Template> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let report: DaemonReport = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a daemon report", path.display()))?;
        Ok(Template::from_report(report))
    }

    pub fn from_report(mut report: DaemonReport) -> Template {
        let metrics = report
            .worker(Worker::Telemetry)
            .and_then(|w| {
                w.function_reports.iter().find_map(|f| match &f.data {
                    FunctionData::SystemMetrics(items) => items.first().cloned(),
                    _ => None,
                })
            })
            .unwrap_or_else(default_metrics);
        report
            .worker_reports
            .retain(|w| w.name != Worker::Telemetry);
        report.agent_id = None;
        let mut template = Template {
            inventory: report,
            metrics,
            packages: 0,
        };
        template.packages = packages_mut(&mut template.inventory).len();
        template
    }

    /// Packages in the template, across every software source.
    pub fn packages(&self) -> usize {
        self.packages
    }

    /// The inventory report as it is in the template.
    pub fn report(&self) -> &DaemonReport {
        &self.inventory
    }

    fn system_field(
        &self,
        get: impl Fn(&muster_proto::data::SystemInfo) -> Option<String>,
    ) -> Option<String> {
        self.inventory.worker_reports.iter().find_map(|w| {
            w.function_reports.iter().find_map(|f| match &f.data {
                FunctionData::System(items) => items.first().and_then(&get),
                _ => None,
            })
        })
    }
}

fn default_metrics() -> SystemMetrics {
    SystemMetrics {
        cpu_usage: Some(10.0),
        memory_usage: 40.0,
        disk_usage: Some(50.0),
        load_1: Some(0.5),
        load_5: Some(0.5),
        load_15: Some(0.5),
        memory_total_bytes: 8 << 30,
        memory_available_bytes: 5 << 30,
        swap_total_bytes: 0,
        swap_used_bytes: 0,
        swap_usage: 0.0,
        net_rx_bytes: 0,
        net_tx_bytes: 0,
        net_rx_bytes_per_s: Some(0.0),
        net_tx_bytes_per_s: Some(0.0),
        disk_read_bytes: 0,
        disk_write_bytes: 0,
        disk_read_bytes_per_s: Some(0.0),
        disk_write_bytes_per_s: Some(0.0),
        interval_s: Some(600.0),
    }
}

/// Every package of the report's software worker, in report order.
fn packages_mut(report: &mut DaemonReport) -> Vec<&mut Package> {
    report
        .worker_reports
        .iter_mut()
        .filter(|w| w.name == Worker::Software)
        .flat_map(|w| w.function_reports.iter_mut())
        .flat_map(|f| match &mut f.data {
            FunctionData::Dpkg(p)
            | FunctionData::Rpm(p)
            | FunctionData::Apk(p)
            | FunctionData::Pacman(p)
            | FunctionData::Flatpak(p)
            | FunctionData::Snap(p)
            | FunctionData::Registry(p) => p.iter_mut().collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

/// Builds every agent's requests from the template. Deterministic in `(seed, index,
/// generation)` except for report ids and times.
#[derive(Debug, Clone)]
pub struct Payloads {
    template: Template,
    seed: u64,
    /// Packages whose version differs from the template's on each agent.
    bumped_packages: usize,
}

/// Memory sizes the simulated hosts have, one picked per agent.
const MEMORY_SIZES_GIB: [u64; 5] = [4, 8, 16, 32, 64];

impl Payloads {
    pub fn new(template: Template, seed: u64, bumped_packages: usize) -> Payloads {
        Payloads {
            template,
            seed,
            bumped_packages,
        }
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    pub fn register(&self, tenant_id: &str, index: u32) -> RegisterRequest {
        let who = Identity::of(self.seed, index);
        RegisterRequest {
            tenant_id: tenant_id.to_owned(),
            hostname: who.hostname,
            machine_id: Some(who.machine_id),
            public_key: Some(who.public_key),
            platform: Some("Linux".into()),
            os_name: self.template.system_field(|s| s.os_name.clone()),
            os_version: self.template.system_field(|s| s.os_version.clone()),
            arch: self.template.system_field(|s| Some(s.arch.clone())),
            agent_version: Some(AGENT_VERSION.into()),
        }
    }

    /// Agent `index`'s inventory after `generation` package upgrades.
    pub fn inventory(&self, index: u32, agent_id: &str, generation: u32) -> DaemonReport {
        let who = Identity::of(self.seed, index);
        let mut rng = Rng::new(&[self.seed, u64::from(index), 0x1f]);
        let mut report = self.template.inventory.clone();
        report.report_id = Uuid::now_v7();
        report.datetime = Timestamp::now();
        report.agent_id = Some(agent_id.to_owned());
        report.host = HostIdentity {
            hostname: who.hostname.clone(),
            machine_id: Some(who.machine_id.clone()),
        };
        let memory = MEMORY_SIZES_GIB[rng.below(MEMORY_SIZES_GIB.len() as u64) as usize] << 30;
        for function in report
            .worker_reports
            .iter_mut()
            .flat_map(|w| w.function_reports.iter_mut())
        {
            match &mut function.data {
                FunctionData::System(items) => {
                    for item in items {
                        item.hostname.clone_from(&who.hostname);
                        item.machine_id = Some(who.machine_id.clone());
                    }
                }
                FunctionData::Memory(items) => {
                    for item in items {
                        item.total_bytes = memory;
                    }
                }
                _ => {}
            }
        }
        let mut packages = packages_mut(&mut report);
        let n = packages.len() as u64;
        if n > 0 {
            // The agent's own few packages at other versions than the template's...
            for _ in 0..self.bumped_packages {
                let p = &mut packages[rng.below(n) as usize];
                p.version.push_str(&format!("+lg{}", 1 + rng.below(4)));
            }
            // ...and one more upgraded per generation (a delta upload).
            for g in 1..=generation {
                let mut pick = Rng::new(&[self.seed, u64::from(index), 0x9e, u64::from(g)]);
                let p = &mut packages[pick.below(n) as usize];
                p.version.push_str(&format!("+u{g}"));
            }
        }
        report
    }

    /// The first inventory: `Full`, with the hash the agent computes.
    pub fn full(&self, index: u32, agent_id: &str, generation: u32) -> (String, Body) {
        let report = self.inventory(index, agent_id, generation);
        let hash = inventory_hash(&report);
        let upload = InventoryUpload::Full {
            hash: hash.clone(),
            report,
        };
        (hash, Body::json(&upload))
    }

    /// A package upgrade: the software worker of generation `generation` over `base_hash`.
    pub fn delta(
        &self,
        index: u32,
        agent_id: &str,
        base_hash: &str,
        generation: u32,
    ) -> (String, Body) {
        let mut report = self.inventory(index, agent_id, generation);
        let hash = inventory_hash(&report);
        report.worker_reports.retain(|w| w.name == Worker::Software);
        let upload = InventoryUpload::Delta {
            base_hash: base_hash.to_owned(),
            hash: hash.clone(),
            report,
            removed: Vec::new(),
        };
        (hash, Body::json(&upload))
    }

    /// Nothing changed since `hash`.
    pub fn unchanged(&self, agent_id: &str, hash: &str) -> Body {
        Body::json(&InventoryUpload::Unchanged {
            report_id: Uuid::now_v7(),
            agent_id: agent_id.to_owned(),
            datetime: Timestamp::now(),
            hash: hash.to_owned(),
        })
    }

    /// A heartbeat, saying the interval it comes at as the real agent does.
    pub fn heartbeat(
        &self,
        agent_id: &str,
        uptime_s: u64,
        interval_s: u64,
        health: AgentHealth,
    ) -> Body {
        Body::json(&Heartbeat {
            agent_id: agent_id.to_owned(),
            datetime: Timestamp::now(),
            agent_version: AGENT_VERSION.to_owned(),
            uptime_s,
            health,
            heartbeat_interval_s: Some(interval_s),
        })
    }

    /// One telemetry report (the agent sends one sample per run); `run` is the agent's
    /// telemetry run count, so counters grow and figures move between reports.
    pub fn metrics(&self, index: u32, agent_id: &str, run: u64) -> Body {
        Body::json(&MetricsReport {
            report_id: Uuid::now_v7(),
            agent_id: agent_id.to_owned(),
            samples: vec![MetricsSample {
                datetime: Timestamp::now(),
                metrics: self.sample(index, run),
            }],
        })
    }

    /// Agent `index`'s figures at telemetry run `run`: a level of its own plus noise.
    pub fn sample(&self, index: u32, run: u64) -> SystemMetrics {
        let mut host = Rng::new(&[self.seed, u64::from(index), 0x7e]);
        let mut now = Rng::new(&[self.seed, u64::from(index), 0x7f, run]);
        let (cpu_level, memory_level, disk_level) = (
            host.unit() * 40.0,
            20.0 + host.unit() * 60.0,
            10.0 + host.unit() * 85.0,
        );
        let mut m = self.template.metrics.clone();
        let round = |x: f64| (x * 10.0).round() / 10.0;
        m.cpu_usage = Some(round((cpu_level + now.unit() * 30.0).min(100.0)));
        m.memory_usage = round((memory_level + now.unit() * 10.0).min(100.0));
        m.disk_usage = Some(round((disk_level + run as f64 * 0.01).min(100.0)));
        m.load_1 = Some(round(now.unit() * 4.0));
        m.load_5 = Some(round(now.unit() * 3.0));
        m.load_15 = Some(round(now.unit() * 2.0));
        let traffic = 1 + host.below(1 << 20);
        m.net_rx_bytes = run * traffic * 600;
        m.net_tx_bytes = run * traffic * 200;
        m.net_rx_bytes_per_s = Some(traffic as f64);
        m.net_tx_bytes_per_s = Some(traffic as f64 / 3.0);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::data::Memory;
    use muster_proto::{FunctionReport, WorkerReport};

    fn package(i: usize) -> Package {
        Package {
            name: format!("pkg{i}"),
            version: format!("1.{i}.0-1"),
            architecture: Some("amd64".into()),
            source: "dpkg".into(),
            installed_size_bytes: Some(1000),
            install_time: None,
            publisher: None,
            uninstall_string: None,
        }
    }

    fn template() -> Template {
        let report = DaemonReport::new(
            HostIdentity {
                hostname: "template".into(),
                machine_id: None,
            },
            vec![
                WorkerReport::new(
                    Worker::Hardware,
                    vec![FunctionReport::new(FunctionData::Memory(vec![Memory {
                        total_bytes: 1,
                        swap_total_bytes: 0,
                    }]))],
                ),
                WorkerReport::new(
                    Worker::Software,
                    vec![FunctionReport::new(FunctionData::Dpkg(
                        (0..200).map(package).collect(),
                    ))],
                ),
            ],
        );
        Template::from_report(report)
    }

    fn versions(report: &mut DaemonReport) -> Vec<String> {
        packages_mut(report)
            .into_iter()
            .map(|p| p.version.clone())
            .collect()
    }

    #[test]
    fn each_agent_has_its_own_inventory_and_keeps_it() {
        let p = Payloads::new(template(), 1, 3);
        assert_eq!(p.template().packages(), 200);
        let a0 = p.inventory(0, "a", 0);
        let a1 = p.inventory(1, "b", 0);
        assert_ne!(inventory_hash(&a0), inventory_hash(&a1));
        // The same agent scanned again: the same inventory, another report id.
        let again = p.inventory(0, "a", 0);
        assert_eq!(inventory_hash(&a0), inventory_hash(&again));
        assert_ne!(a0.report_id, again.report_id);
        assert_eq!(a0.host.hostname, "load-000000.fleet.example");
        assert_eq!(a0.agent_id.as_deref(), Some("a"));
        // A few packages differ from the template, the rest do not.
        let mut t = p.template().report().clone();
        let template_versions = versions(&mut t);
        let mut a0 = a0;
        let changed = versions(&mut a0)
            .iter()
            .zip(&template_versions)
            .filter(|(a, b)| a != b)
            .count();
        assert!((1..=3).contains(&changed), "{changed}");
    }

    #[test]
    fn a_generation_upgrades_one_package_and_its_delta_applies_on_the_server() {
        let p = Payloads::new(template(), 1, 3);
        let (base_hash, full) = p.full(5, "a", 0);
        assert!(full.gzip);
        let (hash, delta) = p.delta(5, "a", &base_hash, 1);
        assert_ne!(hash, base_hash);
        assert_eq!(hash, inventory_hash(&p.inventory(5, "a", 1)));
        // What the server does with it: the base with the delta's function reports.
        let upload: InventoryUpload = serde_json::from_slice(&gunzip(&delta)).unwrap();
        let InventoryUpload::Delta { report, .. } = upload else {
            panic!("not a delta")
        };
        assert!(
            report
                .worker_reports
                .iter()
                .all(|w| w.name == Worker::Software)
        );
        let merged = muster_server::ingest::apply_delta(p.inventory(5, "a", 0), report, &[]);
        assert_eq!(inventory_hash(&merged), hash);
    }

    #[test]
    fn small_bodies_are_plain_and_large_ones_gzip() {
        let p = Payloads::new(template(), 1, 3);
        let hb = p.heartbeat("a", 10, 60, AgentHealth::default());
        assert!(!hb.gzip);
        let hb: Heartbeat = serde_json::from_slice(&hb.bytes).unwrap();
        assert_eq!(hb.agent_id, "a");
        let unchanged = p.unchanged("a", "h");
        assert!(!unchanged.gzip);
        let metrics = p.metrics(3, "a", 1);
        assert!(!metrics.gzip, "{} bytes", metrics.bytes.len());
        let report: MetricsReport = serde_json::from_slice(&metrics.bytes).unwrap();
        assert_eq!(report.samples.len(), 1);
    }

    #[test]
    fn telemetry_varies_between_agents_and_runs_within_bounds() {
        let p = Payloads::new(template(), 1, 3);
        let a = p.sample(1, 1);
        assert_ne!(a, p.sample(2, 1));
        assert_ne!(a, p.sample(1, 2));
        assert_eq!(a, p.sample(1, 1));
        for i in 0..1000 {
            let m = p.sample(i, u64::from(i));
            for v in [m.cpu_usage.unwrap(), m.memory_usage, m.disk_usage.unwrap()] {
                assert!((0.0..=100.0).contains(&v), "{v}");
            }
        }
    }

    fn gunzip(body: &Body) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body.bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    }
}
