//! The catalog: every database's tables, their columns and types, their Parquet files, and
//! how far the WAL has been persisted. Saved as `manifest.json`, replaced atomically (written
//! to a temporary name, fsynced, renamed, directory fsynced), so after any crash it names
//! exactly the files that hold persisted data.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use doppel_core::FieldType;
use doppel_core::columnar::ColumnarBatch;
use serde::{Deserialize, Serialize};

use crate::buffer::TableSchema;
use crate::error::{LakeError, Result};
use crate::faults::{Faults, IoPoint};

pub const MANIFEST: &str = "manifest.json";
/// Version 2 adds the checksums; version 1 manifests (no checksum) are read and upgraded at
/// the next save.
const FORMAT_VERSION: u32 = 2;
/// The longest name a folder may have on the file systems doppel runs on (ext4, XFS, btrfs).
pub const MAX_FOLDER_NAME_BYTES: usize = 255;

// Unknown keys are refused: a flipped bit in a key must not read as an absent optional field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub format_version: u32,
    /// WAL segments up to this id are in Parquet and need no replay.
    pub wal_persisted_through: u64,
    pub next_file_id: u64,
    pub databases: BTreeMap<String, DatabaseCatalog>,
    /// CRC-32C of the manifest as written without this field, so a changed byte is found at
    /// start-up. Manifests written before 2026-12-07 have none. (A field added later must be
    /// skipped when empty, as this one is, or the check would fail on older manifests.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u32>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            format_version: FORMAT_VERSION,
            wal_persisted_through: 0,
            next_file_id: 1,
            databases: BTreeMap::new(),
            checksum: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseCatalog {
    pub tables: BTreeMap<String, TableCatalog>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct FileMeta {
    /// Relative to the data directory, with `/` separators.
    pub path: String,
    /// Days since the Unix epoch (UTC) of every row in the file.
    pub day: i64,
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub bytes: u64,
    /// CRC-32C of the whole file as written (`doppel lake check` compares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
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
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LakeError::io(&path, e)),
        };
        let text = String::from_utf8(bytes).map_err(|e| LakeError::Manifest {
            path: path.clone(),
            reason: format!(
                "it is not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        let mut catalog: Catalog =
            serde_json::from_str(&text).map_err(|e| LakeError::Manifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let expected = catalog.checksum.take();
        let damaged = match (catalog.format_version, expected) {
            (1, None) => false,
            (1, Some(_)) => true,
            (_, Some(expected)) => catalog.content_checksum() != expected,
            (_, None) => true,
        };
        if damaged && matches!(catalog.format_version, 1 | FORMAT_VERSION) {
            return Err(LakeError::Manifest {
                path,
                reason: "its checksum is missing or does not match its contents: it was changed or damaged after doppel wrote it".into(),
            });
        }
        if catalog.format_version == 1 {
            catalog.format_version = FORMAT_VERSION;
        }
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
    pub fn save(&self, dir: &Path, faults: &Faults) -> Result<()> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let mut stamped = self.clone();
        stamped.checksum = Some(self.content_checksum());
        let text = serde_json::to_vec_pretty(&stamped).expect("the catalog serialises");
        let written = File::create(&tmp).and_then(|mut file| {
            faults.write_all(IoPoint::ManifestWrite, &tmp, &mut file, &text)?;
            file.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(LakeError::io(&tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| LakeError::io(&path, e))?;
        crate::wal::sync_dir(dir)
    }

    /// The CRC-32C of the manifest's text without its checksum field.
    fn content_checksum(&self) -> u32 {
        let mut bare = self.clone();
        bare.checksum = None;
        crc32c::crc32c(&serde_json::to_vec_pretty(&bare).expect("the catalog serialises"))
    }

    pub fn table(&self, database: &str, table: &str) -> Option<&TableCatalog> {
        self.databases.get(database)?.tables.get(table)
    }

    /// Checks a batch against the known schemas: a field keeps its type, a name is a tag or
    /// a field, never both. Returns, per table, which rows pass (`None`: all of them), and a
    /// rejection for each row that does not (its index is the row's source, or its row number
    /// when the batch has no sources). The batch's new columns are registered when `register`
    /// says so, given whether everything passed (a refused atomic batch changes nothing).
    ///
    /// The check is per table and column, not per row: the builder that made the batch
    /// already made each column hold one type.
    ///
    /// A measurement whose name cannot be a folder (longer than a file system allows) is
    /// refused here, so that nothing accepted can later fail to persist.
    pub fn admit(
        &mut self,
        batch: &ColumnarBatch,
        register: impl FnOnce(bool) -> bool,
    ) -> (Vec<Option<Vec<bool>>>, Vec<PointRejection>) {
        let db = self.databases.get(&batch.database);
        let mut masks = Vec::with_capacity(batch.tables.len());
        let mut rejections = Vec::new();
        for rows in &batch.tables {
            let known = db.and_then(|d| d.tables.get(&rows.measurement));
            let mut mask: Option<Vec<bool>> = None;
            let mut refuse = |row: usize, message: &str| {
                let keep = mask.get_or_insert_with(|| vec![true; rows.len()]);
                if keep[row] {
                    keep[row] = false;
                    let index = rows.sources.get(row).map_or(row, |&s| s as usize);
                    rejections.push(PointRejection {
                        index,
                        message: message.to_owned(),
                    });
                }
            };
            let folder = crate::persist::path_component(&rows.measurement).len();
            if folder > MAX_FOLDER_NAME_BYTES {
                let message = format!(
                    "the measurement name is {folder} bytes as a folder name (characters other than letters, digits, `_`, `-` and `.` take 3 bytes each); the limit is {MAX_FOLDER_NAME_BYTES}"
                );
                for row in 0..rows.len() {
                    refuse(row, &message);
                }
            }
            if let Some(table) = known {
                let m = &rows.measurement;
                for (series, tags) in rows.series.iter().enumerate() {
                    let Some((key, _)) = tags.iter().find(|(k, _)| table.fields.contains_key(k))
                    else {
                        continue;
                    };
                    let message = format!("`{key}` is a field of `{m}`, not a tag");
                    for row in (0..rows.len()).filter(|&r| rows.series_of_row[r] as usize == series)
                    {
                        refuse(row, &message);
                    }
                }
                for column in &rows.fields {
                    let (name, got) = (&column.name, column.values.field_type());
                    let message = if table.tags.contains(name) {
                        format!("`{name}` is a tag of `{m}`, not a field")
                    } else {
                        match table.fields.get(name) {
                            Some(&had) if had != got => format!(
                                "field type conflict: `{m}.{name}` is {had} but this line writes {got}"
                            ),
                            _ => continue,
                        }
                    };
                    for row in (0..rows.len()).filter(|&r| column.is_valid(r)) {
                        refuse(row, &message);
                    }
                }
            }
            masks.push(mask);
        }
        rejections.sort_by_key(|r| r.index);
        if register(rejections.is_empty()) {
            self.register(batch, &masks);
        }
        (masks, rejections)
    }

    /// Adds the tags and fields that the kept rows of a batch bring.
    fn register(&mut self, batch: &ColumnarBatch, masks: &[Option<Vec<bool>>]) {
        let db = self.databases.entry(batch.database.clone()).or_default();
        for (rows, mask) in batch.tables.iter().zip(masks) {
            let kept = |row: usize| mask.as_ref().is_none_or(|m| m[row]);
            if !(0..rows.len()).any(kept) {
                continue;
            }
            let table = match db.tables.get_mut(&rows.measurement) {
                Some(t) => t,
                None => db.tables.entry(rows.measurement.clone()).or_default(),
            };
            // Only series with a kept row bring their tags (a series can be left without rows
            // when the rows that named it were refused).
            let mut used = vec![false; rows.series.len()];
            for row in (0..rows.len()).filter(|&r| kept(r)) {
                used[rows.series_of_row[row] as usize] = true;
            }
            for (tags, _) in rows.series.iter().zip(&used).filter(|(_, u)| **u) {
                for (key, _) in tags {
                    if !table.tags.contains(key) {
                        table.tags.insert(key.clone());
                    }
                }
            }
            for column in &rows.fields {
                if table.fields.contains_key(&column.name) {
                    continue;
                }
                if (0..rows.len()).any(|r| kept(r) && column.is_valid(r)) {
                    table
                        .fields
                        .insert(column.name.clone(), column.values.field_type());
                }
            }
        }
    }
}
