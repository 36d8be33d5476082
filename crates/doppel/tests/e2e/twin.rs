//! The live twin over HTTP: `/api/v1/twin` and `/api/v1/assets/{id}` on a doppel serving a
//! twin spec, fed by the writes it acknowledges.

use std::time::{Duration, Instant};

use crate::common::{Server, doppel, free_port, get, manifest_dir, post};

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `doppel serve` with the example spec and one rule, in `dir`; `extra` flags after.
fn serve_example_with_rule(
    dir: &tempfile::TempDir,
    name: &str,
    when: &str,
    extra: &[&str],
) -> Server {
    let spec = manifest_dir().join("../../examples/cooling-plant/twin.toml");
    let rules = dir.path().join("rules.toml");
    let text = format!(
        "[[rule]]\nname = {}\nwhen = {}\n",
        toml_string(name),
        toml_string(when)
    );
    std::fs::write(&rules, text).unwrap();
    let mut args = vec![
        "--spec".to_owned(),
        spec.to_str().unwrap().to_owned(),
        "--rules".to_owned(),
        rules.to_str().unwrap().to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(dir.path(), &args)
}

/// A TOML basic string of `text`.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes line protocol (second precision) into bucket `plant`; it must be acknowledged.
fn write_plant(server: &Server, lines: String) {
    let r = post(
        &format!("{}/api/v2/write?bucket=plant&precision=s", server.url),
        &[],
        lines,
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

/// Listens to `/api/v1/events` (checking it is an event stream): each event's name and data,
/// from about 300 ms after the call on.
fn listen_events(server: &Server) -> std::sync::mpsc::Receiver<(String, String)> {
    use std::io::BufRead;
    let url = format!("{}/api/v1/events", server.url);
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    std::thread::spawn(move || {
        let response = ureq::get(&url).call().unwrap();
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut event = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ")
                && tx.send((event.clone(), data.to_owned())).is_err()
            {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    rx
}

fn sensor<'a>(twin: &'a serde_json::Value, asset: &str, id: &str) -> &'a serde_json::Value {
    twin["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["assets"].as_array().unwrap())
        .find(|a| a["id"] == asset)
        .and_then(|a| {
            a["sensors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id)
        })
        .unwrap_or_else(|| panic!("no sensor {id} of {asset} in {twin}"))
}

fn asset_state(twin: &serde_json::Value, asset: &str) -> String {
    twin["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["assets"].as_array().unwrap())
        .find(|a| a["id"] == asset)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A doppel serving the example spec: each sensor's latest value comes from the writes it
/// acknowledged; a value outside the spec's range puts the asset in alarm; an old reading is
/// stale; a sensor never written has no data; and a restart starts from the lake's last
/// values. An unknown asset is 404 with the assets there are; without a spec, 404 says how
/// to get a twin.
#[test]
fn the_twin_keeps_each_sensors_latest_value_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let spec = manifest_dir().join("../../examples/cooling-plant/twin.toml");
    let spec = spec.to_str().unwrap();
    let server = Server::start(dir.path(), &["--spec", spec]);
    let write = |lines: String| write_plant(&server, lines);
    let twin = || get(&format!("{}/api/v1/twin", server.url), &[]).json();
    let t = now_s();
    write(format!(
        "pumps,asset=pump-1 speed=0.5,vibration_rms=2.5 {}\npumps,asset=pump-1 speed=0.6 {}",
        t - 1,
        t
    ));
    let view = twin();
    let speed = sensor(&view, "pump-1", "pump-1.speed");
    assert_eq!(speed["value"], 0.6, "the newest of the batch: {speed}");
    assert_eq!(speed["quality"], "ok");
    assert_eq!(
        sensor(&view, "pump-1", "pump-1.bearing_temp")["quality"],
        "no_data"
    );
    assert_eq!(
        asset_state(&view, "pump-1"),
        "stale",
        "a sensor without data"
    );

    // Outside the spec's range (speed 0..1): the asset is in alarm.
    write(format!("pumps,asset=pump-1 speed=1.7 {}", t + 1 - 1));
    let view = twin();
    assert_eq!(
        sensor(&view, "pump-1", "pump-1.speed")["quality"],
        "out_of_range"
    );
    assert_eq!(asset_state(&view, "pump-1"), "alarm");
    // Older than three sampling periods (10 s): stale.
    write(format!("pumps,asset=pump-1 speed=0.4 {}", t + 1));
    write(format!("pumps,asset=pump-1 vibration_rms=3 {}", t - 120));
    let view = twin();
    assert_eq!(sensor(&view, "pump-1", "pump-1.speed")["value"], 0.4);
    assert_eq!(
        sensor(&view, "pump-1", "pump-1.vibration")["value"],
        2.5,
        "an older write does not replace a newer value"
    );

    let asset = get(
        &format!("{}/api/v1/assets/pump-1?window=10m&points=60", server.url),
        &[],
    );
    assert_eq!(asset.status, 200, "{}", asset.body);
    let asset = asset.json();
    assert_eq!(asset["readings"]["step_seconds"], 10);
    let series = asset["readings"]["series"].as_array().unwrap();
    let speed = series
        .iter()
        .find(|s| s["sensor"] == "pump-1.speed")
        .unwrap();
    assert!(!speed["t"].as_array().unwrap().is_empty(), "{speed}");
    assert_eq!(
        speed["t"].as_array().unwrap().len(),
        speed["v"].as_array().unwrap().len()
    );

    let missing = get(&format!("{}/api/v1/assets/pump-9", server.url), &[]);
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("pump-1"), "{}", missing.body);
    let bad = get(
        &format!("{}/api/v1/assets/pump-1?points=0", server.url),
        &[],
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(server.stop().success());

    // Started again: the last values come from the lake.
    let server = Server::start(dir.path(), &["--spec", spec]);
    let view = get(&format!("{}/api/v1/twin", server.url), &[]).json();
    assert_eq!(sensor(&view, "pump-1", "pump-1.speed")["value"], 0.4);
    assert!(server.stop().success());

    let plain = Server::start(dir.path(), &[]);
    let none = get(&format!("{}/api/v1/twin", plain.url), &[]);
    assert_eq!(none.status, 404);
    assert!(none.body.contains("--spec"), "{}", none.body);
    assert!(plain.stop().success());
}

/// `doppel up` serves the reference plant's own spec: once it has caught up with now, every
/// asset of the plant is there and its sensors read `ok`.
#[test]
fn up_serves_the_reference_plants_twin() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::up(dir.path(), &["--speed", "3600x", "--backfill", "1h"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut view = serde_json::Value::Null;
    while Instant::now() < deadline {
        let r = get(&format!("{}/api/v1/twin", server.url), &[]);
        if r.status == 200 {
            view = r.json();
            let all_ok = view["sites"][0]["assets"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["sensors"].as_array().unwrap())
                .all(|s| s["quality"] == "ok" || s["quality"] == "out_of_range");
            if all_ok {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let assets: Vec<&str> = view["sites"][0]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(assets.len(), 12, "{assets:?}");
    assert!(assets.contains(&"pump3") && assets.contains(&"chiller1"));
    let supply = sensor(&view, "chw", "chw_supply_temp");
    assert_eq!(supply["quality"], "ok", "{supply}");
    assert!(
        (4.0..12.0).contains(&supply["value"].as_f64().unwrap()),
        "{supply}"
    );
    let readings = get(
        &format!("{}/api/v1/assets/chw?window=1h&points=30", server.url),
        &[],
    )
    .json();
    let series = readings["readings"]["series"].as_array().unwrap();
    let supply = series
        .iter()
        .find(|s| s["sensor"] == "chw_supply_temp")
        .unwrap();
    let points = supply["t"].as_array().unwrap().len();
    assert!(
        (25..=31).contains(&points),
        "an hour in 2-minute buckets: {points}"
    );
    // Once the twin has history, each pump has an anomaly score from PCA over its sensors
    // (an hour at 10 s: 360 moments where every pump sensor read, enough for a detector).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut score = serde_json::Value::Null;
    while Instant::now() < deadline && !score.is_number() {
        std::thread::sleep(Duration::from_secs(1));
        let view = get(
            &format!("{}/api/v1/assets/pump1?window=1m&points=1", server.url),
            &[],
        );
        score = view.json()["anomaly"].clone();
    }
    let score = score.as_f64().expect("pump1 has an anomaly score");
    assert!((0.0..=1.0).contains(&score), "{score}");
    // And the scores go back into the lake, a row an asset a minute of data time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rows = Vec::new();
    while Instant::now() < deadline && rows.is_empty() {
        std::thread::sleep(Duration::from_millis(300));
        let r = post(
            &format!("{}/api/v3/query_sql", server.url),
            &[("Content-Type", "application/json")],
            serde_json::json!({"db": "plant", "q": "SELECT score FROM doppel_anomaly WHERE asset = 'pump1'"}).to_string(),
        );
        if r.status == 200 {
            rows = r.json().as_array().cloned().unwrap_or_default();
        }
    }
    assert!(!rows.is_empty(), "no score rows in doppel_anomaly");
    assert!(server.stop().success());
}

/// Rules at work on acknowledged writes: a condition held for its `for` opens one alert
/// (not one per batch), naming its rule, asset and values; it is acknowledged with a note,
/// resolves when the condition is false, and all of it is in the lake (SQL) and comes back
/// after a restart. The asset shows its open alert in its state.
#[test]
fn rules_open_alerts_that_are_acknowledged_resolved_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spec = manifest_dir().join("../../examples/cooling-plant/twin.toml");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"pump-1 shaking\"\nwhen = \"\\\"pump-1.vibration\\\" > 7.1 for 20s\"\nseverity = \"critical\"\n",
    )
    .unwrap();
    let args = [
        "--spec",
        spec.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ];
    let server = Server::start(dir.path(), &args);
    let write = write_plant;
    let alerts = |server: &Server, query: &str| {
        get(&format!("{}/api/v1/alerts{query}", server.url), &[]).json()
    };
    let t = now_s() - 100;
    for (dt, v) in [(0, 3.0), (10, 8.0), (20, 8.5), (30, 9.0), (40, 9.5)] {
        write(
            &server,
            format!("pumps,asset=pump-1 vibration_rms={v} {}", t + dt),
        );
    }
    let open = alerts(&server, "?state=open");
    assert_eq!(
        open.as_array().unwrap().len(),
        1,
        "one alert, not one a batch: {open}"
    );
    let alert = &open[0];
    assert_eq!(alert["rule"], "pump-1 shaking");
    assert_eq!(alert["asset"], "pump-1");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["severity"], "critical");
    // True from 10 s (8.0), held 20 s: fires at 30 s, with the value then.
    assert_eq!(alert["values"]["pump-1.vibration"], 9.0);
    let id = alert["id"].as_str().unwrap().to_owned();
    let twin = get(&format!("{}/api/v1/twin", server.url), &[]).json();
    assert_eq!(asset_state(&twin, "pump-1"), "alarm");

    // Acknowledged from the command line, beside the running server (found in the folder).
    let data = dir.path().to_str().unwrap();
    let out = crate::common::doppel()
        .args([
            "alerts",
            "ack",
            &id,
            "--by",
            "ana",
            "--note",
            "crew on the way",
            "--data",
            data,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::common::doppel()
        .args(["alerts", "list", "--state", "open", "--data", data])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&id)
            && listed.contains("acknowledged")
            && listed.contains("ana: crew on the way"),
        "{listed}"
    );
    let unknown = post(
        &format!("{}/api/v1/alerts/nope/ack", server.url),
        &[],
        r#"{"by": "ana"}"#,
    );
    assert_eq!(unknown.status, 404);
    assert!(server.stop().success());

    // After a restart: the acknowledged alert is there, and resolves when the condition ends.
    let server = Server::start(dir.path(), &args);
    let open = alerts(&server, "?state=open");
    assert_eq!(open[0]["state"], "acknowledged", "{open}");
    assert_eq!(open[0]["note"], "crew on the way");
    write(
        &server,
        format!("pumps,asset=pump-1 vibration_rms=2 {}", t + 50),
    );
    let all = alerts(&server, "");
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["state"], "resolved", "{all}");
    assert!(all[0]["resolved"].is_string());
    let rows = crate::common::sql(
        &server,
        "plant",
        "SELECT state FROM doppel_alerts ORDER BY time",
    );
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["firing", "acknowledged", "resolved"]);
    let bad = get(&format!("{}/api/v1/alerts?state=loud", server.url), &[]);
    assert_eq!(bad.status, 400);
    assert!(server.stop().success());
}

/// `doppel rules check` lists the shipped rules, and names every problem of a bad file
/// with where and what; serving a bad rules file is refused before anything starts.
#[test]
fn rules_files_are_checked_with_where_and_what() {
    let shipped = manifest_dir().join("../../examples/reference-plant/rules.toml");
    let out = crate::common::doppel()
        .args(["rules", "check"])
        .arg(&shipped)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("pump3 tripped (Critical, asset pump3): pump3_status == 2"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\nwhen = \"chw_suply_temp > 9 for\"\n",
    )
    .unwrap();
    let out = crate::common::doppel()
        .args(["rules", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.toml:3:"), "{text}");
    assert!(
        text.contains("rule[0].when: expected a duration after `for`"),
        "{text}"
    );
}

/// The event stream delivers, in order, the readings a write brought, the alert the rule
/// opened and the asset's new state, within moments of the write's 204.
#[test]
fn the_event_stream_tells_readings_states_and_alerts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_example_with_rule(&dir, "shaking", "\"pump-1.vibration\" > 7.1", &[]);
    let rx = listen_events(&server);
    let t = now_s();
    write_plant(&server, format!("pumps,asset=pump-1 vibration_rms=9.5 {t}"));
    let acknowledged = Instant::now();
    let mut seen = Vec::new();
    let done = |seen: &[(String, serde_json::Value)]| {
        seen.iter().any(|(e, _)| e == "alert")
            && seen
                .iter()
                .any(|(e, d)| e == "state" && d["asset"] == "pump-1")
    };
    while let Ok((event, data)) = rx.recv_timeout(Duration::from_secs(5)) {
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        seen.push((event, data));
        if done(&seen) {
            break;
        }
    }
    assert!(
        acknowledged.elapsed() < Duration::from_secs(2),
        "the alert took {:?}",
        acknowledged.elapsed()
    );
    let kinds: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    // The readings first, then what they caused: the alert, then the states it changed.
    assert_eq!(kinds.first(), Some(&"readings"), "{kinds:?}");
    assert_eq!(kinds[1], "alert", "{kinds:?}");
    assert_eq!(seen[0].1["values"]["pump-1.vibration"][1], 9.5);
    let alert = &seen[1].1["alert"];
    assert_eq!(alert["rule"], "shaking");
    assert_eq!(alert["state"], "firing");
    assert!(
        seen.iter()
            .any(|(e, d)| e == "state" && d["asset"] == "pump-1"),
        "{seen:?}"
    );
    drop(rx);
    assert!(server.stop().success());
}

/// `doppel up --scenario` injects a disruption into the live plant, its time counted from the
/// moment the plant reaches now: pump 2 trips five seconds into live streaming, and the
/// reference plant's own rules raise an alert naming it.
#[test]
fn a_scenario_injected_into_doppel_up_raises_an_alert_naming_the_tripped_pump() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("trip.toml");
    std::fs::write(
        &scenario,
        "name = \"trip\"\ndescription = \"pump 2 trips at once\"\n\n[[disruption]]\nkind = \"pump_trip\"\nstart = \"5s\"\nasset = \"pump2\"\n",
    )
    .unwrap();
    let server = Server::up(
        dir.path(),
        &[
            "--speed",
            "3600x",
            "--backfill",
            "10m",
            "--scenario",
            scenario.to_str().unwrap(),
        ],
    );
    let events = listen_events(&server);
    let began = Instant::now();
    let mut found = serde_json::Value::Null;
    // The status sensor reports every minute: the trip shows within about a minute.
    while began.elapsed() < Duration::from_secs(100) {
        let alerts = get(&format!("{}/api/v1/alerts?asset=pump2", server.url), &[]).json();
        if let Some(alert) = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["rule"] == "pump2 tripped")
        {
            found = alert.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        found["asset"],
        "pump2",
        "no alert for the tripped pump after {:?}",
        began.elapsed()
    );
    assert_eq!(found["severity"], "critical");
    // The event stream told when the disruption began, naming what it hit.
    let disruption = events
        .try_iter()
        .find(|(name, _)| name == "disruption")
        .map(|(_, data)| serde_json::from_str::<serde_json::Value>(&data).unwrap());
    let disruption = disruption.expect("a disruption event on the stream");
    assert_eq!(disruption["label"], "pump_trip:pump2", "{disruption}");
    assert_eq!(
        disruption["targets"],
        serde_json::json!(["pump2"]),
        "{disruption}"
    );
    let status = found["values"]["pump2_status"].as_f64().unwrap();
    assert!(
        status == 2.0 || status == 3.0,
        "failed or in repair: {found}"
    );
    let others = get(&format!("{}/api/v1/alerts?state=open", server.url), &[]).json();
    assert!(
        !others
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "pump1 tripped" || a["rule"] == "pump3 tripped"),
        "{others}"
    );
    // The crew takes the pump in for repair (status 3, one of the spec's maintenance codes):
    // the asset is in maintenance, whatever its open critical alert.
    let began = Instant::now();
    while asset_state(
        &get(&format!("{}/api/v1/twin", server.url), &[]).json(),
        "pump2",
    ) != "maintenance"
    {
        assert!(
            began.elapsed() < Duration::from_secs(90),
            "pump2 never went into maintenance"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The timeline holds the disruption, the alert and the maintenance, newest first, and
    // keeps them across a restart.
    let timeline_texts = |url: &str| -> Vec<(String, String)> {
        get(&format!("{url}/api/v1/timeline?hours=1"), &[])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_owned(),
                    e["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let wanted = [
        ("maintenance", "pump2 went into maintenance"),
        ("alert", "alert firing: pump2 tripped (pump2, critical)"),
        ("disruption", "disruption injected: pump_trip:pump2 (pump2)"),
    ];
    let position = |entries: &[(String, String)], (kind, text): (&str, &str)| {
        entries
            .iter()
            .position(|(k, t)| k == kind && t == text)
            .unwrap_or_else(|| panic!("no `{kind}: {text}` in the timeline: {entries:?}"))
    };
    let before = timeline_texts(&server.url);
    let places: Vec<usize> = wanted.iter().map(|&w| position(&before, w)).collect();
    assert!(
        places.windows(2).all(|p| p[0] < p[1]),
        "newest first: {before:?}"
    );
    let bad = get(&format!("{}/api/v1/timeline?hours=0", server.url), &[]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("hours must be above 0"), "{}", bad.body);
    assert!(server.stop().success());
    let again = Server::up(dir.path(), &["--speed", "3600x"]);
    let after = timeline_texts(&again.url);
    for w in wanted {
        position(&after, w);
    }
    // Catching up on the history it missed, the twin judges no state by the wall clock: no
    // asset went "stale" and back at the restart.
    let restarts: Vec<_> = after
        .iter()
        .filter(|(kind, text)| kind == "state" && text.contains("stale"))
        .collect();
    assert!(restarts.is_empty(), "{restarts:?} in {after:?}");
    assert!(again.stop().success());
}

/// `doppel rules test` backtests rules on a recorded run: a pump trip injected six hours into
/// a simulated day is caught within a few minutes, and nothing else fires.
#[test]
fn rules_backtest_on_a_recorded_run_finds_the_injected_trip() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("trip.toml");
    std::fs::write(
        &scenario,
        "name = \"t\"\ndescription = \"x\"\n[[disruption]]\nkind = \"pump_trip\"\nstart = \"6h\"\nasset = \"pump2\"\n",
    )
    .unwrap();
    let run = dir.path().join("run.csv");
    let out = crate::common::doppel()
        .args(["sim", "run", "--days", "1", "--seed", "3", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = manifest_dir().join("../../examples/reference-plant/rules.toml");
    let out = crate::common::doppel()
        .args(["rules", "test"])
        .arg(&rules)
        .arg("--input")
        .arg(&run)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("pump2 tripped (pump2): 2026-07-01T06:0"),
        "{text}"
    );
    assert!(text.contains(": 1 alert(s) over 1440 rows"), "{text}");
}

/// A tiny HTTP receiver on loopback: answers the first request 500, the rest 204, and hands
/// each request's body over.
fn flaky_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let body = request_body(&mut reader).unwrap_or_default();
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

/// Alert changes reach the operator's webhook as JSON, retried when the receiver fails.
#[test]
fn alerts_reach_the_webhook_and_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bodies) = flaky_receiver();
    let server = serve_example_with_rule(
        &dir,
        "shaking",
        "\"pump-1.vibration\" > 7.1",
        &["--webhook", &url],
    );
    write_plant(
        &server,
        format!("pumps,asset=pump-1 vibration_rms=9.5 {}", now_s()),
    );
    let first = bodies
        .recv_timeout(Duration::from_secs(5))
        .expect("the webhook was called");
    let again = bodies
        .recv_timeout(Duration::from_secs(5))
        .expect("retried after a 500");
    assert_eq!(first, again);
    let body: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(body["type"], "alert");
    assert_eq!(body["alert"]["rule"], "shaking");
    assert_eq!(body["alert"]["state"], "firing");
    assert!(server.stop().success());
}

/// An https webhook behind the operator's own CA (`--webhook-ca`) gets the alert over TLS,
/// checked against that CA.
#[test]
fn alerts_reach_an_https_webhook_behind_an_internal_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = manifest_dir().join("tests/e2e/tls");
    let (url, bodies) = tls_receiver(&tls);
    let ca = tls.join("ca.pem");
    let server = serve_example_with_rule(
        &dir,
        "shaking",
        "\"pump-1.vibration\" > 7.1",
        &["--webhook", &url, "--webhook-ca", ca.to_str().unwrap()],
    );
    write_plant(
        &server,
        format!("pumps,asset=pump-1 vibration_rms=9.5 {}", now_s()),
    );
    let body = bodies
        .recv_timeout(Duration::from_secs(10))
        .expect("the https webhook was called");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["alert"]["rule"], "shaking");
    assert!(server.stop().success());
}

/// A webhook that is not http(s), or a CA file that holds no certificate, stops the server
/// before it starts, saying which.
#[test]
fn a_bad_webhook_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = manifest_dir().join("../../examples/cooling-plant/twin.toml");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for (args, expected) in [
        (
            vec!["--webhook", "ftp://example.com/hook"],
            "http:// or https://",
        ),
        (
            vec![
                "--webhook",
                "https://example.com/hook",
                "--webhook-ca",
                not_pem.to_str().unwrap(),
            ],
            "holds no certificate",
        ),
    ] {
        let out = doppel()
            .args(["serve", "--data", dir.path().to_str().unwrap(), "--spec"])
            .arg(&spec)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The body of the HTTP request `reader` holds (read to its Content-Length); `None` if the
/// connection gave none.
fn request_body(reader: &mut impl std::io::BufRead) -> Option<Vec<u8>> {
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    (length > 0 && reader.read_exact(&mut body).is_ok()).then_some(body)
}

/// An https receiver on loopback with the test certificate (tests/e2e/tls: a CA and a
/// server certificate for 127.0.0.1 signed by it), answering 204 and handing each body over.
fn tls_receiver(tls: &std::path::Path) -> (String, std::sync::mpsc::Receiver<String>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::Write;
    let certs: Vec<_> = CertificateDer::pem_file_iter(tls.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls.join("server.key")).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(connection, stream);
            let mut reader = std::io::BufReader::new(&mut stream);
            let Some(body) = request_body(&mut reader) else {
                continue;
            };
            drop(reader);
            let _ = write!(
                stream,
                "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.flush();
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

/// A live feed that stops is still judged: `stale(...)` fires at the wall clock once three
/// sampling periods (10 s each here) pass without a reading, and the asset turns stale on the
/// event stream's side too (its state in the view).
#[test]
fn a_feed_that_stops_raises_its_stale_rule() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_example_with_rule(
        &dir,
        "vibration probe silent",
        "stale(\"pump-1.vibration\")",
        &[],
    );
    write_plant(
        &server,
        format!("pumps,asset=pump-1 vibration_rms=2.0 {}", now_s()),
    );
    let quiet_since = Instant::now();
    let mut found = serde_json::Value::Null;
    while quiet_since.elapsed() < Duration::from_secs(60) {
        let alerts = get(&format!("{}/api/v1/alerts", server.url), &[]).json();
        if let Some(a) = alerts.as_array().unwrap().first() {
            found = a.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(found["rule"], "vibration probe silent", "{found}");
    assert!(
        quiet_since.elapsed() >= Duration::from_secs(29),
        "not before three periods: {:?}",
        quiet_since.elapsed()
    );
    assert!(server.stop().success());
}
