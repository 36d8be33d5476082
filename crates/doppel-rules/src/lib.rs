//! The one rule language: conditions over a plant's sensors, for alerts now and for the
//! autonomy layer's safety limits and rewards later.
//!
//! ```text
//! chw_supply_temp > 9.0 for 5m
//! mean(pump3_vibration, 10m) > 7.1 or stale(pump3_vibration)
//! forecast(chw_supply_temp, 2h).p90 > 9.0
//! ```
//!
//! A rules file is TOML: `[[rule]]` tables with `name`, `when` (an expression) and an
//! optional `severity` and `asset`. Every problem in a file is reported with file, line,
//! column and what was expected, and a file with a problem is not used at all. Missing data
//! makes a condition unknown, never true or false by accident. This crate only reads and
//! evaluates; it never touches the lake or the model (their values are handed to it).

/// Evaluating rules as readings arrive: windows, durations, three-valued logic.
pub mod eval;
/// A rules file: TOML, each rule's expression parsed and checked against a twin spec.
pub mod file;
/// The expression language: tokens, grammar, the syntax tree.
pub mod syntax;

pub use eval::{Evaluator, Firing, Truth, number_from, truth_from};
pub use file::{Rule, RuleSet, RulesError, Severity, check_expression};
pub use syntax::{Expr, parse_condition};
