//! The twin's own sensor model: trained in the background from the lake, its detector chosen
//! on held-out rows, scoring every minute, back at work after a restart.

use std::time::{Duration, Instant};

use crate::common::{Server, get, sql};

/// Polls `GET /api/v1/models` until the model is at work; its answer, and the states seen on
/// the way.
fn wait_until_live(server: &Server, within: Duration) -> (serde_json::Value, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut models = serde_json::Value::Null;
    let mut seen: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        let r = get(&format!("{}/api/v1/models", server.url), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        models = r.json();
        let state = models["status"]["state"].as_str().unwrap().to_owned();
        assert_ne!(state, "failed", "{models}");
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == "live" {
            return (models, seen);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the twin's model was not at work within {within:?}: {models}");
}

/// `doppel up` over a day of history pretrains the twin's model, chooses the detector the
/// rules see by injecting faults into rows it never trained on, scores each asset with its
/// sensors' shares, writes the scores into the lake, and after a restart puts the
/// registered model back to work without training again.
#[test]
fn up_trains_its_own_model_and_puts_it_to_work() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--backfill",
        "1d",
        "--catch-up",
        "0",
        "--model-steps",
        "40",
        "--model-history",
        "12h",
    ];
    let server = Server::up(dir.path(), &args);
    let (models, seen) = wait_until_live(&server, Duration::from_secs(180));
    // Waiting for history, then training (with its step) before it goes to work.
    assert!(seen.contains(&"training".to_owned()), "{seen:?}");
    let status = &models["status"];
    assert_eq!(status["name"], "twin-plant", "{models}");
    assert_eq!(status["live_version"], 1, "{models}");
    let versions = models["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "{models}");
    let v1 = &versions[0];
    assert_eq!(v1["live"], true, "{v1}");
    assert!(
        v1["trained_on"][0]["steps"].as_u64().unwrap() >= 720,
        "{v1}"
    );
    // Its training curve, for the dashboard: [step, train loss, validation loss].
    let curve = v1["curve"].as_array().unwrap();
    assert!(!curve.is_empty(), "{v1}");
    assert!(curve.last().unwrap()[0].as_u64().unwrap() <= 40, "{v1}");
    let choice = &v1["detector"];
    assert!(choice["faults"].as_u64().unwrap() >= 32, "{choice}");
    for detector in ["model", "pca", "both"] {
        let found = choice["detected"][detector].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&found), "{choice}");
    }
    let chosen = choice["detector"].as_str().unwrap();
    assert!(["model", "pca", "both"].contains(&chosen), "{choice}");
    assert_eq!(status["detector"], chosen);
    assert!(choice["why"].as_str().unwrap().contains("faults injected"));
    // PCA stays unless another detector found more.
    let found = |d: &str| choice["detected"][d].as_f64().unwrap();
    if chosen != "pca" {
        assert!(found(chosen) > found("pca"), "{choice}");
    }
    // The card on disk says the same.
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".models/twin-plant/v1/model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(card["live_scoring"]["choice"]["detector"], chosen);

    // Each asset's latest minute, with its sensors' shares (its own sensors, adding to one).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut view = serde_json::Value::Null;
    while Instant::now() < deadline && !view["anomaly_model"].is_object() {
        std::thread::sleep(Duration::from_millis(500));
        view = get(
            &format!("{}/api/v1/assets/pump1?window=1m&points=1", server.url),
            &[],
        )
        .json();
    }
    let scored = &view["anomaly_model"];
    assert!(
        (0.0..=1.0).contains(&scored["score"].as_f64().unwrap()),
        "{view}"
    );
    let shares = scored["sensors"].as_array().unwrap();
    assert!(shares.len() >= 2, "{scored}");
    let total: f64 = shares.iter().map(|s| s[1].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{scored}");
    assert!(
        shares
            .iter()
            .all(|s| s[0].as_str().unwrap().starts_with("pump1_")),
        "{scored}"
    );
    assert_eq!(view["anomaly_detector"], chosen);
    // Back in the lake, as ordinary tables.
    let rows = sql(
        &server,
        "plant",
        "SELECT count(*) AS n FROM doppel_anomaly WHERE detector = 'model' AND asset = 'pump1'",
    );
    assert!(rows[0]["n"].as_i64().unwrap() >= 1, "{rows:?}");
    let rows = sql(
        &server,
        "plant",
        "SELECT sum(share) AS total FROM doppel_anomaly_sensors WHERE asset = 'pump1' \
         GROUP BY time ORDER BY time DESC LIMIT 1",
    );
    assert!(
        (rows[0]["total"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "{rows:?}"
    );
    // The shipped rules read the supply temperature's forecast half an hour ahead: a head
    // was fine-tuned for it, and each minute its band reaches the view and the lake.
    let forecast_head = &card["forecast_head"];
    assert_eq!(forecast_head["horizon"], 30, "{}", card["forecast_head"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut bands = serde_json::Value::Null;
    while Instant::now() < deadline && bands.as_array().is_none_or(|b| b.is_empty()) {
        bands = get(
            &format!("{}/api/v1/assets/chw?window=1m&points=1", server.url),
            &[],
        )
        .json()["forecasts"]
            .clone();
        std::thread::sleep(Duration::from_millis(500));
    }
    let band = &bands[0];
    assert_eq!(band["sensor"], "chw_supply_temp", "{bands}");
    assert_eq!(band["horizon_minutes"], 30, "{bands}");
    let (p10, p50, p90) = (
        band["p10"].as_f64().unwrap(),
        band["p50"].as_f64().unwrap(),
        band["p90"].as_f64().unwrap(),
    );
    assert!(p10 <= p50 && p50 <= p90, "{band}");
    assert!((3.0..12.0).contains(&p50), "a supply temperature: {band}");
    let rows = sql(
        &server,
        "plant",
        "SELECT count(*) AS n FROM doppel_forecast WHERE sensor = 'chw_supply_temp' \
         AND horizon = '30m'",
    );
    assert!(rows[0]["n"].as_i64().unwrap() >= 1, "{rows:?}");
    drop(server);

    // A restart finds the registered model and puts it back to work: no second version.
    let server = Server::up(dir.path(), &args);
    let (models, _) = wait_until_live(&server, Duration::from_secs(30));
    assert_eq!(models["status"]["live_version"], 1, "{models}");
    assert_eq!(models["versions"].as_array().unwrap().len(), 1, "{models}");
    assert_eq!(models["status"]["step"], 0, "not trained again: {models}");
}

/// `doppel model twin` makes the same model from a recorded run, and `doppel rules test
/// --model` backtests rules that read its anomaly scores (unknown without it); a model
/// that no twin calibrated is refused, saying why.
#[test]
fn a_twin_model_from_files_backtests_anomaly_rules() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let out = crate::common::doppel().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&[
        "sim",
        "run",
        "--days",
        "2",
        "--seed",
        "7",
        "--out",
        &p("run.csv"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[
        "model",
        "twin",
        "--input",
        &p("run.csv"),
        "--steps",
        "30",
        "--out",
        &p("tw"),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("fitting a twin's model on 2880 minute(s)"),
        "{err}"
    );
    assert!(err.contains("faults injected into held-out rows"), "{err}");
    std::fs::write(
        p("rules.toml"),
        "[[rule]]\nname = \"pump1 unusual\"\nwhen = \"anomaly(pump1) > 0.5\"\n",
    )
    .unwrap();
    let test = |extra: &[&str]| {
        let (rules, input) = (p("rules.toml"), p("run.csv"));
        let mut args = vec!["rules", "test", &rules, "--input", &input];
        args.extend(extra);
        run(&args)
    };
    let (ok, out, err) = test(&[]);
    assert!(ok, "{err}");
    assert!(
        out.contains(": 0 alert(s)"),
        "no model: anomaly() unknown: {out}"
    );
    let (ok, out, err) = test(&["--model", &p("tw")]);
    assert!(ok, "{err}");
    assert!(
        err.contains("anomaly(): the ") && err.contains(" detector of "),
        "{err}"
    );
    assert!(out.contains("pump1 unusual (pump1): 2026-07-0"), "{out}");
    // A model no twin calibrated has no scores to hand in.
    let (ok, err) =
        crate::model::pretrain_quick(&[&p("run.csv")], "5", &p("plain"), &["--batch", "4"]);
    assert!(ok, "{err}");
    let (ok, _, err) = test(&["--model", &p("plain")]);
    assert!(!ok && err.contains("is not a twin's model"), "{err}");
}

/// As data grows the twin retrains: a new version is trained on the latest history, both are
/// scored on the rows neither trained on, and the new one goes to work only if it did better
/// there; the comparison is kept either way, and `doppel model list` shows it.
#[test]
fn the_twin_retrains_and_promotes_only_a_better_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::up(
        dir.path(),
        &[
            "--backfill",
            "2d",
            "--speed",
            "120x",
            "--catch-up",
            "2m",
            "--model-steps",
            "30",
            "--retrain-every",
            "100m",
        ],
    );
    wait_until_live(&server, Duration::from_secs(180));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut models = serde_json::Value::Null;
    while Instant::now() < deadline {
        models = get(&format!("{}/api/v1/models", server.url), &[]).json();
        if models["versions"].as_array().is_some_and(|v| v.len() >= 2) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let versions = models["versions"].as_array().unwrap();
    assert!(versions.len() >= 2, "no retraining: {models}");
    let v2 = &versions[1];
    let promotion = &v2["promotion"];
    assert_eq!(promotion["against"], 1, "{v2}");
    let (new, old) = (
        promotion["candidate_error"].as_f64().unwrap(),
        promotion["live_error"].as_f64().unwrap(),
    );
    let promoted = promotion["promoted"].as_bool().unwrap();
    assert_eq!(promoted, new < old, "{promotion}");
    // Compared on rows after v1's data and inside v2's validation tail.
    assert!(
        promotion["from"].as_str().unwrap() > versions[0]["trained_on"][0]["end"].as_str().unwrap(),
        "{models}"
    );
    let live = if promoted { 2 } else { 1 };
    assert_eq!(models["status"]["live_version"], live, "{models}");
    assert_eq!(versions[live - 1]["live"], true, "{models}");
    let out = crate::common::doppel()
        .args(["model", "list", "--data", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    let said = if promoted {
        "replaced v1: error"
    } else {
        "lost to v1: error"
    };
    assert!(listed.contains(said), "{listed}");
    assert!(listed.contains("at work in the twin"), "{listed}");
}

/// `GET /api/v1/models` sets every forecast band written to `doppel_forecast` whose minute has
/// come against that minute's mean reading: the shares inside, below and above, hour by hour;
/// a band whose minute has no reading yet is not counted.
#[test]
fn live_forecast_bands_are_scored_against_what_came() {
    let dir = tempfile::tempdir().unwrap();
    let spec = crate::common::manifest_dir().join("../../examples/cooling-plant/twin.toml");
    let server = Server::start(
        dir.path(),
        &["--spec", spec.to_str().unwrap(), "--no-model"],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Twelve minutes of pump-1's speed, each minute's mean 0.5, in the last full hour.
    let hour = (now / 3600 - 1) * 3600;
    let mut lines = String::new();
    for m in 0..12 {
        let t = hour + 60 * m;
        lines += &format!(
            "pumps,asset=pump-1 speed=0.4 {t}\npumps,asset=pump-1 speed=0.6 {}\n",
            t + 30
        );
    }
    // Ten bands due: eight hold the mean, one lies above it, one below; one more is not due.
    for m in 0..11 {
        let (p10, p90) = match m {
            8 => (0.6, 0.7),
            9 => (0.2, 0.3),
            _ => (0.45, 0.55),
        };
        let t = hour + 60 * (m + 2);
        lines += &format!(
            "doppel_forecast,sensor=pump-1.speed,horizon=30m p10={p10},p50=0.5,p90={p90} {t}\n"
        );
    }
    let r = crate::common::post(
        &format!("{}/api/v2/write?bucket=plant&precision=s", server.url),
        &[],
        lines,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let models = get(&format!("{}/api/v1/models", server.url), &[]).json();
    assert_eq!(models["coverage_target"], 0.8, "{models}");
    let coverage = models["coverage"].as_array().unwrap();
    assert_eq!(coverage.len(), 1, "{models}");
    let c = &coverage[0];
    assert_eq!(c["sensor"], "pump-1.speed");
    assert_eq!(c["horizon"], "30m");
    assert_eq!(c["due"], 10, "{c}");
    assert!((c["inside"].as_f64().unwrap() - 0.8).abs() < 1e-9, "{c}");
    assert!((c["below"].as_f64().unwrap() - 0.1).abs() < 1e-9, "{c}");
    assert!((c["above"].as_f64().unwrap() - 0.1).abs() < 1e-9, "{c}");
    assert_eq!(
        c["hourly"],
        serde_json::json!([[hour * 1000, 0.8, 10]]),
        "{c}"
    );
    assert!(server.stop().success());
}
