//! The simulator through the CLI: run files, streaming into a real server, Monte Carlo
//! reports, and `doppel up` with the reference plant as its live source.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{Server, doppel, manifest_dir, sql};

fn scenarios() -> PathBuf {
    manifest_dir().join("../../scenarios")
}

fn ok(args: &[&str]) -> (String, String) {
    let out = doppel().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "doppel {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

#[test]
fn sim_run_writes_readings_labels_and_events_that_import_back() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("run.csv");
    let faults = scenarios().join("sensor_faults.toml");
    ok(&[
        "sim",
        "run",
        "--days",
        "3",
        "--seed",
        "3",
        "--scenario",
        faults.to_str().unwrap(),
        "--out",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 3 * 1440, "a header and one row a minute");
    assert!(
        lines[0].starts_with("time,pump1_status,pump1_speed,"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("2026-07-01T00:01:00Z,"),
        "{}",
        lines[1]
    );
    // Readings as instruments show them: 72.1, never 72.10000000000001 or -0.0.
    let noisy = lines[1..]
        .iter()
        .flat_map(|l| l.split(',').skip(1))
        .find(|cell| cell.split('.').nth(1).is_some_and(|d| d.len() > 4) || *cell == "-0.0");
    assert_eq!(noisy, None, "a reading printed with binary noise");
    // Weather reports every 5 minutes: the other rows leave its cell empty, never invented.
    let column = lines[0]
        .split(',')
        .position(|c| c == "weather_temp")
        .unwrap();
    let filled = lines[1..]
        .iter()
        .filter(|l| !l.split(',').nth(column).unwrap().is_empty())
        .count();
    assert!((810..=864).contains(&filled), "{filled} weather readings");

    let labels = std::fs::read_to_string(dir.path().join("run.labels.csv")).unwrap();
    let header = labels.lines().next().unwrap();
    for column in [
        "pump1_state",
        "pump1_health",
        "true_chw_supply_temp",
        "disruption1_sensor_fault_chw_supply_temp",
    ] {
        assert!(
            header.split(',').any(|c| c == column),
            "no {column} in {header}"
        );
    }
    let events: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.events.json")).unwrap())
            .unwrap();
    // Of the file's six faults, only the first starts (day 2) before the run's end.
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["start"], "2026-07-03T00:00:00Z");

    // The file is plain CSV: doppel's own importer reads it back, every row.
    let data = dir.path().join("lake");
    ok(&[
        "import",
        "--data",
        data.to_str().unwrap(),
        "--db",
        "sim",
        csv.to_str().unwrap(),
    ]);
    let (out, _) = ok(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--db",
        "sim",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM run",
    ]);
    assert_eq!(out.trim(), "n\n4320");

    // The same seed writes the same bytes (Parquet too).
    let a = dir.path().join("a.parquet");
    let b = dir.path().join("b.parquet");
    for path in [&a, &b] {
        ok(&[
            "sim",
            "run",
            "--days",
            "0.5",
            "--seed",
            "8",
            "--out",
            path.to_str().unwrap(),
        ]);
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(
        std::fs::read(dir.path().join("a.labels.parquet")).unwrap(),
        std::fs::read(dir.path().join("b.labels.parquet")).unwrap()
    );

    // A saved state forks: the next run starts where the last one ended.
    let state = dir.path().join("state.json");
    let forked = dir.path().join("fork.csv");
    ok(&[
        "sim",
        "run",
        "--days",
        "0.5",
        "--seed",
        "8",
        "--out",
        a.to_str().unwrap(),
        "--save-state",
        state.to_str().unwrap(),
    ]);
    ok(&[
        "sim",
        "run",
        "--days",
        "0.5",
        "--load-state",
        state.to_str().unwrap(),
        "--out",
        forked.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&forked).unwrap();
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("2026-07-01T12:01:00Z,"),
        "{}",
        text.lines().nth(1).unwrap()
    );
}

#[test]
fn sim_run_streams_line_protocol_into_a_running_doppel() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    ok(&[
        "sim",
        "run",
        "--days",
        "0.25",
        "--to",
        &server.url,
        "--bucket",
        "plant",
        "--speed",
        "max",
    ]);
    let rows = sql(&server, "plant", "SELECT count(*) AS n FROM chw_loop");
    let n = rows[0]["n"].as_i64().unwrap();
    assert!((350..=360).contains(&n), "{n} loop rows for 360 steps");
    let assets = sql(
        &server,
        "plant",
        "SELECT DISTINCT asset FROM pump ORDER BY asset",
    );
    assert_eq!(assets.len(), 4);
    let hot = sql(
        &server,
        "plant",
        "SELECT max(supply_temp) AS t FROM chw_loop",
    );
    let t = hot[0]["t"].as_f64().unwrap();
    assert!((6.5..9.0).contains(&t), "supply temperature {t}");
}

#[test]
fn scenario_reports_are_json_and_the_same_on_one_and_two_threads() {
    let heat = scenarios().join("heatwave.toml");
    let run = |threads: &str| {
        ok(&[
            "scenario",
            "run",
            heat.to_str().unwrap(),
            "--runs",
            "4",
            "--days",
            "3",
            "--seed",
            "5",
            "--format",
            "json",
            "--threads",
            threads,
        ])
        .0
    };
    let one = run("1");
    assert_eq!(one, run("2"));
    let report: serde_json::Value = serde_json::from_str(&one).unwrap();
    for part in ["scenario", "baseline"] {
        for kpi in [
            "energy_kwh",
            "energy_cost",
            "limit_excursion_minutes",
            "downtime_hours",
            "maintenance_cost",
            "failures",
        ] {
            for stat in ["mean", "p5", "p50", "p95"] {
                assert!(
                    report[part][kpi][stat].is_number(),
                    "{part}.{kpi}.{stat} in {one}"
                );
            }
        }
    }
    assert!(report["cluster"]["scenario_probability"].is_number());

    let (table, _) = ok(&[
        "scenario",
        "run",
        heat.to_str().unwrap(),
        "--runs",
        "2",
        "--days",
        "2",
    ]);
    assert!(
        table.contains("energy_kwh") && table.contains("P(at least 2 failures"),
        "{table}"
    );
}

/// A heat wave drawn to start between day 3 and day 20 never happens in a 3-day run: the
/// report counts it in no run and finds no difference in energy; in a 21-day run it
/// happens in every one.
#[test]
fn a_disruption_drawn_after_the_run_ends_is_not_counted() {
    let heat = scenarios().join("heatwave.toml");
    let report = |days: &str| -> serde_json::Value {
        let (out, _) = ok(&[
            "scenario",
            "run",
            heat.to_str().unwrap(),
            "--runs",
            "3",
            "--days",
            days,
            "--seed",
            "5",
            "--format",
            "json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let short = report("3");
    assert_eq!(short["disruptions_drawn"]["heat_wave"], 0, "{short}");
    assert_eq!(short["difference"]["energy_kwh"]["mean"], 0.0, "{short}");
    let long = report("21");
    assert_eq!(long["disruptions_drawn"]["heat_wave"], 3, "{long}");
}

/// A pump trip drawn among three names the pump that tripped: in the events file (label,
/// targets and effect, by name), and `scenario check` describes the file in words.
#[test]
fn drawn_events_and_scenario_checks_name_what_they_hit() {
    let dir = tempfile::tempdir().unwrap();
    let trip = scenarios().join("pump_trip.toml");
    let out = dir.path().join("run.csv");
    ok(&[
        "sim",
        "run",
        "--days",
        "30",
        "--step",
        "10m",
        "--seed",
        "4",
        "--scenario",
        trip.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let events: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.events.json")).unwrap())
            .unwrap();
    let event = &events[0];
    let pump = event["targets"][0].as_str().unwrap();
    assert!(["pump1", "pump2", "pump3"].contains(&pump), "{event}");
    assert_eq!(event["label"], format!("pump_trip:{pump}"));
    assert_eq!(event["effect"]["Trip"]["assets"], serde_json::json!([pump]));

    let (text, _) = ok(&["scenario", "check", trip.to_str().unwrap()]);
    assert!(
        text.contains("one of pump1, pump2, pump3 (drawn per run) trips"),
        "{text}"
    );
    assert!(!text.contains('{'), "{text}");
}

#[test]
fn a_bad_scenario_file_is_refused_with_where_and_what() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[disruption]]\nkind = \"heat_wave\"\ndelta_c = \"hot\"\n",
    )
    .unwrap();
    for command in [&["scenario", "check"][..], &["scenario", "run"][..]] {
        let out = doppel().args(command).arg(&file).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("bad.toml:3:11: disruption[0].delta_c: expected a number"),
            "{stderr}"
        );
    }
}

/// The last reading's time (s) in a stopped doppel's lake.
fn count_after_stop(dir: &tempfile::TempDir) -> i64 {
    let out = doppel()
        .args([
            "query",
            "--data",
            dir.path().to_str().unwrap(),
            "--db",
            "plant",
            "--format",
            "csv",
        ])
        .arg("SELECT CAST(max(time) AS BIGINT) / 1000000000 AS last FROM chw_loop")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// `doppel up` streams the reference plant into bucket `plant`: two hours of history (its end
/// at the demo speed), then real time, so no reading is ever stamped later than the wall
/// clock (`time > now()` finds nothing). Stopped and started again, it goes on where the
/// lake's data ends: no time twice, no history written again.
#[test]
fn up_streams_the_reference_plant_into_bucket_plant() {
    let dir = tempfile::tempdir().unwrap();
    let sql_on = |server: &Server, q: &str| -> serde_json::Value {
        let r = crate::common::post(
            &format!("{}/api/v3/query_sql", server.url),
            &[("Content-Type", "application/json")],
            serde_json::json!({"db": "plant", "q": q}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    // (rows, distinct times, rows stamped after now, first and last time in s)
    let count = |server: &Server| -> (i64, i64, i64, i64, i64) {
        let row = &sql_on(
            server,
            "SELECT count(*) AS n, count(DISTINCT time) AS d, \
             count(*) FILTER (WHERE time > now()) AS ahead, \
             CAST(min(time) AS BIGINT) / 1000000000 AS first, \
             CAST(max(time) AS BIGINT) / 1000000000 AS last FROM chw_loop",
        )[0];
        let get = |k: &str| row[k].as_i64().unwrap_or(0);
        (get("n"), get("d"), get("ahead"), get("first"), get("last"))
    };
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let up = || Server::up(dir.path(), &["--speed", "3600x", "--backfill", "2h"]);
    let server = up();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = (0, 0, 0, 0, 0);
    // Caught up: the last reading within a minute of now.
    while Instant::now() < deadline && (seen.0 == 0 || now_s() - seen.4 > 60) {
        if let Ok(r) = std::panic::catch_unwind(|| count(&server)) {
            seen = r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (n, distinct, ahead, first, last) = seen;
    assert!(
        n > 0 && now_s() - last <= 60,
        "caught up with now: {seen:?}"
    );
    assert!(
        (7_080..=7_260).contains(&(last - first)),
        "two hours of history: {seen:?}"
    );
    assert_eq!(ahead, 0, "no reading stamped after now");
    assert_eq!(n, distinct);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&server).2, 0, "live at real time, never ahead");
    assert!(server.stop().success());
    let stopped = count_after_stop(&dir);

    let server = up();
    std::thread::sleep(Duration::from_secs(3));
    let (again, distinct, ahead, first_again, last_again) = count(&server);
    assert_eq!(ahead, 0);
    assert_eq!(again, distinct, "a restart writes no time twice");
    assert_eq!(first_again, first, "a restart writes no history again");
    assert!(
        last_again >= stopped && last_again - stopped <= 60,
        "a restart goes on where the lake ends: {stopped} then {last_again}"
    );
    assert!(dir.path().join(".twin/reference-plant.json").exists());
    let status = server.stop();
    assert!(status.success(), "{status}");
}
