//! A database's tables as DataFusion sees them: every table is its Parquet files plus its
//! buffered rows.
//!
//! A query works on a snapshot taken under the lake's lock (file list and buffered batches),
//! so it never sees a half-persisted state. Files never share a key (series, time) with each
//! other (see `persist`); buffered rows may share keys with files or each other, and then
//! those files and buffers are merged in memory with last-write-wins before the scan. This
//! module reads; it never changes the lake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::buffer::{TableSchema, sort_dedupe};
use crate::catalog::FileMeta;
use crate::error::{LakeError, Result};
use crate::persist::{files_sharing_keys, merge_with_files};

/// One table as a query sees it.
pub struct TableSnapshot {
    pub name: String,
    pub schema: TableSchema,
    pub files: Vec<FileMeta>,
    /// Buffered rows, oldest buffer first, each sorted and deduplicated, in the table schema.
    pub buffers: Vec<RecordBatch>,
}

/// Builds a DataFusion session with the database's tables registered, running under
/// `runtime`'s memory pool.
pub fn session(
    data_dir: &Path,
    tables: Vec<TableSnapshot>,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionContext> {
    // InfluxDB 3's convention: a name written without quotes means the measurement, tag or
    // field of that name as written (`SELECT HUFL FROM ETTh1`), not its lower-case form.
    let config = SessionConfig::new()
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        .with_information_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(super::bounds::YieldBetweenOperators))
        .build();
    let ctx = SessionContext::new_with_state(state);
    for table in tables {
        let name = table.name.clone();
        let provider = LakeTable::new(data_dir, table)?;
        ctx.register_table(
            datafusion::common::TableReference::bare(name),
            Arc::new(provider),
        )?;
    }
    Ok(ctx)
}

#[derive(Debug)]
struct LakeTable {
    schema: SchemaRef,
    files: Vec<PathBuf>,
    memory: Vec<RecordBatch>,
}

impl LakeTable {
    fn new(data_dir: &Path, table: TableSnapshot) -> Result<Self> {
        let schema = table.schema.arrow.clone();
        let mut files: Vec<&FileMeta> = table.files.iter().collect();
        let mut memory = Vec::new();
        let buffers: Vec<RecordBatch> = table
            .buffers
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .collect();
        if !buffers.is_empty() {
            // Buffers may repeat each other's keys: one sorted, deduplicated batch, newest last.
            let buffered = if buffers.len() == 1 {
                buffers.into_iter().next().expect("one buffer")
            } else {
                let all = concat_batches(&schema, &buffers).map_err(LakeError::arrow)?;
                sort_dedupe(&all, table.schema.tag_count)?
            };
            // Rows that rewrite rows of files: those files are merged in memory, the buffer
            // last so it wins (the files share no keys with each other), and not scanned.
            let sharing = files_sharing_keys(data_dir, &files, &buffered, &table.schema)?;
            memory = vec![merge_with_files(
                data_dir,
                &sharing,
                buffered,
                &table.schema,
            )?];
            files.retain(|f| !sharing.iter().any(|o| o.path == f.path));
        }
        Ok(LakeTable {
            schema,
            files: files.iter().map(|f| data_dir.join(&f.path)).collect(),
            memory,
        })
    }
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters prune Parquet row groups; DataFusion still applies them exactly afterwards.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !self.files.is_empty() {
            let urls = self
                .files
                .iter()
                .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
                .collect::<DfResult<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(self.schema.clone());
            let listing = ListingTable::try_new(config)?;
            inputs.push(listing.scan(state, projection, filters, limit).await?);
        }
        if !self.memory.is_empty() || inputs.is_empty() {
            let memory = MemTable::try_new(self.schema.clone(), vec![self.memory.clone()])?;
            inputs.push(memory.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(inputs)
    }
}
