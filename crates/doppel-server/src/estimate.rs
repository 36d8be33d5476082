//! The live plant's state for simulations that start from now: `GET /api/v1/twin/estimate`
//! (what the state estimator makes of the lake's last six hours, with the plant's whole state
//! as JSON, which `doppel scenario run --from-live` and `doppel sim run --from-live` load),
//! and the plant scenario runs start from when asked `"from_live": true`.
//! The estimator knows the reference chilled-water plant: a twin whose spec lacks its sensors
//! is told which one is missing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig, Estimate, RecentReadings};
use doppel_sim::plant::Plant;

use crate::{AppState, error_response};

/// How much history the estimator reads (wear shows in hours of a pump's vibration).
const WINDOW_NS: i64 = 6 * 3_600_000_000_000;

/// A failure to estimate, as an HTTP answer.
pub(crate) struct Refusal(pub StatusCode, pub String);

impl Refusal {
    pub(crate) fn response(&self) -> Response {
        let code = if self.0.is_client_error() {
            "conflict"
        } else {
            "internal"
        };
        error_response(self.0, code, &self.1)
    }
}

/// The reference plant as the twin's recent readings say it is now.
pub(crate) async fn live_plant(state: &AppState) -> Result<(ChillerPlant, Estimate), Refusal> {
    let Some(twin) = &state.twin else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            "this doppel has no twin to estimate: start it with --spec twin.toml (doppel up \
             uses the reference plant's own spec)"
                .into(),
        ));
    };
    let config = ChillerPlantConfig::default();
    let probe = ChillerPlant::new(config.clone(), 0)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (newest, readings) = twin
        .recent_readings(WINDOW_NS)
        .await
        .map_err(|e| Refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let Some(newest) = newest else {
        return Err(Refusal(
            StatusCode::CONFLICT,
            "the twin has no readings yet: nothing to estimate the plant's state from".into(),
        ));
    };
    let mut recent = RecentReadings::new(probe.sensors().len());
    recent.now_unix_s = newest as f64 / 1e9;
    for (i, sensor) in probe.sensors().iter().enumerate() {
        let Some(series) = readings.iter().find(|r| r.sensor == sensor.id) else {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!(
                    "the state estimator knows the reference chilled-water plant, and this \
                     twin's spec has no sensor `{}`",
                    sensor.id
                ),
            ));
        };
        // Minute means, stamped at the middle of their minute (the last one at the newest
        // reading, which may come before it).
        let now = recent.now_unix_s;
        recent.series[i] = series
            .t
            .iter()
            .zip(&series.v)
            .filter_map(|(t, v)| v.map(|v| ((*t as f64 / 1e3 + 30.0).min(now), v)))
            .collect();
    }
    ChillerPlant::estimate(config, 0, &recent)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `GET /api/v1/twin/estimate`.
pub(crate) async fn estimate(State(state): State<AppState>) -> Response {
    match live_plant(&state).await {
        Ok((plant, estimate)) => Json(serde_json::json!({
            "at": doppel_core::time::format_rfc3339((estimate.at_unix_s * 1e9) as i64),
            "hidden": estimate.hidden,
            "health": estimate.health(),
            "health_horizon_hours": doppel_sim::chiller::HEALTH_HORIZON_H,
            "missing": estimate.missing,
            "distrusted": estimate.distrusted,
            "state": plant.save_state(),
        }))
        .into_response(),
        Err(refusal) => refusal.response(),
    }
}
