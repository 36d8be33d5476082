//! Crews, spare parts and repair jobs.
//!
//! A failed asset joins a queue and is repaired (unplanned) as soon as a crew is free and,
//! for a pump, a bearing kit is in stock; every kit used is reordered and arrives after the
//! lead time. A planned job is an operator's order: it needs a free crew now (and a kit for a
//! pump), or it is refused with the reason. This module decides who works on what and when;
//! it never touches the physics.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};

/// Costs, durations and resources of maintenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Crews that can work at the same time.
    pub crews: usize,
    /// Bearing kits in stock at the start.
    pub bearing_kits: u32,
    /// Hours from ordering a kit to having it.
    pub kit_lead_time_h: f64,
    pub kit_cost: f64,
    /// Planned pump service: hours and labour cost (plus a kit).
    pub pump_service_h: f64,
    pub pump_service_cost: f64,
    /// Pump repair after a bearing failure: hours and labour cost (plus a kit).
    pub pump_repair_h: f64,
    pub pump_repair_cost: f64,
    /// Planned chiller tube cleaning: hours and cost.
    pub chiller_clean_h: f64,
    pub chiller_clean_cost: f64,
    /// Chiller repair after a trip: hours and cost.
    pub chiller_repair_h: f64,
    pub chiller_repair_cost: f64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            crews: 1,
            bearing_kits: 1,
            kit_lead_time_h: 72.0,
            kit_cost: 800.0,
            pump_service_h: 4.0,
            pump_service_cost: 1_200.0,
            pump_repair_h: 10.0,
            pump_repair_cost: 4_000.0,
            chiller_clean_h: 8.0,
            chiller_clean_cost: 3_500.0,
            chiller_repair_h: 24.0,
            chiller_repair_cost: 12_000.0,
        }
    }
}

/// Which kind of asset a job is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Equipment {
    Pump,
    Chiller,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub asset: usize,
    pub equipment: Equipment,
    pub until_s: f64,
    pub planned: bool,
}

/// The maintenance department's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Maintenance {
    pub crews: Vec<Option<Job>>,
    pub kits: u32,
    /// Arrival times of kits on order.
    pub deliveries: Vec<f64>,
    /// Failed assets waiting for a crew or parts, oldest first.
    pub queue: Vec<(usize, Equipment)>,
}

/// What happened in the maintenance department during a step.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub cost: f64,
}

impl Maintenance {
    pub fn new(config: &MaintenanceConfig) -> Self {
        Maintenance {
            crews: vec![None; config.crews.max(1)],
            kits: config.bearing_kits,
            // Room up front, so orders and repairs in the step loop do not allocate.
            deliveries: Vec::with_capacity(16),
            queue: Vec::with_capacity(16),
        }
    }

    fn free_crew(&self) -> Option<usize> {
        self.crews.iter().position(Option::is_none)
    }

    /// Checks a planned order without changing anything.
    pub fn check_planned(&self, equipment: Equipment, name: &str, now_s: f64) -> Result<()> {
        if self.free_crew().is_none() {
            let busy: Vec<String> = self
                .crews
                .iter()
                .flatten()
                .map(|j| format!("free in {:.1} h", (j.until_s - now_s) / 3600.0))
                .collect();
            return Err(SimError::action(
                name,
                format!(
                    "maintenance beyond crew capacity: all {} crew(s) are busy ({})",
                    self.crews.len(),
                    busy.join(", ")
                ),
            ));
        }
        if equipment == Equipment::Pump && self.kits == 0 {
            let next = self
                .deliveries
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            let when = if next.is_finite() {
                format!("the next arrives in {:.1} h", (next - now_s) / 3600.0)
            } else {
                "none is on order".to_owned()
            };
            return Err(SimError::action(
                name,
                format!("no bearing kit in stock for a pump service; {when}"),
            ));
        }
        Ok(())
    }

    /// Starts a planned job (checked first by the caller). Returns its cost.
    pub fn start_planned(
        &mut self,
        config: &MaintenanceConfig,
        asset: usize,
        equipment: Equipment,
        now_s: f64,
        lead_time_h: f64,
    ) -> f64 {
        let (hours, cost) = match equipment {
            Equipment::Pump => (config.pump_service_h, config.pump_service_cost),
            Equipment::Chiller => (config.chiller_clean_h, config.chiller_clean_cost),
        };
        self.start(
            asset,
            equipment,
            now_s + hours * 3600.0,
            true,
            now_s,
            lead_time_h,
        );
        cost + self.kit_cost(config, equipment)
    }

    fn kit_cost(&self, config: &MaintenanceConfig, equipment: Equipment) -> f64 {
        match equipment {
            Equipment::Pump => config.kit_cost,
            Equipment::Chiller => 0.0,
        }
    }

    fn start(
        &mut self,
        asset: usize,
        equipment: Equipment,
        until_s: f64,
        planned: bool,
        now_s: f64,
        lead_time_h: f64,
    ) {
        let crew = self.free_crew().expect("checked: a crew is free");
        self.crews[crew] = Some(Job {
            asset,
            equipment,
            until_s,
            planned,
        });
        if equipment == Equipment::Pump {
            self.kits -= 1;
            self.deliveries.push(now_s + lead_time_h * 3600.0);
        }
    }

    /// Puts a failed asset in the repair queue.
    pub fn report_failure(&mut self, asset: usize, equipment: Equipment) {
        if !self.queue.iter().any(|(a, _)| *a == asset) {
            self.queue.push((asset, equipment));
        }
    }

    /// Advances to `now_s`: kits arrive, finished jobs free their crews (their assets are
    /// returned through `finished`), and queued repairs start when they can. Returns the cost
    /// of repairs started, and calls `started` with each asset whose repair began.
    pub fn advance(
        &mut self,
        config: &MaintenanceConfig,
        now_s: f64,
        lead_time_h: f64,
        mut finished: impl FnMut(Job),
        mut started: impl FnMut(usize),
    ) -> Progress {
        let mut progress = Progress::default();
        let before = self.deliveries.len();
        self.deliveries.retain(|&t| t > now_s);
        self.kits += (before - self.deliveries.len()) as u32;
        for crew in &mut self.crews {
            if let Some(job) = *crew
                && job.until_s <= now_s
            {
                *crew = None;
                finished(job);
            }
        }
        let mut i = 0;
        while i < self.queue.len() {
            let (asset, equipment) = self.queue[i];
            let parts_ok = equipment == Equipment::Chiller || self.kits > 0;
            if self.free_crew().is_some() && parts_ok {
                self.queue.remove(i);
                let (hours, cost) = match equipment {
                    Equipment::Pump => (config.pump_repair_h, config.pump_repair_cost),
                    Equipment::Chiller => (config.chiller_repair_h, config.chiller_repair_cost),
                };
                self.start(
                    asset,
                    equipment,
                    now_s + hours * 3600.0,
                    false,
                    now_s,
                    lead_time_h,
                );
                progress.cost += cost + self.kit_cost(config, equipment);
                started(asset);
            } else {
                i += 1;
            }
        }
        progress
    }
}
