//! The autonomy layer against the real simulator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use doppel_autonomy::evaluate::{Episode, Evaluation, run, summarise};
use doppel_autonomy::{AutonomyError, Objective, policy_by_name};
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::plant::{Action, Plant, Readings, actuator_index};
use doppel_sim::policy::{Policy, PolicyMaker};
use doppel_sim::scenario::Scenario;

fn scenarios_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("under cargo"))
        .join("../../scenarios")
}

fn probe() -> ChillerPlant {
    ChillerPlant::new(ChillerPlantConfig::default(), 0).unwrap()
}

fn evaluation(policies: Vec<Arc<dyn PolicyMaker>>, objective: Arc<Objective>) -> Evaluation {
    let plant = probe();
    Evaluation {
        policies,
        scenarios: vec![
            ("undisturbed".into(), Scenario::baseline()),
            (
                "pump_trip".into(),
                Scenario::load(&scenarios_dir().join("pump_trip.toml"), &plant).unwrap(),
            ),
        ],
        seeds: 1..3,
        days: 3.0,
        step_s: 60.0,
        plant: ChillerPlantConfig::default(),
        objective,
        threads: None,
    }
}

fn sum(episodes: &[Episode], policy: &str, f: impl Fn(&Episode) -> f64) -> f64 {
    episodes.iter().filter(|e| e.policy == policy).map(f).sum()
}

/// MPC, looking ahead from what the estimator makes of its own readings, runs the plant for
/// less energy than the rule-based operator, from the same seeds, without more time above the
/// supply limit and without breaking a limit.
#[test]
fn mpc_spends_less_energy_than_the_rules_without_more_excursions() {
    let objective = Arc::new(Objective::reference(&probe()).unwrap());
    let policies = ["rules", "mpc"]
        .iter()
        .map(|p| policy_by_name(p, objective.clone()).unwrap())
        .collect();
    let episodes = run(&evaluation(policies, objective), &|_| {}).unwrap();
    assert_eq!(episodes.len(), 8);
    let energy = |p| sum(&episodes, p, |e| e.kpis.energy_cost);
    let excursion = |p| sum(&episodes, p, |e| e.kpis.limit_excursion_minutes);
    assert!(
        energy("mpc") < 0.985 * energy("rules"),
        "mpc {} against rules {}",
        energy("mpc"),
        energy("rules")
    );
    assert!(excursion("mpc") <= excursion("rules"));
    assert_eq!(sum(&episodes, "mpc", |e| e.violation_steps as f64), 0.0);
    // (Its total cost is not asserted: over 3 days, when a pump is serviced moves the total
    // more than energy does; docs/BENCHMARKS.md has the 30-day figures.)
    let reports = summarise(&episodes);
    let all = reports
        .iter()
        .find(|r| r.policy == "mpc" && r.scenario == "all")
        .unwrap();
    assert!(all.against_rules_pct.is_some(), "{all:?}");
    // One decision every 15 minutes of 3 days, in each of 4 episodes.
    assert_eq!(all.decisions, 4 * 3 * 96);
    assert!(all.ms_per_decision > 0.0);
}

/// A scripted policy for the gate's tests: every quarter hour the next of its batches, in
/// turn, made for the plant by `batches`.
struct Scripted {
    name: &'static str,
    batches: fn(&dyn Plant) -> Vec<Vec<Action>>,
}

struct ScriptedPolicy {
    name: &'static str,
    batches: Vec<Vec<Action>>,
    turn: usize,
    next_s: f64,
}

impl Policy for ScriptedPolicy {
    fn name(&self) -> &str {
        self.name
    }
    fn wants_readings(&self, t_s: f64) -> bool {
        t_s >= self.next_s
    }
    fn decide(&mut self, t_s: f64, _readings: &Readings, actions: &mut Vec<Action>) {
        if t_s < self.next_s {
            return;
        }
        self.next_s = t_s + 900.0;
        actions.extend_from_slice(&self.batches[self.turn % self.batches.len()]);
        self.turn += 1;
    }
}

impl PolicyMaker for Scripted {
    fn name(&self) -> String {
        self.name.into()
    }
    fn make(
        &self,
        plant: &dyn Plant,
        _config: &ChillerPlantConfig,
        _seed: u64,
    ) -> doppel_sim::Result<Box<dyn Policy>> {
        Ok(Box::new(ScriptedPolicy {
            name: self.name,
            batches: (self.batches)(plant),
            turn: 0,
            next_s: 0.0,
        }))
    }
}

fn setpoint_to(plant: &dyn Plant, value: f64) -> Action {
    Action::Set {
        actuator: actuator_index(plant, "chw.supply_setpoint").unwrap(),
        value,
    }
}

/// Every quarter hour, stops every chiller and raises the setpoint to 12 °C.
const RECKLESS: Scripted = Scripted {
    name: "reckless",
    batches: |plant| {
        let mut batch: Vec<Action> = ["chiller1", "chiller2", "chiller3"]
            .iter()
            .map(|c| Action::Set {
                actuator: actuator_index(plant, &format!("{c}.run")).unwrap(),
                value: 0.0,
            })
            .collect();
        batch.push(setpoint_to(plant, 12.0));
        vec![batch]
    },
};

/// Swings the setpoint between 8 and 6 °C every quarter hour: each value legal, each jump
/// past the policy file's 1 K rate limit.
const JUMPY: Scripted = Scripted {
    name: "jumpy",
    batches: |plant| vec![vec![setpoint_to(plant, 8.0)], vec![setpoint_to(plant, 6.0)]],
};

/// Unshielded, the reckless policy overheats the loop; behind the safety gate every one of its
/// batches is blocked and replaced by the operator's, and no limit breaks.
#[test]
fn the_safety_gate_blocks_what_would_break_a_limit() {
    let objective = Arc::new(Objective::reference(&probe()).unwrap());
    let shielded: Arc<dyn PolicyMaker> = Arc::new(doppel_autonomy::shield::ShieldMaker {
        inner: Arc::new(RECKLESS),
        objective: objective.clone(),
        lookahead_s: doppel_autonomy::shield::LOOKAHEAD_S,
        refresh: true,
    });
    let mut e = evaluation(vec![Arc::new(RECKLESS), shielded], objective);
    e.days = 1.0;
    let episodes = run(&e, &|_| {}).unwrap();
    let broken = |p| sum(&episodes, p, |e| e.violation_steps as f64);
    let blocked = |p| sum(&episodes, p, |e| e.stats.blocked as f64);
    assert!(broken("reckless") > 100.0, "{}", broken("reckless"));
    assert_eq!(broken("reckless+shield"), 0.0);
    // 96 batches a day in each of 4 episodes, all blocked.
    assert_eq!(blocked("reckless+shield"), 4.0 * 96.0);
    assert_eq!(blocked("reckless"), 0.0);
}

/// A jump the batch itself makes counts against it: behind the gate, the setpoint swings
/// are blocked, and the operator's fallback walks the setpoint back within the rate limit.
#[test]
fn the_safety_gate_blocks_a_setpoint_jump_past_its_rate_limit() {
    let objective = Arc::new(Objective::reference(&probe()).unwrap());
    let shielded: Arc<dyn PolicyMaker> = Arc::new(doppel_autonomy::shield::ShieldMaker {
        inner: Arc::new(JUMPY),
        objective: objective.clone(),
        lookahead_s: doppel_autonomy::shield::LOOKAHEAD_S,
        refresh: true,
    });
    let mut e = evaluation(vec![Arc::new(JUMPY), shielded], objective);
    e.days = 1.0;
    let episodes = run(&e, &|_| {}).unwrap();
    let rate = |p| {
        sum(&episodes, p, |e| {
            e.broken.get("setpoint rate").copied().unwrap_or(0) as f64
        })
    };
    assert!(rate("jumpy") > 50.0, "{}", rate("jumpy"));
    assert_eq!(rate("jumpy+shield"), 0.0);
    assert!(sum(&episodes, "jumpy+shield", |e| e.stats.blocked as f64) > 50.0);
}

/// The gate never blocks the rule-based operator in normal weather (it changes nothing of its
/// run), and it owns the setpoint it let through: an intruder who writes 12 °C past it while
/// faking the setpoint's and supply's readings (`cyber_stealth`) keeps it one step, not the
/// six hours the operator, reading the fakes, leaves it.
#[test]
fn the_safety_gate_leaves_the_operator_alone_and_puts_an_intruders_setpoint_back() {
    let plant = probe();
    let objective = Arc::new(Objective::reference(&plant).unwrap());
    let policies = ["rules", "rules+shield"]
        .iter()
        .map(|p| policy_by_name(p, objective.clone()).unwrap())
        .collect();
    let mut e = evaluation(policies, objective);
    e.scenarios = vec![
        ("undisturbed".into(), Scenario::baseline()),
        (
            "cyber_stealth".into(),
            Scenario::load(&scenarios_dir().join("cyber_stealth.toml"), &plant).unwrap(),
        ),
    ];
    e.days = 9.0;
    let episodes = run(&e, &|_| {}).unwrap();
    let of = |policy: &str, scenario: &str| -> Vec<&Episode> {
        episodes
            .iter()
            .filter(|e| e.policy == policy && e.scenario == scenario)
            .collect()
    };
    for (alone, shielded) in of("rules", "undisturbed")
        .iter()
        .zip(of("rules+shield", "undisturbed"))
    {
        assert_eq!(shielded.stats.blocked, 0);
        assert_eq!(shielded.kpis.energy_cost, alone.kpis.energy_cost);
        assert_eq!(shielded.violation_steps, 0);
    }
    for (alone, shielded) in of("rules", "cyber_stealth")
        .iter()
        .zip(of("rules+shield", "cyber_stealth"))
    {
        // Six hours at 12 °C, and the loop's water far above its limit.
        assert!(alone.violation_steps >= 300, "{}", alone.violation_steps);
        assert!(alone.kpis.limit_excursion_minutes > 60.0);
        // The intruder's step (range and rate), then the gate's step back (rate).
        let broken = |limit: &str| shielded.broken.get(limit).copied().unwrap_or(0);
        assert_eq!(broken("setpoint range"), 1, "{:?}", shielded.broken);
        assert_eq!(shielded.violation_steps, 2, "{:?}", shielded.broken);
        assert_eq!(shielded.kpis.limit_excursion_minutes, 0.0);
    }
}

/// Doing nothing is judged too: a policy that never acts lets a load surge overheat the loop;
/// behind the gate, the operator's staging is done when doing nothing would break limits.
#[test]
fn the_safety_gate_acts_when_doing_nothing_would_break_a_limit() {
    let plant = probe();
    let objective = Arc::new(Objective::reference(&plant).unwrap());
    let policies = ["none", "none+shield"]
        .iter()
        .map(|p| policy_by_name(p, objective.clone()).unwrap())
        .collect();
    let mut e = evaluation(policies, objective);
    e.scenarios = vec![(
        "load_surge".into(),
        Scenario::load(&scenarios_dir().join("load_surge.toml"), &plant).unwrap(),
    )];
    e.days = 10.0;
    let episodes = run(&e, &|_| {}).unwrap();
    let broken = |p| sum(&episodes, p, |e| e.violation_steps as f64);
    assert!(broken("none") > 1000.0, "{}", broken("none"));
    assert!(
        broken("none+shield") < 0.05 * broken("none"),
        "{}",
        broken("none+shield")
    );
    assert!(sum(&episodes, "none+shield", |e| e.stats.blocked as f64) > 0.0);
}

#[test]
fn policies_are_chosen_by_name_and_unknown_ones_refused_with_the_known() {
    let objective = Arc::new(Objective::reference(&probe()).unwrap());
    for name in [
        "none",
        "rules",
        "mpc",
        "mpc:horizon=1h,period=30m",
        "mpc+shield",
    ] {
        let maker = policy_by_name(name, objective.clone()).unwrap();
        assert_eq!(
            maker.name().replace("+shield", ""),
            name.replace("+shield", "")
        );
    }
    let e = policy_by_name("pid", objective.clone()).err().unwrap();
    assert!(e.to_string().contains("none, rules, mpc"), "{e}");
    let e = policy_by_name("mpc:horizon=soon", objective.clone())
        .err()
        .unwrap();
    assert!(e.to_string().contains("horizon"), "{e}");
    let e = policy_by_name("grpo", objective).err().unwrap();
    assert!(e.to_string().contains("grpo:FOLDER"), "{e}");
}

/// Every problem of a policy file says file, line, column and what, and nothing is used.
#[test]
fn bad_policy_files_say_where_and_what() {
    let plant = probe();
    let text = r#"reward = "-energy_cost - 50 * excursion_minutes"
floor = -1000

[[limit]]
name = "supply"
keep = "chw_suply_temp <= 9.5"

[[limit]]
name = "supply"
keep = "chw_supply_temp > 9 for 5m"

[[limit]]
name = "units"
keep = "chw_supply_temp > hall_load"
"#;
    let err = Objective::parse(text, Path::new("p.toml"), &plant).unwrap_err();
    let AutonomyError::PolicyFile(problems) = &err else {
        panic!("{err}")
    };
    let message = err.to_string();
    assert!(
        message.contains("p.toml:1:31")
            && message.contains("unknown KPI `excursion_minutes`")
            && message.contains("did you mean `limit_excursion_minutes`"),
        "{message}"
    );
    assert!(
        message.contains("p.toml:6:9: limit[0].keep: unknown sensor or quantity `chw_suply_temp`"),
        "{message}"
    );
    assert!(message.contains("`for` has no meaning here"), "{message}");
    assert!(message.contains("a name of its own"), "{message}");
    assert!(
        message.contains("°C") && message.contains("kW"),
        "{message}"
    );
    assert_eq!(problems.len(), 5, "{message}");
    // The reference file is good, and its reward is what it says.
    let objective = Objective::reference(&plant).unwrap();
    assert_eq!(objective.limits.len(), 5);
    let before = doppel_sim::kpi::Kpis::default();
    let after = doppel_sim::kpi::Kpis {
        energy_cost: 100.0,
        limit_excursion_minutes: 2.0,
        maintenance_cost: 30.0,
        ..before
    };
    assert_eq!(objective.reward(&before, &after, 0, 10), -230.0);
    // Two of ten steps broke a limit: they earn the floor, the rest their share.
    assert_eq!(
        objective.reward(&before, &after, 2, 10),
        -230.0 * 0.8 - 2000.0
    );
}

/// Every bearing nearly gone and a standby: the planner orders a service (its one kit) at
/// once; with young bearings it orders nothing.
#[test]
fn the_maintenance_planner_services_worn_pumps_and_leaves_young_ones() {
    plans_service_worn_pumps_and_leave_young_ones("maintenance");
}

/// On HiGHS (with the `highs` feature) the planner services worn pumps and leaves young ones.
#[cfg(feature = "highs")]
#[test]
fn the_maintenance_planner_on_highs_services_worn_pumps_too() {
    plans_service_worn_pumps_and_leave_young_ones("maintenance:solver=highs");
}

/// Without the `highs` feature, asking for HiGHS says how to build it in.
#[cfg(not(feature = "highs"))]
#[test]
fn highs_asked_for_but_not_built_in_says_how_to_build_it() {
    let objective = Arc::new(Objective::reference(&probe()).unwrap());
    let e = policy_by_name("maintenance:solver=highs", objective.clone())
        .err()
        .unwrap();
    assert!(e.to_string().contains("--features highs"), "{e}");
    let e = policy_by_name("maintenance:solver=cplex", objective)
        .err()
        .unwrap();
    assert!(e.to_string().contains("microlp or highs"), "{e}");
}

fn plans_service_worn_pumps_and_leave_young_ones(policy: &str) {
    let run = |wear: f64| {
        let config = ChillerPlantConfig {
            initial_wear: (wear, wear),
            initial_fouling: (0.05, 0.05),
            ..ChillerPlantConfig::default()
        };
        let mut plant = ChillerPlant::new(config.clone(), 3).unwrap();
        let objective = Arc::new(Objective::reference(&plant).unwrap());
        let maker = policy_by_name(policy, objective).unwrap();
        let mut policy = maker.make(&plant, &config, 3).unwrap();
        let outcome = doppel_sim::run::simulate(
            &mut plant,
            policy.as_mut(),
            Vec::new(),
            doppel_sim::run::RunSettings {
                days: 2.0,
                step_s: 60.0,
            },
            None,
        )
        .unwrap();
        (outcome.kpis, policy.stats())
    };
    let (worn, stats) = run(0.97);
    assert!(worn.planned_maintenance_hours > 3.5, "{worn:?}");
    assert!(stats.decisions >= 8, "a plan every 6 hours: {stats:?}");
    let (young, _) = run(0.1);
    assert_eq!(young.planned_maintenance_hours, 0.0, "{young:?}");
    assert_eq!(young.maintenance_cost, 0.0, "{young:?}");
}

/// GRPO end to end, small: the cold start imitates the rule-based operator closely, training
/// writes its weights, card and checkpoints, the same bytes from the same seed (PPO's too),
/// goes on from them when resumed, and the policy it wrote runs the plant by name.
#[test]
fn grpo_trains_resumes_and_runs_by_name() {
    use doppel_autonomy::grpo::train::{GrpoSettings, train};
    let plant = probe();
    let objective = Objective::reference(&plant).unwrap();
    let scenarios = vec![
        ("undisturbed".to_owned(), Scenario::baseline()),
        (
            "pump_trip".to_owned(),
            Scenario::load(&scenarios_dir().join("pump_trip.toml"), &plant).unwrap(),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p1");
    let settings = |iterations| GrpoSettings {
        iterations,
        groups: 2,
        group: 4,
        horizon: 8,
        cold_start_days: 6.0,
        cold_start_steps: 120,
        validations: 2,
        validation_seeds: 1,
        validation_days: 2.0,
        ..GrpoSettings::default()
    };
    let card = train(&scenarios, &objective, settings(2), &out, false, &|_| {}).unwrap();
    assert!(card.cold_start.agreement > 0.8, "{:?}", card.cold_start);
    assert!(card.cold_start.examples > 500, "{:?}", card.cold_start);
    assert_eq!(card.curve.len(), 2);
    assert!(card.curve.iter().all(|c| c.reward.is_finite()));
    assert!(out.join("policy.safetensors").exists() && out.join("reference/card.json").exists());
    // Scored where it started and after each iteration; the folder holds the best scored,
    // `last/` the latest.
    let scored: Vec<usize> = card.validation.iter().map(|p| p.iteration).collect();
    assert_eq!(scored, [0, 1, 2]);
    // The kept one: the cheapest of those within the operator's broken-limit steps (the
    // fewest steps when none is).
    let within: Vec<_> = card
        .validation
        .iter()
        .filter(|p| p.limit_steps <= p.rules_limit_steps)
        .collect();
    let best = if within.is_empty() {
        card.validation
            .iter()
            .min_by(|a, b| a.limit_steps.total_cmp(&b.limit_steps))
    } else {
        within
            .into_iter()
            .min_by(|a, b| a.total_cost.total_cmp(&b.total_cost))
    }
    .unwrap();
    assert_eq!(
        card.kept_iteration,
        Some(best.iteration),
        "{:?}",
        card.validation
    );
    assert!(
        card.validation
            .iter()
            .all(|p| p.against_rules_pct.is_finite())
    );
    // Same seed, same policy, to the byte; and so for the PPO reference.
    let again = dir.path().join("p1-again");
    train(&scenarios, &objective, settings(2), &again, false, &|_| {}).unwrap();
    let bytes = |dir: &Path| std::fs::read(dir.join("policy.safetensors")).unwrap();
    assert!(
        bytes(&out) == bytes(&again),
        "two trainings of one seed differ"
    );
    let last = out.join("last");
    assert_eq!(
        card.kept_iteration == Some(2),
        bytes(&out) == bytes(&last),
        "the folder holds iteration {:?}",
        card.kept_iteration
    );
    let ppo = |name: &str| {
        let dir = dir.path().join(name);
        let card =
            doppel_autonomy::grpo::ppo::train(&scenarios, &objective, settings(2), &dir, &|_| {})
                .unwrap();
        assert_eq!(card.algo, "ppo");
        assert!(card.curve.iter().all(|c| c.reward.is_finite()));
        bytes(&dir)
    };
    assert!(
        ppo("ppo-1") == ppo("ppo-2"),
        "two PPO trainings of one seed differ"
    );
    // Resumed with more iterations: the first two are kept, one more is added.
    let card = train(&scenarios, &objective, settings(3), &out, true, &|_| {}).unwrap();
    assert_eq!(card.iterations_done, 3);
    assert_eq!(card.curve.len(), 3);
    assert_eq!(card.validation.last().map(|p| p.iteration), Some(3));

    let name = format!("grpo:{}", out.display());
    let objective = Arc::new(objective);
    let maker = policy_by_name(&name, objective.clone()).unwrap();
    // Evaluated on one thread or two, the same episodes to the last digit (behind the gate
    // too, whose estimates draw random numbers).
    let shielded = policy_by_name(&format!("{name}+shield"), objective.clone()).unwrap();
    let on = |threads: usize| {
        let mut e = evaluation(vec![maker.clone(), shielded.clone()], objective.clone());
        e.days = 2.0;
        e.threads = Some(threads);
        let mut episodes = run(&e, &|_| {}).unwrap();
        // (Compute time is the one thing that may differ.)
        episodes.iter_mut().for_each(|e| e.stats.compute_s = 0.0);
        serde_json::to_string(&episodes).unwrap()
    };
    assert_eq!(on(1), on(2), "evaluations on 1 and 2 threads differ");
    let config = ChillerPlantConfig::default();
    let mut plant = ChillerPlant::new(config.clone(), 9).unwrap();
    let mut policy = maker.make(&plant, &config, 9).unwrap();
    let outcome = doppel_sim::run::simulate(
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
    assert_eq!(policy.stats().decisions, 96, "a decision every 15 minutes");
    assert_eq!(outcome.kpis.limit_excursion_minutes, 0.0);
    let missing = policy_by_name("grpo:/nowhere", objective);
    assert!(
        missing
            .err()
            .unwrap()
            .to_string()
            .contains("doppel policy train")
    );
}

/// Every action a policy took, with its time.
struct Recorded {
    inner: Box<dyn Policy>,
    actions: Vec<(f64, Action)>,
}

impl Policy for Recorded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn wants_readings(&self, t_s: f64) -> bool {
        self.inner.wants_readings(t_s)
    }
    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        let before = actions.len();
        self.inner.decide(t_s, readings, actions);
        self.actions
            .extend(actions[before..].iter().map(|a| (t_s, *a)));
    }
}

/// A policy trained to move only the setpoint runs beside the rule-based operator: the
/// operator stages chillers and pumps, the network moves the setpoint half a degree at a time
/// within 6 to 8.5 °C, and an intruder's 12 °C goes back to the operator's 7 at its next look
/// without the network moving it that period.
#[test]
fn a_setpoint_policy_moves_the_setpoint_beside_the_operators_staging() {
    use doppel_autonomy::grpo::net::Control;
    use doppel_autonomy::grpo::train::{GrpoSettings, train};
    let plant = probe();
    let objective = Objective::reference(&plant).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sp");
    let settings = GrpoSettings {
        iterations: 2,
        groups: 2,
        group: 4,
        horizon: 8,
        cold_start_days: 2.0,
        cold_start_steps: 0,
        control: Control::Setpoint,
        ..GrpoSettings::default()
    };
    let scenarios = vec![("undisturbed".to_owned(), Scenario::baseline())];
    let card = train(&scenarios, &objective, settings, &out, false, &|_| {}).unwrap();
    assert_eq!(card.settings.control, Control::Setpoint);

    let attack = dir.path().join("attack.toml");
    std::fs::write(
        &attack,
        "[[disruption]]\nkind = \"malicious_command\"\nstart = \"1d\"\nactuator = \"chw.supply_setpoint\"\nvalue = 12.0\n",
    )
    .unwrap();
    let config = ChillerPlantConfig::default();
    let mut plant = ChillerPlant::new(config.clone(), 4).unwrap();
    let events = Scenario::load(&attack, &plant).unwrap().draw(4);
    let maker = policy_by_name(&format!("grpo:{}", out.display()), Arc::new(objective)).unwrap();
    let mut policy = Recorded {
        inner: maker.make(&plant, &config, 4).unwrap(),
        actions: Vec::new(),
    };
    doppel_sim::run::simulate(
        &mut plant,
        &mut policy,
        events,
        doppel_sim::run::RunSettings {
            days: 2.0,
            step_s: 60.0,
        },
        None,
    )
    .unwrap();
    let setpoint = actuator_index(&plant, "chw.supply_setpoint").unwrap();
    let setpoints: Vec<(f64, f64)> = policy
        .actions
        .iter()
        .filter_map(|&(t, a)| match a {
            Action::Set { actuator, value } if actuator == setpoint => Some((t, value)),
            _ => None,
        })
        .collect();
    let staging = policy
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::Set { actuator, .. } if *actuator != setpoint))
        .count();
    assert!(staging > 0, "the operator stages: {:?}", policy.actions);
    // An untrained network moves the setpoint often; every move is legal and on the grid.
    assert!(setpoints.len() > 5, "{setpoints:?}");
    for &(_, v) in &setpoints {
        assert!((6.0..=8.5).contains(&v), "{setpoints:?}");
        assert!((v * 2.0).fract() == 0.0, "half-degree steps: {setpoints:?}");
    }
    // The first move at or after the attack is the operator's 7 °C, alone in its period.
    let after: Vec<&(f64, f64)> = setpoints.iter().filter(|(t, _)| *t >= 86_400.0).collect();
    assert_eq!(after[0].1, 7.0, "{after:?}");
    assert!(
        after.get(1).is_none_or(|(t, _)| *t > after[0].0),
        "the network left the operator's reset alone: {after:?}"
    );
}

/// Decisions a supervised policy recorded.
struct Collected(std::sync::Arc<std::sync::Mutex<Vec<doppel_autonomy::supervise::Decision>>>);

impl doppel_autonomy::supervise::Desk for Collected {
    fn record(&mut self, decision: doppel_autonomy::supervise::Decision) {
        self.0.lock().unwrap().push(decision);
    }
    fn approved(&mut self) -> Vec<Vec<Action>> {
        Vec::new()
    }
}

/// On the live plant, a gated policy running it (`auto`) holds its setpoint against an
/// intruder within a minute, and the gate's refreshing writes are done but not recorded as
/// decisions; as an adviser (`shadow`) its gate writes nothing again, so its proposals are the
/// policy's own.
#[test]
fn a_supervised_gate_holds_the_setpoint_in_auto_and_records_only_decisions() {
    use doppel_autonomy::supervise::{Mode, Supervised};
    let config = ChillerPlantConfig::default();
    let probe = probe();
    let objective = Arc::new(Objective::reference(&probe).unwrap());
    let attack = Scenario::parse(
        "[[disruption]]\nkind = \"malicious_command\"\nstart = \"722m\"\nactuator = \"chw.supply_setpoint\"\nvalue = 12.0\n",
        std::path::Path::new("attack.toml"),
        &probe,
    )
    .unwrap();
    for mode in [Mode::Auto, Mode::Shadow] {
        let mut plant = ChillerPlant::new(config.clone(), 4).unwrap();
        let maker = match mode {
            Mode::Auto => policy_by_name("rules+shield", objective.clone()),
            _ => doppel_autonomy::catalog::advisor_by_name("rules+shield", objective.clone()),
        }
        .unwrap();
        let agent = maker.make(&plant, &config, 4).unwrap();
        let decisions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut supervised = Supervised::new(
            "rules+shield".into(),
            mode,
            agent,
            &plant,
            &config,
            4,
            objective.clone(),
            Box::new(Collected(decisions.clone())),
        )
        .unwrap();
        let mut limits = Vec::new();
        struct Broken<'a>(
            doppel_autonomy::objective::Watch,
            &'a Objective,
            &'a mut Vec<f64>,
        );
        impl doppel_sim::run::Observer for Broken<'_> {
            fn observe(&mut self, view: &doppel_sim::run::StepView) -> doppel_sim::Result<bool> {
                self.0.observe(view.t_s, view.truth, view.labels);
                if self.1.broken(&self.0).is_some() {
                    self.2.push(view.t_s);
                }
                Ok(true)
            }
        }
        let mut observer = Broken(
            doppel_autonomy::objective::Watch::new(&plant),
            &objective,
            &mut limits,
        );
        doppel_sim::run::simulate(
            &mut plant,
            &mut supervised,
            attack.draw(4),
            doppel_sim::run::RunSettings {
                days: 1.0,
                step_s: 60.0,
            },
            Some(&mut observer),
        )
        .unwrap();
        let decisions = decisions.lock().unwrap();
        // A day of 15-minute looks holds at most 96 decisions; a refresh a minute would be 1,440.
        assert!(
            decisions.len() < 96,
            "{mode:?}: {} decisions",
            decisions.len()
        );
        match mode {
            // The intruder's step and the step back.
            Mode::Auto => assert_eq!(limits.len(), 2, "{limits:?}"),
            // The operator runs the plant and puts the 12 °C back at its next look.
            _ => assert!(limits.len() > 2, "{limits:?}"),
        }
    }
}
