//! One step of the chilled-water plant: environment, pumps, tower, chillers, the loop's heat
//! balance, wear, failures, maintenance and KPIs, in that order.
//! The loop is integrated with explicit Euler sub-steps short enough to be stable, which
//! makes the heat balance exact: stored heat changes by exactly load in minus chiller duty out.

use rand::Rng;
use rand_distr::StandardNormal;

use super::environment::{Calendar, Environment, ar1};
use super::layout::*;
use super::physics::{self, CP, RHO};
use super::{ChillerPlant, Equipment, Job};
use crate::plant::{AssetStatus, Disturbances};
use crate::random::{Stream, stream};

/// e^(6·1.2) and e^(6·(1.5 − 0.8)): the largest trip hazards' exponentials.
const PUMP_HAZARD_CAP: f64 = 1_339.430_764_394_418_4;
const CHILLER_HAZARD_CAP: f64 = 66.686_331_040_925_14;

/// First-order decay factors for a step length, computed once per step length rather than
/// with three exponentials every step.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Decay {
    dt: f64,
    front: f64,
    load: f64,
    /// 1 − e^(−dt/30 min): how far bearing temperature moves toward its target.
    bearing: f64,
}

impl Decay {
    fn for_step(&mut self, dt: f64, env: &super::EnvironmentConfig) -> Decay {
        if self.dt != dt {
            *self = Decay {
                dt,
                front: (-dt / (env.front_hours * 3600.0)).exp(),
                load: (-dt / (env.load_noise_hours * 3600.0)).exp(),
                bearing: 1.0 - (-dt / 1800.0).exp(),
            };
        }
        *self
    }
}

/// Quantities of one step that the truth vector and the KPIs need.
struct Flows {
    speed: f64,
    flow_m3h: f64,
    head_m: f64,
    pump_kw: [f64; 16],
    chiller_duty: [f64; 16],
    chiller_kw: [f64; 16],
    cond_c: [f64; 16],
    leaving_c: f64,
    fan: f64,
    cw_c: f64,
}

impl ChillerPlant {
    // Pumps and chillers live in parallel arrays (state, flows, capacities); indexing them by
    // unit number reads closer to the equations than zipped iterators.
    #[allow(clippy::needless_range_loop)]
    pub(super) fn advance(&mut self, dt: f64, dist: &Disturbances) {
        for &asset in &dist.trips {
            self.fail(asset);
        }
        let cfg = &self.config;
        let l = self.layout;
        let seed = self.seed;
        let step = self.state.step;
        let t = self.state.t_s;

        // Environment.
        let cal = Calendar::at(cfg.start_ns as f64 / 1e9 + t, cfg.environment.utc_offset_h);
        let mut rng = stream(seed, Stream::Physics, step);
        let z_weather: f64 = rng.sample(StandardNormal);
        let z_load: f64 = rng.sample(StandardNormal);
        let env_cfg = &cfg.environment;
        let st = &mut self.state;
        let decay = self.decay.for_step(dt, env_cfg);
        st.front_c = ar1(st.front_c, env_cfg.front_sd_c, decay.front, z_weather);
        st.load_noise = ar1(
            st.load_noise,
            env_cfg.load_noise_fraction,
            decay.load,
            z_load,
        );
        let env = env_cfg.at(
            cal,
            st.front_c,
            st.load_noise,
            dist.ambient_offset_c,
            dist.load_factor,
            dist.price_factor,
        );

        // Maintenance: kits arrive, jobs finish (health restored), queued repairs start.
        let lead = cfg.maintenance.kit_lead_time_h + dist.parts_delay_h;
        let mut finished: [Option<Job>; 8] = [None; 8];
        let mut started: [usize; 16] = [usize::MAX; 16];
        let (mut n_finished, mut n_started) = (0, 0);
        let progress = st.ops.maintenance.advance(
            &cfg.maintenance,
            t,
            lead,
            |job| {
                if n_finished < finished.len() {
                    finished[n_finished] = Some(job);
                    n_finished += 1;
                }
            },
            |asset| {
                if n_started < started.len() {
                    started[n_started] = asset;
                    n_started += 1;
                }
            },
        );
        st.kpis.maintenance_cost += progress.cost + st.ops.ordered_cost;
        st.ops.ordered_cost = 0.0;
        for job in finished.iter().flatten() {
            match job.equipment {
                Equipment::Pump => {
                    let i = job.asset - l.pump_asset(0);
                    st.wear[i] = 0.02;
                    st.ops.pump_status[i] = AssetStatus::Off;
                }
                Equipment::Chiller => {
                    let j = job.asset - l.chiller_asset(0);
                    st.fouling[j] = 0.02;
                    st.ops.chiller_status[j] = AssetStatus::Off;
                }
            }
        }
        for &asset in &started[..n_started] {
            if asset < l.pumps {
                st.ops.pump_status[asset] = AssetStatus::Repair;
            } else {
                st.ops.chiller_status[asset - l.pumps] = AssetStatus::Repair;
            }
        }
        st.ops.settle_all();

        // Pumps: the local controller sets the speed for the flow the load needs at the
        // design temperature difference, within what the running pumps can give.
        let mut f = Flows {
            speed: 0.0,
            flow_m3h: 0.0,
            head_m: 0.0,
            pump_kw: [0.0; 16],
            chiller_duty: [0.0; 16],
            chiller_kw: [0.0; 16],
            cond_c: [0.0; 16],
            leaving_c: st.supply_c,
            fan: 0.0,
            cw_c: 0.0,
        };
        let n_pumps = st.ops.pump_cmd.iter().filter(|&&c| c).count();
        if n_pumps > 0 {
            let (pump, system) = (&cfg.pump, &cfg.system);
            let (speed, flow) = match st.ops.speed_override {
                Some(s) => (s, physics::parallel_flow(pump, system, n_pumps, s)),
                None => {
                    let need = env.load_kw / (CP * cfg.design_delta_t_k) * 3600.0 / RHO;
                    let lo = physics::parallel_flow(pump, system, n_pumps, cfg.pump_min_speed);
                    let hi = physics::parallel_flow(pump, system, n_pumps, 1.0);
                    let flow = need.clamp(lo, hi);
                    (physics::speed_for_flow(pump, system, n_pumps, flow), flow)
                }
            };
            f.speed = speed;
            f.flow_m3h = flow;
            let q = flow / n_pumps as f64;
            f.head_m = pump.head(q, speed).max(0.0);
            for i in 0..l.pumps {
                if st.ops.pump_cmd[i] {
                    f.pump_kw[i] = pump.power_kw(q, speed) * (1.0 + 0.1 * st.wear[i]);
                }
            }
        }
        let mc = f.flow_m3h * RHO / 3600.0 * CP; // kW/K

        // Tower, on the heat the chillers rejected in the last step.
        (f.fan, f.cw_c) = physics::tower(
            env.wet_bulb_c,
            st.heat_rejected_kw,
            cfg.tower_design_heat_kw,
            cfg.tower_design_approach_k,
            cfg.tower_setpoint_c,
            cfg.tower_min_fan,
        );

        // Chillers: fouled tubes raise the condensing temperature, lower capacity, and leave
        // the water a little warmer than asked.
        let mut capacity = [0.0; 16];
        let (mut total_cap, mut fouling_sum, mut n_chillers) = (0.0, 0.0, 0);
        for j in 0..l.chillers {
            f.cond_c[j] = f.cw_c + 2.0 + 6.0 * st.fouling[j];
            if st.ops.chiller_cmd[j] {
                let derate = 1.0 - 0.2 * st.fouling[j];
                capacity[j] = cfg.chiller_capacity_kw
                    * derate
                    * cfg
                        .curves
                        .capft(st.ops.setpoint_c, f.cw_c + 6.0 * st.fouling[j]);
                total_cap += capacity[j];
                fouling_sum += st.fouling[j];
                n_chillers += 1;
            }
        }
        let target_c = st.ops.setpoint_c
            + if n_chillers > 0 {
                fouling_sum / n_chillers as f64
            } else {
                0.0
            };

        // The loop: supply volume (chillers to load) and return volume (load to chillers).
        let m_supply = cfg.supply_volume_m3 * RHO * CP; // kJ/K
        let m_return = cfg.return_volume_m3 * RHO * CP;
        let substeps = if mc > 0.0 {
            (dt * mc / (0.5 * m_supply.min(m_return))).ceil().max(1.0) as usize
        } else {
            1
        };
        let h = dt / substeps as f64;
        let (mut duty_kj, mut unmet_kj) = (0.0, 0.0);
        for _ in 0..substeps {
            let (ts, tr) = (st.supply_c, st.return_c);
            let absorbed = if mc > 0.0 {
                env.load_kw.min(mc * (cfg.coil_max_return_c - ts).max(0.0))
            } else {
                0.0
            };
            let duty = if mc > 0.0 {
                (mc * (tr - target_c)).clamp(0.0, total_cap)
            } else {
                0.0
            };
            let leaving = if mc > 0.0 { tr - duty / mc } else { ts };
            st.return_c = tr + h / m_return * (mc * (ts - tr) + absorbed);
            st.supply_c = ts + h / m_supply * (mc * (leaving - ts));
            duty_kj += duty * h;
            unmet_kj += (env.load_kw - absorbed) * h;
            f.leaving_c = leaving;
        }
        let duty_kw = duty_kj / dt;
        let mut chiller_kw_total = 0.0;
        for j in 0..l.chillers {
            if st.ops.chiller_cmd[j] && total_cap > 0.0 {
                f.chiller_duty[j] = duty_kw * capacity[j] / total_cap;
                f.chiller_kw[j] = cfg.curves.power_kw(
                    cfg.chiller_capacity_kw * (1.0 - 0.2 * st.fouling[j]),
                    cfg.chiller_cop,
                    f.chiller_duty[j],
                    st.ops.setpoint_c,
                    f.cw_c + 6.0 * st.fouling[j],
                );
                chiller_kw_total += f.chiller_kw[j];
            }
        }
        st.heat_rejected_kw = duty_kw + chiller_kw_total;
        let pumps_kw: f64 = f.pump_kw[..l.pumps].iter().sum();
        let total_kw = pumps_kw
            + chiller_kw_total
            + n_chillers as f64 * cfg.condenser_pump_kw
            + cfg.tower_fan_kw * f.fan * f.fan * f.fan;

        // Wear, fouling and failures. Each stream draws the same numbers whatever happens.
        let room_c = 22.0 + 0.25 * (env.outdoor_c - 20.0);
        let settle = decay.bearing;
        let hours = dt / 3600.0;
        let mut trips = [usize::MAX; 16];
        let mut n_trips = 0;
        for i in 0..l.pumps {
            let z: f64 = rng.sample(StandardNormal);
            let u: f64 = rng.random();
            let running = st.ops.pump_cmd[i];
            let w = st.wear[i];
            let target = room_c
                + if running {
                    15.0 * f.speed * f.speed + 30.0 * w * w
                } else {
                    0.0
                };
            st.bearing_c[i] += (target - st.bearing_c[i]) * settle;
            if running {
                // Wear grows with speed² and bearing heat, times log-normal noise (one exp
                // for both factors).
                let stress = dist.degradation_factor[l.pump_asset(i)] * f.speed * f.speed;
                let heat_and_noise = ((st.bearing_c[i] - 45.0) / 15.0 + 0.3 * z - 0.045).exp();
                st.wear[i] += hours * cfg.wear_per_hour * stress * heat_and_noise;
                // Random trips: hazard 2e-6·e^(6w) per hour, w capped at 1.2. Most draws are
                // far above any possible hazard, so the exponential is rarely needed.
                let tripped = u < 2e-6 * PUMP_HAZARD_CAP * hours
                    && u < physics::pump_trip_hazard_per_h(st.wear[i]) * hours;
                if st.wear[i] >= 1.0 || tripped {
                    trips[n_trips] = l.pump_asset(i);
                    n_trips += 1;
                }
            }
        }
        for j in 0..l.chillers {
            let u: f64 = rng.random();
            if st.ops.chiller_cmd[j] {
                let plr = f.chiller_duty[j] / capacity[j].max(1.0);
                st.fouling[j] += hours
                    * cfg.fouling_per_hour
                    * plr
                    * dist.degradation_factor[l.chiller_asset(j)];
                // Trips: hazard e^(6(φ − 0.8))/5000 per hour, φ capped at 1.5.
                if u < CHILLER_HAZARD_CAP / 5000.0 * hours
                    && u < physics::chiller_trip_hazard_per_h(st.fouling[j]) * hours
                {
                    trips[n_trips] = l.chiller_asset(j);
                    n_trips += 1;
                }
            }
        }

        // KPIs over the step.
        let k = &mut st.kpis;
        k.energy_kwh += total_kw * hours;
        k.energy_cost += total_kw * hours * env.price;
        if st.supply_c > cfg.supply_limit_c {
            k.limit_excursion_minutes += dt / 60.0;
        }
        k.peak_supply_temp_c = k.peak_supply_temp_c.max(st.supply_c);
        k.unmet_cooling_kwh += unmet_kj / 3600.0;
        for status in st.ops.pump_status.iter().chain(&st.ops.chiller_status) {
            if status.is_unplanned_down() {
                k.downtime_hours += hours;
            } else if *status == AssetStatus::Maintenance {
                k.planned_maintenance_hours += hours;
            }
        }

        st.t_s += dt;
        st.step += 1;
        for &asset in &trips[..n_trips] {
            self.fail(asset);
        }
        self.fill_truth(&f, &env, total_kw);
        let st = &mut self.state;
        st.sensors
            .track(&st.truth, &dist.sensor_faults, dist.any_sensor_fault);
    }

    fn fill_truth(&mut self, f: &Flows, env: &Environment, total_kw: f64) {
        let l = self.layout;
        let st = &mut self.state;
        let truth = &mut st.truth;
        for i in 0..l.pumps {
            let running = st.ops.pump_cmd[i];
            let s = if running { f.speed } else { 0.0 };
            let w = st.wear[i];
            truth[l.pump(i, PUMP_STATUS)] = st.ops.pump_status[i].code();
            truth[l.pump(i, PUMP_SPEED)] = 100.0 * s;
            truth[l.pump(i, PUMP_POWER)] = f.pump_kw[i];
            // I = P / (√3 · 400 V · cos φ 0.85)
            truth[l.pump(i, PUMP_CURRENT)] = f.pump_kw[i] * 1000.0 / (1.732 * 400.0 * 0.85);
            truth[l.pump(i, PUMP_BEARING)] = st.bearing_c[i];
            truth[l.pump(i, PUMP_VIBRATION)] = if running {
                // w^2.5 as w²·√w: the same number, a fraction of the cost of powf.
                0.5 + 0.9 * s * s
                    + 7.0 * {
                        let w = w.min(1.2);
                        w * w * w.sqrt()
                    }
            } else {
                0.05
            };
        }
        for j in 0..l.chillers {
            truth[l.chiller(j, CHILLER_STATUS)] = st.ops.chiller_status[j].code();
            truth[l.chiller(j, CHILLER_POWER)] = f.chiller_kw[j];
            truth[l.chiller(j, CHILLER_DUTY)] = f.chiller_duty[j];
            truth[l.chiller(j, CHILLER_LEAVING)] = if st.ops.chiller_cmd[j] {
                f.leaving_c
            } else {
                st.return_c
            };
            truth[l.chiller(j, CHILLER_COND)] = if st.ops.chiller_cmd[j] {
                f.cond_c[j]
            } else {
                f.cw_c
            };
        }
        truth[l.plant(CHW_SUPPLY)] = st.supply_c;
        truth[l.plant(CHW_RETURN)] = st.return_c;
        truth[l.plant(CHW_FLOW)] = f.flow_m3h;
        truth[l.plant(CHW_DP)] = f.head_m * 9.81;
        truth[l.plant(CHW_SETPOINT)] = st.ops.setpoint_c;
        truth[l.plant(TOWER_WATER)] = f.cw_c;
        truth[l.plant(TOWER_FAN)] = 100.0 * f.fan;
        truth[l.plant(WEATHER_TEMP)] = env.outdoor_c;
        truth[l.plant(WEATHER_HUMIDITY)] = env.humidity_pct;
        truth[l.plant(HALL_LOAD)] = env.load_kw;
        truth[l.plant(PLANT_POWER)] = total_kw;
    }
}
