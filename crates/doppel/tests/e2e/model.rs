//! The sensor model through the CLI: pretrain on a file or a lake table, resume a killed run,
//! fill gaps, forecast, take 2-D patches, and refuse bad input with a clear message. Heads and
//! probes are in `model_heads`, the scaling study in `model_scaling`.

use std::fmt::Write;
use std::path::Path;

use crate::common::doppel;

/// Three correlated channels of sines on a minute grid; `gaps` leaves some cells empty.
pub(crate) fn write_sines(path: &Path, rows: usize, gaps: bool) {
    let mut text = String::from("time,a,b,c\n");
    for t in 0..rows {
        let x = t as f64;
        let a = (x * std::f64::consts::TAU / 24.0).sin()
            + 0.5 * (x * std::f64::consts::TAU / 7.0).sin();
        let time = doppel_core::time::format_rfc3339(
            1_700_000_040_000_000_000 + t as i64 * 60_000_000_000,
        );
        let b = if gaps && t % 10 == 3 {
            String::new()
        } else {
            format!("{}", 2.0 * a + 3.0)
        };
        writeln!(
            text,
            "{time},{a},{b},{}",
            (x * std::f64::consts::TAU / 24.0).cos()
        )
        .unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// `doppel model pretrain` of a quick model on `inputs`: windows of 6 patches of 8, batches
/// of 8, `steps` steps, no checkpoints, into `out`, with `extra` flags (a flag in `extra`
/// replaces the helper's own); (success, stderr).
pub(crate) fn pretrain_quick(
    inputs: &[&str],
    steps: &str,
    out: &str,
    extra: &[&str],
) -> (bool, String) {
    let mut args = vec!["model", "pretrain", "--input"];
    args.extend(inputs);
    let defaults = [
        ("--steps", steps),
        ("--batch", "8"),
        ("--patch", "8"),
        ("--patches", "6"),
        ("--checkpoint-every", "0"),
        ("--out", out),
    ];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    run(&args)
}

pub(crate) fn run(args: &[&str]) -> (bool, String) {
    let out = doppel().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gap-filling model from the command line: no hidden patches, hidden points, and the
/// interpolation prior with the cross-channel prior it brings by default; its card records how
/// it was trained, and it fills single missing values close to the truth. Ratios outside
/// [0, 1) are refused.
#[test]
fn a_gap_filling_model_is_trained_with_point_masks_over_the_interpolation_prior() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("train.csv"), 1500, false);
    write_sines(&dir.path().join("gaps.csv"), 300, true);
    let pretrain = |mask: &str, points: &str| {
        pretrain_quick(
            &[&p("train.csv")],
            "100",
            &p("fill"),
            &[
                "--batch",
                "16",
                "--mask-ratio",
                mask,
                "--point-mask-ratio",
                points,
                "--interpolation-prior",
            ],
        )
    };
    let (ok, err) = pretrain("1", "0.4");
    assert!(!ok);
    assert!(
        err.contains("--mask-ratio must be at least 0 and below 1, not 1"),
        "{err}"
    );
    // The gap-filling recipe is the measured set: no patches hidden, points hidden inside
    // the shown ones, the interpolation and cross-channel priors, windows normalised.
    let (ok, err) = pretrain_quick(
        &[&p("train.csv")],
        "100",
        &p("fill"),
        &["--batch", "16", "--recipe", "gap-filling"],
    );
    assert!(ok, "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("fill/model.json")).unwrap())
            .unwrap();
    assert_eq!(card["config"]["instance_norm"], true);
    assert_eq!(card["config"]["interpolation_prior"], true);
    assert_eq!(card["config"]["cross_channel_prior"], true);
    assert_eq!(card["config"]["mask_ratio"], 0.0);
    assert_eq!(card["config"]["point_mask_ratio"], 0.4);

    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("fill"),
        "--input",
        &p("gaps.csv"),
        "--out",
        &p("filled.csv"),
    ]);
    assert!(ok, "{err}");
    // `b` is 2a + 3, missing every tenth row; a's swing is about ±1.5, so b's is ±3.
    let filled = std::fs::read_to_string(dir.path().join("filled.csv")).unwrap();
    let rows: Vec<Vec<f64>> = filled
        .lines()
        .skip(1)
        .map(|line| {
            line.split(',')
                .skip(1)
                .map(|c| c.parse().unwrap())
                .collect()
        })
        .collect();
    let (mut model_se, mut interpolation_se) = (0.0f64, 0.0f64);
    for t in (3..rows.len() - 1).step_by(10) {
        let truth = 2.0 * rows[t][0] + 3.0;
        model_se += (rows[t][1] - truth).powi(2);
        interpolation_se += ((rows[t - 1][1] + rows[t + 1][1]) / 2.0 - truth).powi(2);
    }
    // It reads b from a (b = 2a + 3), which interpolation cannot: 0.49 against 1.57 here.
    assert!(
        model_se < 0.6 * interpolation_se,
        "squared error of the filled values: {model_se}, interpolation's {interpolation_se}"
    );
    assert!(
        err.contains("b: filled by the model (squared error"),
        "{err}"
    );

    // A model pretrained on the defaults was not taught to fill gaps: checked on values of
    // the file hidden for the purpose, it loses to interpolation there, which then fills.
    let (ok, err) = pretrain_quick(&[&p("train.csv")], "30", &p("plain"), &["--batch", "16"]);
    assert!(ok, "{err}");
    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("plain"),
        "--input",
        &p("gaps.csv"),
        "--out",
        &p("plain_filled.csv"),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("b: filled by linear interpolation"), "{err}");
    let plain = std::fs::read_to_string(dir.path().join("plain_filled.csv")).unwrap();
    let plain_b: Vec<f64> = plain
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    for t in (3..rows.len() - 1).step_by(10) {
        let line = (plain_b[t - 1] + plain_b[t + 1]) / 2.0;
        assert!(
            (plain_b[t] - line).abs() < 1e-4,
            "row {t}: {} vs {line}",
            plain_b[t]
        );
    }

    // Scoring with a gap-filling model works, with a word on why its scores are weak.
    let (ok, err) = run(&[
        "model",
        "score",
        "--model",
        &p("fill"),
        "--input",
        &p("gaps.csv"),
        "--calibrate-rows",
        "100",
        "--out",
        &p("scores.csv"),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("note: this is a gap-filling model"), "{err}");
}

/// `--channel-mask-share` and `--channel-readout` go into the card (the read-out's map into
/// the weights, how it was started into the card); a share outside [0, 1), or channel masks
/// or a read-out on windows of one channel, are refused before any training.
#[test]
fn channel_masks_are_recorded_and_bad_shares_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("train.csv"), 600, false);
    let (train, out) = (p("train.csv"), p("m"));
    let pretrain = |extra: &[&str]| pretrain_quick(&[&train], "20", &out, extra);
    let (ok, err) = pretrain(&["--channel-mask-share", "1.5"]);
    assert!(
        !ok && err.contains("--channel-mask-share must be at least 0 and below 1, not 1.5"),
        "{err}"
    );
    let (ok, err) = pretrain(&["--channel-mask-share", "0.25", "--channel-independent"]);
    assert!(!ok && err.contains("use one or the other"), "{err}");
    let (ok, err) = pretrain(&["--channel-readout", "--channel-independent"]);
    assert!(
        !ok && err.contains("--channel-readout reads a channel"),
        "{err}"
    );
    assert!(!dir.path().join("m").exists(), "nothing is written");
    // The virtual-sensor recipe: whole channels hidden, every channel in one token, the
    // read-out started at least squares.
    let (ok, err) = pretrain(&["--recipe", "virtual-sensor"]);
    assert!(ok, "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/model.json")).unwrap())
            .unwrap();
    assert_eq!(card["config"]["channels_per_token"], 3);
    assert_eq!(card["config"]["channel_mask_share"], 0.25);
    assert_eq!(card["config"]["channel_readout"], true);
    // b = 2a + 3 on the sines: the others read b almost exactly, and the read-out starts
    // there with almost no share for the network.
    assert!(
        err.contains("channel read-out started from least squares"),
        "{err}"
    );
    assert!(
        err.contains("read-out fills, set on the validation windows after training: a "),
        "{err}"
    );
    let fits = card["readout_start"].as_array().unwrap();
    assert_eq!(fits.len(), 3);
    assert_eq!(fits[1]["channel"], "b");
    assert!(
        fits[1]["validation_mse"].as_f64().unwrap() < 0.01,
        "{fits:?}"
    );
    assert!(
        fits[1]["network_share"].as_f64().unwrap() < 0.01,
        "{fits:?}"
    );
    // b's tie holds throughout: a limit is recorded, and no validation window broke it.
    assert!(fits[1]["tie_limit"].as_f64().unwrap() > 0.0, "{fits:?}");
    assert!(
        fits[1]["validation_windows"].as_u64().unwrap() > 0,
        "{fits:?}"
    );
    assert_eq!(fits[1]["broken_windows"], 0, "{fits:?}");
    // The read-out's map and tie limits are saved with the weights, under plain names.
    let weights = std::fs::read(dir.path().join("m/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&weights[8..8 + header_len]);
    assert!(header.contains("\"readout.map_start"), "{header}");
    assert!(header.contains("\"readout.tie_limit"), "{header}");
}

#[test]
fn pretrain_then_impute_and_forecast_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("train.csv"), 1500, false);
    write_sines(&dir.path().join("gaps.csv"), 300, true);
    let (ok, err) = pretrain_quick(
        &[&p("train.csv")],
        "150",
        &p("m"),
        &["--batch", "16", "--seed", "2"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("parameters"), "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/model.json")).unwrap())
            .unwrap();
    assert_eq!(card["channels"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(card["step_ns"], 60_000_000_000i64);
    assert!(card["curve"].as_array().unwrap().len() >= 3);
    // The cross-channel prior rides on the interpolation prior only.
    assert_eq!(card["config"]["cross_channel_prior"], false);
    // By default the weights kept are the best on validation.
    assert_eq!(card["train"]["keep_best"], true);

    // The weights are plain safetensors with PyTorch's names and layouts.
    let bytes = std::fs::read(dir.path().join("m/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(
        header["patch_embed.weight"]["shape"],
        serde_json::json!([64, 16]),
        "[out, in] as torch.nn.Linear"
    );
    assert_eq!(header["patch_embed.weight"]["dtype"], "F32");

    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("m"),
        "--input",
        &p("gaps.csv"),
        "--out",
        &p("filled.csv"),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("filled 30 missing value(s)"), "{err}");
    let filled = std::fs::read_to_string(dir.path().join("filled.csv")).unwrap();
    let lines: Vec<&str> = filled.lines().collect();
    assert_eq!(lines.len(), 301);
    assert_eq!(lines[0], "time,a,b,c");
    for line in &lines[1..] {
        assert!(line.split(',').all(|cell| !cell.is_empty()), "{line}");
    }

    // A sensor dead for the whole file (its column there, every cell empty) is the model's
    // to fill from the others, not a file to refuse.
    let gaps = std::fs::read_to_string(dir.path().join("gaps.csv")).unwrap();
    let dead: String = gaps
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut cells: Vec<&str> = line.split(',').collect();
            if i > 0 {
                cells[2] = "";
            }
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(dir.path().join("dead.csv"), dead).unwrap();
    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("m"),
        "--input",
        &p("dead.csv"),
        "--out",
        &p("revived.csv"),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("filled 300 missing value(s)"), "{err}");
    let revived = std::fs::read_to_string(dir.path().join("revived.csv")).unwrap();
    assert!(
        revived.lines().skip(1).all(|l| l
            .split(',')
            .nth(2)
            .is_some_and(|b| b.parse::<f64>().is_ok())),
        "{revived:.300}"
    );

    // A model without a forecasting head does not forecast unless asked to, and then warns.
    let (model, train, fc) = (p("m"), p("train.csv"), p("fc.csv"));
    let forecast = |extra: &[&str]| {
        let mut args = vec![
            "model",
            "forecast",
            "--model",
            &model,
            "--input",
            &train,
            "--horizon",
            "10",
            "--out",
            &fc,
        ];
        args.extend(extra);
        run(&args)
    };
    let (ok, err) = forecast(&[]);
    assert!(
        !ok && err.contains("no forecasting head") && err.contains("finetune --task forecast"),
        "{err}"
    );
    let (ok, err) = forecast(&["--reconstruct"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: forecasting by reconstruction"),
        "{err}"
    );
    let fc = std::fs::read_to_string(dir.path().join("fc.csv")).unwrap();
    let lines: Vec<&str> = fc.lines().collect();
    assert_eq!(lines.len(), 11);
    let first_time =
        doppel_core::time::format_rfc3339(1_700_000_040_000_000_000 + 1500 * 60_000_000_000);
    assert!(
        lines[1].starts_with(&format!("{first_time},")),
        "{}",
        lines[1]
    );

    let (ok, err) = run(&[
        "model",
        "score",
        "--model",
        &p("m"),
        "--input",
        &p("train.csv"),
        "--calibrate-rows",
        "1000",
        "--out",
        &p("score.csv"),
    ]);
    assert!(ok, "{err}");
    let scores = std::fs::read_to_string(dir.path().join("score.csv")).unwrap();
    assert_eq!(scores.lines().next().unwrap(), "time,score,flag,a,b,c");
    assert_eq!(scores.lines().count(), 1501);
    let (ok, err) = run(&[
        "model",
        "embed",
        "--model",
        &p("m"),
        "--input",
        &p("train.csv"),
        "--window",
        "48",
        "--stride",
        "100",
        "--out",
        &p("emb.csv"),
    ]);
    assert!(ok, "{err}");
    let emb = std::fs::read_to_string(dir.path().join("emb.csv")).unwrap();
    assert!(emb.lines().next().unwrap().starts_with("start,end,e0,e1,"));
    assert_eq!(emb.lines().count(), 1 + 15);
    let (ok, err) = run(&[
        "model",
        "embed",
        "--model",
        &p("m"),
        "--input",
        &p("train.csv"),
        "--window",
        "50",
        "--stride",
        "10",
        "--out",
        &p("x.csv"),
    ]);
    assert!(!ok && err.contains("windows of 1 to 48 steps"), "{err}");

    // Bad input says what and where.
    let (ok, err) = run(&[
        "model",
        "forecast",
        "--model",
        &p("m"),
        "--input",
        &p("train.csv"),
        "--horizon",
        "500",
        "--reconstruct",
        "--out",
        &p("x.csv"),
    ]);
    assert!(
        !ok && err.contains("horizon must be 1 to 40 steps"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("short.csv"),
        "time,a,b,c\n2024-01-01T00:00:00Z,1,2,3\n2024-01-01T00:01:00Z,1,2,3\n",
    )
    .unwrap();
    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("m"),
        "--input",
        &p("short.csv"),
        "--out",
        &p("x.csv"),
    ]);
    // Two rows, shorter than the model's window: read as a window that began with a gap.
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("x.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    std::fs::write(
        dir.path().join("other.csv"),
        "time,x\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,2\n",
    )
    .unwrap();
    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("m"),
        "--input",
        &p("other.csv"),
        "--out",
        &p("x.csv"),
    ]);
    assert!(!ok && err.contains("other.csv"), "{err}");
    std::fs::write(
        dir.path().join("words.csv"),
        "time,name\n2024-01-01T00:00:00Z,a\n2024-01-01T00:01:00Z,b\n",
    )
    .unwrap();
    let (ok, err) = run(&[
        "model",
        "pretrain",
        "--input",
        &p("words.csv"),
        "--out",
        &p("w"),
    ]);
    assert!(!ok && err.contains("no numeric column"), "{err}");
    if !cfg!(feature = "gpu") {
        let (ok, err) = run(&[
            "model",
            "pretrain",
            "--input",
            &p("train.csv"),
            "--gpu",
            "--out",
            &p("g"),
        ]);
        assert!(!ok && err.contains("built without GPU support"), "{err}");
    }
    let (ok, err) = run(&[
        "model",
        "pretrain",
        "--input",
        &p("gaps.csv"),
        "--patches",
        "60",
        "--out",
        &p("w"),
    ]);
    assert!(
        !ok && err.contains("longer than the training part"),
        "{err}"
    );
}

/// A pretraining killed after a checkpoint and run again with --resume ends with the weights
/// of a run never stopped, and its checkpoint is gone once the model is written.
#[test]
fn a_killed_pretraining_resumes_from_its_checkpoint_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("train.csv"), 1500, false);
    let train = p("train.csv");
    let args = |out: &str| -> Vec<String> {
        [
            "model",
            "pretrain",
            "--input",
            &train,
            "--steps",
            "300",
            "--batch",
            "8",
            "--patches",
            "6",
            "--checkpoint-every",
            "10",
            "--out",
            out,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let (whole, broken) = (p("whole"), p("broken"));
    let out = doppel().args(args(&whole)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&whole).join("checkpoint").exists(), "cleared");

    let mut child = doppel()
        .args(args(&broken))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let manifest = Path::new(&broken).join("checkpoint/checkpoint.json");
    let started = std::time::Instant::now();
    while !manifest.exists() {
        assert!(started.elapsed().as_secs() < 300, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !Path::new(&broken).join("model.json").exists(),
        "killed before the end (300 steps; the first checkpoint comes at 10)"
    );

    let mut again = args(&broken);
    again.push("--resume".into());
    let out = doppel().args(&again).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("resuming from the checkpoint at step"),
        "{err}"
    );
    let read = |d: &str, f: &str| std::fs::read(Path::new(d).join(f)).unwrap();
    // Same weights, same file, byte for byte (the header's metadata has one key, so its
    // order cannot vary).
    assert!(
        read(&whole, "model.safetensors") == read(&broken, "model.safetensors"),
        "the resumed run has the unbroken run's weights"
    );
    let curve = |d: &str| {
        serde_json::from_slice::<serde_json::Value>(&read(d, "model.json")).unwrap()["curve"]
            .clone()
    };
    assert_eq!(curve(&whole), curve(&broken));
    assert!(!manifest.exists(), "cleared");
}

/// LSM's 2-D patches from the command line: the card records the channels per token, the
/// model scores a file and takes a forecasting head like any other (reading every channel of
/// a window together), and what needs one channel a window says so.
#[test]
fn two_d_patches_pretrain_score_and_forecast_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("train.csv"), 1500, false);
    let (train, out) = (p("train.csv"), p("m"));
    let pretrain = |extra: &[&str]| pretrain_quick(&[&train], "30", &out, extra);
    let (ok, err) = pretrain(&["--channels-per-token", "2"]);
    assert!(ok, "{err}");
    assert!(err.contains("12 tokens of 2 channel(s) each"), "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/model.json")).unwrap())
            .unwrap();
    assert_eq!(
        card["config"]["channels_per_token"], 2,
        "{}",
        card["config"]
    );

    let (ok, err) = run(&[
        "model",
        "score",
        "--model",
        &p("m"),
        "--input",
        &p("train.csv"),
        "--calibrate-rows",
        "500",
        "--out",
        &p("scores.csv"),
    ]);
    assert!(ok, "{err}");
    let scores = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + 1500, "a row per input row");
    assert!(scores.starts_with("time,score,flag,a,b,c"), "{scores:.60}");

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
        "5",
        "--out",
        &p("f"),
    ]);
    assert!(ok, "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("f/model.json")).unwrap())
            .unwrap();
    assert_eq!(card["forecast_head"]["channel_independent"], false);
    let (ok, err) = run(&[
        "model",
        "forecast",
        "--model",
        &p("f"),
        "--input",
        &p("train.csv"),
        "--horizon",
        "12",
        "--out",
        &p("fc.csv"),
    ]);
    assert!(ok, "{err}");
    let fc = std::fs::read_to_string(dir.path().join("fc.csv")).unwrap();
    assert_eq!(fc.lines().count(), 1 + 12, "{fc:.200}");
    let (ok, err) = pretrain(&["--channels-per-token", "2", "--channel-independent"]);
    assert!(!ok && err.contains("channel-independent"), "{err}");
    let (ok, err) = pretrain(&["--channels-per-token", "0"]);
    assert!(!ok && err.contains("--channels-per-token"), "{err}");
}

#[test]
fn models_read_lake_tables_one_series_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    // Two machines in one table, told apart by the `unit` tag.
    let mut text = String::from("time,unit,a,b\n");
    for t in 0..1500 {
        let x = t as f64;
        let time = 1_700_000_040 + t * 60;
        let a = (x * std::f64::consts::TAU / 24.0).sin();
        writeln!(text, "{time},u1,{a},{}", 2.0 * a).unwrap();
        writeln!(text, "{time},u2,{},{}", a + 5.0, a).unwrap();
    }
    std::fs::write(dir.path().join("units.csv"), text).unwrap();
    let data = p("data");
    let out = doppel()
        .args([
            "import",
            "--data",
            &data,
            "--db",
            "plant",
            "--measurement",
            "units",
            "--tag-column",
            "unit",
            "--time-column",
            "time",
            &p("units.csv"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pretrain = |input: &str| pretrain_quick(&[input], "20", &p("m"), &["--data", &data]);
    let (ok, err) = pretrain("lake:plant/units");
    // The hint lists the inputs that pick each series, ready to paste.
    assert!(
        !ok && err.contains("several series")
            && err.contains("such as: lake:plant/units?unit=u1  lake:plant/units?unit=u2"),
        "{err}"
    );
    let (ok, err) = pretrain("lake:plant/nothing");
    assert!(!ok && err.contains("nothing"), "{err}");
    let (ok, err) = pretrain("lake:plant/units?unit=u1");
    assert!(ok, "{err}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/model.json")).unwrap())
            .unwrap();
    assert_eq!(card["channels"], serde_json::json!(["a", "b"]));
    assert_eq!(card["step_ns"], 60_000_000_000i64);
    assert_eq!(card["data"][0]["file"], "lake:plant/units?unit=u1");
    assert_eq!(card["data"][0]["steps"], 1500);

    let (ok, err) = run(&[
        "model",
        "forecast",
        "--model",
        &p("m"),
        "--input",
        "lake:plant/units?unit=u2",
        "--data",
        &data,
        "--horizon",
        "6",
        "--reconstruct",
        "--out",
        &p("fc.csv"),
    ]);
    assert!(ok, "{err}");
    let fc = std::fs::read_to_string(dir.path().join("fc.csv")).unwrap();
    assert_eq!(fc.lines().count(), 7);
    assert!(
        fc.lines()
            .nth(1)
            .unwrap()
            .starts_with(&doppel_core::time::format_rfc3339(
                (1_700_000_040 + 1500 * 60) * 1_000_000_000
            ))
    );
}

/// Readings a second apart with the odd two-second step (a grid slot no row fell on):
/// `score` and `impute` write one row per input row, at the input's own times, so their
/// answers line up with the file. A recording shorter than the model's window (31 rows
/// against 48) is scored and embedded as a window that began with a gap, and `embed`
/// takes windows shorter than the model's.
#[test]
fn tasks_answer_once_per_input_row_and_take_recordings_shorter_than_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let write_seconds = |name: &str, rows: usize, skip_every: usize| -> Vec<String> {
        let mut text = String::from("time,a,b\n");
        let (mut times, mut t) = (Vec::new(), 0i64);
        for i in 0..rows {
            t += if skip_every > 0 && i % skip_every == skip_every - 1 {
                2
            } else {
                1
            };
            let x = t as f64;
            let time = doppel_core::time::format_rfc3339((1_700_000_000 + t) * 1_000_000_000);
            writeln!(text, "{time},{},{}", (x / 5.0).sin(), (x / 7.0).cos()).unwrap();
            times.push(time);
        }
        std::fs::write(dir.path().join(name), text).unwrap();
        times
    };
    write_seconds("train.csv", 1200, 0);
    let times = write_seconds("irregular.csv", 745, 20);
    write_seconds("short.csv", 31, 0);
    let (ok, err) = pretrain_quick(&[&p("train.csv")], "20", &p("m"), &[]);
    assert!(ok, "{err}");
    let first_column = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_owned())
            .collect()
    };
    let (ok, err) = run(&[
        "model",
        "score",
        "--model",
        &p("m"),
        "--input",
        &p("irregular.csv"),
        "--calibrate-rows",
        "300",
        "--out",
        &p("scores.csv"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        first_column("scores.csv"),
        times,
        "one score row per input row"
    );
    let (ok, err) = run(&[
        "model",
        "impute",
        "--model",
        &p("m"),
        "--input",
        &p("irregular.csv"),
        "--out",
        &p("filled.csv"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(first_column("filled.csv"), times);

    let (ok, err) = run(&[
        "model",
        "score",
        "--model",
        &p("m"),
        "--input",
        &p("short.csv"),
        "--calibrate-rows",
        "31",
        "--out",
        &p("short_scores.csv"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(first_column("short_scores.csv").len(), 31);
    let (model, short, emb) = (p("m"), p("short.csv"), p("emb.csv"));
    for (window, windows) in [(None, 1), (Some("16"), 4)] {
        let mut args = vec![
            "model", "embed", "--model", &model, "--input", &short, "--stride", "5", "--out", &emb,
        ];
        if let Some(w) = window {
            args.extend(["--window", w]);
        }
        let (ok, err) = run(&args);
        assert!(ok, "{err}");
        assert_eq!(
            first_column("emb.csv").len(),
            windows,
            "--window {window:?}"
        );
    }
}

/// Readings in pairs a second apart, a minute between pairs: the grid is one second and
/// nearly all of it empty, which pretraining says before it learns a model of gaps.
#[test]
fn pretraining_warns_when_the_data_is_mostly_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("time,a\n");
    for pair in 0..150i64 {
        for second in 0..2 {
            let t = 1_700_000_000 + pair * 60 + second;
            writeln!(text, "{t},{}", (pair as f64 / 3.0).sin()).unwrap();
        }
    }
    let file = dir.path().join("bursts.csv");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("m");
    let (_, err) = pretrain_quick(
        &[file.to_str().unwrap()],
        "5",
        out.to_str().unwrap(),
        &["--batch", "4"],
    );
    assert!(
        err.contains("warning: only 300 of 8942 grid steps (3.4 %) hold a reading"),
        "{err}"
    );
}
