//! Rules evaluated as readings arrive, in data time: each sensor's recent readings kept for
//! the longest window a rule reads it over, every rule judged after each batch, and a rule
//! that stays true for its `for` duration reported as firing, then as resolved once it is
//! false. Three-valued: a sensor with no recent reading is unknown, and unknown is neither
//! true nor false (an alert neither fires nor resolves on it). `anomaly` and `forecast` are
//! unknown until the twin hands their values in.

use std::collections::{HashMap, VecDeque};

use doppel_core::spec::TwinSpec;

use crate::file::{RuleSet, Severity};
use crate::syntax::{Arith, Compare, Expr, Quantile, Window};

/// A condition's value: true, false, or unknown (missing data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

/// A value while evaluating.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Number(f64),
    Bool(bool),
    Unknown,
}

/// A rule that began or ended firing.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    /// The rule's index in its set.
    pub rule: usize,
    pub name: String,
    pub asset: String,
    pub severity: Severity,
    /// true: it began firing; false: it resolved.
    pub firing: bool,
    /// Data time of the change, ns.
    pub time: i64,
    /// The latest value of each sensor the rule reads, at that time.
    pub values: Vec<(String, Option<f64>)>,
}

/// How many sampling periods without a reading make a sensor stale (its value unknown).
const STALE_PERIODS: i64 = 3;

/// Readings a window needs before `spread` or `noise` says anything (fewer: unknown).
const SPREAD_READINGS: usize = 3;

struct RuleState {
    /// When the condition became true and has stayed so (data time).
    true_since: Option<i64>,
    /// When a firing rule's condition became false and has stayed so.
    false_since: Option<i64>,
    firing: bool,
}

/// A rule set at work over one spec's sensors.
pub struct Evaluator {
    rules: RuleSet,
    states: Vec<RuleState>,
    index: HashMap<String, usize>,
    names: Vec<String>,
    periods: Vec<i64>,
    /// Per sensor: its readings within its longest window (at least the latest).
    history: Vec<VecDeque<(i64, f64)>>,
    keep: Vec<i64>,
    /// Per rule, the sensors it reads.
    reads: Vec<Vec<usize>>,
    /// Data time of the first evaluation: a sensor not heard from since is stale only once
    /// three of its periods have passed (at start, nothing has reported yet).
    since: Option<i64>,
    /// Anomaly scores handed in by the twin, by asset or sensor id.
    anomalies: HashMap<String, f64>,
    /// (sensor, horizon ns) → the band's p10, p50, p90 that far ahead.
    forecasts: HashMap<(String, i64), [f64; 3]>,
}

impl Evaluator {
    pub fn new(rules: RuleSet, spec: &TwinSpec) -> Self {
        let index: HashMap<String, usize> = spec
            .sensors
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let periods = spec.sensors.iter().map(|s| s.period_nanos).collect();
        let names = spec.sensors.iter().map(|s| s.id.clone()).collect();
        let mut keep = vec![0i64; spec.sensors.len()];
        let mut reads = Vec::new();
        for rule in &rules.rules {
            let mut names = Vec::new();
            windows(&rule.condition.expr, &index, &mut keep);
            rule.condition.expr.names(&mut names);
            let mut sensors: Vec<usize> = names
                .iter()
                .filter_map(|(n, _)| index.get(&n.text).copied())
                .collect();
            sensors.dedup();
            reads.push(sensors);
        }
        let states = rules
            .rules
            .iter()
            .map(|_| RuleState {
                true_since: None,
                false_since: None,
                firing: false,
            })
            .collect();
        Evaluator {
            rules,
            states,
            history: vec![VecDeque::new(); index.len()],
            index,
            names,
            periods,
            keep,
            reads,
            since: None,
            anomalies: HashMap::new(),
            forecasts: HashMap::new(),
        }
    }

    /// The anomaly score of an asset or a sensor now (what `anomaly(id)` reads); NaN forgets
    /// it (unknown again).
    pub fn set_anomaly(&mut self, id: &str, score: f64) {
        if score.is_finite() {
            self.anomalies.insert(id.to_owned(), score);
        } else {
            self.anomalies.remove(id);
        }
    }

    /// The forecasts the rules read: each (sensor, horizon in ns) once.
    pub fn forecasts_wanted(&self) -> Vec<(String, i64)> {
        let mut wanted = Vec::new();
        for rule in &self.rules.rules {
            rule.condition.expr.forecasts(&mut wanted);
        }
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// The forecast band of `sensor` `horizon` ns ahead (p10, p50, p90): what
    /// `forecast(sensor, horizon).pNN` reads; `None` forgets it (unknown again).
    pub fn set_forecast(&mut self, sensor: &str, horizon: i64, band: Option<[f64; 3]>) {
        let key = (sensor.to_owned(), horizon);
        match band {
            Some(band) if band.iter().all(|v| v.is_finite()) => {
                self.forecasts.insert(key, band);
            }
            _ => {
                self.forecasts.remove(&key);
            }
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Marks rule `name` as firing (an alert of it is open, read back at start), so it
    /// resolves when its condition turns false rather than firing again.
    pub fn mark_firing(&mut self, name: &str) {
        for (rule, state) in self.rules.rules.iter().zip(&mut self.states) {
            if rule.name == name {
                state.firing = true;
            }
        }
    }

    /// A reading of sensor `i` (readings of a sensor arrive in time order; an older one is
    /// ignored).
    pub fn observe(&mut self, i: usize, time: i64, value: f64) {
        let history = &mut self.history[i];
        if history.back().is_some_and(|(t, _)| *t > time) {
            return;
        }
        history.push_back((time, value));
        while history.len() > 1
            && history
                .front()
                .is_some_and(|(t, _)| *t < time - self.keep[i])
        {
            history.pop_front();
        }
    }

    /// Judges every rule at data time `now`; returns the rules that began or ended firing.
    pub fn evaluate(&mut self, now: i64) -> Vec<Firing> {
        self.since.get_or_insert(now);
        let mut changes = Vec::new();
        for r in 0..self.rules.rules.len() {
            let rule = &self.rules.rules[r];
            let truth = match self.value(&rule.condition.expr, now) {
                Value::Bool(true) => Truth::True,
                Value::Bool(false) => Truth::False,
                _ => Truth::Unknown,
            };
            let state = &mut self.states[r];
            let change = match truth {
                Truth::True => {
                    state.false_since = None;
                    let since = *state.true_since.get_or_insert(now);
                    (!state.firing && now - since >= rule.condition.hold).then_some(true)
                }
                Truth::False => {
                    state.true_since = None;
                    let since = *state.false_since.get_or_insert(now);
                    (state.firing && now - since >= rule.keep_firing_for).then_some(false)
                }
                // Unknown cannot claim the condition held, nor that it ended.
                Truth::Unknown => {
                    state.true_since = None;
                    state.false_since = None;
                    None
                }
            };
            if let Some(firing) = change {
                state.firing = firing;
                state.false_since = None;
                let values = self.reads[r]
                    .iter()
                    .map(|&i| (self.names[i].clone(), self.latest(i, now)))
                    .collect();
                changes.push(Firing {
                    rule: r,
                    name: rule.name.clone(),
                    asset: rule.asset.clone(),
                    severity: rule.severity,
                    firing,
                    time: now,
                    values,
                });
            }
        }
        changes
    }

    /// Sensor `i`'s latest reading, unless it is stale at `now`.
    fn latest(&self, i: usize, now: i64) -> Option<f64> {
        let (t, v) = *self.history[i].back()?;
        (now - t <= STALE_PERIODS * self.periods[i]).then_some(v)
    }

    fn sensor(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn value(&self, expr: &Expr, now: i64) -> Value {
        use Value::*;
        match expr {
            Expr::Number(v) => Number(*v),
            Expr::Sensor(n) => self
                .sensor(&n.text)
                .and_then(|i| self.latest(i, now))
                .map_or(Unknown, Number),
            Expr::Stale(n) => match self.sensor(&n.text) {
                Some(i) if self.history[i].is_empty() => {
                    // Never heard from: stale once it has had three periods to report.
                    let waited = now - self.since.unwrap_or(now);
                    if waited > STALE_PERIODS * self.periods[i] {
                        Bool(true)
                    } else {
                        Unknown
                    }
                }
                Some(i) => Bool(self.latest(i, now).is_none()),
                None => Unknown,
            },
            Expr::Window {
                function,
                sensor,
                width,
            } => {
                let Some(i) = self.sensor(&sensor.text) else {
                    return Unknown;
                };
                let inside: Vec<(i64, f64)> = self.history[i]
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t > now - width && *t <= now)
                    .collect();
                let values = inside.iter().map(|(_, v)| *v);
                match (function, inside.len()) {
                    (_, 0) => Unknown,
                    (Window::Mean, n) => Number(values.sum::<f64>() / n as f64),
                    (Window::Min, _) => Number(values.fold(f64::INFINITY, f64::min)),
                    (Window::Max, _) => Number(values.fold(f64::NEG_INFINITY, f64::max)),
                    (Window::Rate, 1) => Unknown,
                    // Two equal readings say little: a stuck sensor repeats itself for long.
                    (Window::Spread, n) if n < SPREAD_READINGS => Unknown,
                    (Window::Spread, _) => {
                        let (lo, hi) = values
                            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                                (lo.min(v), hi.max(v))
                            });
                        Number(hi - lo)
                    }
                    (Window::Noise, n) if n < SPREAD_READINGS => Unknown,
                    (Window::Noise, n) => {
                        let squares: f64 = inside
                            .windows(2)
                            .map(|pair| (pair[1].1 - pair[0].1).powi(2))
                            .sum();
                        Number((squares / (2.0 * (n - 1) as f64)).sqrt())
                    }
                    (Window::Rate, n) => {
                        let (t0, v0) = inside[0];
                        let (t1, v1) = inside[n - 1];
                        Number((v1 - v0) / ((t1 - t0) as f64 / 1e9))
                    }
                }
            }
            // Scores and forecasts are handed in by the twin once it has them.
            Expr::Anomaly(n) => self.anomalies.get(&n.text).map_or(Unknown, |v| Number(*v)),
            Expr::Forecast {
                sensor,
                horizon,
                quantile,
            } => self
                .forecasts
                .get(&(sensor.text.clone(), *horizon))
                .map_or(Unknown, |band| {
                    Number(match quantile {
                        Quantile::P10 => band[0],
                        Quantile::P50 => band[1],
                        Quantile::P90 => band[2],
                    })
                }),
            _ => combine(expr, &|e| self.value(e, now)),
        }
    }
}

/// The value of the operators (negation, arithmetic, comparisons, Kleene's and/or/not) given
/// the values of their operands; `value` gives those. Leaves are the caller's.
fn combine(expr: &Expr, value: &dyn Fn(&Expr) -> Value) -> Value {
    use Value::*;
    match expr {
        Expr::Negate(e) => match value(e) {
            Number(v) => Number(-v),
            _ => Unknown,
        },
        Expr::Abs(e) => match value(e) {
            Number(v) => Number(v.abs()),
            _ => Unknown,
        },
        Expr::Arith(op, a, b) => match (value(a), value(b)) {
            (Number(x), Number(y)) => {
                let v = match op {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Div => x / y,
                };
                if v.is_finite() { Number(v) } else { Unknown }
            }
            _ => Unknown,
        },
        Expr::Compare(op, a, b) => match (value(a), value(b)) {
            (Number(x), Number(y)) => Bool(match op {
                Compare::Lt => x < y,
                Compare::Le => x <= y,
                Compare::Gt => x > y,
                Compare::Ge => x >= y,
                Compare::Eq => x == y,
                Compare::Ne => x != y,
            }),
            _ => Unknown,
        },
        // Kleene's logic: false and unknown is false; true or unknown is true.
        Expr::And(a, b) => match (value(a), value(b)) {
            (Bool(false), _) | (_, Bool(false)) => Bool(false),
            (Bool(true), Bool(true)) => Bool(true),
            _ => Unknown,
        },
        Expr::Or(a, b) => match (value(a), value(b)) {
            (Bool(true), _) | (_, Bool(true)) => Bool(true),
            (Bool(false), Bool(false)) => Bool(false),
            _ => Unknown,
        },
        Expr::Not(e) => match value(e) {
            Bool(v) => Bool(!v),
            _ => Unknown,
        },
        _ => Unknown,
    }
}

/// An expression's value at one moment from named quantities alone: what rewards and safety
/// limits read in a simulation, where every quantity is known at each step. Windows, anomaly
/// scores and forecasts have no meaning there and are unknown.
fn value_from(expr: &Expr, names: &dyn Fn(&str) -> Option<f64>) -> Value {
    match expr {
        Expr::Number(v) => Value::Number(*v),
        Expr::Sensor(n) => names(&n.text).map_or(Value::Unknown, Value::Number),
        Expr::Stale(_) | Expr::Window { .. } | Expr::Anomaly(_) | Expr::Forecast { .. } => {
            Value::Unknown
        }
        _ => combine(expr, &|e| value_from(e, names)),
    }
}

/// A number-valued expression's value from named quantities (`None`: unknown, or not a
/// number).
pub fn number_from(expr: &Expr, names: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
    match value_from(expr, names) {
        Value::Number(v) => Some(v),
        _ => None,
    }
}

/// A condition's truth from named quantities.
pub fn truth_from(expr: &Expr, names: &dyn Fn(&str) -> Option<f64>) -> Truth {
    match value_from(expr, names) {
        Value::Bool(true) => Truth::True,
        Value::Bool(false) => Truth::False,
        _ => Truth::Unknown,
    }
}

/// Records, per sensor, the longest window any function reads it over.
fn windows(expr: &Expr, index: &HashMap<String, usize>, keep: &mut [i64]) {
    match expr {
        Expr::Window { sensor, width, .. } => {
            if let Some(&i) = index.get(&sensor.text) {
                keep[i] = keep[i].max(*width);
            }
        }
        Expr::Negate(e) | Expr::Abs(e) | Expr::Not(e) => windows(e, index, keep),
        Expr::Arith(_, a, b) | Expr::Compare(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
            windows(a, index, keep);
            windows(b, index, keep);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as a checked rule set over the test spec.
    fn checked(text: &str) -> RuleSet {
        RuleSet::parse(text, std::path::Path::new("r.toml"), &spec()).unwrap()
    }

    /// Feeds the supply sensor `readings` (seconds, value), judging after each one: the
    /// changes, as (began firing, seconds).
    fn feed(e: &mut Evaluator, readings: &[(i64, f64)]) -> Vec<(bool, i64)> {
        let mut changes = Vec::new();
        for &(t, v) in readings {
            e.observe(0, t * S, v);
            changes.extend(
                e.evaluate(t * S)
                    .into_iter()
                    .map(|f| (f.firing, f.time / S)),
            );
        }
        changes
    }

    const SPEC: &str = r#"
[[site]]
id = "s"
[[asset]]
id = "chw"
site = "s"
kind = "loop"
[[asset]]
id = "pump3"
site = "s"
kind = "pump"
[[sensor]]
id = "chw_supply_temp"
asset = "chw"
unit = "°C"
period = "10s"
measurement = "chw"
field = "supply"
[[sensor]]
id = "pump3_vibration"
asset = "pump3"
unit = "mm/s"
period = "10s"
measurement = "pump"
tags = { asset = "pump3" }
field = "vibration"
"#;

    fn spec() -> TwinSpec {
        doppel_core::spec::parse(SPEC, std::path::Path::new("twin.toml")).unwrap()
    }

    const S: i64 = 1_000_000_000;

    /// `abs` is a number's magnitude; of an unknown, unknown (never 0 by accident).
    #[test]
    fn abs_is_the_magnitude_and_unknown_stays_unknown() {
        let expr = crate::syntax::parse_condition("abs(x - y) > 1")
            .unwrap()
            .expr;
        let known = |x: f64, y: f64| {
            move |name: &str| match name {
                "x" => Some(x),
                "y" => Some(y),
                _ => None,
            }
        };
        assert_eq!(truth_from(&expr, &known(1.0, 3.0)), Truth::True);
        assert_eq!(truth_from(&expr, &known(3.0, 1.0)), Truth::True);
        assert_eq!(truth_from(&expr, &known(3.0, 2.5)), Truth::False);
        assert_eq!(
            truth_from(&expr, &|n: &str| (n == "x").then_some(1.0)),
            Truth::Unknown
        );
    }

    /// A condition must hold for its whole `for` before it fires, fires once, and resolves
    /// once false; a sensor gone quiet makes it unknown, which neither fires nor resolves.
    #[test]
    fn for_durations_fire_once_and_resolve_and_unknown_is_neither() {
        let rules = checked(
            "[[rule]]\nname = \"warm\"\nwhen = \"chw_supply_temp > 9 for 30s\"\nseverity = \"critical\"\n",
        );
        let mut e = Evaluator::new(rules, &spec());
        let mut changes = Vec::new();
        for (t, v) in [
            (0, 8.0),
            (10, 9.5),
            (20, 9.6),
            (30, 9.7),
            (40, 9.8),
            (50, 9.9),
        ] {
            e.observe(0, t * S, v);
            changes.extend(
                e.evaluate(t * S)
                    .into_iter()
                    .map(|f| (f.time / S, f.firing)),
            );
        }
        assert_eq!(
            changes,
            [(40, true)],
            "true from 10 s, for 30 s: fires at 40 s, once"
        );
        // Nothing for 40 s: stale, unknown: still firing, not resolved.
        assert!(e.evaluate(90 * S).is_empty());
        e.observe(0, 100 * S, 7.0);
        let resolved = e.evaluate(100 * S);
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing);
        assert_eq!(
            resolved[0].values,
            [("chw_supply_temp".to_owned(), Some(7.0))]
        );
        assert_eq!(resolved[0].severity, Severity::Critical);
        assert_eq!(resolved[0].asset, "chw");
    }

    /// Windows read the readings inside them; an unknown side of `or` does not hide a true
    /// one, and `and` with an unknown side is unknown unless the other is false.
    #[test]
    fn windows_and_three_valued_logic() {
        let text = "[[rule]]\nname = \"shaking\"\nwhen = \"mean(pump3_vibration, 30s) > 7 or anomaly(pump3) > 0.99\"\n\
                    [[rule]]\nname = \"both\"\nwhen = \"pump3_vibration > 1 and chw_supply_temp > 1\"\n\
                    [[rule]]\nname = \"rising\"\nwhen = \"rate(pump3_vibration, 1m) > 0.1\"\n";
        let rules = checked(text);
        assert_eq!(rules.rules[0].asset, "pump3");
        let mut e = Evaluator::new(rules, &spec());
        let mut fired = Vec::new();
        for (t, v) in [(0, 2.0), (10, 6.0), (20, 9.0), (30, 10.0)] {
            e.observe(1, t * S, v);
            fired.extend(
                e.evaluate(t * S)
                    .into_iter()
                    .filter(|f| f.firing)
                    .map(|f| (f.name, f.time / S)),
            );
        }
        // mean over (0, 30]: 6, 9, 10 → 8.33 at 30 s; at 20 s: 2, 6, 9 → 5.67.
        // rate over the minute: (10 - 2) / 30 s = 0.27 from 10 s on ((6-2)/10 = 0.4).
        assert_eq!(
            fired,
            [("rising".to_owned(), 10), ("shaking".to_owned(), 30)]
        );
    }

    /// `spread(x, w) == 0` fires once a sensor has repeated one value for its window, and not
    /// before three readings say so.
    #[test]
    fn spread_finds_a_sensor_stuck_on_one_value() {
        let rules =
            checked("[[rule]]\nname = \"stuck\"\nwhen = \"spread(chw_supply_temp, 1m) == 0\"\n");
        let mut e = Evaluator::new(rules, &spec());
        // Noisy until 30 s, then 7.0 over and over.
        let fired = feed(
            &mut e,
            &[
                (0, 7.1),
                (10, 7.0),
                (20, 7.0),
                (30, 7.2),
                (40, 7.0),
                (50, 7.0),
                (60, 7.0),
                (100, 7.0),
            ],
        );
        // The window (t − 60 s, t] holds only 7.0 from 100 s on (50, 60 and 100 s).
        assert_eq!(fired, [(true, 100)]);
        let mut e = Evaluator::new(
            checked("[[rule]]\nname = \"stuck\"\nwhen = \"spread(chw_supply_temp, 1m) == 0\"\n"),
            &spec(),
        );
        e.observe(0, 0, 7.0);
        e.observe(0, 10 * S, 7.0);
        assert!(
            e.evaluate(10 * S).is_empty(),
            "two readings are too few to call it stuck"
        );
    }

    /// `noise(x, w)` sees an instrument turn noisy, and a steady climb much larger than the
    /// noise does not look like noise (where `spread` would be as large).
    #[test]
    fn noise_sees_scatter_and_not_a_steady_climb() {
        let noise_of = |readings: &[f64]| {
            let rules =
                checked("[[rule]]\nname = \"noisy\"\nwhen = \"noise(chw_supply_temp, 10m) > 1\"\n");
            let mut e = Evaluator::new(rules, &spec());
            let timed: Vec<(i64, f64)> = (0..).step_by(10).zip(readings.iter().copied()).collect();
            feed(&mut e, &timed)
        };
        // Climbing 0.5 K a reading: a spread of 4.5 K over ten readings, a noise of 0.35.
        let climb: Vec<f64> = (0..10).map(|i| 7.0 + 0.5 * i as f64).collect();
        assert!(noise_of(&climb).is_empty());
        // Alternating ±2 K around 7: successive differences of 4 K, a noise of 2.83.
        let scatter = [7.0, 7.0, 9.0, 5.0, 9.0, 5.0];
        // At 20 s: differences 0 and 2 → √(4 / 4) = 1, not above; at 30 s: √(20 / 6) = 1.8.
        assert_eq!(noise_of(&scatter), [(true, 30)]);
        assert!(
            noise_of(&[7.0, 12.0]).is_empty(),
            "two readings are too few"
        );
    }

    /// With `keep_firing_for`, a condition that dips false for less than that does not resolve
    /// the alert (and so does not open a new one when it comes back); false for that long
    /// resolves it.
    #[test]
    fn keep_firing_for_rides_out_a_short_dip() {
        let rules = checked(
            "[[rule]]\nname = \"warm\"\nwhen = \"chw_supply_temp > 9\"\nkeep_firing_for = \"30s\"\n",
        );
        assert_eq!(rules.rules[0].keep_firing_for, 30 * S);
        let mut e = Evaluator::new(rules, &spec());
        // Warm, a 20 s dip, warm again, then cool for good from 60 s.
        let changes = feed(
            &mut e,
            &[
                (0, 10.0),
                (10, 8.0),
                (20, 8.5),
                (30, 10.0),
                (60, 8.0),
                (70, 8.0),
                (80, 8.0),
                (90, 8.0),
            ],
        );
        assert_eq!(changes, [(true, 0), (false, 90)]);
        let bad = RuleSet::parse(
            "[[rule]]\nname = \"warm\"\nwhen = \"chw_supply_temp > 9\"\nkeep_firing_for = \"soon\"\n",
            std::path::Path::new("r.toml"),
            &spec(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("r.toml:4:") && bad.contains("keep_firing_for"),
            "{bad}"
        );
    }

    /// `anomaly(asset)` reads the score the twin hands in; without one it is unknown.
    #[test]
    fn anomaly_reads_the_score_handed_in() {
        let rules = checked("[[rule]]\nname = \"odd\"\nwhen = \"anomaly(pump3) > 0.99\"\n");
        assert_eq!(rules.rules[0].asset, "pump3");
        let mut e = Evaluator::new(rules, &spec());
        assert!(e.evaluate(0).is_empty(), "no score: unknown");
        e.set_anomaly("pump3", 0.5);
        assert!(e.evaluate(S).is_empty());
        e.set_anomaly("pump3", 0.999);
        assert_eq!(e.evaluate(2 * S).len(), 1);
        e.set_anomaly("pump3", f64::NAN);
        assert!(
            e.evaluate(3 * S).is_empty(),
            "forgotten: unknown, neither fires nor resolves"
        );
    }

    /// `forecast(sensor, horizon).pNN` reads the band handed in for that sensor and horizon;
    /// the rules say which they want; without one it is unknown.
    #[test]
    fn forecasts_read_the_band_handed_in() {
        let rules = checked(
            "[[rule]]\nname = \"warm soon\"\nwhen = \"forecast(chw_supply_temp, 30m).p90 > 9\"\n\
             [[rule]]\nname = \"cold soon\"\nwhen = \"forecast(chw_supply_temp, 30m).p10 < 5\"\n",
        );
        let mut e = Evaluator::new(rules, &spec());
        assert_eq!(
            e.forecasts_wanted(),
            [("chw_supply_temp".to_owned(), 1800 * S)]
        );
        assert!(e.evaluate(0).is_empty(), "no forecast: unknown");
        e.set_forecast("chw_supply_temp", 1800 * S, Some([6.0, 7.5, 9.4]));
        let fired: Vec<String> = e.evaluate(S).into_iter().map(|f| f.name).collect();
        assert_eq!(fired, ["warm soon"]);
        e.set_forecast("chw_supply_temp", 3600 * S, Some([1.0, 1.0, 1.0]));
        assert!(
            e.evaluate(2 * S).is_empty(),
            "another horizon is another forecast"
        );
        e.set_forecast("chw_supply_temp", 1800 * S, None);
        assert!(
            e.evaluate(3 * S).is_empty(),
            "forgotten: unknown, neither fires nor resolves"
        );
    }

    /// A sensor not heard from is not called stale before it has had three of its periods
    /// to report (at start, nothing has), and is once they have passed.
    #[test]
    fn stale_waits_three_periods_from_the_start() {
        let rules = checked("[[rule]]\nname = \"silent\"\nwhen = \"stale(chw_supply_temp)\"\n");
        let mut e = Evaluator::new(rules, &spec());
        e.observe(1, 0, 1.0);
        assert!(e.evaluate(0).is_empty());
        assert!(
            e.evaluate(30 * S).is_empty(),
            "three periods of 10 s not passed yet"
        );
        let fired = e.evaluate(31 * S);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].firing);
    }

    /// Every problem says where and what, and nothing of a bad file is used.
    #[test]
    fn a_bad_rules_file_names_every_problem() {
        let text = "[[rule]]\nname = \"a\"\nwhen = \"chw_supply > 9\"\n\
                    [[rule]]\nname = \"a\"\nwhen = \"chw_supply_temp > pump3_vibration\"\n\
                    [[rule]]\nname = \"b\"\nwhen = \"chw_supply_temp >\"\nseverity = \"loud\"\n\
                    [[rule]]\nname = \"c\"\nwhen = \"1 > 0\"\n";
        let Err(RulesError::Invalid(problems)) =
            RuleSet::parse(text, std::path::Path::new("r.toml"), &spec())
        else {
            panic!("a bad file was accepted")
        };
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(shown[0].starts_with("r.toml:3:9: rule[0].when: unknown sensor `chw_supply` (did you mean `chw_supply_temp`?)"), "{shown:?}");
        assert!(
            shown
                .iter()
                .any(|p| p.contains("rule[1].name: `a` names rule[0] already")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|p| p.contains("rule[1].when: one side is in °C and the other in mm/s")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|p| p.contains("rule[2].when: the rule ends too early")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|p| p.contains("rule[3].asset: the rule names no sensor")),
            "{shown:?}"
        );
    }

    use crate::file::RulesError;
}
