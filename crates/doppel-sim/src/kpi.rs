//! Key performance indicators of a run, and their distributions over many runs.
//!
//! A run accumulates [`Kpis`]; a Monte Carlo study turns a list of them into [`Summary`]s
//! (mean, p5, p50, p95). Everything here is plain arithmetic over values given in run order,
//! so the same runs always give the same numbers, whatever the thread count.

use serde::{Deserialize, Serialize};

use crate::plant::FailureEvent;

/// What a risk or operations team counts, for one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Electricity used by chillers, pumps, tower fans and condenser pumps, kWh.
    pub energy_kwh: f64,
    /// What that electricity cost, in currency units.
    pub energy_cost: f64,
    /// Minutes the chilled-water supply temperature was above its limit.
    pub limit_excursion_minutes: f64,
    /// Asset-hours lost to failures (waiting for a crew or parts, and repairing).
    pub downtime_hours: f64,
    /// Asset-hours of planned maintenance.
    pub planned_maintenance_hours: f64,
    /// Money spent on maintenance and repairs.
    pub maintenance_cost: f64,
    /// Unplanned failures (trips).
    pub failures: f64,
    /// Heat the load could not hand to the water, kWh (the hall was not cooled).
    pub unmet_cooling_kwh: f64,
    /// The highest chilled-water supply temperature, °C.
    pub peak_supply_temp_c: f64,
    /// Actions the plant refused (impossible, or beyond crew capacity).
    pub refused_actions: f64,
}

impl Kpis {
    /// The KPIs by name, in report order.
    pub fn named(&self) -> [(&'static str, f64); 10] {
        [
            ("energy_kwh", self.energy_kwh),
            ("energy_cost", self.energy_cost),
            ("limit_excursion_minutes", self.limit_excursion_minutes),
            ("downtime_hours", self.downtime_hours),
            ("maintenance_cost", self.maintenance_cost),
            ("failures", self.failures),
            ("planned_maintenance_hours", self.planned_maintenance_hours),
            ("unmet_cooling_kwh", self.unmet_cooling_kwh),
            ("peak_supply_temp_c", self.peak_supply_temp_c),
            ("refused_actions", self.refused_actions),
        ]
    }
}

/// The distribution of one KPI over runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub p5: f64,
    pub p50: f64,
    pub p95: f64,
}

impl Summary {
    /// Summarises values (any order); percentiles interpolate linearly between ranks.
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary {
                mean: f64::NAN,
                p5: f64::NAN,
                p50: f64::NAN,
                p95: f64::NAN,
            };
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        Summary {
            mean,
            p5: percentile(&sorted, 0.05),
            p50: percentile(&sorted, 0.50),
            p95: percentile(&sorted, 0.95),
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Whether at least `at_least` failures, touching at least `assets` distinct assets, fell
/// within some window of `window_s` seconds.
pub fn failures_cluster(
    failures: &[FailureEvent],
    at_least: usize,
    assets: usize,
    window_s: f64,
) -> bool {
    if at_least == 0 {
        return true;
    }
    let mut events = failures.to_vec();
    events.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
    for (i, first) in events.iter().enumerate() {
        let inside: Vec<&FailureEvent> = events[i..]
            .iter()
            .take_while(|e| e.time_s - first.time_s <= window_s)
            .collect();
        let mut distinct: Vec<usize> = inside.iter().map(|e| e.asset).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if inside.len() >= at_least && distinct.len() >= assets {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let values: Vec<f64> = (0..=100).map(f64::from).collect();
        let s = Summary::of(&values);
        assert_eq!(s.mean, 50.0);
        assert_eq!(s.p5, 5.0);
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p95, 95.0);
        let s = Summary::of(&[1.0, 2.0]);
        assert_eq!(s.p50, 1.5);
    }

    #[test]
    fn failure_clusters_need_count_assets_and_window() {
        let e = |t: f64, a: usize| FailureEvent {
            time_s: t * 3600.0,
            asset: a,
        };
        let events = [e(0.0, 1), e(10.0, 1), e(200.0, 2)];
        assert!(failures_cluster(&events, 2, 1, 24.0 * 3600.0));
        assert!(!failures_cluster(&events, 2, 2, 24.0 * 3600.0));
        assert!(failures_cluster(&events, 2, 2, 200.0 * 3600.0));
        assert!(!failures_cluster(&events, 4, 1, 1e9));
    }
}
