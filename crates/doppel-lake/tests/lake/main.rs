//! The lake against real files: durability, replay, persistence, last-write-wins, SQL.

use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use doppel_core::{FieldValue, Point, WriteBatch};
use doppel_lake::{Lake, LakeConfig, LakeError};

mod drop;
mod durability;
mod sql_fuzz;

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

fn file_paths(lake: &Lake, table: &str) -> Vec<String> {
    let catalog = lake.catalog();
    catalog.databases["plant"].tables[table]
        .files
        .iter()
        .map(|f| f.path.clone())
        .collect()
}

/// Files whose time ranges overlap but whose keys differ are both kept (no rewrite); a write
/// that repeats a key rewrites only the file holding that key; queries see the same rows
/// either way, whether the rows are buffered or persisted.
#[test]
fn only_files_sharing_a_key_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    let x = |v: f64| [("x", FieldValue::Float(v))];
    lake.write_blocking(
        batch(vec![
            point("m", "a", &x(1.0), 0),
            point("m", "a", &x(2.0), 20),
            point("m", "a", &x(3.0), 40),
        ]),
        false,
    )
    .unwrap();
    lake.flush().unwrap();
    let first = file_paths(&lake, "m");
    assert_eq!(first.len(), 1);

    // Interleaved times, other series or other timestamps: no key in common with the file.
    lake.write_blocking(
        batch(vec![
            point("m", "b", &x(10.0), 10),
            point("m", "b", &x(20.0), 20),
            point("m", "a", &x(4.0), 30),
            // A tag the first file predates makes another series, even at the same time.
            Point::new("m", &[("asset", "a"), ("line", "1")], &x(5.0), 40),
        ]),
        false,
    )
    .unwrap();
    let sql = "SELECT asset, line, x, time FROM m ORDER BY asset, line, time";
    let before = query(&lake, sql);
    lake.flush().unwrap();
    assert_eq!(
        query(&lake, sql),
        before,
        "buffered and persisted rows read the same"
    );
    let second = file_paths(&lake, "m");
    assert_eq!(second.len(), 2, "a new file beside the old one: {second:?}");
    assert!(
        second.contains(&first[0]),
        "the first file was not rewritten"
    );
    let expected = "\
+-------+------+------+-------------------------------+
| asset | line | x    | time                          |
+-------+------+------+-------------------------------+
| a     | 1    | 5.0  | 1970-01-01T00:00:00.000000040 |
| a     |      | 1.0  | 1970-01-01T00:00:00           |
| a     |      | 2.0  | 1970-01-01T00:00:00.000000020 |
| a     |      | 4.0  | 1970-01-01T00:00:00.000000030 |
| a     |      | 3.0  | 1970-01-01T00:00:00.000000040 |
| b     |      | 10.0 | 1970-01-01T00:00:00.000000010 |
| b     |      | 20.0 | 1970-01-01T00:00:00.000000020 |
+-------+------+------+-------------------------------+";
    assert_eq!(before, expected);

    // A key of the first file again: the buffer wins at once, and the persist replaces that
    // file only.
    lake.write_blocking(batch(vec![point("m", "a", &x(9.0), 20)]), false)
        .unwrap();
    let rewritten = expected.replace("| 2.0  |", "| 9.0  |");
    assert_eq!(query(&lake, sql), rewritten, "buffer over file");
    lake.flush().unwrap();
    assert_eq!(query(&lake, sql), rewritten, "after the merge");
    let third = file_paths(&lake, "m");
    assert_eq!(third.len(), 2, "{third:?}");
    assert!(
        !third.contains(&first[0]),
        "the file with the key was replaced"
    );
    assert!(third.contains(&second[1]), "the other file was left alone");

    // Tables without tags: the key is the time alone.
    let plain = |v: f64, t: i64| Point::new("plain", &[], &x(v), t);
    lake.write_blocking(batch(vec![plain(1.0, 0), plain(2.0, 20)]), false)
        .unwrap();
    lake.flush().unwrap();
    lake.write_blocking(batch(vec![plain(3.0, 10)]), false)
        .unwrap();
    lake.flush().unwrap();
    assert_eq!(file_paths(&lake, "plain").len(), 2);
    lake.write_blocking(batch(vec![plain(4.0, 20)]), false)
        .unwrap();
    let sql = "SELECT x FROM plain ORDER BY time";
    let expected = "\
+-----+
| x   |
+-----+
| 1.0 |
| 3.0 |
| 4.0 |
+-----+";
    assert_eq!(query(&lake, sql), expected, "buffer over file");
    lake.flush().unwrap();
    assert_eq!(query(&lake, sql), expected, "after the merge");
    assert_eq!(file_paths(&lake, "plain").len(), 2);
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

#[test]
fn unquoted_names_match_measurements_and_fields_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path(), config()).unwrap();
    lake.write_blocking(
        batch(vec![point(
            "ETTh1",
            "a",
            &[("HUFL", FieldValue::Float(2.5))],
            1,
        )]),
        false,
    )
    .unwrap();
    for sql in [
        "SELECT HUFL FROM ETTh1",
        "SELECT \"HUFL\" FROM \"ETTh1\"",
        "select HUFL from ETTh1 where asset = 'a'",
        "SELECT MAX(HUFL) AS HUFL FROM ETTh1",
    ] {
        let text = query(&lake, sql);
        assert!(text.contains("2.5"), "{sql}: {text}");
    }
}
