//! Charts written as PNG files (plotters). Text is drawn with the DejaVu Sans font shipped
//! in `assets/`, so charts look the same on any machine and no system font library is
//! needed. Presentation only: never computes a number that is reported anywhere else.

use std::path::Path;

use anyhow::{Context, anyhow};
use doppel_research::scaling::{FrontierPoint, PowerLaw, ScalingRun};
use plotters::prelude::*;
use plotters::style::FontStyle;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the shipped font could not be read"))
    }
}

/// Validation loss against training compute: each run's validation curve as a thin line in
/// its size's colour, its final loss as a dot, the frontier points the power law was fitted
/// to as black rings, and the fitted law.
pub fn scaling_chart(
    path: &Path,
    runs: &[ScalingRun],
    fitted: &[FrontierPoint],
    fit: Option<&PowerLaw>,
) -> anyhow::Result<()> {
    register_font()?;
    let curve_of = |r: &ScalingRun| -> Vec<(f64, f64)> {
        r.curve
            .iter()
            .map(|p| (r.compute_at(p.step), p.validation_loss))
            .filter(|(c, l)| *c > 0.0 && l.is_finite())
            .collect()
    };
    let draw =
        || -> Result<(), Box<dyn std::error::Error>> {
            let all: Vec<(f64, f64)> = runs.iter().flat_map(curve_of).collect();
            let (cmin, cmax) = all.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
                (lo.min(p.0), hi.max(p.0))
            });
            let (lmin, lmax) = all
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(p.1), hi.max(p.1))
                });
            let pad = ((lmax - lmin) * 0.15).max(0.01);
            let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    "doppel sensor model: validation loss against training compute",
                    ("sans-serif", 22),
                )
                .margin(20)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(
                    (cmin / 1.5..cmax * 1.5).log_scale(),
                    (lmin - pad)..(lmax + pad),
                )?;
            chart
                .configure_mesh()
                .x_desc("training compute, FLOPs (6 x parameters x tokens)")
                .y_desc("validation loss (masked MSE)")
                .x_labels(6)
                .x_label_formatter(&|x| format!("{x:.0e}"))
                .label_style(("sans-serif", 14))
                .draw()?;
            if let Some(f) = fit {
                let from = fitted.first().map_or(cmin, |p| p.compute);
                let curve: Vec<(f64, f64)> = (0..=100)
                    .map(|i| {
                        let c = (from / 1.5) * ((cmax * 2.25 / from).powf(i as f64 / 100.0));
                        (c, f.at(c))
                    })
                    .filter(|&(_, l)| l <= lmax + pad)
                    .collect();
                chart
                    .draw_series(LineSeries::new(curve, BLACK.stroke_width(2)))?
                    .label(format!(
                        "frontier fit: L = {:.3e} C^{:.3} + {:.3}",
                        f.a, f.b, f.c
                    ))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            }
            let mut sizes: Vec<&str> = runs.iter().map(|r| r.size.as_str()).collect();
            sizes.dedup();
            for (i, size) in sizes.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                for run in runs.iter().filter(|r| r.size == *size) {
                    chart.draw_series(LineSeries::new(curve_of(run), color.stroke_width(1)))?;
                }
                let ends: Vec<(f64, f64)> = runs
                    .iter()
                    .filter(|r| r.size == *size)
                    .map(|r| (r.compute, r.validation_loss))
                    .collect();
                chart
                    .draw_series(ends.iter().map(|&p| Circle::new(p, 6, color.filled())))?
                    .label(*size)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 6, color.filled()));
            }
            chart
                .draw_series(fitted.iter().map(|p| {
                    Circle::new((p.compute, p.validation_loss), 9, BLACK.stroke_width(2))
                }))?
                .label("frontier points fitted")
                .legend(|(x, y)| Circle::new((x + 10, y), 6, BLACK.stroke_width(2)));
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
            Ok(())
        };
    draw()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot draw {}", path.display()))
}

/// One series as a line with its points, such as a training curve.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
) -> anyhow::Result<()> {
    register_font()?;
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.is_empty() {
        return Ok(());
    }
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let (xmin, xmax) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.0), hi.max(p.0))
            });
        let (ymin, ymax) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            });
        let pad = ((ymax - ymin) * 0.1).max(1e-3);
        let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xmin..xmax.max(xmin + 1.0), (ymin - pad)..(ymax + pad))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series(LineSeries::new(finite.iter().copied(), &BLUE))?;
        chart.draw_series(finite.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}
