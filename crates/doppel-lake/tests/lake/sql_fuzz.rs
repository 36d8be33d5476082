//! Generated SQL against a real lake: whatever a client sends, the answer is rows or the
//! client's error (refused, invalid, over a limit), never a panic, a crash or our failure.

use std::sync::OnceLock;
use std::time::Duration;

use doppel_core::FieldValue;
use doppel_lake::{ErrorKind, Lake, LakeConfig, QueryLimits};
use proptest::prelude::*;

use super::{batch, point};

fn lake() -> &'static (tempfile::TempDir, Lake, tokio::runtime::Runtime) {
    static LAKE: OnceLock<(tempfile::TempDir, Lake, tokio::runtime::Runtime)> = OnceLock::new();
    LAKE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(
            dir.path(),
            LakeConfig {
                query: QueryLimits {
                    timeout: Duration::from_secs(5),
                    memory_bytes: 64 << 20,
                    ..QueryLimits::default()
                },
                ..super::config()
            },
        )
        .unwrap();
        let points = (0..300)
            .map(|t| {
                point(
                    "m",
                    ["a", "b", "c"][t as usize % 3],
                    &[
                        ("v", FieldValue::Float(t as f64 / 7.0)),
                        ("n", FieldValue::Integer(t - 100)),
                        ("s", FieldValue::String(format!("s{t}"))),
                    ],
                    t * 1_000_000_000,
                )
            })
            .collect();
        lake.write_blocking(batch(points), false).unwrap();
        // Half the rows in Parquet, half buffered: both paths are read.
        lake.flush().unwrap();
        let more = (300..600)
            .map(|t| {
                point(
                    "m",
                    "d",
                    &[("v", FieldValue::Float(t as f64))],
                    t * 1_000_000_000,
                )
            })
            .collect();
        lake.write_blocking(batch(more), false).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (dir, lake, runtime)
    })
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v".to_string()),
        Just("n".to_string()),
        Just("asset".to_string()),
        Just("s".to_string()),
        Just("time".to_string()),
        Just("NULL".to_string()),
        any::<i32>().prop_map(|i| i.to_string()),
        any::<f32>().prop_map(|f| format!("{f:?}")),
        "[a-z%_']{0,6}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        Just("now()".to_string()),
        Just("INTERVAL '1 minute'".to_string()),
        Just("nope".to_string()),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    leaf().prop_recursive(6, 64, 3, |inner| {
        let op = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("%"),
            Just("="),
            Just("<"),
            Just(">="),
            Just("<>"),
            Just("AND"),
            Just("OR"),
            Just("||"),
            Just("LIKE"),
        ];
        let function = prop_oneof![
            Just("abs"),
            Just("round"),
            Just("sqrt"),
            Just("upper"),
            Just("length"),
            Just("coalesce"),
            Just("sum"),
            Just("avg"),
            Just("max"),
            Just("count"),
            Just("to_timestamp"),
            Just("date_trunc"),
            Just("nope_fn"),
        ];
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("NOT {a}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (function, proptest::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("CASE WHEN {a} THEN {b} ELSE {c} END")),
            (
                inner.clone(),
                proptest::collection::vec(inner.clone(), 1..4)
            )
                .prop_map(|(a, list)| format!("{a} IN ({})", list.join(", "))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!(
                "CAST({a} AS {})",
                if b.len() % 2 == 0 {
                    "DOUBLE"
                } else {
                    "VARCHAR"
                }
            )),
            inner.prop_map(|a| format!("date_bin(INTERVAL '1 minute', {a})")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    let select = (
        proptest::collection::vec(expression(), 1..4),
        proptest::option::of(expression()),
        proptest::option::of(expression()),
        proptest::option::of(0u32..50),
        any::<bool>(),
    )
        .prop_map(
            |(columns, filter, group, limit, join): (
                Vec<String>,
                Option<String>,
                Option<String>,
                Option<u32>,
                bool,
            )| {
                let from = if join {
                    "m x JOIN m y ON x.asset = y.asset"
                } else {
                    "m"
                };
                let columns = if join {
                    "count(*)".to_string()
                } else {
                    columns.join(", ")
                };
                let mut sql = format!("SELECT {columns} FROM {from}");
                if let Some(f) = filter.filter(|_| !join) {
                    sql.push_str(&format!(" WHERE {f}"));
                }
                if let Some(g) = group.filter(|_| !join) {
                    sql.push_str(&format!(" GROUP BY {g}"));
                }
                if let Some(l) = limit {
                    sql.push_str(&format!(" LIMIT {l}"));
                }
                sql
            },
        )
        .boxed();
    prop_oneof![
        6 => select.clone(),
        1 => (select.clone(), select.clone()).prop_map(|(a, b)| format!("{a} UNION ALL {b}")),
        1 => select.clone().prop_map(|s| format!("SELECT count(*) FROM ({s}) AS t")),
        1 => select.clone().prop_map(|s| format!("EXPLAIN {s}")),
        1 => select.prop_map(|s| format!("COPY ({s}) TO '/tmp/doppel-fuzz.parquet'")),
        1 => expression().prop_map(|e| format!("INSERT INTO m (v) VALUES ({e})")),
        1 => Just("SHOW TABLES".to_string()),
        1 => "[ -~]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("DOPPEL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_sql_gets_rows_or_the_clients_error(sql in statement()) {
        let (_, lake, runtime) = lake();
        match runtime.block_on(lake.query("plant", &sql)) {
            Ok(_) => {}
            Err(e) => prop_assert!(
                matches!(e.kind(), ErrorKind::Client | ErrorKind::Limit),
                "{sql}\n -> {e:?} ({:?})", e.kind()
            ),
        }
        prop_assert!(!std::path::Path::new("/tmp/doppel-fuzz.parquet").exists());
    }
}
