//! History import over the real public data sets, and SQL answers checked against sums
//! computed here independently from the raw files.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

fn run(args: &[&str]) -> String {
    let out = doppel()
        .args(args)
        .env("DOPPEL_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "doppel {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn query_csv(data: &Path, db: &str, sql: &str) -> Vec<Vec<String>> {
    let text = run(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--db",
        db,
        "--format",
        "csv",
        sql,
    ]);
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn every_shared_data_file_imports() {
    let shared = shared_data();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let ett: Vec<String> = ["ETTh1", "ETTh2", "ETTm1", "ETTm2"]
        .iter()
        .map(|n| {
            shared
                .join(format!("ett/{n}.csv"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec!["import", "--data", data, "--db", "ett"];
    args.extend(ett.iter().map(String::as_str));
    run(&args);
    let counts = query_csv(
        dir.path(),
        "ett",
        "SELECT 'h1', count(*) FROM \"ETTh1\" UNION ALL SELECT 'h2', count(*) FROM \"ETTh2\" \
         UNION ALL SELECT 'm1', count(*) FROM \"ETTm1\" UNION ALL SELECT 'm2', count(*) FROM \"ETTm2\" ORDER BY 1",
    );
    let counts: Vec<_> = counts.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(counts, ["17420", "17420", "69680", "69680"]);
    let first = query_csv(
        dir.path(),
        "ett",
        "SELECT time, \"HUFL\", \"OT\" FROM \"ETTm1\" ORDER BY time LIMIT 1",
    );
    let raw = std::fs::read_to_string(shared.join("ett/ETTm1.csv")).unwrap();
    let cells: Vec<&str> = raw.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(first[0][0], "2016-07-01T00:00:00");
    assert_eq!(
        first[0][1].parse::<f64>().unwrap(),
        cells[1].parse::<f64>().unwrap()
    );
    assert_eq!(
        first[0][2].parse::<f64>().unwrap(),
        cells[7].parse::<f64>().unwrap()
    );

    // Tennessee Eastman: 52 whitespace-separated columns, no header, no time; d00.dat transposed.
    let names: Vec<String> = (1..=41)
        .map(|i| format!("xmeas_{i}"))
        .chain((1..=11).map(|i| format!("xmv_{i}")))
        .collect();
    let names = names.join(",");
    let mut expected_rows = BTreeMap::new();
    for entry in std::fs::read_dir(shared.join("tep")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "dat") {
            continue;
        }
        let tag = format!("run={stem}");
        let mut args = vec![
            "import",
            "--data",
            data,
            "--db",
            "tep",
            "--measurement",
            "tep",
            "--tag",
            &tag,
            "--columns",
            &names,
            "--start",
            "2024-01-01T00:00:00Z",
            "--period",
            "3m",
        ];
        if stem == "d00" {
            args.push("--transpose");
        }
        let path_text = path.to_string_lossy().into_owned();
        args.push(&path_text);
        run(&args);
        let rows = match stem.as_str() {
            "d00" => 500,
            s if s.ends_with("_te") => 960,
            _ => 480,
        };
        expected_rows.insert(stem, rows);
    }
    assert_eq!(expected_rows.len(), 44, "22 training and 22 test files");
    let rows = query_csv(
        dir.path(),
        "tep",
        "SELECT run, count(*), count(xmv_11) FROM tep GROUP BY run ORDER BY run",
    );
    let found: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(found, expected_rows);
    assert!(
        rows.iter().all(|r| r[1] == r[2]),
        "every row has all 52 variables"
    );
    // d00.dat is stored transposed: its first sample is the first column of the file.
    let d00 = std::fs::read_to_string(shared.join("tep/d00.dat")).unwrap();
    let first_column: Vec<f64> = d00
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let row = query_csv(
        dir.path(),
        "tep",
        "SELECT xmeas_1, xmv_11 FROM tep WHERE run = 'd00' ORDER BY time LIMIT 1",
    );
    assert_eq!(row[0][0].parse::<f64>().unwrap(), first_column[0]);
    assert_eq!(row[0][1].parse::<f64>().unwrap(), first_column[51]);
}

#[test]
fn sql_aggregates_match_sums_computed_from_the_raw_file() {
    let shared = shared_data();
    let file = shared.join("ett/ETTh1.csv");
    // Independent answer: daily count, mean, min and max of OT straight from the CSV.
    let mut days: BTreeMap<String, (u64, f64, f64, f64)> = BTreeMap::new();
    for line in std::fs::read_to_string(&file).unwrap().lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let day = cells[0][..10].to_owned();
        let ot: f64 = cells[7].parse().unwrap();
        let e = days.entry(day).or_insert((0, 0.0, f64::MAX, f64::MIN));
        e.0 += 1;
        e.1 += ot;
        e.2 = e.2.min(ot);
        e.3 = e.3.max(ot);
    }

    // Import through a running server this time, so the HTTP write path is covered too.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let file_text = file.to_string_lossy().into_owned();
    run(&[
        "import",
        "--url",
        &server.url,
        "--db",
        "ett",
        "--batch-rows",
        "5000",
        &file_text,
    ]);
    let rows = sql(
        &server,
        "ett",
        "SELECT date_bin(INTERVAL '1 day', time) AS day, count(*) AS n, avg(\"OT\") AS mean, \
         min(\"OT\") AS lo, max(\"OT\") AS hi FROM \"ETTh1\" GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(rows.len(), days.len());
    for (row, (day, (n, sum, lo, hi))) in rows.iter().zip(&days) {
        assert_eq!(&row["day"].as_str().unwrap()[..10], day);
        assert_eq!(row["n"].as_u64().unwrap(), *n, "{day}");
        // serde_json's float parsing may be one unit in the last place off: compare closely.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        let mean = sum / *n as f64;
        assert!(
            close(row["mean"].as_f64().unwrap(), mean),
            "{day}: {row} vs {mean}"
        );
        assert!(
            close(row["lo"].as_f64().unwrap(), *lo),
            "{day}: {row} vs {lo}"
        );
        assert!(
            close(row["hi"].as_f64().unwrap(), *hi),
            "{day}: {row} vs {hi}"
        );
    }
    // The same answers after a restart, now from Parquet.
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[]);
    let again = sql(
        &server,
        "ett",
        "SELECT date_bin(INTERVAL '1 day', time) AS day, count(*) AS n, avg(\"OT\") AS mean, \
         min(\"OT\") AS lo, max(\"OT\") AS hi FROM \"ETTh1\" GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(again, rows);
}

#[test]
fn import_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    // Writes `name` and imports it into database `x` of the test's lake.
    let import = |name: &str, text: &str| {
        let csv = dir.path().join(name);
        std::fs::write(&csv, text).unwrap();
        doppel()
            .args([
                "import",
                "--data",
                dir.path().join("lake").to_str().unwrap(),
                "--db",
                "x",
                csv.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let out = import(
        "bad.csv",
        "time,v\n2020-01-01T00:00:00Z,1\n2020-01-01T00:01:00Z,abc\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.csv:3, column `v`: value `abc` is not a float"),
        "{stderr}"
    );

    // A column with no value at all imports nothing, and says so.
    let out = import(
        "dead.csv",
        "time,v,dead\n2020-01-01T00:00:00Z,1,NaN\n2020-01-01T00:01:00Z,2,\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("column(s) dead had no value at all")
            && stderr.contains("2 rows, 2 values"),
        "{stderr}"
    );
}

#[test]
fn spec_check_reports_every_problem() {
    let examples = crate::common::manifest_dir().join("../../examples/cooling-plant/twin.toml");
    let text = run(&["spec", "check", examples.to_str().unwrap()]);
    assert!(
        text.contains("ok (1 site(s), 4 asset(s), 8 sensor(s))"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("twin.toml");
    let spec = std::fs::read_to_string(&examples)
        .unwrap()
        .replace("parent = \"chw-loop\"\nattributes = { rated_kw = 30.0, rated_flow_m3h = 250.0 }\n\n[[asset]]\nid = \"pump-2\"", "parent = \"nowhere\"\nattributes = {}\n\n[[asset]]\nid = \"pump-2\"")
        .replace("max = 45.0", "max = -45.0");
    std::fs::write(&bad, spec).unwrap();
    let out = doppel()
        .args(["spec", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("twin.toml:22:10: asset[1].parent: unknown parent asset `nowhere`"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("is above max -45").count(), 2, "{stdout}");
}
