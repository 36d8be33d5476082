//! The scaling study through the CLI: several sizes on several data amounts, the fitted law,
//! the table and the chart.

use crate::common::doppel;
use crate::model::write_sines;

#[test]
fn a_scaling_study_writes_its_runs_its_fit_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    write_sines(&dir.path().join("train.csv"), 1500, false);
    let out = doppel()
        .args([
            "model",
            "scaling",
            "--input",
            &p("train.csv"),
            "--sizes",
            "tiny",
            "--fractions",
            "0.25,0.5,1",
            "--steps",
            "60",
            "--batch",
            "8",
            "--patch",
            "8",
            "--patches",
            "6",
            // 2-D patches: one token of all three channels per patch position.
            "--channels-per-token",
            "3",
            "--out",
            &p("study"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("fit over final losses: L ="), "{stdout}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("study/scaling.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert!(
        lines.len() >= 4,
        "three runs, then the fits and the frontier"
    );
    // Less data, fewer steps: compute grows with the data share.
    let compute: Vec<f64> = lines[..3]
        .iter()
        .map(|r| r["compute"].as_f64().unwrap())
        .collect();
    assert!(
        compute[0] < compute[1] && compute[1] < compute[2],
        "{compute:?}"
    );
    for run in &lines[..3] {
        assert_eq!(run["channels_per_token"], 3);
        // Tokens: steps × 8 windows × 6 tokens (one group of three channels a patch).
        let steps = run["steps"].as_f64().unwrap();
        assert_eq!(run["tokens"].as_f64().unwrap(), steps * 8.0 * 6.0, "{run}");
    }
    assert_eq!(lines[3]["fit"], "L = a*C^b + c");
    assert_eq!(lines[3]["name"], "final losses");
    // The frontier points fitted: each is a point of some run's validation curve, at the
    // compute spent by then, and each beats every cheaper one.
    let frontier: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.get("frontier").is_some())
        .collect();
    for point in &frontier {
        let run = lines[..3]
            .iter()
            .find(|r| {
                r["size"] == point["frontier"] && r["data_fraction"] == point["data_fraction"]
            })
            .unwrap();
        let step = point["step"].as_f64().unwrap();
        let on_curve = run["curve"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["step"].as_f64() == Some(step))
            .unwrap();
        assert_eq!(
            on_curve["validation_loss"], point["validation_loss"],
            "{point}"
        );
        let expected = run["compute"].as_f64().unwrap() * step / run["steps"].as_f64().unwrap();
        assert!((point["compute"].as_f64().unwrap() - expected).abs() <= 1e-9 * expected);
    }
    for pair in frontier.windows(2) {
        assert!(
            pair[0]["compute"].as_f64() <= pair[1]["compute"].as_f64(),
            "{pair:?}"
        );
        assert!(
            pair[0]["validation_loss"].as_f64() > pair[1]["validation_loss"].as_f64(),
            "{pair:?}"
        );
    }
    let frontier_fit = lines.iter().find(|l| l["name"] == "compute frontier");
    assert_eq!(frontier_fit.is_some(), frontier.len() >= 3, "{lines:?}");
    assert!(stdout.contains("fit over the compute frontier"), "{stdout}");
    // The law checked on points it was not fitted on: the dearest third of the frontier.
    // The run is deterministic and long enough for five frontier points: the check always
    // runs here (the CLI skips it below five, which a smaller run would make silent).
    assert!(
        frontier.len() >= 5,
        "{} frontier points: {lines:?}",
        frontier.len()
    );
    let check = lines
        .iter()
        .find(|l| l.get("extrapolation").is_some())
        .expect("five frontier points or more: the law is checked on the dearest third");
    let held_out = check["held_out"].as_array().unwrap();
    assert_eq!(
        held_out.len() + check["fitted_points"].as_u64().unwrap() as usize,
        frontier.len()
    );
    let dearest = frontier.last().unwrap();
    let last = held_out.last().unwrap();
    assert_eq!(last["compute"], dearest["compute"]);
    assert_eq!(last["measured"], dearest["validation_loss"]);
    assert!(stdout.contains("does it predict?"), "{stdout}");
    let png = std::fs::read(dir.path().join("study/scaling.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        900,
        "width"
    );

    let out = doppel()
        .args([
            "model",
            "scaling",
            "--input",
            &p("train.csv"),
            "--sizes",
            "huge",
            "--out",
            &p("x"),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown size `huge`"),
        "{err}"
    );
}
