//! Benchmarks on real public data, each under its published protocol and next to published
//! figures: ETT forecasting and imputation (`ett`), Tennessee Eastman fault detection
//! (`tep`). They read the data in place and never download anything.

mod ett;
mod tep;

pub use ett::{BenchRow, EttOptions, PUBLISHED, ett};
pub use tep::{TepRow, read_tep, tep};

/// A model's name in the result rows: `_2d{K}` marks tokens of K channels (2-D patches).
pub(crate) fn model_name(base: &str, channels_per_token: usize) -> String {
    if channels_per_token > 1 {
        format!("{base}_2d{channels_per_token}")
    } else {
        base.to_owned()
    }
}
