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
    // Each unit's health is one less its estimated wear or fouling, with its trip odds.
    let health = estimate["health"].as_array().unwrap();
    assert_eq!(health.len(), 7, "{estimate}");
    for (h, x) in health.iter().zip(&hidden) {
        assert_eq!(h["asset"], x["asset"]);
        let expected = (1.0 - x["value"].as_f64().unwrap()).clamp(0.0, 1.0);
        assert!(
            (h["health"].as_f64().unwrap() - expected).abs() < 1e-9,
            "{h} {x}"
        );
        assert!(
            (0.0..1.0).contains(&h["trip_odds"].as_f64().unwrap()),
            "{h}"
        );
    }
    assert!(
        estimate["missing"].as_array().unwrap().is_empty(),
        "{estimate}"
    );
    // Honest instruments agree with each other: none is doubted.
    assert_eq!(estimate["distrusted"], serde_json::json!([]), "{estimate}");
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
    let refused = post(
        &url("/api/v1/scenario-runs"),
        &[("Content-Type", "application/json")],
        r#"{"scenario": "pump_trip", "runs": 2, "days": 1, "policy": "pid"}"#,
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("unknown policy `pid`"),
        "{}",
        refused.body
    );

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

/// `doppel policy check` lists a good file's reward and limits and names every problem of a
/// bad one; `doppel policy eval` compares policies from the same seeds and says what each
/// cost, as a table or JSON; `doppel sim run` takes the same names.
#[test]
fn policies_are_checked_and_compared_from_the_command_line() {
    let root = crate::common::manifest_dir().join("../..");
    let reference = root.join("examples/reference-plant/policy.toml");
    let out = doppel()
        .args(["policy", "check", reference.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("reward = -energy_cost") && text.contains("limit `supply temperature`"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "reward = \"-energy\"\n[[limit]]\nname = \"x\"\nkeep = \"pumps > 1\"\n",
    )
    .unwrap();
    let out = doppel()
        .args(["policy", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:1:12: reward: unknown KPI `energy`")
            && err.contains("bad.toml:4:9: limit[0].keep: unknown sensor or quantity `pumps`"),
        "{err}"
    );

    let out = doppel()
        .args([
            "policy",
            "eval",
            "--policy",
            "rules,mpc+shield",
            "--scenarios",
            root.join("scenarios/pump_trip.toml").to_str().unwrap(),
            "--seeds",
            "7..8",
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
    // Two policies on undisturbed weather and the pump trip, one seed.
    assert_eq!(report["episodes"].as_array().unwrap().len(), 4);
    let all: Vec<&serde_json::Value> = report["summary"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["scenario"] == "all")
        .collect();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["policy"], "rules");
    assert_eq!(all[1]["policy"], "mpc+shield");
    assert_eq!(all[1]["decisions"], 2 * 96);
    assert!(all[1]["against_rules_pct"].is_number());

    let out = doppel()
        .args(["policy", "eval", "--policy", "pid", "--seeds", "1..2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("unknown policy `pid`: use one of none, rules, mpc"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A small training: weights, card, reward curve; then at work by name.
    let policy_dir = dir.path().join("p1");
    let out = doppel()
        .args([
            "policy",
            "train",
            "--algo",
            "grpo",
            "--scenarios",
            root.join("scenarios/pump_trip.toml").to_str().unwrap(),
            "--out",
            policy_dir.to_str().unwrap(),
            "--iterations",
            "2",
            "--groups",
            "1",
            "--group",
            "4",
            "--validations",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // By default the network moves the setpoint beside the operator, from a fresh start; the
    // folder keeps the better scored of where it started and where it ended.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("no cold start (a fresh network)"), "{said}");
    assert!(said.contains("kept the network of iteration"), "{said}");
    assert!(policy_dir.join("last/policy.safetensors").exists());
    for file in ["policy.safetensors", "card.json", "reward.png"] {
        assert!(policy_dir.join(file).exists(), "{file}");
    }
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(policy_dir.join("card.json")).unwrap())
            .unwrap();
    assert_eq!(card["algo"], "grpo");
    assert_eq!(card["settings"]["control"], "setpoint");
    assert_eq!(card["settings"]["reward_scale"], 5.0);
    assert_eq!(card["validation"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        card["scenarios"],
        serde_json::json!(["undisturbed", "pump_trip"])
    );
    assert!(card["reward"].as_str().unwrap().contains("energy_cost"));
    // The reference, PPO with a value network, on the same small budget; it trains in one go.
    let ppo_dir = dir.path().join("p2");
    let train_ppo = |extra: &[&str]| {
        doppel()
            .args(["policy", "train", "--algo", "ppo", "--scenarios"])
            .arg(root.join("scenarios/pump_trip.toml"))
            .arg("--out")
            .arg(&ppo_dir)
            .args(["--iterations", "2", "--groups", "1", "--group", "4"])
            .args(["--control", "all"])
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = train_ppo(&["--resume"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("PPO (the reference) trains in one go"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = train_ppo(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ppo_dir.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["algo"], "ppo");
    assert_eq!(card["iterations_done"], 2);
    // Moving everything, it first imitates the operator.
    assert_eq!(card["settings"]["control"], "all");
    assert_eq!(card["cold_start"]["steps"], 300);
    assert!(
        card["cold_start"]["agreement"].as_f64().unwrap() > 0.5,
        "{card}"
    );
    assert!(ppo_dir.join("reward.png").exists());
    let out = doppel()
        .args([
            "policy",
            "eval",
            "--policy",
            &format!(
                "rules,grpo:{},ppo:{}",
                policy_dir.display(),
                ppo_dir.display()
            ),
            "--no-undisturbed",
            "--scenarios",
            root.join("scenarios/pump_trip.toml").to_str().unwrap(),
            "--seeds",
            "5..6",
            "--days",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("grpo:") && said.contains("ppo:"), "{said}");

    let run = dir.path().join("run.parquet");
    let out = doppel()
        .args([
            "sim",
            "run",
            "--days",
            "0.5",
            "--policy",
            "mpc",
            "--out",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.exists());
}

/// `doppel up` with two hours of history and MPC at work on it, deciding every minute with 8 °C
/// the only other setpoint (so it proposes at once), plus `extra` flags.
fn up_with_mpc(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut flags = vec![
        "--speed",
        "3600x",
        "--backfill",
        "2h",
        "--no-model",
        "--policy",
        "mpc:period=1m,horizon=1h,setpoints=8",
    ];
    flags.extend_from_slice(extra);
    Server::up(dir, &flags)
}

/// `doppel up --policy ... --mode approve`: once the plant reaches now, MPC's decisions wait as
/// proposals with their simulated effect; one approved (audited: who and why) is done by the
/// plant, whose setpoint sensor then reads the new value; decisions are refused without who,
/// twice, or for an unknown id; every change is a row of `doppel_proposals`.
#[test]
fn proposals_wait_for_an_operator_and_approved_ones_reach_the_plant() {
    let dir = tempfile::tempdir().unwrap();
    let server = up_with_mpc(dir.path(), &["--mode", "approve"]);
    let url = |path: &str| format!("{}{path}", server.url);
    let json = |path: &str| get(&url(path), &[]).json();
    let post_json =
        |path: &str, body: &str| post(&url(path), &[("Content-Type", "application/json")], body);
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut approved = serde_json::Value::Null;
    while Instant::now() < deadline && approved.is_null() {
        if let Some(p) = json("/api/v1/proposals?state=pending")
            .as_array()
            .unwrap()
            .first()
        {
            assert_eq!(p["mode"], "approve");
            assert!(
                p["summary"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "chw.supply_setpoint to 8"),
                "{p}"
            );
            // Its effect: the change against doing nothing over 4 h, from 8 futures.
            assert_eq!(p["effect"]["runs"], 8);
            assert!(p["effect"]["total_cost"]["mean"].is_number(), "{p}");
            let id = p["id"].as_str().unwrap();
            let nobody = post_json(&format!("/api/v1/proposals/{id}/approve"), r#"{"by": " "}"#);
            assert_eq!(nobody.status, 400, "{}", nobody.body);
            let r = post_json(
                &format!("/api/v1/proposals/{id}/approve"),
                r#"{"by": "ana", "note": "cheaper, no excursion"}"#,
            );
            // A newer proposal may have replaced it meanwhile (409): take the next.
            if r.status == 200 {
                approved = r.json();
            } else {
                assert_eq!(r.status, 409, "{}", r.body);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(approved["state"], "approved", "{approved}");
    let id = approved["id"].as_str().unwrap().to_owned();
    // Done by the plant at its next step: executed, and the setpoint sensor reads 8.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut setpoint = None;
    while Instant::now() < deadline {
        let chw = json("/api/v1/assets/chw");
        setpoint = chw["sensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "chw_setpoint")
            .and_then(|s| s["value"].as_f64());
        if setpoint == Some(8.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(setpoint, Some(8.0));
    let all = json("/api/v1/proposals");
    let mine = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .unwrap();
    assert_eq!(mine["state"], "executed");
    assert_eq!(mine["decided_by"], "ana");
    let again = post_json(&format!("/api/v1/proposals/{id}/reject"), r#"{"by": "bo"}"#);
    assert_eq!(again.status, 409, "{}", again.body);
    let unknown = post_json("/api/v1/proposals/nope/approve", r#"{"by": "bo"}"#);
    assert_eq!(unknown.status, 404);
    let bad = get(&url("/api/v1/proposals?state=maybe"), &[]);
    assert_eq!(bad.status, 400);

    // The audit trail in the lake.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = crate::common::sql(
            &server,
            "plant",
            &format!(
                "SELECT state, decided_by, note FROM doppel_proposals WHERE id = '{id}' ORDER BY time"
            ),
        );
        let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
        if states == ["pending", "approved", "executed"] {
            assert_eq!(rows[1]["note"], "cheaper, no excursion");
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // After a restart (no policy at work now) the list is read back from the lake: the
    // executed one as it was; one left waiting cannot be done any more and has expired.
    assert!(server.stop().success());
    let again = Server::up(dir.path(), &["--speed", "3600x", "--no-model"]);
    let list = get(&format!("{}/api/v1/proposals", again.url), &[]).json();
    let list = list.as_array().unwrap();
    let mine = list.iter().find(|p| p["id"] == id.as_str()).unwrap();
    assert_eq!(mine["state"], "executed", "{mine}");
    assert_eq!(mine["decided_by"], "ana", "{mine}");
    assert_eq!(mine["note"], "cheaper, no excursion", "{mine}");
    assert!(
        mine["summary"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "chw.supply_setpoint to 8"),
        "{mine}"
    );
    for p in list {
        assert!(
            !["pending", "approved"].contains(&p["state"].as_str().unwrap()),
            "{p}"
        );
        if p["state"] == "expired" && p["decided_by"].is_null() {
            assert!(
                p["note"].is_null() || p["note"] == "the server restarted before it was done",
                "{p}"
            );
        }
    }
    assert!(again.stop().success());
}

/// In shadow mode the rule-based operator keeps the plant: the policy's decisions are only
/// recorded, and a policy or mode that does not exist stops `doppel up` with why.
#[test]
fn shadow_proposals_are_recorded_and_bad_policies_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = up_with_mpc(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut recorded = Vec::new();
    while Instant::now() < deadline && recorded.is_empty() {
        recorded = get(
            &format!("{}/api/v1/proposals?state=recorded", server.url),
            &[],
        )
        .json()
        .as_array()
        .unwrap()
        .clone();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!recorded.is_empty());
    assert_eq!(recorded[0]["mode"], "shadow");
    assert!(
        recorded[0]["effect"].is_null(),
        "no Monte Carlo in shadow mode"
    );
    drop(server);

    for (flags, says) in [
        (vec!["--policy", "pid"], "unknown policy `pid`"),
        (vec!["--policy", "mpc", "--mode", "yolo"], "not a mode"),
        (vec!["--mode", "auto"], "name the policy"),
    ] {
        let out = doppel()
            .args([
                "up",
                "--data",
                dir.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(flags)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
