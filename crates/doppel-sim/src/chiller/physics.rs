//! The equations of the chilled-water plant, as plain functions of their inputs.
//!
//! Each function is one relation written down in docs/REFERENCE_PLANT.md, with the same
//! symbols. Nothing here keeps state or draws random numbers; `plant.rs` wires them together.

/// Water: density, kg/m³, and specific heat, kJ/(kg·K).
pub const RHO: f64 = 1000.0;
pub const CP: f64 = 4.19;
const G: f64 = 9.81;

/// A centrifugal pump at full speed: `H = H0 − k·q²` (head in m, flow in m³/h), with a
/// parabolic efficiency curve peaking at `q_bep`.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct PumpCurve {
    pub shutoff_head_m: f64,
    pub k: f64,
    pub q_bep_m3h: f64,
    pub eta_bep: f64,
    pub motor_efficiency: f64,
}

impl PumpCurve {
    /// Head at flow `q` and relative speed `s` (affinity laws: `H(q, s) = s²·H(q/s, 1)`).
    pub fn head(&self, q: f64, s: f64) -> f64 {
        self.shutoff_head_m * s * s - self.k * q * q
    }

    /// Hydraulic efficiency at flow `q` and speed `s`: the full-speed curve at `q/s`.
    pub fn efficiency(&self, q: f64, s: f64) -> f64 {
        if s <= 0.0 {
            return self.eta_bep;
        }
        let x = (q / s - self.q_bep_m3h) / self.q_bep_m3h;
        (self.eta_bep * (1.0 - x * x)).max(0.25 * self.eta_bep)
    }

    /// Electric power, kW, at flow `q` (m³/h) and speed `s`: `ρ·g·Q·H / (η·η_motor)`.
    /// With `q` and `H` scaled by the affinity laws this goes as `s³`.
    pub fn power_kw(&self, q: f64, s: f64) -> f64 {
        if q <= 0.0 || s <= 0.0 {
            return 0.0;
        }
        let hydraulic_w = RHO * G * (q / 3600.0) * self.head(q, s).max(0.0);
        hydraulic_w / (self.efficiency(q, s) * self.motor_efficiency) / 1000.0
    }
}

/// The loop the pumps push against: `H = H_min + K·Q²`, where `H_min` is the differential
/// pressure held at the far end of the loop.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SystemCurve {
    pub min_head_m: f64,
    pub k: f64,
}

/// Total flow of `n` equal pumps in parallel at speed `s` against the system (m³/h):
/// solves `H0·s² − k·(Q/n)² = H_min + K·Q²`.
pub fn parallel_flow(pump: &PumpCurve, system: &SystemCurve, n: usize, s: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let lift = pump.shutoff_head_m * s * s - system.min_head_m;
    if lift <= 0.0 {
        return 0.0;
    }
    (lift / (pump.k / (n * n) + system.k)).sqrt()
}

/// The speed at which `n` pumps deliver total flow `q` against the system (inverse of
/// [`parallel_flow`]).
pub fn speed_for_flow(pump: &PumpCurve, system: &SystemCurve, n: usize, q: f64) -> f64 {
    let n = n.max(1) as f64;
    ((system.min_head_m + (pump.k / (n * n) + system.k) * q * q) / pump.shutoff_head_m).sqrt()
}

/// DOE-2 chiller performance curves (the `Chiller:Electric:EIR` model of EnergyPlus):
/// biquadratic CAPFT and EIRFT in the leaving chilled-water temperature `tc` and the entering
/// condenser-water temperature `tw` (°C), quadratic EIRFPLR in the part-load ratio.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ChillerCurves {
    pub capft: [f64; 6],
    pub eirft: [f64; 6],
    pub eirfplr: [f64; 3],
    /// The range the curves were fitted over; inputs are held inside it.
    pub tc_range: (f64, f64),
    pub tw_range: (f64, f64),
    pub min_plr: f64,
}

impl ChillerCurves {
    /// "DOE-2 Centrifugal/5.50COP" from EnergyPlus's chiller dataset (reference point
    /// 6.67 °C leaving chilled water, 29.4 °C entering condenser water).
    pub fn doe2_centrifugal() -> Self {
        ChillerCurves {
            capft: [
                0.257896,
                0.0389016,
                -0.00021708,
                0.0468684,
                -0.00094284,
                -0.00034344,
            ],
            eirft: [
                0.933884, -0.058212, 0.00450036, 0.00243, 0.000486, -0.001215,
            ],
            eirfplr: [0.222903, 0.313387, 0.46371],
            tc_range: (5.0, 10.0),
            tw_range: (24.0, 35.0),
            min_plr: 0.1,
        }
    }

    fn biquadratic(c: &[f64; 6], tc: f64, tw: f64) -> f64 {
        c[0] + c[1] * tc + c[2] * tc * tc + c[3] * tw + c[4] * tw * tw + c[5] * tc * tw
    }

    fn clamp_inputs(&self, tc: f64, tw: f64) -> (f64, f64) {
        (
            tc.clamp(self.tc_range.0, self.tc_range.1),
            tw.clamp(self.tw_range.0, self.tw_range.1),
        )
    }

    /// Available capacity as a fraction of the reference capacity.
    pub fn capft(&self, tc: f64, tw: f64) -> f64 {
        let (tc, tw) = self.clamp_inputs(tc, tw);
        Self::biquadratic(&self.capft, tc, tw)
    }

    /// Full-load electric input per unit cooling, relative to the reference.
    pub fn eirft(&self, tc: f64, tw: f64) -> f64 {
        let (tc, tw) = self.clamp_inputs(tc, tw);
        Self::biquadratic(&self.eirft, tc, tw)
    }

    /// Electric input at part load, relative to full load (below `min_plr` the machine
    /// false-loads, so the curve is held at `min_plr`).
    pub fn eirfplr(&self, plr: f64) -> f64 {
        let p = plr.max(self.min_plr);
        self.eirfplr[0] + self.eirfplr[1] * p + self.eirfplr[2] * p * p
    }

    /// Electric power (kW) of one chiller of reference capacity `cap_ref_kw` and `cop_ref`
    /// delivering `duty_kw`: `P = Cap_ref/COP_ref · CAPFT · EIRFT · EIRFPLR(PLR)`.
    pub fn power_kw(&self, cap_ref_kw: f64, cop_ref: f64, duty_kw: f64, tc: f64, tw: f64) -> f64 {
        if duty_kw <= 0.0 {
            return 0.0;
        }
        let available = cap_ref_kw * self.capft(tc, tw);
        let plr = duty_kw / available;
        cap_ref_kw / cop_ref * self.capft(tc, tw) * self.eirft(tc, tw) * self.eirfplr(plr)
    }
}

/// Wet-bulb temperature (°C) from dry bulb (°C) and relative humidity (%), Stull (2011),
/// valid for 5–99 % RH and −20–50 °C, within about 1 K.
pub fn wet_bulb_c(t: f64, rh: f64) -> f64 {
    let rh = rh.clamp(5.0, 99.0);
    t * (0.151977 * (rh + 8.313659).sqrt()).atan() + (t + rh).atan() - (rh - 1.676331).atan()
        + 0.00391838 * rh * rh.sqrt() * (0.023101 * rh).atan()
        - 4.686035
}

/// Cooling tower: condenser water leaves at `T_wb + approach`, where the approach grows with
/// heat rejected and shrinks with fan speed: `approach = A_d · (Q/Q_d) / f^0.8`.
/// Returns (fan speed fraction, condenser water temperature) for a setpoint the fan tries to hold.
pub fn tower(
    wet_bulb: f64,
    heat_rejected_kw: f64,
    design_heat_kw: f64,
    design_approach_k: f64,
    setpoint_c: f64,
    min_fan: f64,
) -> (f64, f64) {
    let load = (heat_rejected_kw / design_heat_kw).max(0.0);
    if load <= 0.0 {
        return (0.0, wet_bulb.max(setpoint_c.min(wet_bulb + 1.0)));
    }
    let room = setpoint_c - wet_bulb;
    let needed = if room > 0.0 {
        // x^1.25 as x·x^¼
        let x = design_approach_k * load / room;
        x * x.sqrt().sqrt()
    } else {
        1.0
    };
    let fan = needed.clamp(min_fan, 1.0);
    (fan, wet_bulb + design_approach_k * load / fan.powf(0.8))
}

/// A running pump's random trip hazard per hour at bearing wear `w` (capped at 1.2; the pump
/// also fails outright once `w` reaches 1). docs/REFERENCE_PLANT.md.
pub fn pump_trip_hazard_per_h(w: f64) -> f64 {
    2e-6 * (6.0 * w.min(1.2)).exp()
}

/// A running chiller's trip hazard per hour at tube fouling `phi` (capped at 1.5).
pub fn chiller_trip_hazard_per_h(phi: f64) -> f64 {
    (6.0 * (phi.min(1.5) - 0.8)).exp() / 5000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump() -> PumpCurve {
        PumpCurve {
            shutoff_head_m: 38.0,
            k: 8.0 / 14_400.0,
            q_bep_m3h: 120.0,
            eta_bep: 0.8,
            motor_efficiency: 0.92,
        }
    }

    #[test]
    fn affinity_laws_hold() {
        let p = pump();
        for &s in &[0.5, 0.7, 0.9] {
            let q1 = 100.0;
            // Flow scales with speed, head with its square, power with its cube.
            assert!((p.head(q1 * s, s) - s * s * p.head(q1, 1.0)).abs() < 1e-9);
            let ratio = p.power_kw(q1 * s, s) / p.power_kw(q1, 1.0);
            assert!((ratio - s * s * s).abs() < 1e-9, "s={s} ratio={ratio}");
        }
        // Against a purely quadratic system, flow is proportional to speed.
        let sys = SystemCurve {
            min_head_m: 0.0,
            k: 2e-4,
        };
        let full = parallel_flow(&p, &sys, 3, 1.0);
        let half = parallel_flow(&p, &sys, 3, 0.5);
        assert!((half / full - 0.5).abs() < 1e-12);
        assert!((speed_for_flow(&p, &sys, 3, full) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn doe2_curves_are_one_at_the_reference_point() {
        let c = ChillerCurves::doe2_centrifugal();
        assert!((c.capft(6.67, 29.4) - 1.0).abs() < 0.01);
        assert!((c.eirft(6.67, 29.4) - 1.0).abs() < 0.01);
        assert!((c.eirfplr(1.0) - 1.0).abs() < 0.001);
    }

    #[test]
    fn cop_falls_with_condenser_temperature_and_at_low_part_load() {
        let c = ChillerCurves::doe2_centrifugal();
        let cop = |duty: f64, tw: f64| duty / c.power_kw(1000.0, 5.5, duty, 7.0, tw);
        assert!(cop(800.0, 25.0) > cop(800.0, 30.0));
        assert!(cop(800.0, 30.0) > cop(800.0, 34.0));
        // Best near 60–90 % load; poor at 15 %.
        assert!(cop(700.0, 29.4) > cop(150.0, 29.4) * 1.3);
        let at_reference = cop(c.capft(6.67, 29.4) * 1000.0, 29.4);
        assert!((at_reference - 5.5).abs() < 0.2, "{at_reference}");
    }

    #[test]
    fn wet_bulb_matches_published_points() {
        // Stull (2011): 20 °C at 50 % RH gives a wet bulb of 13.7 °C.
        assert!((wet_bulb_c(20.0, 50.0) - 13.7).abs() < 0.2);
        assert!(wet_bulb_c(30.0, 60.0) < 30.0);
        assert!(wet_bulb_c(30.0, 60.0) > wet_bulb_c(25.0, 60.0));
    }

    #[test]
    fn tower_holds_its_setpoint_when_it_can() {
        let (fan, t) = tower(18.0, 1500.0, 3500.0, 4.0, 24.0, 0.2);
        assert!((0.2..=1.0).contains(&fan));
        assert!(t <= 24.0 + 1e-9);
        // Hot and humid: full fan and the water runs warm.
        let (fan, t) = tower(27.0, 3500.0, 3500.0, 4.0, 24.0, 0.2);
        assert_eq!(fan, 1.0);
        assert!((t - 31.0).abs() < 1e-9);
    }
}
