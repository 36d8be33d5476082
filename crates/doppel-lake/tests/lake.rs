//! The lake against real files: durability, replay, persistence, last-write-wins, SQL.

use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use doppel_core::{FieldValue, Point, WriteBatch};
use doppel_lake::{Lake, LakeConfig, LakeError};

fn point(measurement: &str, asset: &str, fields: &[(&str, FieldValue)], time: i64) -> Point {
    Point {
        measurement: measurement.into(),
        tags: vec![("asset".into(), asset.into())],
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        time,
    }
}

fn batch(points: Vec<Point>) -> WriteBatch {
    WriteBatch {
        database: "plant".into(),
        points,
    }
}

fn config() -> LakeConfig {
    LakeConfig {
        // Tests decide when to persist.
        flush_age: Duration::from_secs(3600),
        ..LakeConfig::default()
    }
}

fn query(lake: &Lake, sql: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_, batches) = runtime.block_on(lake.query("plant", sql)).unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

const DAY: i64 = 86_400_000_000_000;

#[test]
fn writes_are_visible_then_persisted_then_replayed_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let lake = Lake::open(dir.path(), config()).unwrap();
        lake.write_blocking(
            batch(vec![
                point("pumps", "p1", &[("speed", FieldValue::Float(0.5))], 10),
                point("pumps", "p2", &[("speed", FieldValue::Float(0.7))], 10),
            ]),
            false,
        )
        .unwrap();
        assert!(query(&lake, "SELECT count(*) AS n FROM pumps").contains("| 2 |"));
        lake.flush().unwrap();
        assert_eq!(lake.stats().files, 1);
        lake.write_blocking(
            batch(vec![point(
                "pumps",
                "p1",
                &[("speed", FieldValue::Float(0.9))],
                DAY + 10,
            )]),
            false,
        )
        .unwrap();
        // Dropped without shutdown: the last write lives only in the WAL.
    }
    let lake = Lake::open(dir.path(), config()).unwrap();
    let text = query(
        &lake,
        "SELECT asset, speed, time FROM pumps ORDER BY time, asset",
    );
    let expected = "\
+-------+-------+-------------------------------+
| asset | speed | time                          |
+-------+-------+-------------------------------+
| p1    | 0.5   | 1970-01-01T00:00:00.000000010 |
| p2    | 0.7   | 1970-01-01T00:00:00.000000010 |
| p1    | 0.9   | 1970-01-02T00:00:00.000000010 |
+-------+-------+-------------------------------+";
    assert_eq!(text, expected);
    lake.shutdown().unwrap();
    // After a clean shutdown everything is in Parquet and the WAL holds nothing to replay.
    let catalog = lake.catalog();
    let files = &catalog.databases["plant"].tables["pumps"].files;
    assert_eq!(files.len(), 2, "one file per day: {files:?}");
    assert!(files.iter().all(|f| dir.path().join(&f.path).exists()));
}

#[test]
fn last_write_wins_across_buffer_and_files_and_merges_fields() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    lake.write_blocking(
        batch(vec![point(
            "m",
            "a",
            &[("x", FieldValue::Float(1.0)), ("y", FieldValue::Float(1.0))],
            100,
        )]),
        false,
    )
    .unwrap();
    lake.flush().unwrap();
    lake.write_blocking(
        batch(vec![point("m", "a", &[("x", FieldValue::Float(2.0))], 100)]),
        false,
    )
    .unwrap();
    let expected = "\
+---+-----+-----+
| a | x   | y   |
+---+-----+-----+
| a | 2.0 | 1.0 |
+---+-----+-----+";
    let sql = "SELECT asset AS a, x, y FROM m";
    assert_eq!(query(&lake, sql), expected, "buffer over file");
    lake.flush().unwrap();
    assert_eq!(query(&lake, sql), expected, "after merging the files");
    assert_eq!(lake.stats().files, 1, "the overlapping file was replaced");
}

#[test]
fn field_type_conflicts_reject_the_whole_batch_unless_partial() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    lake.write_blocking(
        batch(vec![point("m", "a", &[("x", FieldValue::Float(1.0))], 1)]),
        false,
    )
    .unwrap();
    let bad = batch(vec![
        point("m", "a", &[("x", FieldValue::Float(2.0))], 2),
        point("m", "a", &[("x", FieldValue::Integer(3))], 3),
    ]);
    match lake.write_blocking(bad.clone(), false) {
        Err(LakeError::Rejected(r)) => {
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].index, 1);
            assert!(
                r[0].message
                    .contains("`m.x` is float earlier in this batch but this line writes integer"),
                "{}",
                r[0].message
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(
        query(&lake, "SELECT count(*) AS n FROM m").contains("| 1 |"),
        "nothing of the batch written"
    );
    let outcome = lake.write_blocking(bad, true).unwrap();
    assert_eq!(outcome.points_written, 1);
    assert_eq!(outcome.rejected.len(), 1);
    assert!(query(&lake, "SELECT count(*) AS n FROM m").contains("| 2 |"));
    // Every point refused, partial: nothing written, and the refusals still reported.
    let all_bad = batch(vec![point(
        "m",
        "a",
        &[("x", FieldValue::Boolean(true))],
        9,
    )]);
    let outcome = lake.write_blocking(all_bad, true).unwrap();
    assert_eq!((outcome.points_written, outcome.rejected.len()), (0, 1));
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _lake = Lake::open(dir.path(), config()).unwrap();
    let err = Lake::open(dir.path(), config())
        .err()
        .expect("the directory is locked");
    assert!(matches!(err, LakeError::Locked { .. }));
    assert!(err.to_string().contains("in use by another doppel process"));
}

#[test]
fn unknown_database_and_bad_sql_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(lake.query("nope", "SELECT 1"))
        .unwrap_err();
    assert_eq!(err.to_string(), "database `nope` not found");
    lake.write_blocking(
        batch(vec![point("m", "a", &[("x", FieldValue::Float(1.0))], 1)]),
        false,
    )
    .unwrap();
    let err = runtime
        .block_on(lake.query("plant", "SELECT nope FROM m"))
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn retention_drops_old_day_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    let now = doppel_core::time::now_nanos();
    lake.write_blocking(
        batch(vec![
            point("m", "a", &[("x", FieldValue::Float(1.0))], now - 40 * DAY),
            point("m", "a", &[("x", FieldValue::Float(2.0))], now),
        ]),
        false,
    )
    .unwrap();
    lake.set_retention("plant", "m", Some(Duration::from_secs(30 * 86_400)))
        .unwrap();
    lake.flush().unwrap();
    assert!(query(&lake, "SELECT count(*) AS n FROM m").contains("| 1 |"));
}

#[test]
fn show_tables_and_date_bin_work() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    let minute = 60_000_000_000;
    let points = (0..120)
        .map(|i| {
            point(
                "m",
                "a",
                &[("x", FieldValue::Float(i as f64))],
                i * minute / 2,
            )
        })
        .collect();
    lake.write_blocking(batch(points), false).unwrap();
    assert!(query(&lake, "SHOW TABLES").contains("| datafusion    | public             | m "));
    let text = query(
        &lake,
        "SELECT date_bin(INTERVAL '30 minutes', time) AS t, avg(x) AS mean FROM m GROUP BY 1 ORDER BY 1",
    );
    assert!(text.contains("| 1970-01-01T00:00:00 | 29.5 |"), "{text}");
    assert!(text.contains("| 1970-01-01T00:30:00 | 89.5 |"), "{text}");
}
