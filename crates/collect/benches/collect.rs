//! Criterion benchmarks: the parsers on this machine's own files, and whole workers and scans.
//!
//! `cargo bench -p muster-collect`. Figures are recorded in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use muster_collect::platform::linux::{cpu, filesystems, memory, processes, software, system};
use muster_collect::{Context, ScanOptions};
use muster_proto::Worker;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn parsers(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let dpkg = read("/var/lib/dpkg/status");
    group.bench_function("dpkg_status", |b| {
        b.iter(|| software::dpkg::parse_dpkg_status(black_box(&dpkg)).len())
    });
    let meminfo = read("/proc/meminfo");
    group.bench_function("meminfo", |b| {
        b.iter(|| memory::parse_meminfo(black_box(&meminfo)))
    });
    let cpuinfo = read("/proc/cpuinfo");
    group.bench_function("cpuinfo", |b| {
        b.iter(|| cpu::parse_cpuinfo(black_box(&cpuinfo)))
    });
    let mountinfo = read("/proc/self/mountinfo");
    group.bench_function("mountinfo", |b| {
        b.iter(|| filesystems::parse_mountinfo(black_box(&mountinfo)))
    });
    let os_release = read("/etc/os-release");
    group.bench_function("os_release", |b| {
        b.iter(|| system::parse_os_release(black_box(&os_release)))
    });
    let stat = read("/proc/self/stat");
    group.bench_function("pid_stat", |b| {
        b.iter(|| processes::parse_stat(black_box(&stat)))
    });
    group.finish();
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
    group.bench_function("full_no_telemetry", |b| {
        b.iter(|| muster_collect::scan(&options))
    });
    let mut sampler = muster_collect::TelemetrySampler::new(context.clone());
    group.bench_function("telemetry_sample", |b| b.iter(|| sampler.sample()));
    group.finish();
}

criterion_group!(benches, parsers, scans);
criterion_main!(benches);
