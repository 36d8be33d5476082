use super::*;
use std::io::Write;

fn import(text: &str, name: &str, options: &ImportOptions) -> Result<Vec<Point>, ImportError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let mut points = Vec::new();
    import_file(
        &path,
        options,
        |_| {},
        |batch: WriteBatch| {
            points.extend(batch.points);
            Ok::<_, String>(())
        },
    )?;
    Ok(points)
}

#[test]
fn csv_with_date_column_like_ett() {
    let text = "date,HUFL,OT\n2016-07-01 00:00:00,5.827,30.531\n2016-07-01 01:00:00,5.693,27.787\n";
    let points = import(text, "ETTh1.csv", &ImportOptions::default()).unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].measurement, "ETTh1");
    assert_eq!(points[1].time - points[0].time, 3_600_000_000_000);
    assert_eq!(
        points[0].time,
        doppel_core::time::parse_rfc3339("2016-07-01T00:00:00Z").unwrap()
    );
    assert_eq!(
        points[0].fields[1],
        ("OT".into(), FieldValue::Float(30.531))
    );
}

#[test]
fn separators_are_detected() {
    for sep in [";", "\t", "|"] {
        let text = format!("time{sep}a\n1{sep}2.5\n");
        let points = import(&text, "x.csv", &ImportOptions::default()).unwrap();
        assert_eq!(points[0].time, 1_000_000_000, "{sep:?}");
        assert_eq!(points[0].fields[0].1, FieldValue::Float(2.5));
    }
}

#[test]
fn whitespace_tables_with_generated_time() {
    let text = "  1.0   2.0\n  3.0   4.0\n  5.0 6.0\n";
    let options = ImportOptions {
        column_names: Some(vec!["a".into(), "b".into()]),
        time: TimeSource::Generated {
            start: 0,
            period: 180_000_000_000,
        },
        measurement: Some("tep".into()),
        ..Default::default()
    };
    let points = import(text, "d01.dat", &options).unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(points[2].time, 360_000_000_000);
    assert_eq!(points[2].fields[1].1, FieldValue::Float(6.0));
}

#[test]
fn headerless_files_without_names_get_c1_to_cn() {
    let options = ImportOptions {
        column_names: Some(Vec::new()),
        time: TimeSource::Generated {
            start: 0,
            period: 1,
        },
        ..Default::default()
    };
    let points = import("1.5 2.5\n3.5 4.5\n", "d01.dat", &options).unwrap();
    assert_eq!(points.len(), 2, "the first line is data, not a header");
    assert_eq!(
        points[0].fields,
        vec![
            ("c1".into(), FieldValue::Float(1.5)),
            ("c2".into(), FieldValue::Float(2.5))
        ]
    );
}

#[test]
fn transposed_files_become_rows() {
    let text = "1 2 3\n4 5 6\n";
    let options = ImportOptions {
        transpose: true,
        time: TimeSource::Generated {
            start: 0,
            period: 1,
        },
        ..Default::default()
    };
    let points = import(text, "d00.dat", &options).unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(
        points[1].fields,
        vec![
            ("c1".into(), FieldValue::Float(2.0)),
            ("c2".into(), FieldValue::Float(5.0))
        ]
    );
}

#[test]
fn tags_quoted_csv_and_missing_values() {
    let text = "time,site,v,note\n2020-01-01T00:00:00Z,a,1,\"x, y\"\n2020-01-01T00:01:00Z,b,,\n";
    let options = ImportOptions {
        tag_columns: vec!["site".into()],
        tags: vec![("plant".into(), "p1".into())],
        ..Default::default()
    };
    let points = import(text, "m.csv", &options).unwrap();
    assert_eq!(
        points[0].tags,
        vec![("plant".into(), "p1".into()), ("site".into(), "a".into())]
    );
    assert_eq!(points[0].fields[1].1, FieldValue::String("x, y".into()));
    assert_eq!(points.len(), 1, "a row with every value missing is skipped");
}

#[test]
fn errors_name_file_line_and_column() {
    let e = import("time,v\n1,2\n2,hello\n", "m.csv", &ImportOptions::default()).unwrap_err();
    assert_eq!((e.line, e.column.as_deref()), (3, Some("v")));
    assert!(
        e.to_string()
            .contains("m.csv:3, column `v`: value `hello` is not a float"),
        "{e}"
    );

    let e = import("time,v\n1,2,3\n", "m.csv", &ImportOptions::default()).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("has 3 values"));

    let e = import("when,v\n1,2\n", "m.csv", &ImportOptions::default()).unwrap_err();
    assert!(e.message.contains("no time column found"), "{e}");

    let e = import("time,v\nsoon,2\n", "m.csv", &ImportOptions::default()).unwrap_err();
    assert_eq!((e.line, e.column.as_deref()), (2, Some("time")));
    assert!(e.message.contains("is not a time"));

    let e = import("", "m.csv", &ImportOptions::default()).unwrap_err();
    assert!(e.message.contains("empty"));
}

/// `1e400` fits no float: refused with line and column, not stored as text (which would
/// have made its column a string column for good).
#[test]
fn a_number_beyond_float_range_is_refused_where_it_is() {
    let text = "time,a\n1,2.5\n2,1e400\n";
    let err = import(text, "big.csv", &ImportOptions::default()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("big.csv:3, column `a`")
            && message.contains("`1e400` is outside the range of a 64-bit float"),
        "{message}"
    );
}

/// A row whose every value is NaN or empty is not stored, and the import says so instead
/// of counting it among the rows written.
#[test]
fn rows_without_any_value_are_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gaps.csv");
    std::fs::write(&path, "time,a,b\n1,1.5,2\n2,NaN,\n3,,null\n4,3,4\n").unwrap();
    let mut stored = 0;
    let stats = import_file(
        &path,
        &ImportOptions::default(),
        |_| {},
        |batch: WriteBatch| {
            stored += batch.points.len();
            Ok::<_, String>(())
        },
    )
    .unwrap();
    assert_eq!((stats.rows, stats.rows_without_values, stored), (4, 2, 2));
    assert_eq!(stats.values, 4);
}

/// The importer's table for readers that want columns: `time` first as timestamps, then the
/// file's other columns in order, typed by their first value; a missing cell is a null, a
/// row without any value is kept with its time, and a column with no value at all is an
/// all-null float column.
#[test]
fn a_file_reads_into_one_arrow_table() {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pumps.csv");
    std::fs::write(
        &path,
        "state,time,speed,dead\nrunning,1,0.5,\noff,2,,NaN\n,3,,\nrunning,4,0.7,\n",
    )
    .unwrap();
    let (table, stats) = import_file_arrow(&path, &ImportOptions::default()).unwrap();
    let schema = table.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["time", "state", "speed", "dead"]);
    assert_eq!(table.num_rows(), 4);
    let times = table.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(times.value(3), 4_000_000_000);
    let state = table.column(1).as_string::<i32>();
    assert_eq!((state.value(1), state.is_null(2)), ("off", true));
    let speed = table.column(2).as_primitive::<Float64Type>();
    assert_eq!(
        (speed.value(0), speed.is_null(1), speed.value(3)),
        (0.5, true, 0.7)
    );
    assert_eq!(table.column(3).data_type(), &DataType::Float64);
    assert_eq!(table.column(3).null_count(), 4);
    assert_eq!(stats.empty_columns, ["dead"]);
    assert_eq!(
        (stats.rows, stats.rows_without_values, stats.values),
        (4, 1, 5)
    );
}
