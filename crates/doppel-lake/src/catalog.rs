//! The catalog: every database's tables, their columns and types, their Parquet files, and
//! how far the WAL has been persisted. Saved as `manifest.json`, replaced atomically (written
//! to a temporary name, fsynced, renamed, directory fsynced), so after any crash it names
//! exactly the files that hold persisted data.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;

use doppel_core::{FieldType, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::buffer::{TIME_COLUMN, TableSchema};
use crate::error::{LakeError, Result};

pub const MANIFEST: &str = "manifest.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    pub format_version: u32,
    /// WAL segments up to this id are in Parquet and need no replay.
    pub wal_persisted_through: u64,
    pub next_file_id: u64,
    pub databases: BTreeMap<String, DatabaseCatalog>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            format_version: FORMAT_VERSION,
            wal_persisted_through: 0,
            next_file_id: 1,
            databases: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseCatalog {
    pub tables: BTreeMap<String, TableCatalog>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableCatalog {
    pub tags: BTreeSet<String>,
    pub fields: BTreeMap<String, FieldType>,
    /// Data older than this (nanoseconds) is dropped, a whole day partition at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_nanos: Option<i64>,
    #[serde(default)]
    pub files: Vec<FileMeta>,
}

impl TableCatalog {
    pub fn schema(&self) -> TableSchema {
        TableSchema::new(self.tags.iter(), self.fields.iter())
    }
}

/// One Parquet file of a table: one day partition, sorted by series and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Relative to the data directory, with `/` separators.
    pub path: String,
    /// Days since the Unix epoch (UTC) of every row in the file.
    pub day: i64,
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub bytes: u64,
}

/// Why a point of a batch was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRejection {
    /// Index of the point in its batch.
    pub index: usize,
    pub message: String,
}

impl Catalog {
    pub fn load(dir: &Path) -> Result<Option<Catalog>> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LakeError::io(&path, e)),
        };
        let catalog: Catalog = serde_json::from_str(&text).map_err(|e| LakeError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if catalog.format_version != FORMAT_VERSION {
            return Err(LakeError::Manifest {
                path,
                reason: format!(
                    "format version {} is not the {FORMAT_VERSION} this doppel reads",
                    catalog.format_version
                ),
            });
        }
        Ok(Some(catalog))
    }

    /// Writes the manifest durably and atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let text = serde_json::to_vec_pretty(self).expect("the catalog serialises");
        let mut file = File::create(&tmp).map_err(|e| LakeError::io(&tmp, e))?;
        file.write_all(&text).map_err(|e| LakeError::io(&tmp, e))?;
        file.sync_all().map_err(|e| LakeError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| LakeError::io(&path, e))?;
        crate::wal::sync_dir(dir)
    }

    pub fn table(&self, database: &str, table: &str) -> Option<&TableCatalog> {
        self.databases.get(database)?.tables.get(table)
    }

    /// Checks every point of a batch against the known schemas (and against the batch's
    /// earlier points): a field keeps its type, a name is a tag or a field, never both.
    /// Returns, per point, whether it is accepted, and the rejections. The new columns of the
    /// accepted points are added to the catalog when `accept_partial` is set or nothing was
    /// refused (a refused atomic batch changes nothing).
    pub fn admit(
        &mut self,
        batch: &WriteBatch,
        accept_partial: bool,
    ) -> (Vec<bool>, Vec<PointRejection>) {
        #[derive(Clone, Copy, PartialEq)]
        enum Column {
            Tag,
            Field(FieldType),
        }
        let db = self.databases.get(&batch.database);
        let mut seen: HashMap<(&str, &str), Column> = HashMap::new();
        let mut accepted = Vec::with_capacity(batch.points.len());
        let mut rejections = Vec::new();
        for (index, point) in batch.points.iter().enumerate() {
            let table = db.and_then(|d| d.tables.get(&point.measurement));
            let known = |name: &str| -> Option<Column> {
                let t = table?;
                if t.tags.contains(name) {
                    Some(Column::Tag)
                } else {
                    t.fields.get(name).map(|ft| Column::Field(*ft))
                }
            };
            let mut problem = None;
            let columns = point
                .tags
                .iter()
                .map(|(k, _)| (k.as_str(), Column::Tag))
                .chain(
                    point
                        .fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), Column::Field(v.field_type()))),
                );
            for (name, column) in columns {
                if name == TIME_COLUMN {
                    problem = Some("`time` is reserved for the timestamp".to_string());
                    break;
                }
                // The catalog first: in steady state every column is known there.
                let earlier =
                    known(name).or_else(|| seen.get(&(point.measurement.as_str(), name)).copied());
                if let Some(earlier) = earlier
                    && earlier != column
                {
                    problem = Some(match (earlier, column) {
                        (Column::Field(had), Column::Field(got)) => format!(
                            "field type conflict: `{}.{name}` is {had} but this line writes {got}",
                            point.measurement
                        ),
                        (Column::Tag, _) => {
                            format!("`{name}` is a tag of `{}`, not a field", point.measurement)
                        }
                        (_, Column::Tag) => {
                            format!("`{name}` is a field of `{}`, not a tag", point.measurement)
                        }
                    });
                    break;
                }
            }
            match problem {
                Some(message) => {
                    accepted.push(false);
                    rejections.push(PointRejection { index, message });
                }
                None => {
                    accepted.push(true);
                    // Only columns new to the catalog need remembering (and registering).
                    for (k, _) in &point.tags {
                        if known(k).is_none() {
                            seen.insert((point.measurement.as_str(), k.as_str()), Column::Tag);
                        }
                    }
                    for (k, v) in &point.fields {
                        if known(k).is_none() {
                            seen.insert(
                                (point.measurement.as_str(), k.as_str()),
                                Column::Field(v.field_type()),
                            );
                        }
                    }
                }
            }
        }
        if accept_partial || rejections.is_empty() {
            let additions: Vec<_> = seen
                .into_iter()
                .map(|((m, n), c)| (m.to_owned(), n.to_owned(), c))
                .collect();
            let db = self.databases.entry(batch.database.clone()).or_default();
            for (measurement, name, column) in additions {
                let table = db.tables.entry(measurement).or_default();
                match column {
                    Column::Tag => {
                        table.tags.insert(name);
                    }
                    Column::Field(t) => {
                        table.fields.entry(name).or_insert(t);
                    }
                }
            }
        }
        (accepted, rejections)
    }
}
