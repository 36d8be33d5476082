//! Heads on a pretrained encoder through the CLI: a forecasting head with error bands that
//! stay honest on data never seen, and linear probes that classify and regress from window
//! embeddings.

use std::fmt::Write;
use std::path::Path;

use crate::common::doppel;
use crate::model::{pretrain_quick, run, write_sines};

#[test]
fn finetune_a_forecasting_head_then_forecast_with_error_bands() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    // `finetune --task forecast --model m --input train.csv --horizon 12` with `options`.
    let finetune = |options: &[&str]| {
        let (model, input) = (p("m"), p("train.csv"));
        let mut args = vec!["model", "finetune", "--task", "forecast", "--model", &model];
        args.extend(["--input", &input, "--horizon", "12"]);
        args.extend_from_slice(options);
        run(&args)
    };
    write_sines(&dir.path().join("train.csv"), 1500, false);
    let pretrain = [
        "model",
        "pretrain",
        "--input",
        &p("train.csv"),
        "--steps",
        "40",
        "--batch",
        "8",
        "--patch",
        "8",
        "--patches",
        "6",
        // Pretrained the way a forecasting head reads: one channel a window.
        "--channel-independent",
        "--mask-ratio",
        "0.4",
        "--out",
        &p("m"),
    ];
    let (ok, err) = run(&pretrain);
    assert!(ok, "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/model.json")).unwrap())
            .unwrap();
    assert_eq!(
        card["train"]["channel_independent"], true,
        "{}",
        card["train"]
    );
    let (ok, err) = run(&[
        "model",
        "forecast",
        "--model",
        &p("m"),
        "--input",
        &p("train.csv"),
        "--horizon",
        "5",
        "--reconstruct",
        "--out",
        &p("plain.csv"),
    ]);
    assert!(ok && !err.contains("with error bands"), "{err}");
    let (ok, err) = finetune(&["--steps", "30", "--batch", "16", "--out", &p("ft")]);
    assert!(ok, "{err}");
    assert!(err.contains("validation MSE"), "{err}");
    let (ok, err) = finetune(&["--loss", "median", "--out", &p("ft2")]);
    assert!(
        !ok && err.contains("squared") && err.contains("absolute"),
        "{err}"
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ft/model.json")).unwrap())
            .unwrap();
    let head = &card["forecast_head"];
    assert_eq!(head["horizon"], 12);
    // The weights kept are never worse on validation than the linear start.
    assert!(
        head["validation_mse"].as_f64().unwrap() <= head["linear_validation_mse"].as_f64().unwrap()
    );
    assert!(dir.path().join("ft/forecast_head.safetensors").exists());
    // The linear start's settings were chosen on validation and are on the card.
    let start = &head["linear_start"];
    assert!(
        ["shared", "per_channel"].contains(&start["layout"].as_str().unwrap_or("")),
        "{start}"
    );
    assert!(start["ridge"].as_f64().unwrap() >= 1.0, "{start}");

    // Forecast the 12 steps after row 1200 and compare with what the file really holds.
    let text = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(dir.path().join("head.csv"), lines[..1201].join("\n") + "\n").unwrap();
    // `forecast --model ft --input head.csv` with `options`.
    let forecast = |options: &[&str]| {
        let (model, input) = (p("ft"), p("head.csv"));
        let mut args = vec!["model", "forecast", "--model", &model, "--input", &input];
        args.extend_from_slice(options);
        run(&args)
    };
    let (ok, err) = forecast(&["--horizon", "12", "--out", &p("fc.csv")]);
    assert!(ok && err.contains("with error bands"), "{err}");
    let fc = std::fs::read_to_string(dir.path().join("fc.csv")).unwrap();
    let rows: Vec<Vec<&str>> = fc.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0].join(","),
        "time,a,b,c,a_p10,b_p10,c_p10,a_p50,b_p50,c_p50,a_p90,b_p90,c_p90"
    );
    assert_eq!(rows.len(), 13);
    let mut se = 0.0;
    for (k, row) in rows[1..].iter().enumerate() {
        let truth: Vec<f64> = lines[1201 + k]
            .split(',')
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(row[0], lines[1201 + k].split(',').next().unwrap());
        let cell = |i: usize| row[i].parse::<f64>().unwrap();
        for (c, y) in truth.iter().enumerate() {
            se += (cell(1 + c) - y).powi(2);
            assert!(cell(4 + c) <= cell(10 + c), "p10 above p90: {row:?}");
        }
    }
    // Channel b swings ±3; a clean periodic signal is forecast to a small error.
    assert!(se / 36.0 < 0.05, "forecast MSE {}", se / 36.0);

    let (ok, err) = forecast(&["--horizon", "20", "--out", &p("x.csv")]);
    assert!(!ok && err.contains("fine-tuned for 12"), "{err}");

    // Bands adapted over the file's own last 200 steps: the same forecast, the bands still
    // ordered, and the factors said. Recalibration is a measurement (`evaluate`), not a
    // forecasting option.
    let (ok, err) = forecast(&[
        "--horizon",
        "12",
        "--recalibrate",
        "300",
        "--out",
        &p("r.csv"),
    ]);
    assert!(!ok && err.contains("--recalibrate"), "{err}");
    let out = p("fc-followed.csv");
    let (ok, err) = forecast(&["--horizon", "12", "--adapt", "200", "--out", &out]);
    assert!(
        ok && err.contains("bands adapted over the file's last 200 step(s): width ×"),
        "{err}"
    );
    let followed = std::fs::read_to_string(&out).unwrap();
    assert_eq!(followed.lines().count(), fc.lines().count());
    for (plain, again) in fc.lines().zip(followed.lines()).skip(1) {
        let (plain, again): (Vec<&str>, Vec<&str>) =
            (plain.split(',').collect(), again.split(',').collect());
        assert_eq!(plain[..4], again[..4], "the point forecast is the same");
        for c in 0..3 {
            let cell = |i: usize| again[i].parse::<f64>().unwrap();
            assert!(
                cell(4 + c) <= cell(7 + c) && cell(7 + c) <= cell(10 + c),
                "{again:?}"
            );
        }
    }

    // A 90 % band: the 5th to the 95th percentile, wider than the 80 % one; a band meant to
    // hold everything is refused.
    let with_coverage = |coverage: &str, out: &str| {
        finetune(&[
            "--steps",
            "10",
            "--batch",
            "8",
            "--band-coverage",
            coverage,
            "--out",
            out,
        ])
    };
    let (ok, err) = with_coverage("1", &p("ft100"));
    assert!(
        !ok && err.contains("--band-coverage") && err.contains("below 1"),
        "{err}"
    );
    let (ok, err) = with_coverage("0.9", &p("ft90"));
    assert!(ok && err.contains("the 90 % band there"), "{err}");
    let (model, input, out) = (p("ft90"), p("head.csv"), p("fc90.csv"));
    let (ok, err) = run(&[
        "model",
        "forecast",
        "--model",
        &model,
        "--input",
        &input,
        "--horizon",
        "12",
        "--out",
        &out,
    ]);
    assert!(ok, "{err}");
    let fc90 = std::fs::read_to_string(dir.path().join("fc90.csv")).unwrap();
    let header = fc90.lines().next().unwrap();
    assert_eq!(
        header,
        "time,a,b,c,a_p05,b_p05,c_p05,a_p50,b_p50,c_p50,a_p95,b_p95,c_p95"
    );
    let spread = |text: &str| -> f64 {
        text.lines()
            .skip(1)
            .map(|l| {
                let v: Vec<f64> = l.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
                (0..3).map(|c| v[9 + c] - v[3 + c]).sum::<f64>()
            })
            .sum()
    };
    assert!(
        spread(&fc90) > spread(&fc),
        "90 % bands are wider than 80 % ones"
    );

    // The registry: named versions in the data directory, used by name.
    let data = p("data");
    for expected in ["registered pumps v1", "registered pumps v2"] {
        let (ok, err) = finetune(&[
            "--steps", "10", "--batch", "8", "--name", "pumps", "--data", &data,
        ]);
        assert!(ok && err.contains(expected), "{err}");
    }
    let out = doppel()
        .args(["model", "list", "--data", &data])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("pumps ")).count(),
        2,
        "{listing}"
    );
    assert!(listing.contains("12 steps"), "{listing}");
    for model in ["pumps", "pumps@1", "pumps@v2"] {
        let (ok, err) = run(&[
            "model",
            "forecast",
            "--model",
            model,
            "--data",
            &data,
            "--input",
            &p("head.csv"),
            "--horizon",
            "3",
            "--out",
            &p("named.csv"),
        ]);
        assert!(ok && err.contains("with error bands"), "{model}: {err}");
    }
    let (ok, err) = run(&[
        "model",
        "forecast",
        "--model",
        "pumps@7",
        "--data",
        &data,
        "--input",
        &p("head.csv"),
        "--horizon",
        "3",
        "--out",
        &p("x.csv"),
    ]);
    assert!(!ok && err.contains("has no version 7"), "{err}");
    let (ok, err) = run(&["model", "info", "--model", "valves", "--data", &data]);
    assert!(!ok && err.contains("no model named `valves`"), "{err}");
    let (ok, err) = run(&[
        "model",
        "finetune",
        "--task",
        "forecast",
        "--model",
        &p("m"),
        "--input",
        &p("train.csv"),
        "--horizon",
        "400",
        "--out",
        &p("x"),
    ]);
    assert!(!ok && err.contains("does not fit"), "{err}");
}

/// Two channels whose rhythm changes with a regime (a class) and whose swing follows a slow
/// amplitude (a number); `regime` and `amp` are the labels.
fn write_regimes(path: &Path, rows: usize) {
    let mut text = String::from("time,a,b,regime,amp\n");
    for t in 0..rows {
        let x = t as f64;
        let regime = (t / 400) % 2;
        let period = if regime == 0 { 24.0 } else { 9.0 };
        let amp = 1.0 + 0.8 * (x / 170.0).sin();
        let a = amp * (x * std::f64::consts::TAU / period).sin();
        let time = doppel_core::time::format_rfc3339(
            1_700_000_040_000_000_000 + t as i64 * 60_000_000_000,
        );
        writeln!(text, "{time},{a},{},{regime},{amp}", 0.5 * a + 1.0).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn linear_probes_classify_and_regress_from_window_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_regimes(&dir.path().join("r.csv"), 4000);
    let (ok, err) = pretrain_quick(&[&p("r.csv")], "300", &p("m"), &["--channels", "a,b"]);
    assert!(ok, "{err}");
    let (ok, err) = run(&[
        "model",
        "finetune",
        "--task",
        "classify",
        "--model",
        &p("m"),
        "--input",
        &p("r.csv"),
        "--label-column",
        "regime",
        "--stride",
        "6",
        "--out",
        &p("cls"),
    ]);
    assert!(ok, "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cls/model.json")).unwrap())
            .unwrap();
    let probe = &card["probe"];
    assert_eq!(probe["classes"], serde_json::json!([0.0, 1.0]));
    let (accuracy, trivial) = (
        probe["validation_score"].as_f64().unwrap(),
        probe["trivial_score"].as_f64().unwrap(),
    );
    assert!(
        accuracy > 0.85 && accuracy > trivial + 0.3,
        "accuracy {accuracy} vs {trivial}"
    );

    let (ok, err) = run(&[
        "model",
        "predict",
        "--model",
        &p("cls"),
        "--input",
        &p("r.csv"),
        "--stride",
        "48",
        "--out",
        &p("labels.csv"),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(dir.path().join("labels.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "start,end,regime");
    assert_eq!(lines.len(), 1 + 4000 / 48);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.ends_with(",0") || l.ends_with(",1")),
        "{text}"
    );

    // The same labels as text, as the simulator writes states: classes by name.
    let texts = |rows_from_end_running: usize| -> String {
        let text = std::fs::read_to_string(dir.path().join("r.csv")).unwrap();
        let rows = text.lines().count() - 1;
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                let mut cells: Vec<String> = line.split(',').map(str::to_owned).collect();
                if i > 0 {
                    let running = cells[3] == "1" || i > rows - rows_from_end_running;
                    cells[3] = if running { "running" } else { "off" }.into();
                }
                cells.join(",") + "\n"
            })
            .collect()
    };
    std::fs::write(dir.path().join("named.csv"), texts(0)).unwrap();
    let classify = |input: &str, out: &str| {
        run(&[
            "model",
            "finetune",
            "--task",
            "classify",
            "--model",
            &p("m"),
            "--input",
            &p(input),
            "--label-column",
            "regime",
            "--stride",
            "6",
            "--out",
            &p(out),
        ])
    };
    let (ok, err) = classify("named.csv", "named");
    assert!(ok, "{err}");
    assert!(!err.contains("warning"), "{err}");
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("named/model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        card["probe"]["class_names"],
        serde_json::json!(["off", "running"])
    );
    assert_eq!(card["probe"]["validation_classes"], 2);
    assert!(card["probe"]["validation_score"].as_f64().unwrap() > 0.85);
    let (ok, err) = run(&[
        "model",
        "predict",
        "--model",
        &p("named"),
        "--input",
        &p("named.csv"),
        "--stride",
        "48",
        "--out",
        &p("named_labels.csv"),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(dir.path().join("named_labels.csv")).unwrap();
    assert!(
        text.lines()
            .skip(1)
            .all(|l| l.ends_with(",off") || l.ends_with(",running")),
        "{text}"
    );
    // Validation windows of one class only: the accuracy stands, with a warning.
    std::fs::write(dir.path().join("one.csv"), texts(1000)).unwrap();
    let (ok, err) = classify("one.csv", "one");
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: every validation window has the same class"),
        "{err}"
    );
    let (ok, err) = run(&[
        "model",
        "finetune",
        "--task",
        "regress",
        "--model",
        &p("m"),
        "--input",
        &p("named.csv"),
        "--label-column",
        "regime",
        "--out",
        &p("x"),
    ]);
    assert!(!ok && err.contains("holds text (`off`)"), "{err}");

    let (ok, err) = run(&[
        "model",
        "finetune",
        "--task",
        "regress",
        "--model",
        &p("m"),
        "--input",
        &p("r.csv"),
        "--label-column",
        "amp",
        "--stride",
        "6",
        "--out",
        &p("reg"),
    ]);
    assert!(ok, "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("reg/model.json")).unwrap())
            .unwrap();
    let r2 = card["probe"]["validation_score"].as_f64().unwrap();
    assert!(r2 > 0.5, "R² {r2}");

    let (ok, err) = run(&[
        "model",
        "finetune",
        "--task",
        "classify",
        "--model",
        &p("m"),
        "--input",
        &p("r.csv"),
        "--out",
        &p("x"),
    ]);
    assert!(!ok && err.contains("--label-column"), "{err}");
    let (ok, err) = run(&[
        "model",
        "predict",
        "--model",
        &p("m"),
        "--input",
        &p("r.csv"),
        "--out",
        &p("x.csv"),
    ]);
    assert!(!ok && err.contains("has no probe"), "{err}");
}
