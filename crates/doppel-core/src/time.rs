//! Time as doppel keeps it: `i64` nanoseconds since the Unix epoch, UTC.
//!
//! Conversions to and from the outside world (RFC 3339, precisions of the write API, durations
//! written like `10s`) live here so every part agrees on them.

use std::fmt;
use std::str::FromStr;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The unit of timestamps in a write, as InfluxDB's `precision` parameter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
}

impl Precision {
    /// How many nanoseconds one unit of this precision is.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => NANOS_PER_SEC,
        }
    }

    /// Converts a timestamp in this precision to nanoseconds; `None` when it overflows `i64`.
    pub fn to_nanos(self, value: i64) -> Option<i64> {
        value.checked_mul(self.nanos_per_unit())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // InfluxDB v1 uses `n`/`u`/`ms`/`s`, v2 `ns`/`us`/`ms`/`s`, v3 also the long names.
        match s {
            "ns" | "n" | "nanosecond" | "nanoseconds" => Ok(Precision::Nanoseconds),
            "us" | "u" | "µs" | "microsecond" | "microseconds" => Ok(Precision::Microseconds),
            "ms" | "millisecond" | "milliseconds" => Ok(Precision::Milliseconds),
            "s" | "second" | "seconds" => Ok(Precision::Seconds),
            other => Err(format!(
                "unknown precision `{other}`: expected one of ns, us, ms, s"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        })
    }
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .expect("the clock is between 1677 and 2262")
}

/// Formats nanoseconds since the epoch as RFC 3339 in UTC, with as many fraction digits as needed.
pub fn format_rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses RFC 3339 (`2016-07-01T00:00:00Z`, offsets allowed) into nanoseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text.trim())
        .map_err(|e| format!("`{text}` is not an RFC 3339 time ({e})"))?;
    parsed
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("`{text}` is outside the years 1677..2262"))
}

/// Parses a duration written as a number and a unit: `500ms`, `10s`, `15m`, `1h`, `7d`, `2w`.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration `{text}` has no unit: write e.g. `10s`, `15m`, `1h`"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration `{text}` does not start with a number"))?;
    let unit_nanos: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "d" => 86_400e9,
        "w" => 7.0 * 86_400e9,
        _ => {
            return Err(format!(
                "duration `{text}` has unknown unit `{unit}`: use ns, us, ms, s, m, h, d or w"
            ));
        }
    };
    let nanos = value * unit_nanos;
    if !(nanos.is_finite() && nanos > 0.0 && nanos < i64::MAX as f64) {
        return Err(format!(
            "duration `{text}` must be positive and below 292 years"
        ));
    }
    Ok(nanos.round() as i64)
}

/// Parses an offset such as `3d` or `90m` into seconds, where zero (`0`, `0s`) is allowed:
/// "at the start", unlike a period or a timeout, which must be positive.
pub fn parse_offset_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse::<f64>()
        == Ok(0.0)
    {
        return Ok(0.0);
    }
    parse_duration(t).map(|n| n as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_match_influxdb() {
        assert_eq!("n".parse::<Precision>().unwrap(), Precision::Nanoseconds);
        assert_eq!("us".parse::<Precision>().unwrap(), Precision::Microseconds);
        assert_eq!("ms".parse::<Precision>().unwrap(), Precision::Milliseconds);
        assert_eq!("s".parse::<Precision>().unwrap(), Precision::Seconds);
        assert!("h".parse::<Precision>().is_err());
        assert_eq!(Precision::Seconds.to_nanos(2), Some(2_000_000_000));
        assert_eq!(Precision::Seconds.to_nanos(i64::MAX), None);
    }

    #[test]
    fn rfc3339_round_trips() {
        let t = parse_rfc3339("2016-07-01T00:15:00Z").unwrap();
        assert_eq!(t, 1_467_332_100 * NANOS_PER_SEC);
        assert_eq!(format_rfc3339(t), "2016-07-01T00:15:00Z");
        assert_eq!(parse_rfc3339("2016-07-01T02:15:00+02:00").unwrap(), t);
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), 10 * NANOS_PER_SEC);
        assert_eq!(parse_duration("1.5m").unwrap(), 90 * NANOS_PER_SEC);
        assert_eq!(parse_duration("250ms").unwrap(), 250_000_000);
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_offset_seconds("0").unwrap(), 0.0);
        assert_eq!(parse_offset_seconds("0s").unwrap(), 0.0);
        assert_eq!(parse_offset_seconds("1.5h").unwrap(), 5400.0);
    }
}
