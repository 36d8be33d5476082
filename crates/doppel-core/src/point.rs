//! InfluxDB's data model: a point is a measurement, a tag set, one or more fields and a time.
//!
//! A *series* is a measurement plus a tag set; a field of a series is one time series of values.
//! The same series, field and timestamp written twice: the last write wins.

use std::fmt;

/// The type of a field's values. A field keeps one type for its whole life in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Float,
    Integer,
    UInteger,
    String,
    Boolean,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::UInteger => "unsigned integer",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        })
    }
}

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Integer(i64),
    UInteger(u64),
    String(String),
    Boolean(bool),
}

impl FieldValue {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Integer(_) => FieldType::Integer,
            FieldValue::UInteger(_) => FieldType::UInteger,
            FieldValue::String(_) => FieldType::String,
            FieldValue::Boolean(_) => FieldType::Boolean,
        }
    }
}

/// One point: a measurement, its tags (sorted by key), its fields and a time in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    /// Tag keys and values, sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
    /// Field keys and values, keys unique, at least one.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch, UTC.
    pub time: i64,
}

impl Point {
    /// A point from borrowed parts; the tags are sorted by key, as a point keeps them.
    pub fn new(
        measurement: &str,
        tags: &[(&str, &str)],
        fields: &[(&str, FieldValue)],
        time: i64,
    ) -> Self {
        let mut tags: Vec<(String, String)> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tags.sort();
        Point {
            measurement: measurement.to_owned(),
            tags,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            time,
        }
    }
}

/// A batch of points for one database, written atomically: all of it or none of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub database: String,
    pub points: Vec<Point>,
}

impl WriteBatch {
    pub fn new(database: impl Into<String>) -> Self {
        WriteBatch {
            database: database.into(),
            points: Vec::new(),
        }
    }

    /// The number of field values in the batch (what throughput is counted in).
    pub fn field_count(&self) -> usize {
        self.points.iter().map(|p| p.fields.len()).sum()
    }
}

/// Checks that a database, measurement, tag or field name is acceptable to the lake:
/// not empty, no control characters, no `/` (names become folder names on disk).
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{kind} name `{}` contains a control character",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Checks that a database name can be a folder name: letters, digits, `_`, `-` and `.`,
/// not starting with `.`.
pub fn validate_database_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "database name `{}` is not allowed: use 1 to 64 letters, digits, `_`, `-` or `.`, not starting with `.`",
            name.escape_debug()
        ))
    }
}
