//! The simulator against its promises: physics that balances, disruptions that do what they
//! claim, determinism, snapshots, refused actions and clear scenario errors.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig, EnvironmentConfig};
use doppel_sim::monte_carlo::{ClusterQuestion, Study, run_study};
use doppel_sim::plant::{Action, AssetStatus, Plant, actuator_index, asset_index, sensor_index};
use doppel_sim::policy::PolicyKind;
use doppel_sim::random::run_seed;
use doppel_sim::run::{Observer, RunOutcome, RunSettings, StepView, simulate};
use doppel_sim::scenario::Scenario;

/// This crate's folder, read when the test runs: cargo sets it for every test process. The
/// compile-time `env!` value would be wrong when a build cache made in another checkout is
/// reused (cargo does not rebuild a workspace member for a new absolute path), and the tests
/// that look for `../shared/data` would then skip silently.
fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run under cargo"))
}

fn scenarios_dir() -> PathBuf {
    manifest_dir().join("../../scenarios")
}

fn plant(seed: u64) -> ChillerPlant {
    ChillerPlant::new(ChillerPlantConfig::default(), seed).unwrap()
}

fn scenario(name: &str, plant: &dyn Plant) -> Scenario {
    Scenario::load(&scenarios_dir().join(name), plant).unwrap()
}

/// Keeps every step's readings (None = missing) and truth.
#[derive(Default)]
struct Tape {
    t: Vec<f64>,
    readings: Vec<Vec<Option<f64>>>,
    truth: Vec<Vec<f64>>,
    status: Vec<Vec<AssetStatus>>,
}

impl Observer for Tape {
    fn observe(&mut self, v: &StepView) -> doppel_sim::Result<bool> {
        self.t.push(v.t_s);
        self.readings
            .push((0..v.truth.len()).map(|i| v.readings.get(i)).collect());
        self.truth.push(v.truth.to_vec());
        self.status
            .push(v.labels.iter().map(|l| l.status).collect());
        Ok(true)
    }
}

fn record(
    seed: u64,
    scenario: Option<&str>,
    policy: PolicyKind,
    days: f64,
) -> (ChillerPlant, Tape, RunOutcome) {
    let mut p = plant(seed);
    let events = scenario.map_or(Vec::new(), |s| {
        self::scenario(s, &p).draw(run_seed(seed, 0))
    });
    let mut policy = policy.build(&p).unwrap();
    let mut tape = Tape::default();
    let out = simulate(
        &mut p,
        policy.as_mut(),
        events,
        RunSettings { days, step_s: 60.0 },
        Some(&mut tape),
    )
    .unwrap();
    (p, tape, out)
}

fn idx(p: &dyn Plant, id: &str) -> usize {
    sensor_index(p, id).unwrap_or_else(|| panic!("no sensor {id}"))
}

#[test]
fn the_loop_balances_heat_over_a_day() {
    let (p, tape, out) = record(3, None, PolicyKind::Rules, 1.0);
    assert!(out.kpis.unmet_cooling_kwh < 1e-6);
    let cfg = p.config();
    let (supply, ret, load) = (
        idx(&p, "chw_supply_temp"),
        idx(&p, "chw_return_temp"),
        idx(&p, "hall_load"),
    );
    let duties: Vec<usize> = (1..=3)
        .map(|j| idx(&p, &format!("chiller{j}_duty")))
        .collect();
    let (mut load_kj, mut duty_kj) = (0.0, 0.0);
    for truth in &tape.truth[1..] {
        load_kj += truth[load] * 60.0;
        duty_kj += duties.iter().map(|&d| truth[d]).sum::<f64>() * 60.0;
    }
    let (first, last) = (&tape.truth[0], tape.truth.last().unwrap());
    let heat_capacity = |m3: f64| m3 * 1000.0 * 4.19;
    let stored = heat_capacity(cfg.supply_volume_m3) * (last[supply] - first[supply])
        + heat_capacity(cfg.return_volume_m3) * (last[ret] - first[ret]);
    let imbalance = load_kj - duty_kj - stored;
    assert!(
        imbalance.abs() < 1e-6 * load_kj,
        "load {load_kj} kJ, chillers {duty_kj} kJ, stored {stored} kJ"
    );
    // The day's load is what a 1.5 MW hall uses: about 36 MWh.
    assert!(
        (25_000.0..50_000.0).contains(&(load_kj / 3600.0)),
        "{}",
        load_kj / 3600.0
    );
}

#[test]
fn a_plant_at_steady_load_settles() {
    let config = ChillerPlantConfig {
        environment: EnvironmentConfig {
            seasonal_amplitude_c: 0.0,
            daily_amplitude_c: 0.0,
            front_sd_c: 0.0,
            humidity_daily_pct: 0.0,
            load_daily_fraction: 0.0,
            load_weekend_fraction: 1.0,
            load_noise_fraction: 0.0,
            ..EnvironmentConfig::default()
        },
        wear_per_hour: 0.0,
        fouling_per_hour: 0.0,
        ..ChillerPlantConfig::default()
    };
    let mut p = ChillerPlant::new(config, 5).unwrap();
    let mut policy = PolicyKind::None.build(&p).unwrap();
    let mut tape = Tape::default();
    simulate(
        &mut p,
        policy.as_mut(),
        Vec::new(),
        RunSettings {
            days: 1.0,
            step_s: 60.0,
        },
        Some(&mut tape),
    )
    .unwrap();
    let (supply, ret, load) = (
        idx(&p, "chw_supply_temp"),
        idx(&p, "chw_return_temp"),
        idx(&p, "hall_load"),
    );
    let last_hour = &tape.truth[tape.truth.len() - 60..];
    for key in [supply, ret] {
        let lo = last_hour
            .iter()
            .map(|t| t[key])
            .fold(f64::INFINITY, f64::min);
        let hi = last_hour
            .iter()
            .map(|t| t[key])
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(hi - lo < 0.01, "sensor {key} still moving: {lo}..{hi}");
    }
    let t = last_hour.last().unwrap();
    let duty: f64 = (1..=3)
        .map(|j| t[idx(&p, &format!("chiller{j}_duty"))])
        .sum();
    assert!(
        (duty - t[load]).abs() < 0.005 * t[load],
        "duty {duty} vs load {}",
        t[load]
    );
    // Held near the setpoint, plus the small offset fouled chillers leave.
    assert!((7.0..7.7).contains(&t[supply]), "{}", t[supply]);
    assert!(
        (t[ret] - t[supply] - 6.0).abs() < 0.5,
        "ΔT {}",
        t[ret] - t[supply]
    );
}

/// A light observer that fails on any non-finite value.
struct Finite;

impl Observer for Finite {
    fn observe(&mut self, v: &StepView) -> doppel_sim::Result<bool> {
        for (i, t) in v.truth.iter().enumerate() {
            assert!(t.is_finite(), "truth {i} is {t} at {} s", v.t_s);
            if let Some(r) = v.readings.get(i) {
                assert!(r.is_finite(), "reading {i} is {r} at {} s", v.t_s);
            }
        }
        for l in v.labels {
            assert!(l.health.is_finite());
        }
        Ok(true)
    }
}

#[test]
fn a_year_under_every_scenario_has_no_nan_or_infinite_value() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        for policy in [PolicyKind::None, PolicyKind::Rules] {
            let mut p = plant(11);
            let events = Scenario::load(&file, &p).unwrap().draw(run_seed(11, 0));
            let mut pol = policy.build(&p).unwrap();
            let out = simulate(
                &mut p,
                pol.as_mut(),
                events,
                RunSettings {
                    days: 365.0,
                    step_s: 300.0,
                },
                Some(&mut Finite),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (name, v) in out.kpis.named() {
                assert!(
                    v.is_finite() && v >= 0.0,
                    "{}: {name} = {v}",
                    file.display()
                );
            }
        }
    }
}

fn study(policy: PolicyKind, runs: usize, days: f64) -> Study {
    Study {
        plant: ChillerPlantConfig::default(),
        policy: std::sync::Arc::new(policy),
        start: None,
        settings: RunSettings { days, step_s: 60.0 },
        runs,
        seed: 42,
        cluster: ClusterQuestion::default(),
        threads: None,
        background: false,
    }
}

#[test]
fn disruptions_cost_what_they_claim_against_the_same_seeds() {
    let p = plant(0);
    let s = study(PolicyKind::None, 12, 30.0);
    let heat = run_study(&s, &scenario("heatwave.toml", &p), &|_| {}).unwrap();
    assert!(heat.difference["energy_kwh"].mean > 0.0);
    assert!(heat.difference["limit_excursion_minutes"].mean > 0.0);
    assert!(heat.difference["peak_supply_temp_c"].mean > 0.0);

    let surge = run_study(&s, &scenario("load_surge.toml", &p), &|_| {}).unwrap();
    assert!(
        surge.difference["energy_kwh"].p5 > 0.0,
        "every run uses more"
    );

    // A price spike changes what energy costs, not how much is used: exactly the same kWh.
    let price = run_study(&s, &scenario("price_spike.toml", &p), &|_| {}).unwrap();
    assert_eq!(price.difference["energy_kwh"].mean, 0.0);
    assert_eq!(price.difference["energy_kwh"].p95, 0.0);
    assert!(price.difference["energy_cost"].p5 > 0.0);

    let fouling = run_study(&s, &scenario("fouling.toml", &p), &|_| {}).unwrap();
    assert!(fouling.difference["energy_kwh"].mean > 0.0);

    let trip = run_study(&s, &scenario("pump_trip.toml", &p), &|_| {}).unwrap();
    // (Less than one more on average: a pump that would have failed anyway cannot fail twice.)
    assert!(trip.difference["failures"].mean > 0.5);
    assert!(trip.difference["downtime_hours"].mean > 0.0);

    let parts = run_study(&s, &scenario("parts_delay.toml", &p), &|_| {}).unwrap();
    assert!(parts.difference["downtime_hours"].mean > 0.0);
    assert!(parts.difference["failures"].mean > 0.0);

    // The risk grid: more failures are never likelier, a longer window never less likely;
    // a trip in every run makes "at least one failure within 30 days" certain, and the
    // tripped pumps' odds of failing rise above the baseline's.
    let cell = |x: usize, days: f64| {
        trip.risk
            .iter()
            .find(|r| r.at_least == x && (r.within_hours - days * 24.0).abs() < 1e-9)
            .unwrap_or_else(|| panic!("no cell for {x} failures in {days} days"))
    };
    for days in [1.0, 3.0, 7.0, 14.0, 30.0] {
        for x in 1..4 {
            assert!(cell(x + 1, days).scenario_probability <= cell(x, days).scenario_probability);
        }
    }
    for x in 1..=4 {
        assert!(cell(x, 30.0).scenario_probability >= cell(x, 1.0).scenario_probability);
    }
    assert_eq!(cell(1, 30.0).scenario_probability, 1.0);
    let pumps: f64 = ["pump1", "pump2", "pump3"]
        .iter()
        .map(|p| trip.asset_failures[*p].scenario - trip.asset_failures[*p].baseline)
        .sum();
    assert!(pumps > 0.5, "{:?}", trip.asset_failures);
}

#[test]
fn studies_are_identical_on_one_and_two_threads() {
    let p = plant(0);
    let sc = scenario("heatwave.toml", &p);
    let mut one = study(PolicyKind::Rules, 6, 5.0);
    one.threads = Some(1);
    let mut two = one.clone();
    two.threads = Some(2);
    let a = serde_json::to_string(&run_study(&one, &sc, &|_| {}).unwrap()).unwrap();
    let b = serde_json::to_string(&run_study(&two, &sc, &|_| {}).unwrap()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_spoofed_sensor_departs_from_the_truth_the_labels_keep() {
    let (p, tape, _) = record(9, Some("cyber_spoof.toml"), PolicyKind::None, 20.0);
    let vib = idx(&p, "pump3_vibration");
    let day = 1440;
    let attack = 4 * day;
    // During the attack the readings are what the sensor truly showed a day before.
    let mut replayed = 0;
    for k in attack + 10..tape.t.len() {
        if let Some(r) = tape.readings[k][vib] {
            let yesterday = tape.truth[k - day][vib];
            assert!((r - yesterday).abs() < 0.5, "step {k}: {r} vs {yesterday}");
            replayed += 1;
        }
    }
    assert!(replayed > 5000);
    // Meanwhile the pump really wears: while it runs, the truth runs away from what is shown.
    let pump3 = asset_index(&p, "pump3").unwrap();
    let hidden = (attack..tape.t.len())
        .filter(|&k| tape.status[k][pump3] == AssetStatus::Running)
        .filter_map(|k| tape.readings[k][vib].map(|r| tape.truth[k][vib] - r))
        .fold(0.0, f64::max);
    assert!(hidden > 1.0, "the largest hidden rise is {hidden} mm/s");
}

#[test]
fn sensor_faults_look_like_their_names() {
    let (p, tape, _) = record(4, Some("sensor_faults.toml"), PolicyKind::None, 22.0);
    let at = |d: f64| (d * 1440.0) as usize;
    let present = |s: usize, from: usize, to: usize| -> Vec<(usize, f64)> {
        (from..to)
            .filter_map(|k| tape.readings[k][s].map(|v| (k, v)))
            .collect()
    };
    // Stuck (days 2–5): one value, repeated.
    let supply = idx(&p, "chw_supply_temp");
    let stuck = present(supply, at(2.0) + 1, at(5.0) - 1);
    assert!(stuck.len() > 3000);
    assert!(stuck.iter().all(|(_, v)| *v == stuck[0].1));
    let truth_moves = (at(2.0)..at(5.0)).map(|k| tape.truth[k][supply]);
    let (lo, hi) = truth_moves.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    assert!(hi > lo, "the truth kept moving");
    // Drift (from day 6, 0.5 °C/day): a week later, about 3.5 °C off.
    let ret = idx(&p, "chw_return_temp");
    let k = at(13.0);
    let off: f64 = present(ret, k, k + 60)
        .iter()
        .map(|(k, v)| v - tape.truth[*k][ret])
        .sum::<f64>()
        / 60.0;
    assert!((off - 3.5).abs() < 0.2, "drift {off}");
    // Bias (days 10–15): −40 m³/h.
    let flow = idx(&p, "chw_flow");
    let bias: Vec<f64> = present(flow, at(11.0), at(12.0))
        .iter()
        .map(|(k, v)| v - tape.truth[*k][flow])
        .collect();
    let mean = bias.iter().sum::<f64>() / bias.len() as f64;
    assert!((mean + 40.0).abs() < 1.0, "bias {mean}");
    // Spikes (days 12–14): some readings 6 mm/s above the truth.
    let vib = idx(&p, "pump1_vibration");
    let spikes = present(vib, at(12.0), at(14.0))
        .iter()
        .filter(|(k, v)| v - tape.truth[*k][vib] > 5.0)
        .count();
    assert!((50..400).contains(&spikes), "{spikes} spikes");
    // Dropout (day 15, 12 h): nothing at all.
    let power = idx(&p, "plant_power");
    assert!(present(power, at(15.0) + 1, at(15.5)).is_empty());
    assert!(present(power, at(16.0), at(16.5)).len() > 600);
    // Extra noise (days 18–22): sd about 3 °C instead of 0.2.
    let bearing = idx(&p, "pump2_bearing_temp");
    let errors: Vec<f64> = present(bearing, at(19.0), at(21.0))
        .iter()
        .map(|(k, v)| v - tape.truth[*k][bearing])
        .collect();
    let sd = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
    assert!((2.5..3.5).contains(&sd), "sd {sd}");
}

#[test]
fn an_intruders_setpoint_is_put_back_by_the_operator_and_not_otherwise() {
    let alone = record(2, Some("cyber_setpoint.toml"), PolicyKind::None, 30.0).2;
    let watched = record(2, Some("cyber_setpoint.toml"), PolicyKind::Rules, 30.0).2;
    assert!(
        alone.kpis.limit_excursion_minutes > 60.0 * 24.0,
        "{}",
        alone.kpis.limit_excursion_minutes
    );
    assert!(alone.kpis.peak_supply_temp_c > 11.0);
    assert!(
        watched.kpis.limit_excursion_minutes < 60.0,
        "{}",
        watched.kpis.limit_excursion_minutes
    );
}

#[test]
fn a_pump_trip_fails_the_pump_at_its_time_and_a_standby_takes_over() {
    let (p, tape, out) = record(6, Some("pump_trip.toml"), PolicyKind::None, 30.0);
    let event = &out.events[0];
    let pump = out
        .failures
        .iter()
        .find(|f| (f.time_s - event.start_s).abs() <= 60.0)
        .expect("a failure at the event");
    // The trip fires at the first step that starts at or after its time.
    let k = tape
        .t
        .iter()
        .position(|&t| t > event.start_s + 60.0)
        .unwrap();
    assert!(
        !tape.status[k][pump.asset].is_available(),
        "{:?}",
        tape.status[k][pump.asset]
    );
    let running = (0..4)
        .filter(|&i| tape.status[k][i] == AssetStatus::Running)
        .count();
    assert_eq!(running, 3, "the standby pump started");
    let _ = p;
}

#[test]
fn the_same_seed_gives_the_same_run_and_snapshots_fork_exactly() {
    let (_, a, _) = record(13, Some("sensor_faults.toml"), PolicyKind::Rules, 3.0);
    let (_, b, _) = record(13, Some("sensor_faults.toml"), PolicyKind::Rules, 3.0);
    assert_eq!(a.readings, b.readings);
    assert_eq!(a.truth, b.truth);

    // Run 2 days, save, run 1 more; load the save into a fresh plant and run the same day.
    let settings = |days| RunSettings { days, step_s: 60.0 };
    let mut p = plant(21);
    let mut policy = PolicyKind::None.build(&p).unwrap();
    simulate(&mut p, policy.as_mut(), Vec::new(), settings(2.0), None).unwrap();
    let saved = serde_json::to_string(&p.save_state()).unwrap();
    let mut tape1 = Tape::default();
    simulate(
        &mut p,
        policy.as_mut(),
        Vec::new(),
        settings(1.0),
        Some(&mut tape1),
    )
    .unwrap();
    let mut q = plant(999);
    q.load_state(serde_json::from_str(&saved).unwrap()).unwrap();
    assert_eq!(q.time_s(), 2.0 * 86_400.0);
    let mut tape2 = Tape::default();
    simulate(
        &mut q,
        policy.as_mut(),
        Vec::new(),
        settings(1.0),
        Some(&mut tape2),
    )
    .unwrap();
    assert_eq!(tape1.truth, tape2.truth);
    assert_eq!(tape1.readings, tape2.readings);
    assert!(
        q.load_state(serde_json::json!({"plant": "windmill"}))
            .is_err()
    );
}

#[test]
fn impossible_actions_are_refused_with_the_reason() {
    let mut p = plant(1);
    let setpoint = actuator_index(&p, "chw.supply_setpoint").unwrap();
    let e = p
        .act(&Action::Set {
            actuator: setpoint,
            value: 15.0,
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("chw.supply_setpoint") && e.contains("outside 5..=12"),
        "{e}"
    );
    let e = p
        .act(&Action::Set {
            actuator: 999,
            value: 1.0,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such actuator"), "{e}");
    let run = actuator_index(&p, "pump4.run").unwrap();
    let e = p
        .act(&Action::Set {
            actuator: run,
            value: 0.5,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("0 or 1"), "{e}");
    // One crew: a second planned job at the same time is beyond its capacity.
    let chiller3 = asset_index(&p, "chiller3").unwrap();
    let chiller2 = asset_index(&p, "chiller2").unwrap();
    p.act(&Action::Maintain { asset: chiller3 }).unwrap();
    let e = p
        .act(&Action::Maintain { asset: chiller2 })
        .unwrap_err()
        .to_string();
    assert!(e.contains("chiller2") && e.contains("crew capacity"), "{e}");
    let e = p
        .act(&Action::Maintain { asset: chiller3 })
        .unwrap_err()
        .to_string();
    assert!(e.contains("already down"), "{e}");
    let hall = asset_index(&p, "hall").unwrap();
    assert!(p.act(&Action::Maintain { asset: hall }).is_err());
    // A refused batch in `step` applies nothing and does not move the plant.
    let before = p.save_state();
    let dist = doppel_sim::plant::Disturbances::none(p.assets().len(), p.sensors().len());
    let batch = [
        Action::Set {
            actuator: setpoint,
            value: 8.0,
        },
        Action::Set {
            actuator: setpoint,
            value: 99.0,
        },
    ];
    assert!(p.step(60.0, &batch, &dist, None).is_err());
    assert_eq!(p.save_state(), before);
}

#[test]
fn bad_scenarios_say_where_and_what() {
    let p = plant(0);
    let text = r#"
name = "bad"

[[disruption]]
kind = "heat_wave"
start = { uniform = ["5d", "2d"] }
delta_c = 8.0

[[disruption]]
kind = "pump_trip"
asset = "pump9"

[[disruption]]
kind = "load_surge"
duration = "2d"

[[disruption]]
kind = "price_spike"
factor = 2.0
asset = "pump1"

[[disruption]]
kind = "volcano"

[[disruption]]
kind = "malicious_command"
actuator = "chw.supply_setpoint"
value = 40.0

[[disruption]]
kind = "sensor_fault"
sensor = "pump1_vibration"
mode = "melted"
"#;
    let err = Scenario::parse(text, Path::new("bad.toml"), &p).unwrap_err();
    let problems: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    let find = |needle: &str| {
        problems
            .iter()
            .find(|p| p.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {problems:#?}"))
            .clone()
    };
    assert!(find("uniform bounds are reversed").starts_with("bad.toml:6:"));
    assert!(find("unknown pump `pump9`").starts_with("bad.toml:11:"));
    assert!(find("load_surge needs `factor`").contains("disruption[2].factor"));
    assert!(find("`asset` does not apply to price_spike").starts_with("bad.toml:20:"));
    assert!(find("unknown kind `volcano`").contains("disruption[4].kind"));
    assert!(find("accepts 5..=12").starts_with("bad.toml:28:"));
    assert!(find("unknown mode").starts_with("bad.toml:33:"));
    assert_eq!(problems.len(), 7, "{problems:#?}");

    let err = Scenario::parse("[[disruption]\nkind = 1", Path::new("x.toml"), &p).unwrap_err();
    assert!(err.to_string().contains("x.toml:1:"), "{err}");
    let err = Scenario::parse(
        "[[disruption]]\nkind = \"heat_wave\"\ndelta_c = 3\nstrat = \"1d\"",
        Path::new("y.toml"),
        &p,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("y.toml:4:") && err.to_string().contains("strat"),
        "{err}"
    );
}

#[test]
fn the_shipped_twin_spec_is_the_plants_own_and_valid() {
    let p = plant(0);
    let file = manifest_dir().join("../../examples/reference-plant/twin.toml");
    let shipped = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        shipped,
        p.twin_spec(),
        "regenerate it with `doppel sim spec > {}`",
        file.display()
    );
    let spec = doppel_core::spec::parse(&shipped, &file).unwrap();
    assert_eq!(spec.sensors.len(), p.sensors().len());
    for (s, t) in spec.sensors.iter().zip(p.sensors()) {
        assert_eq!(
            (&s.id, &s.measurement, &s.field),
            (&t.id, &t.measurement, &t.field)
        );
    }
}

/// Counts the allocations of the current thread (tests run on many threads at once).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn the_step_loop_does_not_allocate() {
    let mut p = plant(17);
    let mut dist = doppel_sim::plant::Disturbances::none(p.assets().len(), p.sensors().len());
    dist.degradation_factor.iter_mut().for_each(|f| *f = 30.0);
    let mut readings = doppel_sim::plant::Readings::new(p.sensors().len());
    let before = ALLOCATIONS.with(Cell::get);
    for step in 0..20_000 {
        let look = step % 3 == 0;
        p.step(60.0, &[], &dist, look.then_some(&mut readings))
            .unwrap();
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    // Fast wear makes pumps fail and get repaired within these two weeks: failures, repair
    // queues and part orders are part of what must not allocate.
    assert!(!p.failures().is_empty(), "the test should see failures");
    assert_eq!(allocations, 0);
}

mod estimate;
