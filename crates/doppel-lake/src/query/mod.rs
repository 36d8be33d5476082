//! SQL over the lake, read-only and bounded.
//!
//! A query is checked before planning (`guard`: one statement that reads, no expression
//! nested past a limit), then planned and run on the query threads: a runtime of their own,
//! with large stacks and a lower CPU priority, so a heavy query never holds up the write path,
//! `/ping` or `/health`. Each query has a time limit, shares one memory pool with the others
//! (operators and the collected result count against it), and stops as soon as its caller
//! goes away (dropping the future aborts the task). This module reads; it never changes the
//! lake.

mod bounds;
mod guard;
mod table;

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use futures::StreamExt;

use crate::error::{LakeError, Result};

pub use guard::MAX_SQL_BYTES;
pub(crate) use table::TableSnapshot;

/// How far one query may go.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// A query still running after this long is stopped.
    pub timeout: Duration,
    /// The memory all running queries share, results included (bytes).
    pub memory_bytes: usize,
    /// The deepest expression nesting accepted (`a OR b OR c` is three deep).
    pub max_depth: usize,
    /// The most row pairs a join without an equality condition may compare.
    pub max_join_pairs: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(60),
            memory_bytes: 1 << 30,
            max_depth: 256,
            max_join_pairs: 1_000_000_000,
        }
    }
}

impl QueryLimits {
    /// For a person querying their own data directory in process (`doppel query` without
    /// `--url`, the model reading lake tables): still read-only and bounded in nesting, but
    /// with no time, memory or join bound, since nobody else shares the process.
    pub fn local() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(365 * 86_400),
            memory_bytes: usize::MAX,
            max_join_pairs: u64::MAX,
            ..QueryLimits::default()
        }
    }
}

/// The threads queries run on. Their stacks are large because planning and dropping a query
/// recurse over its expressions; reserving the address space costs nothing until touched.
static QUERY_THREADS: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("doppel-query")
        .thread_stack_size(256 << 20)
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .expect("the query threads start")
});

/// Queries yield the CPU to ingest and health checks when both want it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority reads its integer arguments only; on Linux a thread id names one thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// Runs queries within their limits. One per lake.
pub(crate) struct QueryRunner {
    limits: QueryLimits,
    runtime: Arc<RuntimeEnv>,
}

impl QueryRunner {
    pub fn new(limits: QueryLimits) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()?;
        Ok(QueryRunner { limits, runtime })
    }

    /// Runs `sql` over a snapshot of a database's tables on the query threads.
    pub async fn run(
        &self,
        data_dir: PathBuf,
        tables: Vec<TableSnapshot>,
        sql: String,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let limits = self.limits.clone();
        let timeout = limits.timeout;
        let runtime = self.runtime.clone();
        let work = QUERY_THREADS.spawn(execute(data_dir, tables, sql, runtime, limits));
        // The caller going away (a client that hung up) drops this future, and the time limit
        // passing ends the watch: either way the work is aborted, and stops at its next yield
        // point. The watch runs on the query threads, whose runtime has timers (the caller's
        // need not).
        let _abort_work = AbortOnDrop(work.abort_handle());
        let watch = QUERY_THREADS.spawn(async move { tokio::time::timeout(timeout, work).await });
        let _abort_watch = AbortOnDrop(watch.abort_handle());
        match watch.await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(e))) if e.is_panic() => {
                Err(LakeError::Internal(format!("the query panicked: {e}")))
            }
            Ok(Err(_elapsed)) => Err(LakeError::QueryLimit(format!(
                "the query ran past the {} s limit and was stopped; narrow the time range or \
                 aggregate (the limit is --query-timeout)",
                timeout.as_secs_f64()
            ))),
            Ok(Ok(Err(_))) | Err(_) => Err(LakeError::ShuttingDown),
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn execute(
    data_dir: PathBuf,
    tables: Vec<TableSnapshot>,
    sql: String,
    runtime: Arc<RuntimeEnv>,
    limits: QueryLimits,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let statement = guard::check(&sql, limits.max_depth)?;
    let ctx = table::session(&data_dir, tables, runtime.clone())?;
    let state = ctx.state();
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(planning_error)?;
    // A second lock behind the guard: nothing planned may write or change the session.
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| {
            LakeError::QueryRefused(format!("queries are read-only: {}", e.strip_backtrace()))
        })?;
    let frame = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(planning_error)?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let task = Arc::new(frame.task_ctx());
    let physical = frame.create_physical_plan().await.map_err(planning_error)?;
    bounds::check_joins(&physical, limits.max_join_pairs)?;
    let stream = datafusion::physical_plan::execute_stream(physical, task)?;
    let batches = collect_within(stream, &runtime, &limits).await?;
    Ok((schema, batches))
}

/// An error while planning is the query's fault unless files could not be read: DataFusion
/// reports some plain mistakes (a function called with the wrong arguments inside a CASE) as
/// its own internal errors, and those must reach the client as 400, not 500.
fn planning_error(e: datafusion::error::DataFusionError) -> LakeError {
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::Internal(_) => LakeError::Query(e.strip_backtrace()),
        _ => LakeError::from(e),
    }
}

/// Collects a result, counting it against the query memory pool as it grows.
async fn collect_within(
    mut stream: SendableRecordBatchStream,
    runtime: &RuntimeEnv,
    limits: &QueryLimits,
) -> Result<Vec<RecordBatch>> {
    let reservation = MemoryConsumer::new("query result").register(&runtime.memory_pool);
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if reservation.try_grow(batch.get_array_memory_size()).is_err() {
            return Err(LakeError::QueryLimit(format!(
                "the result is larger than the query memory limit ({} MiB) allows; add a LIMIT, \
                 aggregate, or narrow the time range (the limit is --query-memory-mib)",
                limits.memory_bytes >> 20
            )));
        }
        batches.push(batch);
    }
    Ok(batches)
}
