//! Progress bars on stderr for long work (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `unit`s up to `len`, with rate and time left.
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)"
        ))
        .expect("the template is valid"),
    );
    bar
}

/// A bar over training steps whose message carries the loss (and speed).
pub fn training_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps {msg} ({eta} left)")
            .expect("the template is valid"),
    );
    bar
}

/// Moves a [`training_bar`] to a step and shows its loss.
pub fn show_loss(bar: &ProgressBar, progress: &doppel_model::train::Progress) {
    bar.set_position(progress.step as u64);
    bar.set_message(format!("loss {:.4}", progress.loss));
}
