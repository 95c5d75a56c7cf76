//! The on-disk spool in real directories: order, bounds (telemetry dropped first), the dropped
//! count across restarts, damaged and half-written files, and `kill -9` during writes.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use muster_agent::spool::{PushOutcome, Spool, SpoolItem, SpoolKind};

const BIG: u64 = 1 << 40;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn item_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".item"))
        .collect()
}

/// Takes every item out, oldest first.
fn drain(spool: &Spool) -> Vec<SpoolItem> {
    let mut out = Vec::new();
    while let Some(item) = spool.oldest().unwrap() {
        spool.remove(item.id).unwrap();
        out.push(item);
    }
    out
}

fn bodies(items: &[SpoolItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| String::from_utf8(i.body.clone()).unwrap())
        .collect()
}

#[test]
fn items_come_back_oldest_first_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    {
        let spool = Spool::open(&path, BIG, 100).unwrap();
        spool
            .push(SpoolKind::Telemetry, "metrics/report", b"t1")
            .unwrap();
        spool
            .push(SpoolKind::Inventory, "system/report", b"i1")
            .unwrap();
        spool
            .push(SpoolKind::Other, "commands/status", b"o1")
            .unwrap();
        // Reading does not consume.
        assert_eq!(spool.oldest().unwrap().unwrap().body, b"t1");
        assert_eq!(spool.oldest().unwrap().unwrap().body, b"t1");
    }
    let spool = Spool::open(&path, BIG, 100).unwrap();
    assert_eq!(spool.stats().items, 3);
    // The sequence continues after the restart: new items sort after the old ones.
    spool
        .push(SpoolKind::Telemetry, "metrics/report", b"t2")
        .unwrap();
    let first = spool.oldest().unwrap().unwrap();
    assert_eq!(first.kind, SpoolKind::Telemetry);
    assert_eq!(first.api_path, "metrics/report");
    spool.remove(first.id).unwrap();
    // Removing twice is harmless.
    spool.remove(first.id).unwrap();

    let rest = drain(&spool);
    assert_eq!(bodies(&rest), ["i1", "o1", "t2"]);
    assert_eq!(
        rest.iter()
            .map(|i| (i.kind, i.api_path.as_str()))
            .collect::<Vec<_>>(),
        [
            (SpoolKind::Inventory, "system/report"),
            (SpoolKind::Other, "commands/status"),
            (SpoolKind::Telemetry, "metrics/report"),
        ]
    );
    assert_eq!(spool.stats().items, 0);
    assert_eq!(spool.stats().bytes, 0);
    assert!(item_files(&path).is_empty());
}

#[test]
fn files_are_private_and_bytes_match_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/spool");
    let spool = Spool::open(&path, BIG, 100).unwrap();
    spool
        .push(SpoolKind::Inventory, "system/report", &[b'x'; 5000])
        .unwrap();
    spool
        .push(SpoolKind::Telemetry, "metrics/report", b"{}")
        .unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut on_disk = 0;
    for name in item_files(&path) {
        let meta = fs::metadata(path.join(&name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        on_disk += meta.len();
    }
    assert_eq!(spool.stats().items, 2);
    assert_eq!(spool.stats().bytes, on_disk);
    assert!(on_disk > 5000);
    // A reopened spool counts the same.
    drop(spool);
    assert_eq!(Spool::open(&path, BIG, 100).unwrap().stats().bytes, on_disk);
}

#[test]
fn past_the_item_bound_the_oldest_telemetry_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), BIG, 4).unwrap();
    let push = |kind, body: &str| {
        let path = match kind {
            SpoolKind::Telemetry => "metrics/report",
            _ => "system/report",
        };
        spool.push(kind, path, body.as_bytes()).unwrap()
    };
    use SpoolKind::{Inventory, Telemetry};
    for (kind, body) in [
        (Telemetry, "t1"),
        (Inventory, "i1"),
        (Telemetry, "t2"),
        (Inventory, "i2"),
    ] {
        assert_eq!(push(kind, body), PushOutcome { dropped: 0 });
    }
    assert_eq!(push(Telemetry, "t3"), PushOutcome { dropped: 1 }); // t1 goes
    assert_eq!(push(Inventory, "i3"), PushOutcome { dropped: 1 }); // t2 goes
    // The only telemetry left is the newest item; it still goes before any inventory.
    assert_eq!(push(Inventory, "i4"), PushOutcome { dropped: 1 }); // t3 goes
    // No telemetry left: the oldest of any kind.
    assert_eq!(push(Inventory, "i5"), PushOutcome { dropped: 1 }); // i1 goes
    assert_eq!(spool.stats().items, 4);
    assert_eq!(spool.take_dropped(), 4);
    assert_eq!(spool.take_dropped(), 0);
    assert_eq!(bodies(&drain(&spool)), ["i2", "i3", "i4", "i5"]);
}

#[test]
fn past_the_byte_bound_enough_telemetry_goes_to_make_room() {
    let dir = tempfile::tempdir().unwrap();
    // Headers are ~110 bytes: ten 1 KiB items take 11,339 of the 12,288 bytes.
    let spool = Spool::open(dir.path(), 12 * 1024, 1000).unwrap();
    let kib = |c: u8| vec![c; 1024];
    spool
        .push(SpoolKind::Inventory, "system/report", &kib(b'I'))
        .unwrap();
    for c in b'a'..b'j' {
        spool
            .push(SpoolKind::Telemetry, "metrics/report", &kib(c))
            .unwrap();
    }
    assert_eq!(spool.take_dropped(), 0);
    let before = spool.stats();
    assert_eq!(before.items, 10);
    // 4,205 bytes more: the three oldest telemetry items make room, the inventory stays.
    let outcome = spool
        .push(SpoolKind::Inventory, "system/report", &[b'Z'; 4096])
        .unwrap();
    assert_eq!(outcome.dropped, 3);
    assert!(spool.stats().bytes <= 12 * 1024);
    let items = drain(&spool);
    let firsts: Vec<u8> = items.iter().map(|i| i.body[0]).collect();
    assert_eq!(firsts, b"IdefghiZ");
}

#[test]
fn an_item_larger_than_the_spool_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 4096, 10).unwrap();
    spool
        .push(SpoolKind::Telemetry, "metrics/report", b"kept")
        .unwrap();
    let err = spool
        .push(SpoolKind::Inventory, "system/report", &[0; 8192])
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let err = spool
        .push(SpoolKind::Telemetry, "metrics report", b"{}")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(spool.take_dropped(), 1);
    assert_eq!(bodies(&drain(&spool)), ["kept"]);
}

#[test]
fn the_dropped_count_survives_a_restart_until_taken() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), BIG, 2).unwrap();
        for _ in 0..5 {
            spool
                .push(SpoolKind::Telemetry, "metrics/report", b"{}")
                .unwrap();
        }
        assert_eq!(spool.dropped(), 3);
    }
    {
        let spool = Spool::open(dir.path(), BIG, 2).unwrap();
        assert_eq!(spool.dropped(), 3);
        assert_eq!(spool.take_dropped(), 3);
    }
    let spool = Spool::open(dir.path(), BIG, 2).unwrap();
    assert_eq!(spool.take_dropped(), 0);
    // A count whose heartbeat failed goes back, and survives a restart too.
    spool.restore_dropped(3);
    drop(spool);
    let spool = Spool::open(dir.path(), BIG, 2).unwrap();
    assert_eq!(spool.take_dropped(), 3);
    // Tightened bounds drop at open, and that is counted too.
    drop(spool);
    let spool = Spool::open(dir.path(), BIG, 1).unwrap();
    assert_eq!(spool.stats().items, 1);
    assert_eq!(spool.take_dropped(), 1);
}

#[test]
fn damaged_items_are_skipped_deleted_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    {
        let spool = Spool::open(path, BIG, 100).unwrap();
        for body in ["first", "second", "third", "fourth", "fifth", "sixth"] {
            spool
                .push(SpoolKind::Telemetry, "metrics/report", body.as_bytes())
                .unwrap();
        }
    }
    let files = item_files(path);
    // A flipped byte in the body, a truncated file, an empty file, a wrong header.
    let mut flipped = fs::read(path.join(&files[0])).unwrap();
    *flipped.last_mut().unwrap() ^= 0x20;
    fs::write(path.join(&files[0]), flipped).unwrap();
    let whole = fs::read(path.join(&files[1])).unwrap();
    fs::write(path.join(&files[1]), &whole[..whole.len() - 2]).unwrap();
    fs::write(path.join(&files[2]), b"").unwrap();
    let fourth = fs::read(path.join(&files[3])).unwrap();
    fs::write(
        path.join(&files[3]),
        [b"muster-spool/9".as_slice(), &fourth[14..]].concat(),
    )
    .unwrap();

    let spool = Spool::open(path, 32 * 1024, 100).unwrap();
    assert_eq!(spool.stats().items, 6);
    // A file grown past the spool's bound behind its back is not read into memory.
    fs::write(path.join(&files[4]), vec![b'x'; 64 * 1024]).unwrap();

    assert_eq!(bodies(&drain(&spool)), ["sixth"]);
    assert_eq!(spool.take_dropped(), 5);
    assert!(item_files(path).is_empty(), "{:?}", names(path));
}

#[test]
fn leftover_temp_files_are_removed_and_other_files_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    {
        let spool = Spool::open(path, BIG, 100).unwrap();
        spool
            .push(SpoolKind::Inventory, "system/report", b"whole")
            .unwrap();
    }
    // What a kill during a write leaves: a temp file, whole or not, never renamed.
    fs::write(
        path.join("00000000000000000001-telemetry.item.tmp"),
        b"muster-spool/1 telemetry 100 ab",
    )
    .unwrap();
    fs::write(path.join("dropped.tmp"), b"12").unwrap();
    fs::write(path.join("README"), b"not ours").unwrap();

    let spool = Spool::open(path, BIG, 100).unwrap();
    assert_eq!(
        names(path),
        ["00000000000000000000-inventory.item", "README"]
    );
    assert_eq!(spool.stats().items, 1);
    assert_eq!(spool.take_dropped(), 0);
    // The next item takes the temp file's place in the sequence, after the whole one.
    spool
        .push(SpoolKind::Telemetry, "metrics/report", b"next")
        .unwrap();
    assert_eq!(bodies(&drain(&spool)), ["whole", "next"]);
}

// --- kill -9 ---

const WRITER_DIR: &str = "MUSTER_TEST_SPOOL_WRITER_DIR";
const WRITER_START: &str = "MUSTER_TEST_SPOOL_WRITER_START";
const WRITER_MAX_ITEMS: &str = "MUSTER_TEST_SPOOL_WRITER_MAX_ITEMS";
const WRITER_MAX_BYTES: &str = "MUSTER_TEST_SPOOL_WRITER_MAX_BYTES";

fn kind_of(n: u64) -> SpoolKind {
    if n.is_multiple_of(3) {
        SpoolKind::Inventory
    } else {
        SpoolKind::Telemetry
    }
}

fn api_path_of(n: u64) -> String {
    format!("reports/{n}")
}

/// Item `n`'s body: its number and up to 40 KB of padding, so writes take a while.
fn body_of(n: u64) -> Vec<u8> {
    let pad = "x".repeat(((n * 7919) % 40_000) as usize);
    format!(r#"{{"n":{n},"pad":"{pad}"}}"#).into_bytes()
}

/// Pushes items `start, start + 1, ...`, printing `pushed <n>` after each push returns,
/// until `limit` items or 20 s (a guard in case nobody kills it).
fn write_items(dir: &Path, start: u64, (max_bytes, max_items): (u64, u64), limit: u64) {
    let spool = Spool::open(dir, max_bytes, max_items).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in start..start.saturating_add(limit) {
        if Instant::now() > deadline {
            break;
        }
        spool
            .push(kind_of(n), &api_path_of(n), &body_of(n))
            .unwrap();
        println!("pushed {n}");
    }
}

/// Checks a drained item is whole, and returns its number.
fn check_item(item: &SpoolItem) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(&item.body).expect("a whole body");
    let n = value["n"].as_u64().unwrap();
    assert_eq!(item.body, body_of(n));
    assert_eq!(item.kind, kind_of(n));
    assert_eq!(item.api_path, api_path_of(n));
    n
}

/// Re-executed by [`kill_9_during_writes_leaves_a_whole_spool`] as the process it kills (with
/// `WRITER_DIR` set). Run normally, it writes and checks a short run in-process.
#[test]
fn writer_child() {
    if let Ok(dir) = std::env::var(WRITER_DIR) {
        let start = std::env::var(WRITER_START).unwrap().parse().unwrap();
        let max_bytes = std::env::var(WRITER_MAX_BYTES).unwrap().parse().unwrap();
        let max_items = std::env::var(WRITER_MAX_ITEMS).unwrap().parse().unwrap();
        write_items(Path::new(&dir), start, (max_bytes, max_items), u64::MAX);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_items(dir.path(), 10, (BIG, 1000), 30);
    let spool = Spool::open(dir.path(), BIG, 1000).unwrap();
    let numbers: Vec<u64> = drain(&spool).iter().map(check_item).collect();
    assert_eq!(numbers, (10..40).collect::<Vec<_>>());
}

fn random_u64() -> u64 {
    let bytes: [u8; 8] = ring::rand::generate(&ring::rand::SystemRandom::new())
        .unwrap()
        .expose();
    u64::from_le_bytes(bytes)
}

#[test]
fn kill_9_during_writes_leaves_a_whole_spool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let mut confirmed = BTreeSet::new();
    // Per writer session, the one item that may be stored without being confirmed.
    let mut maybe = BTreeSet::new();
    let mut last_drained = None;
    let mut temp_files_seen = 0;
    let mut total_confirmed = 0;

    for iteration in 0..30u64 {
        // The second half runs with tight bounds, so kills also land during drops.
        let bounded = iteration >= 15;
        let (max_bytes, max_items) = if bounded {
            (256 << 10, 20)
        } else {
            (BIG, 1 << 20)
        };
        let start = iteration * 1_000_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "spool::writer_child", "--nocapture"])
            .env(WRITER_DIR, &path)
            .env(WRITER_START, start.to_string())
            .env(WRITER_MAX_BYTES, max_bytes.to_string())
            .env(WRITER_MAX_ITEMS, max_items.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10 + random_u64() % 60));
        child.kill().unwrap(); // SIGKILL
        let output = child.wait_with_output().unwrap();
        let pushed: Vec<u64> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("pushed ")?.parse().ok())
            .collect();
        total_confirmed += pushed.len();
        maybe.insert(pushed.last().map_or(start, |n| n + 1));
        confirmed.extend(pushed);

        if names(&path).iter().any(|n| n.ends_with(".tmp")) {
            temp_files_seen += 1;
        }
        let spool = Spool::open(&path, max_bytes, max_items).unwrap();
        assert!(
            !names(&path).iter().any(|n| n.ends_with(".tmp")),
            "temp files left: {:?}",
            names(&path)
        );

        // Drain every third session, so some sessions start with items already spooled.
        if iteration % 3 != 2 {
            continue;
        }
        let held = spool.stats().items;
        let items = drain(&spool);
        // Every item was readable: none was skipped as damaged.
        assert_eq!(items.len() as u64, held);
        let numbers: Vec<u64> = items.iter().map(check_item).collect();
        // In order, within and across sessions.
        for n in &numbers {
            assert!(last_drained < Some(*n), "{n} after {last_drained:?}");
            last_drained = Some(*n);
        }
        let drained: BTreeSet<u64> = numbers.into_iter().collect();
        // Nothing appears that was not pushed (or being pushed at the kill).
        let unexpected: Vec<_> = drained
            .iter()
            .filter(|n| !confirmed.contains(n) && !maybe.contains(n))
            .collect();
        assert!(unexpected.is_empty(), "unexpected items {unexpected:?}");
        if !bounded {
            // Unbounded: every push that returned survived the kill.
            let lost: Vec<_> = confirmed.difference(&drained).collect();
            assert!(lost.is_empty(), "lost items {lost:?}");
            assert_eq!(spool.take_dropped(), 0);
        } else {
            assert!(drained.len() <= 20);
        }
        confirmed.clear();
        maybe.clear();
    }
    // The test means something only if the writers got going and were cut mid-write.
    assert!(
        total_confirmed > 100,
        "{total_confirmed} items pushed in all"
    );
    assert!(temp_files_seen > 0, "no kill landed during a write");
    eprintln!("{total_confirmed} items pushed, {temp_files_seen}/30 kills left a temp file");
}
