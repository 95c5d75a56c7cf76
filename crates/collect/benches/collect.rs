//! Criterion benchmarks: the parsers on captured fixtures, and whole scans of this machine.
//!
//! `cargo bench -p muster-collect`. Figures are recorded in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use muster_collect::platform::linux;
use muster_collect::{Context, ScanOptions};
use muster_proto::Worker;

fn parsers(c: &mut Criterion) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    c.bench_function("parse_meminfo", |b| {
        b.iter(|| linux::memory::parse_meminfo(black_box(&meminfo)))
    });
}

fn scans(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    let context = Context::default();
    for worker in [
        Worker::Hardware,
        Worker::Software,
        Worker::Processes,
        Worker::Services,
    ] {
        group.bench_function(worker.as_str(), |b| {
            b.iter(|| muster_collect::collect_worker(worker, &context))
        });
    }
    let options = ScanOptions {
        workers: vec![
            Worker::Hardware,
            Worker::Software,
            Worker::Processes,
            Worker::Services,
        ],
        ..ScanOptions::default()
    };
    group.bench_function("full (no telemetry)", |b| {
        b.iter(|| muster_collect::scan(&options))
    });
    group.finish();
}

criterion_group!(benches, parsers, scans);
criterion_main!(benches);
