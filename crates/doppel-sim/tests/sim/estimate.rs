//! The state estimator against the simulator's truth.

use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig, RecentReadings, measure_estimator};
use doppel_sim::plant::{AssetStatus, Plant};

#[test]
fn the_estimator_finds_hidden_wear_and_fouling_from_readings() {
    let e = measure_estimator(1..7, 2.0).unwrap();
    eprintln!("{e:?}");
    assert_eq!(e.plants, 6);
    // Units that ran in the window: wear and fouling within a few hundredths of the truth.
    assert!(e.wear_observed.1 >= 12, "{e:?}");
    assert!(e.wear_observed.0 < 0.02, "{e:?}");
    assert!(e.fouling_observed.1 >= 6, "{e:?}");
    assert!(e.fouling_observed.0 < 0.02, "{e:?}");
    // Simulated from the estimate, the next hour stays close to the true plant's.
    assert!(e.supply_ahead_k < 0.3, "{e:?}");
    assert!(e.power_ahead_kw < 0.1 * e.mean_power_kw, "{e:?}");
}

#[test]
fn an_estimate_takes_statuses_as_read_and_queues_failed_units_for_repair() {
    let config = ChillerPlantConfig::default();
    let probe = ChillerPlant::new(config.clone(), 1).unwrap();
    let ids: Vec<String> = probe.sensors().iter().map(|s| s.id.clone()).collect();
    let now = 1_790_000_000.0;
    let mut recent = RecentReadings::new(ids.len());
    recent.now_unix_s = now;
    let set = |recent: &mut RecentReadings, id: &str, v: f64| {
        let i = ids.iter().position(|s| s == id).unwrap();
        recent.series[i].push((now - 30.0, v));
    };
    for (id, v) in [
        ("pump1_status", 1.0),
        ("pump2_status", 2.0),
        ("pump3_status", 1.0),
        ("pump4_status", 0.0),
        ("chiller1_status", 1.0),
        ("chiller2_status", 4.0),
        ("chiller3_status", 0.0),
        ("chw_supply_temp", 8.2),
        ("chw_setpoint", 6.5),
    ] {
        set(&mut recent, id, v);
    }
    let (mut plant, estimate) = ChillerPlant::estimate(config, 3, &recent).unwrap();
    let status: Vec<AssetStatus> = plant.labels().iter().map(|l| l.status).collect();
    assert_eq!(status[1], AssetStatus::Failed);
    assert_eq!(status[5], AssetStatus::Maintenance);
    assert_eq!(status[0], AssetStatus::Running);
    // Nothing was read of vibration or condensers: every hidden value is the prior, and says so.
    assert!(estimate.hidden.iter().all(|h| h.readings == 0));
    assert!(estimate.missing.contains(&"weather_temp".to_owned()));
    // The failed pump is repaired once the crew has finished the chiller's cleaning.
    let mut policy = doppel_sim::policy::PolicyKind::None.build(&plant).unwrap();
    doppel_sim::run::simulate(
        &mut plant,
        policy.as_mut(),
        Vec::new(),
        doppel_sim::run::RunSettings {
            days: 1.0,
            step_s: 60.0,
        },
        None,
    )
    .unwrap();
    let status: Vec<AssetStatus> = plant.labels().iter().map(|l| l.status).collect();
    assert!(status[1].is_available(), "{status:?}");
    assert!(status[5].is_available(), "{status:?}");
    assert!(plant.kpis().downtime_hours > 4.0);
    assert!(
        (plant.config().start_ns as f64 / 1e9 - now).abs() < 1.0,
        "the estimate starts at its moment"
    );
}

/// Health is one less the degradation; the trip odds over the horizon follow the physics'
/// hazards, so a worn pump is both less healthy and likelier to trip than a new one.
#[test]
fn health_falls_and_trip_odds_rise_with_wear() {
    use doppel_sim::chiller::{Estimate, HiddenEstimate};
    let hidden = |asset: &str, quantity: &'static str, value: f64| HiddenEstimate {
        asset: asset.into(),
        quantity,
        value,
        readings: 100,
    };
    let estimate = Estimate {
        at_unix_s: 0.0,
        load_factor: 1.0,
        hidden: vec![
            hidden("pump1", "bearing_wear", 0.1),
            hidden("pump2", "bearing_wear", 0.9),
            hidden("chiller1", "fouling", 0.2),
            hidden("chiller2", "fouling", 1.2),
        ],
        missing: Vec::new(),
        distrusted: Vec::new(),
    };
    let health = estimate.health();
    assert_eq!(health.len(), 4);
    assert!((health[0].health - 0.9).abs() < 1e-12);
    assert!((health[1].health - 0.1).abs() < 1e-12);
    let per_h = doppel_sim::chiller::physics::pump_trip_hazard_per_h(0.9);
    let odds = 1.0 - (-per_h * doppel_sim::chiller::HEALTH_HORIZON_H).exp();
    assert!((health[1].trip_odds - odds).abs() < 1e-12);
    assert!(health[1].trip_odds > 10.0 * health[0].trip_odds);
    assert!(health[3].trip_odds > 10.0 * health[2].trip_odds);
    assert_eq!(health[3].health, 0.0, "clamped: fouling past 1 is failing");
    assert!(health.iter().all(|h| (0.0..=1.0).contains(&h.trip_odds)));
}

/// A drifting return sensor is weighed against the loop's heat balance: the estimate believes
/// the balance instead (and says so), so a simulation from it runs as one from honest readings
/// would; honest readings are never doubted.
#[test]
fn an_estimate_replaces_a_return_reading_the_heat_balance_contradicts() {
    use doppel_sim::run::{RunSettings, simulate};
    let config = ChillerPlantConfig::default();
    let hour_of_supply = |plant: &mut ChillerPlant| -> Vec<f64> {
        let supply = doppel_sim::plant::sensor_index(plant, "chw_supply_temp").unwrap();
        let mut policy = doppel_sim::policy::PolicyKind::Rules.build(plant).unwrap();
        (0..60)
            .map(|_| {
                simulate(
                    plant,
                    policy.as_mut(),
                    Vec::new(),
                    RunSettings {
                        days: 1.0 / 1440.0,
                        step_s: 60.0,
                    },
                    None,
                )
                .unwrap();
                plant.truth()[supply]
            })
            .collect()
    };
    for seed in 1..5 {
        let (truth, mut recent) =
            doppel_sim::chiller::operated(&config, seed, 1.0 + seed as f64 / 7.0).unwrap();
        let (mut honest, estimate) = ChillerPlant::estimate(config.clone(), 7, &recent).unwrap();
        assert!(
            estimate.distrusted.is_empty(),
            "seed {seed}: {:?}",
            estimate.distrusted
        );

        // Four days of a sensor drifting half a degree a day.
        let ret = doppel_sim::plant::sensor_index(&truth, "chw_return_temp").unwrap();
        for (_, v) in recent.series[ret].iter_mut() {
            *v += 2.0;
        }
        let (mut drifted, estimate) = ChillerPlant::estimate(config.clone(), 7, &recent).unwrap();
        assert_eq!(estimate.distrusted, ["chw_return_temp"]);
        let (a, b) = (hour_of_supply(&mut honest), hour_of_supply(&mut drifted));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 0.2, "seed {seed}: supply {worst} K apart");
    }
}
