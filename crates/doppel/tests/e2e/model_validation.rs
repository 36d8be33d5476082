//! Models judged on files they never trained on: files held out whole for validation
//! (`--validation-files`), of which nothing reaches training, and `doppel model evaluate`,
//! a forecaster measured on files it has never seen.

use std::path::Path;

use crate::model::{pretrain_quick, run, write_sines};

/// `write_sines`, with channel `b` shifted by `shift`: a machine unlike the others.
fn write_shifted_sines(path: &Path, rows: usize, shift: f64) {
    write_sines(path, rows, false);
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let b: f64 = cells[2].parse().unwrap();
        out.push_str(&format!(
            "{},{},{},{}\n",
            cells[0],
            cells[1],
            b + shift,
            cells[3]
        ));
    }
    std::fs::write(path, out).unwrap();
}

/// `doppel model evaluate` on `dir`'s `model` and `input`, its result in `dir/eval.json`:
/// success, stdout, stderr.
fn evaluate(dir: &Path, model: &str, input: &str, stride: &str) -> (bool, String, String) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let out = crate::common::doppel()
        .args([
            "model",
            "evaluate",
            "--model",
            &p(model),
            "--input",
            &p(input),
            "--stride",
            stride,
            "--out",
            &p("eval.json"),
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn card(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap()
}

/// Two training files alike and a third whose channel `b` sits 100 higher: held out, it
/// neither moves the standardisation (statistics of the training files only) nor gets
/// trained on, so the model is surprised by it; the card says which file validated. Holding
/// out every file is refused.
#[test]
fn a_file_held_out_validates_pretraining_and_nothing_of_it_is_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("a.csv"), 1200, false);
    write_sines(&dir.path().join("b.csv"), 1200, false);
    write_shifted_sines(&dir.path().join("c.csv"), 1200, 100.0);
    let pretrain = |held_out: &str, out: &str| {
        pretrain_quick(
            &[&p("a.csv"), &p("b.csv"), &p("c.csv")],
            "100",
            &p(out),
            &["--validation-files", held_out],
        )
    };
    let (ok, err) = pretrain("1", "held");
    assert!(ok, "{err}");
    let held = card(&dir.path().join("held"));
    assert_eq!(held["train"]["validation_recordings"], 1);
    let roles: Vec<bool> = held["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.get("validation_only").and_then(|v| v.as_bool()) == Some(true))
        .collect();
    assert_eq!(roles, [false, false, true]);
    // b = 2a + 3 with a averaging ~0 over whole periods: 3, not pulled up by c's 103.
    let mean_b = held["normalizer"]["mean"][1].as_f64().unwrap();
    assert!((mean_b - 3.0).abs() < 0.1, "mean of b {mean_b}");
    // Validated on c alone: its b reads ~70 standard deviations above anything trained on.
    let held_loss = held["curve"].as_array().unwrap().last().unwrap()["validation_loss"]
        .as_f64()
        .unwrap();
    assert!(
        held_loss > 10.0,
        "validation loss on the shifted file {held_loss}"
    );

    // The default split: the last 20 % of each file validates, c's first 80 % trains and
    // sets the statistics.
    let (ok, err) = pretrain("0", "tails");
    assert!(ok, "{err}");
    let tails = card(&dir.path().join("tails"));
    let mean_b = tails["normalizer"]["mean"][1].as_f64().unwrap();
    assert!((mean_b - 36.3).abs() < 0.5, "mean of b {mean_b}");
    assert!(tails["data"][2].get("validation_only").is_none());

    let (ok, err) = pretrain("3", "none");
    assert!(!ok && err.contains("keep at least one"), "{err}");
}

/// Many recordings each too short to keep its last 20 % for a validation window: pretraining
/// holds out whole files instead and says so, the card it writes carries a finite validation
/// loss, and a later command reads the card back. With a single such file nothing can
/// validate, and pretraining refuses with what to do rather than write a card without one.
#[test]
fn pretraining_on_many_short_files_writes_a_card_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mut inputs = Vec::new();
    for i in 0..10 {
        let name = format!("run{i}.csv");
        write_sines(&dir.path().join(&name), 60 + 3 * i, false);
        inputs.push(p(&name));
    }
    let pretrain = |inputs: &[String], out: &str| {
        let mut args: Vec<&str> = vec!["model", "pretrain", "--input"];
        args.extend(inputs.iter().map(String::as_str));
        let out = p(out);
        args.extend([
            "--steps",
            "20",
            "--batch",
            "4",
            "--patch",
            "8",
            "--patches",
            "6",
            "--checkpoint-every",
            "0",
            "--out",
            &out,
        ]);
        run(&args)
    };
    let (ok, err) = pretrain(&inputs, "short");
    assert!(ok, "{err}");
    assert!(
        err.contains("validate whole instead (--validation-files 2)"),
        "{err}"
    );
    let card = card(&dir.path().join("short"));
    assert_eq!(card["train"]["validation_recordings"], 2);
    for point in card["curve"].as_array().unwrap() {
        assert!(
            point["validation_loss"].as_f64().unwrap().is_finite(),
            "{point}"
        );
    }
    // Read back by commands that load the card and the model.
    let (ok, err) = run(&["model", "info", "--model", &p("short")]);
    assert!(ok, "{err}");
    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("short"),
        "--input",
        &inputs[0],
        "--out",
        &p("filled.csv"),
    ]);
    assert!(ok, "{err}");

    let (ok, err) = pretrain(&inputs[..1], "one");
    assert!(!ok && err.contains("nothing could validate"), "{err}");
    assert!(!dir.path().join("one/model.json").exists());
}

/// With files held out, the scaling study's shares are whole training files: half of two
/// files is one file, all of its rows, with half the steps.
#[test]
fn a_scaling_study_over_whole_files_counts_its_shares_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    for (name, rows) in [("a.csv", 900), ("b.csv", 700), ("c.csv", 500)] {
        write_sines(&dir.path().join(name), rows, false);
    }
    let (ok, err) = run(&[
        "model",
        "scaling",
        "--input",
        &p("a.csv"),
        &p("b.csv"),
        &p("c.csv"),
        "--validation-files",
        "1",
        "--sizes",
        "tiny",
        "--fractions",
        "0.5,1",
        "--steps",
        "40",
        "--batch",
        "8",
        "--patch",
        "8",
        "--patches",
        "6",
        "--out",
        &p("study"),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("1 of 2 file(s)"), "{err}");
    let runs: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("study/scaling.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l.get("size").is_some())
            .collect();
    let shares: Vec<(u64, u64, u64, f64)> = runs
        .iter()
        .map(|r| {
            (
                r["training_recordings"].as_u64().unwrap(),
                r["training_rows"].as_u64().unwrap(),
                r["steps"].as_u64().unwrap(),
                r["data_fraction"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shares, [(1, 900, 20, 0.5), (2, 1600, 40, 1.0)]);
    // Both runs validated on the same held-out file: their curves start from one loss
    // scale, and each was measured (no NaN from an empty validation set).
    for r in &runs {
        assert!(r["validation_loss"].as_f64().unwrap().is_finite(), "{r}");
    }
}

/// A forecaster measured on a file it never saw: every window (or every `--stride`-th), its
/// errors well under persistence's on a periodic signal, written as JSON; a model without a
/// head and a file shorter than a window are refused with what to do.
#[test]
fn a_forecaster_is_evaluated_on_a_file_it_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("train.csv"), 1200, false);
    write_sines(&dir.path().join("test.csv"), 400, false);
    write_sines(&dir.path().join("short.csv"), 50, false);
    let (ok, err) = run(&[
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
        "--checkpoint-every",
        "0",
        "--out",
        &p("m"),
    ]);
    assert!(ok, "{err}");
    let evaluate =
        |model: &str, input: &str, stride: &str| evaluate(dir.path(), model, input, stride);
    let (ok, _, err) = evaluate("m", "test.csv", "1");
    assert!(!ok && err.contains("no forecasting head"), "{err}");

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
        "12",
        "--steps",
        "30",
        "--batch",
        "16",
        "--out",
        &p("f"),
    ]);
    assert!(ok, "{err}");
    let (ok, stdout, err) = evaluate("f", "test.csv", "1");
    assert!(ok, "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval.json")).unwrap())
            .unwrap();
    let evaluation = &json["evaluation"];
    // 400 rows, windows of 48 look-back + 12 ahead: 341 origins.
    assert_eq!(evaluation["windows"], 341, "{json}");
    assert_eq!(evaluation["horizon"], 12);
    assert_eq!(evaluation["channel_mse"].as_array().unwrap().len(), 3);
    assert_eq!(evaluation["channel_mae"].as_array().unwrap().len(), 3);
    let (mse, persistence) = (
        evaluation["mse"].as_f64().unwrap(),
        evaluation["persistence_mse"].as_f64().unwrap(),
    );
    assert!(
        mse < 0.2 * persistence,
        "MSE {mse} against persistence {persistence}"
    );
    assert!(stdout.contains("341 window(s) over 1 file(s)"), "{stdout}");

    let (ok, _, err) = evaluate("f", "test.csv", "10");
    assert!(ok, "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval.json")).unwrap())
            .unwrap();
    assert_eq!(json["evaluation"]["windows"], 35, "origins 0, 10, ..., 340");
    assert!(!err.contains("warning"), "{err}");
    // On the rows it was trained on, the figures stand but a warning says what they mean.
    let (ok, _, err) = evaluate("f", "train.csv", "10");
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: ") && err.contains("the model was trained on"),
        "{err}"
    );

    let (ok, _, err) = evaluate("f", "short.csv", "1");
    assert!(!ok && err.contains("longer than every file"), "{err}");
}

/// `doppel model bench plant` in small: every number it writes is what `doppel model
/// evaluate` measures with the models it leaves on a year simulated by `doppel sim run` with
/// the test year's seed, so the bench's in-memory years are the files a user would have.
/// The head is never worse on validation than its linear start, and the pretrained card
/// marks the year that only validated. Nonsense splits are refused.
#[test]
fn the_plant_bench_reports_what_evaluate_measures_with_the_models_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let bench = |validation_years: &str| {
        run(&[
            "model",
            "bench",
            "plant",
            "--days",
            "4",
            "--years",
            "3",
            "--validation-years",
            validation_years,
            "--test-years",
            "1",
            "--first-year-seed",
            "5",
            "--pretrain-steps",
            "30",
            "--finetune-steps",
            "40",
            "--horizons",
            "6",
            "--finetune-losses",
            "squared,absolute",
            "--patches",
            "4",
            "--out",
            &p("plant.jsonl"),
            "--models",
            &p("models"),
        ])
    };
    let (ok, err) = bench("3");
    assert!(!ok && err.contains("--validation-years must be"), "{err}");
    let (ok, err) = bench("1");
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("plant.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(
        models,
        [
            "persistence",
            "linear_start",
            "doppel_tiny",
            "doppel_tiny_absolute"
        ]
    );
    let (linear, head, median_head) = (&rows[1], &rows[2], &rows[3]);
    assert!(
        head["validation_mse"].as_f64() <= linear["validation_mse"].as_f64(),
        "{rows:?}"
    );
    assert_eq!(linear["kept_step"], 0);

    let pretrained = card(&dir.path().join("models/pretrained"));
    let held_out: Vec<bool> = pretrained["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["validation_only"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(held_out, [false, false, true]);

    let info = crate::common::doppel()
        .args(["model", "info", "--model", &p("models/head-h6")])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["forecast_head"]["steps_run"], 40, "{info}");
    assert_eq!(
        info["forecast_head"]["best_step"], head["kept_step"],
        "{info}"
    );
    assert_eq!(info["forecast_head"]["loss"], "squared", "{info}");
    // The absolute-loss head is chosen on MAE: never above its linear start's there.
    let info = crate::common::doppel()
        .args(["model", "info", "--model", &p("models/head-h6-absolute")])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let head_card = &info["forecast_head"];
    assert_eq!(head_card["loss"], "absolute", "{info}");
    assert_eq!(head_card["best_step"], median_head["kept_step"], "{info}");
    assert!(
        head_card["validation_mae"].as_f64().unwrap()
            <= head_card["linear_validation_mae"].as_f64().unwrap(),
        "{info}"
    );
    assert_eq!(
        head_card["linear_validation_mse"], linear["validation_mse"],
        "{info}"
    );

    // The test year is seed 5 + 3.
    let (ok, err) = run(&[
        "sim",
        "run",
        "--days",
        "4",
        "--step",
        "5m",
        "--seed",
        "8",
        "--out",
        &p("test.csv"),
    ]);
    assert!(ok, "{err}");
    for (row, model) in [
        (linear, "models/linear-h6"),
        (head, "models/head-h6"),
        (median_head, "models/head-h6-absolute"),
    ] {
        let (ok, _, err) = evaluate(dir.path(), model, "test.csv", "4");
        assert!(ok, "{err}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval.json")).unwrap())
                .unwrap();
        let evaluation = &json["evaluation"];
        assert_eq!(evaluation["windows"], row["windows"]);
        for (measured, reported) in [
            (&evaluation["mse"], &row["mse"]),
            (&evaluation["mae"], &row["mae"]),
            (&evaluation["persistence_mse"], &rows[0]["mse"]),
        ] {
            let (m, r) = (measured.as_f64().unwrap(), reported.as_f64().unwrap());
            assert!(
                (m - r).abs() <= 1e-9 * r.abs(),
                "{model}: evaluate {m}, bench {r}"
            );
        }
        // The same bands measured the same way: the one forecasts use first.
        let (measured, reported) = (
            evaluation["bands"].as_array().unwrap(),
            row["bands"].as_array().unwrap(),
        );
        assert_eq!(measured.len(), reported.len(), "{model}");
        assert!(!measured.is_empty(), "{model}");
        for (m, r) in measured.iter().zip(reported) {
            assert_eq!(m["bands"], r["bands"], "{model}");
            for field in ["coverage", "width", "interval_score"] {
                let (m, r) = (m[field].as_f64().unwrap(), r[field].as_f64().unwrap());
                assert!(
                    (m - r).abs() <= 1e-6,
                    "{model} {field}: evaluate {m}, bench {r}"
                );
            }
        }
    }
    // The card says which scale each channel's band follows and how each did on validation.
    let info = crate::common::doppel()
        .args(["model", "info", "--model", &p("models/head-h6")])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let head_card = &info["forecast_head"];
    assert_eq!(
        head_card["band_scales"].as_array().unwrap().len(),
        pretrained["channels"].as_array().unwrap().len(),
        "{info}"
    );
    assert_eq!(
        head_card["band_scores"].as_array().unwrap().len(),
        4,
        "{info}"
    );
}
