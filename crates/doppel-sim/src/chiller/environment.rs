//! What the plant does not control: weather, the heat load it serves, and the price of power.
//!
//! Calendar rhythms (season, day, week) plus slow random swings (AR(1) processes whose state
//! lives in the plant state). All functions are pure; the random numbers come in as arguments.

use serde::{Deserialize, Serialize};

use super::physics::wet_bulb_c;

/// The site's climate and the load's rhythm.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentConfig {
    /// Hours the site's clock is ahead of UTC (the daily rhythms follow local time).
    pub utc_offset_h: f64,
    /// Mean outdoor temperature over the year, °C.
    pub annual_mean_c: f64,
    /// Half the difference between the warmest and coldest months' means, K.
    pub seasonal_amplitude_c: f64,
    /// Half the usual difference between afternoon and night, K.
    pub daily_amplitude_c: f64,
    /// Size and memory of weather fronts: standard deviation (K) and correlation time (h).
    pub front_sd_c: f64,
    pub front_hours: f64,
    /// Mean relative humidity, %, and its daily swing (lowest in the afternoon).
    pub humidity_mean_pct: f64,
    pub humidity_daily_pct: f64,
    /// The heat load: mean, kW; daily swing as a fraction; weekend level as a fraction.
    pub load_mean_kw: f64,
    pub load_daily_fraction: f64,
    pub load_weekend_fraction: f64,
    /// Extra load per K of outdoor temperature above 18 °C (envelope gains), kW/K.
    pub load_per_k_kw: f64,
    /// Load noise: standard deviation as a fraction, and correlation time in hours.
    pub load_noise_fraction: f64,
    pub load_noise_hours: f64,
    /// Electricity price per kWh by day (07–22 on weekdays) and otherwise.
    pub price_day: f64,
    pub price_night: f64,
}

impl Default for EnvironmentConfig {
    fn default() -> Self {
        EnvironmentConfig {
            utc_offset_h: 1.0,
            annual_mean_c: 11.0,
            seasonal_amplitude_c: 8.5,
            daily_amplitude_c: 5.0,
            front_sd_c: 3.0,
            front_hours: 48.0,
            humidity_mean_pct: 68.0,
            humidity_daily_pct: 15.0,
            load_mean_kw: 1500.0,
            load_daily_fraction: 0.10,
            load_weekend_fraction: 0.88,
            load_per_k_kw: 12.0,
            load_noise_fraction: 0.03,
            load_noise_hours: 1.0,
            price_day: 0.18,
            price_night: 0.10,
        }
    }
}

/// The environment at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Environment {
    pub outdoor_c: f64,
    pub humidity_pct: f64,
    pub wet_bulb_c: f64,
    pub load_kw: f64,
    pub price: f64,
}

/// Where a moment falls in the calendar, in the site's local time.
#[derive(Debug, Clone, Copy)]
pub struct Calendar {
    pub hour: f64,
    pub day_of_year: f64,
    pub weekend: bool,
}

impl Calendar {
    /// `unix_s`: seconds since the Unix epoch (UTC).
    pub fn at(unix_s: f64, utc_offset_h: f64) -> Calendar {
        let local = unix_s + utc_offset_h * 3600.0;
        let days = (local / 86_400.0).floor();
        let hour = (local - days * 86_400.0) / 3600.0;
        // 1970-01-01 was a Thursday: with Monday = 0 it is day 3.
        let weekday = (days as i64 + 3).rem_euclid(7);
        // Days since 2000-01-01 modulo the mean year length: good to a day for centuries.
        let day_of_year = (days - 10_957.0).rem_euclid(365.2425);
        Calendar {
            hour,
            day_of_year,
            weekend: weekday >= 5,
        }
    }
}

const TAU: f64 = std::f64::consts::TAU;

/// One AR(1) step: keeps the process at standard deviation `sd`; `phi = e^(−dt/τ)` sets its
/// correlation time τ.
pub fn ar1(x: f64, sd: f64, phi: f64, z: f64) -> f64 {
    x * phi + sd * (1.0 - phi * phi).sqrt() * z
}

impl EnvironmentConfig {
    /// The environment given the calendar, the weather front and load noise states, and the
    /// scenario's offsets.
    pub fn at(
        &self,
        cal: Calendar,
        front_c: f64,
        load_noise: f64,
        ambient_offset_c: f64,
        load_factor: f64,
        price_factor: f64,
    ) -> Environment {
        let season = (TAU * (cal.day_of_year - 200.0) / 365.2425).cos();
        let afternoon = (TAU * (cal.hour - 15.0) / 24.0).cos();
        let outdoor_c = self.annual_mean_c
            + self.seasonal_amplitude_c * season
            + self.daily_amplitude_c * afternoon
            + front_c
            + ambient_offset_c;
        let humidity_pct = (self.humidity_mean_pct - self.humidity_daily_pct * afternoon
            + 2.0 * front_c)
            .clamp(15.0, 100.0);
        let busy = (TAU * (cal.hour - 14.0) / 24.0).cos();
        let week = if cal.weekend {
            self.load_weekend_fraction
        } else {
            1.0
        };
        let load_kw = (self.load_mean_kw * (1.0 + self.load_daily_fraction * busy) * week
            + self.load_per_k_kw * (outdoor_c - 18.0).max(0.0))
            * (1.0 + load_noise)
            * load_factor;
        let day = !cal.weekend && (7.0..22.0).contains(&cal.hour);
        let price = if day {
            self.price_day
        } else {
            self.price_night
        } * price_factor;
        Environment {
            outdoor_c,
            humidity_pct,
            wet_bulb_c: wet_bulb_c(outdoor_c, humidity_pct),
            load_kw: load_kw.max(0.0),
            price,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_knows_weekdays_and_hours() {
        // 2026-07-04T12:00:00Z is a Saturday; local time UTC+1.
        let t = 1_783_166_400.0;
        let c = Calendar::at(t, 1.0);
        assert!(c.weekend);
        assert!((c.hour - 13.0).abs() < 1e-9);
        assert!((c.day_of_year - 185.0).abs() < 1.5, "{}", c.day_of_year);
        let monday = Calendar::at(t + 2.0 * 86_400.0, 1.0);
        assert!(!monday.weekend);
    }

    #[test]
    fn summer_afternoons_are_warm_and_winter_nights_cold() {
        let env = EnvironmentConfig::default();
        let summer = Calendar {
            hour: 15.0,
            day_of_year: 200.0,
            weekend: false,
        };
        let winter = Calendar {
            hour: 4.0,
            day_of_year: 17.0,
            weekend: false,
        };
        let s = env.at(summer, 0.0, 0.0, 0.0, 1.0, 1.0);
        let w = env.at(winter, 0.0, 0.0, 0.0, 1.0, 1.0);
        assert!(s.outdoor_c > 22.0 && w.outdoor_c < 0.0, "{s:?} {w:?}");
        assert!(s.load_kw > w.load_kw);
        assert!(s.wet_bulb_c < s.outdoor_c);
        assert!(s.price > w.price);
    }

    #[test]
    fn ar1_keeps_its_variance() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let mut x = 0.0;
        let mut sum2 = 0.0;
        let n = 200_000;
        for _ in 0..n {
            let z: f64 = StandardNormal.sample(&mut rng);
            x = ar1(x, 2.0, (-60.0f64 / 3600.0).exp(), z);
            sum2 += x * x;
        }
        let sd = (sum2 / n as f64).sqrt();
        assert!((sd - 2.0).abs() < 0.2, "{sd}");
    }
}
