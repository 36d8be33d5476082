//! Faults on real files: a full disk, failed fsyncs, failed persists, damaged WAL records;
//! the seeded harness; the query limits.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use doppel_core::FieldValue;
use doppel_lake::faults::{Fault, FaultPlan, Faults, IoPoint};
use doppel_lake::{ErrorKind, Lake, LakeConfig, LakeError, QueryLimits};

use super::{batch, config, point, query};

/// Fails every operation at the given points while `full` is set, as a full disk does.
#[derive(Clone)]
struct Switch {
    full: Arc<AtomicBool>,
    points: &'static [IoPoint],
    errno: i32,
}

impl FaultPlan for Switch {
    fn before(&mut self, point: IoPoint, _: &Path) -> Option<Fault> {
        (self.full.load(Ordering::SeqCst) && self.points.contains(&point)).then(|| {
            if point == IoPoint::WalWrite {
                Fault::ShortWrite(5)
            } else {
                Fault::Errno(self.errno)
            }
        })
    }
}

/// A lake whose `points` fail with `errno` while the returned switch is on (it starts as `on`).
fn lake_with_switch(
    dir: &Path,
    points: &'static [IoPoint],
    errno: i32,
    on: bool,
    config: LakeConfig,
) -> (Lake, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(on));
    let faults = Faults::new(Switch {
        full: full.clone(),
        points,
        errno,
    });
    let lake = Lake::open(dir, LakeConfig { faults, ..config }).unwrap();
    (lake, full)
}

fn one(time: i64) -> doppel_core::WriteBatch {
    batch(vec![point(
        "m",
        "a",
        &[("v", FieldValue::Float(time as f64))],
        time,
    )])
}

#[test]
fn a_full_disk_refuses_writes_with_retry_later_and_the_lake_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, full) = lake_with_switch(
        dir.path(),
        &[IoPoint::WalWrite],
        libc::ENOSPC,
        false,
        config(),
    );
    lake.write_blocking(one(1), false).unwrap();
    full.store(true, Ordering::SeqCst);
    for t in 2..5 {
        let err = lake.write_blocking(one(t), false).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Unavailable(Duration::from_secs(5)),
            "{err}"
        );
        assert!(err.to_string().contains("disk is full"), "{err}");
        assert!(
            !err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
    assert!(lake.health().wal.unwrap().contains("disk is full"));
    full.store(false, Ordering::SeqCst);
    lake.write_blocking(one(5), false).unwrap();
    assert_eq!(lake.health().wal, None);
    drop(lake); // a crash: only the WAL has the rows

    let lake = Lake::open(dir.path(), config()).unwrap();
    let text = query(&lake, "SELECT v FROM m ORDER BY time");
    assert!(
        text.contains("| 1.0 |") && text.contains("| 5.0 |"),
        "{text}"
    );
    for t in 2..5 {
        assert!(!text.contains(&format!("| {t}.0 |")), "{text}");
    }
}

#[test]
fn a_failed_fsync_is_retry_later_and_leaves_no_record_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, full) =
        lake_with_switch(dir.path(), &[IoPoint::WalSync], libc::EIO, false, config());
    lake.write_blocking(one(1), false).unwrap();
    full.store(true, Ordering::SeqCst);
    let err = lake.write_blocking(one(2), false).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Unavailable(_)), "{err}");
    full.store(false, Ordering::SeqCst);
    lake.write_blocking(one(3), false).unwrap();
    drop(lake);
    let lake = Lake::open(dir.path(), config()).unwrap();
    let text = query(&lake, "SELECT v FROM m ORDER BY time");
    assert!(
        !text.contains("| 2.0 |"),
        "the refused write came back: {text}"
    );
    assert!(text.contains("| 3.0 |"), "{text}");
}

#[test]
fn a_persist_that_keeps_failing_shows_in_health_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, full) = lake_with_switch(
        dir.path(),
        &[IoPoint::ParquetWrite, IoPoint::ParquetSync],
        libc::ENOSPC,
        true,
        LakeConfig {
            flush_age: Duration::from_millis(10),
            ..config()
        },
    );
    lake.write_blocking(one(1), false).unwrap();
    assert!(lake.flush().is_err());
    let deadline = Instant::now() + Duration::from_secs(20);
    while lake.health().persist.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = lake.health();
    assert!(
        health.persist.unwrap().contains("No space left"),
        "{:?}",
        lake.health()
    );
    assert!(health.persist_failures >= 1);
    // Writes are still taken meanwhile, and nothing half-written is left on disk.
    lake.write_blocking(one(2), false).unwrap();
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    full.store(false, Ordering::SeqCst);
    lake.flush().unwrap();
    drop(lake);
    let lake = Lake::open(dir.path(), config()).unwrap();
    let text = query(&lake, "SELECT v FROM m ORDER BY time");
    assert!(
        text.contains("| 1.0 |") && text.contains("| 2.0 |"),
        "{text}"
    );
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".tmp") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_measurement_name_too_long_for_a_folder_is_refused_at_write_time() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    let long = "é".repeat(50); // 100 bytes, 300 as a folder name (%C3%A9 each)
    let err = lake
        .write_blocking(
            batch(vec![point(&long, "a", &[("v", FieldValue::Float(1.0))], 1)]),
            false,
        )
        .unwrap_err();
    let LakeError::Rejected(rejections) = &err else {
        panic!("{err}")
    };
    assert!(
        rejections[0].message.contains("limit is 255"),
        "{rejections:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Client);
    // Nothing accepted blocks persistence: a name just within the limit persists.
    let fits = "x".repeat(255);
    lake.write_blocking(
        batch(vec![point(&fits, "a", &[("v", FieldValue::Float(1.0))], 1)]),
        false,
    )
    .unwrap();
    lake.flush().unwrap();
    assert_eq!(lake.health().persist, None);
}

#[test]
fn a_damaged_wal_stops_start_up_and_salvage_keeps_every_intact_batch() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    for t in 0..10 {
        lake.write_blocking(one(t), false).unwrap();
    }
    drop(lake);
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[8 + 3] ^= 0x80; // the top byte of the first record's length
    std::fs::write(&segment, &bytes).unwrap();

    let err = Lake::open(dir.path(), config()).err().unwrap();
    assert!(
        matches!(err, LakeError::WalCorrupt { offset: 8, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("doppel lake salvage"), "{err}");
    let report = Lake::salvage(dir.path()).unwrap();
    assert_eq!(report[0].records_kept, 10, "{report:?}");
    let lake = Lake::open(dir.path(), config()).unwrap();
    let text = query(&lake, "SELECT count(*) AS n FROM m");
    assert!(text.contains("| 10 |"), "{text}");
}

#[test]
fn the_seeded_fault_harness_loses_no_acknowledged_batch() {
    let cases: u64 = std::env::var("DOPPEL_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut failures = Vec::new();
    let (mut acknowledged, mut refused, mut injected, mut detected) = (0, 0, 0, 0);
    for seed in 0..cases {
        let dir = tempfile::tempdir().unwrap();
        match doppel_lake::harness::run_case(seed, dir.path()) {
            Ok(report) => {
                acknowledged += report.acknowledged;
                refused += report.refused;
                injected += report.faults_injected;
                detected += usize::from(report.damage_detected);
            }
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The cases did meet faults, refusals and damage, or they would prove nothing.
    assert!(injected > cases as usize, "{injected} faults injected");
    assert!(refused > 0 && acknowledged > 0 && detected > 0);
}

/// A query past its time limit, and one past the memory limit, fail with a limit error;
/// dropping a query's future stops it.
#[test]
fn queries_run_within_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        dir.path(),
        LakeConfig {
            query: QueryLimits {
                timeout: Duration::from_secs(1),
                memory_bytes: 32 << 20,
                ..QueryLimits::default()
            },
            ..config()
        },
    )
    .unwrap();
    let points = (0..20_000)
        .map(|t| point("m", "a", &[("v", FieldValue::Float(t as f64))], t))
        .collect();
    lake.write_blocking(batch(points), false).unwrap();
    let points = (0..40_000)
        .map(|t| point("n", "a", &[("v", FieldValue::Float(t as f64))], t))
        .collect();
    lake.write_blocking(batch(points), false).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Every row has the same asset: 1.6 * 10^9 joined rows, counted as they stream (one join:
    // a second one would collect the first's rows and could meet the memory limit first on a
    // loaded machine), stopped by the time limit.
    let started = Instant::now();
    let err = runtime
        .block_on(lake.query(
            "plant",
            "SELECT count(*) FROM n a JOIN n b ON a.asset = b.asset",
        ))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Limit, "{err}");
    assert!(err.to_string().contains("--query-timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // A join that compares pairs without producing rows cannot be stopped midway: refused.
    let err = runtime
        .block_on(lake.query(
            "plant",
            "SELECT count(*) FROM m a, m b, m c WHERE a.v + b.v + c.v < 0",
        ))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Limit, "{err}");
    assert!(err.to_string().contains("row pairs"), "{err}");

    let err = runtime
        .block_on(lake.query("plant", "SELECT a.v, b.v FROM m a, m b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Limit, "{err}");
    assert!(err.to_string().contains("memory"), "{err}");

    let err = runtime
        .block_on(lake.query("plant", "COPY (SELECT 1) TO '/tmp/doppel-copy.parquet'"))
        .unwrap_err();
    assert!(matches!(err, LakeError::QueryRefused(_)), "{err}");
    assert!(!Path::new("/tmp/doppel-copy.parquet").exists());
}

#[test]
fn a_manifest_from_before_checksums_opens_and_a_changed_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let old = r#"{"format_version": 1, "wal_persisted_through": 0, "next_file_id": 1,
        "databases": {"plant": {"tables": {"m": {"tags": ["asset"], "fields": {"v": "float"}, "files": []}}}}}"#;
    std::fs::write(dir.path().join("manifest.json"), old).unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    assert!(lake.catalog().table("plant", "m").is_some());
    lake.write_blocking(one(1), false).unwrap();
    lake.shutdown().unwrap();
    drop(lake);
    let text = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert!(
        text.contains("\"checksum\"") && text.contains("\"format_version\": 2"),
        "{text}"
    );
    // A changed digit (a file's row count here) is found at start-up.
    let changed = text.replacen("\"rows\": 1", "\"rows\": 7", 1);
    assert_ne!(changed, text);
    std::fs::write(dir.path().join("manifest.json"), changed).unwrap();
    let err = Lake::open(dir.path(), config()).err().unwrap();
    assert!(matches!(err, LakeError::Manifest { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}
