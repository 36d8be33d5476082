//! Decisions tried in the twin: simulations that start from the live plant.

use std::time::{Duration, Instant};

use crate::common::{Server, doppel, get, post};

/// `doppel up` streams six hours of the reference plant; the state estimator finds the hidden
/// wear of the pumps that ran close to what the plant itself saved at its stop, and a study
/// through the CLI and one through the API both start from that state.
#[test]
fn studies_start_from_the_live_plant_as_the_estimator_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::up(
        dir.path(),
        &["--speed", "3600x", "--backfill", "6h", "--no-model"],
    );
    let url = |path: &str| format!("{}{path}", server.url);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut estimate = serde_json::Value::Null;
    let now_s = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    while Instant::now() < deadline {
        let r = get(&url("/api/v1/twin/estimate"), &[]);
        if r.status == 200 {
            estimate = r.json();
            let at = estimate["at"].as_str().unwrap();
            let at_s = doppel_core::time::parse_rfc3339(at).unwrap() as f64 / 1e9;
            let observed = estimate["hidden"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h["readings"].as_u64().unwrap() > 0)
                .count();
            // Caught up with now, and every running unit seen.
            if now_s() - at_s < 120.0 && observed >= 5 {
                break;
            }
        } else {
            assert_eq!(r.status, 409, "before any reading: a conflict, {}", r.body);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let hidden = estimate["hidden"].as_array().expect("an estimate").clone();
    assert_eq!(hidden.len(), 7, "4 pumps and 3 chillers: {estimate}");
    assert!(
        estimate["missing"].as_array().unwrap().is_empty(),
        "{estimate}"
    );
    assert_eq!(estimate["state"]["plant"], "chilled-water");

    // Through the CLI: every run starts from the live plant.
    let scenario = crate::common::manifest_dir().join("../../scenarios/pump_trip.toml");
    let out = doppel()
        .args([
            "scenario",
            "run",
            scenario.to_str().unwrap(),
            "--from-live",
            "--url",
            &server.url,
            "--runs",
            "3",
            "--days",
            "1",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["from_live"], true);
    assert_eq!(report["runs"], 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("starting from the live plant at"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Through the API.
    let started = post(
        &url("/api/v1/scenario-runs"),
        &[("Content-Type", "application/json")],
        r#"{"scenario": "pump_trip", "runs": 2, "days": 1, "from_live": true}"#,
    );
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.json()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut job = serde_json::Value::Null;
    while Instant::now() < deadline {
        job = get(&url(&format!("/api/v1/scenario-runs/{id}")), &[]).json();
        if job["summary"]["state"] != "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(job["summary"]["state"], "done", "{job}");
    assert_eq!(job["summary"]["from_live"], true);
    assert_eq!(job["result"]["from_live"], true);

    // The plant's own state at its stop holds the true wear: the estimate of every pump that
    // ran is within a few hundredths of it.
    assert!(server.stop().success());
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".twin/reference-plant.json")).unwrap(),
    )
    .unwrap();
    let truth = &saved["state"]["state"];
    let mut compared = 0;
    for (i, h) in hidden.iter().enumerate() {
        if h["readings"].as_u64().unwrap() == 0 {
            continue;
        }
        let actual = if i < 4 {
            truth["wear"][i].as_f64().unwrap()
        } else {
            truth["fouling"][i - 4].as_f64().unwrap()
        };
        let est = h["value"].as_f64().unwrap();
        assert!(
            (est - actual).abs() < 0.03,
            "{} {}: estimated {est}, true {actual}",
            h["asset"],
            h["quantity"]
        );
        compared += 1;
    }
    assert!(compared >= 5, "{hidden:?}");
}
