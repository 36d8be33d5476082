//! Dropping a table, or a field column of one: the supported way to remove a table written
//! by mistake, or to free a column whose type one bad write fixed (every later write of the
//! right type is refused until it is gone). SQL stays read-only; this is the lake's own API,
//! behind `doppel lake drop` and `DELETE /api/v3/configure/table|column`.
//!
//! A drop never loses a write it acknowledged for another table, and never leaves a table
//! half dropped: the table is marked (its writes wait, 503), everything buffered is persisted
//! (so no WAL record of the table is left to replay), then the catalog changes in one manifest
//! save. A crash before that save leaves the table whole; the rewritten files of a column drop
//! are then leftovers, removed at the next open.

use serde::{Deserialize, Serialize};

use crate::catalog::FileMeta;
use crate::error::{LakeError, Result};
use crate::persist::{read_file, write_file};
use crate::{Lake, table_not_found};

/// What a drop removes (or, with a dry run, would).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DropEffect {
    /// The table's Parquet files: removed for a table, rewritten without the column.
    pub files: usize,
    /// The table's persisted rows (buffered rows are persisted first).
    pub rows: u64,
    /// For a column: the rows that hold a value of it in persisted files (counted with
    /// the drop itself; a dry run leaves it unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<u64>,
}

impl Lake {
    /// What dropping `table` (or its field `column`) removes, without changing anything.
    /// Refuses what a drop would refuse: an unknown table or column, a tag, the last field.
    pub fn drop_effect(
        &self,
        database: &str,
        table: &str,
        column: Option<&str>,
    ) -> Result<DropEffect> {
        let state = self.inner.state.read();
        let t = state
            .catalog
            .databases
            .get(database)
            .ok_or_else(|| LakeError::DatabaseNotFound(database.to_owned()))?
            .tables
            .get(table)
            .ok_or_else(|| table_not_found(database, table))?;
        if let Some(column) = column {
            if t.tags.contains(column) {
                return Err(LakeError::Invalid(format!(
                    "`{column}` is a tag of `{table}`: tags tell its series apart and cannot be \
                     dropped; drop the table instead"
                )));
            }
            if !t.fields.contains_key(column) {
                let fields: Vec<&str> = t.fields.keys().map(String::as_str).collect();
                return Err(LakeError::Invalid(format!(
                    "`{table}` has no field `{column}`; its fields: {}",
                    fields.join(", ")
                )));
            }
            if t.fields.len() == 1 {
                return Err(LakeError::Invalid(format!(
                    "`{column}` is the only field of `{table}`: drop the table instead"
                )));
            }
        }
        // Rows buffered now are persisted before the drop; count them as the files' rows will.
        let buffered: u64 = [state.frozen.as_deref(), Some(&state.active)]
            .into_iter()
            .flatten()
            .filter_map(|b| b.databases.get(database).and_then(|d| d.get(table)))
            .map(|rows| rows.row_count() as u64)
            .sum();
        Ok(DropEffect {
            files: t.files.len(),
            rows: t.files.iter().map(|f| f.rows).sum::<u64>() + buffered,
            values: None,
        })
    }

    /// Drops `table` from `database`, or only its field `column` (rewriting the table's files
    /// without it; the column may then come back with any type). Writes to the table get 503
    /// while it runs; writes after it create the table or column afresh.
    pub fn drop_table_or_column(
        &self,
        database: &str,
        table: &str,
        column: Option<&str>,
    ) -> Result<DropEffect> {
        self.drop_effect(database, table, column)?;
        let key = (database.to_owned(), table.to_owned());
        {
            // Every write admitted before the mark is in the WAL's queue once it is set.
            let _no_write_between = self.inner.write_gate.write();
            self.inner.state.write().dropping.insert(key.clone());
        }
        let result = self.drop_marked(database, table, column);
        self.inner.state.write().dropping.remove(&key);
        result
    }

    fn drop_marked(&self, database: &str, table: &str, column: Option<&str>) -> Result<DropEffect> {
        // The rotation is queued after every admitted write: all of the table is persisted.
        self.inner.flush_once()?;
        let _no_persist = self.inner.persist_lock.lock().unwrap();
        let (files, schema, mut without) = {
            let state = self.inner.state.read();
            let t = state
                .catalog
                .table(database, table)
                .ok_or_else(|| table_not_found(database, table))?;
            (t.files.clone(), t.schema(), t.clone())
        };
        let rows = files.iter().map(|f| f.rows).sum();
        let replaced: Vec<(String, String, String)> = files
            .iter()
            .map(|f| (database.to_owned(), table.to_owned(), f.path.clone()))
            .collect();
        let Some(column) = column else {
            let mut state = self.inner.state.write();
            if let Some(db) = state.catalog.databases.get_mut(database) {
                db.tables.remove(table);
            }
            self.inner.save_catalog(&mut state, &replaced)?;
            return Ok(DropEffect {
                files: files.len(),
                rows,
                values: None,
            });
        };
        // Each file read with the table's schema less the column, and written anew.
        without.fields.remove(column);
        let without = without.schema();
        let first_id = {
            let mut state = self.inner.state.write();
            let id = state.catalog.next_file_id;
            state.catalog.next_file_id += files.len() as u64;
            id
        };
        let mut rewritten: Vec<FileMeta> = Vec::with_capacity(files.len());
        let mut values = 0;
        for (i, file) in files.iter().enumerate() {
            let path = self.inner.dir.join(&file.path);
            let whole = read_file(&path, &schema.arrow)?;
            if let Some(c) = whole.column_by_name(column) {
                values += (c.len() - c.null_count()) as u64;
            }
            let batch = crate::persist::align_to_schema(&whole, &without.arrow)?;
            let written = write_file(
                &self.inner.dir,
                database,
                table,
                file.day,
                first_id + i as u64,
                &batch,
                &self.inner.config.persist.faults,
            );
            match written {
                Ok(meta) => rewritten.push(meta),
                Err(e) => {
                    for meta in &rewritten {
                        let _ = std::fs::remove_file(self.inner.dir.join(&meta.path));
                    }
                    return Err(e);
                }
            }
        }
        let mut state = self.inner.state.write();
        let t = state
            .catalog
            .databases
            .get_mut(database)
            .and_then(|d| d.tables.get_mut(table))
            .ok_or_else(|| table_not_found(database, table))?;
        t.fields.remove(column);
        t.files = rewritten;
        self.inner.save_catalog(&mut state, &replaced)?;
        Ok(DropEffect {
            files: files.len(),
            rows,
            values: Some(values),
        })
    }
}
