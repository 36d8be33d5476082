//! doppel's lake: durable, queryable storage for sensor data.
//!
//! A write is checked against the catalog, appended to the write-ahead log, fsynced (many
//! writers share one fsync), applied to the in-memory buffer and only then acknowledged, so a
//! query right after sees it and a crash right after keeps it. The buffer is persisted to
//! Parquet on size or age; the manifest then records the files, and only after that is the
//! WAL cut. See `docs/LAKE.md` for the files on disk.
//!
//! The lake must never depend on the model or the simulator; it stores what it is given.

mod buffer;
pub mod catalog;
mod codec;
mod drop;
mod error;
pub mod faults;
pub mod harness;
mod keys;
mod persist;
mod query;
mod wal;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use doppel_core::WriteBatch;
use doppel_core::columnar::ColumnarBatch;
use parking_lot::RwLock;

pub use buffer::TIME_COLUMN;
pub use catalog::{Catalog, FileMeta, PointRejection};
pub use drop::DropEffect;
pub use error::{ErrorKind, LakeError, Result};
pub use persist::PersistConfig;
pub use query::{MAX_SQL_BYTES, QueryLimits};
pub use wal::SalvagedSegment;

/// How the lake buffers and persists.
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// Persist the buffer once it holds this many bytes.
    pub flush_bytes: usize,
    /// Persist the buffer once its oldest write is this old.
    pub flush_age: Duration,
    /// Refuse writes (`Busy`) while the buffer holds more than this.
    pub max_buffer_bytes: usize,
    pub persist: PersistConfig,
    pub query: QueryLimits,
    /// Failures to inject into the WAL, Parquet and manifest writes (the durability harness).
    pub faults: faults::Faults,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            flush_bytes: 128 << 20,
            flush_age: Duration::from_secs(300),
            max_buffer_bytes: 512 << 20,
            persist: PersistConfig::default(),
            query: QueryLimits::default(),
            faults: faults::Faults::default(),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    pub points_written: usize,
    pub rejected: Vec<PointRejection>,
}

/// Numbers for `/health` and the logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LakeStats {
    pub buffered_rows: usize,
    pub buffered_bytes: usize,
    pub persisting: bool,
    pub databases: usize,
    pub tables: usize,
    pub files: usize,
    pub file_bytes: u64,
    pub wal_segment: u64,
}

/// What a retention period removes from a table's files (`Lake::retention_effect`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetentionEffect {
    /// Files whose newest row is before this go (nanoseconds; none: keep everything).
    pub cutoff: Option<i64>,
    pub files_removed: usize,
    pub rows_removed: u64,
    pub files_kept: usize,
    pub rows_kept: u64,
}

/// What is wrong with the lake right now, for `/health`: each is `None` while all is well.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LakeHealth {
    /// Why writes are being refused (a full disk, a failed WAL write being recovered).
    pub wal: Option<String>,
    /// Why persisting to Parquet keeps failing, and how many times in a row it has.
    pub persist: Option<String>,
    pub persist_failures: u32,
}

/// The lake over one data directory. Cheap to clone; all clones share the same state.
///
/// Dropping the last clone without [`Lake::shutdown`] stops the lake's threads without
/// persisting: the buffered writes stay in the WAL and are replayed at the next open.
#[derive(Clone)]
pub struct Lake {
    inner: Arc<Inner>,
    _threads: Arc<ThreadsGuard>,
}

/// Stops the background threads when the last [`Lake`] handle goes (the threads hold the
/// shared state too, so without this it would never be dropped and the lock never released).
struct ThreadsGuard {
    inner: Arc<Inner>,
}

impl Drop for ThreadsGuard {
    fn drop(&mut self) {
        self.inner.stop_threads();
    }
}

struct Inner {
    dir: PathBuf,
    config: LakeConfig,
    state: RwLock<State>,
    wal_tx: Mutex<Option<mpsc::Sender<WalCommand>>>,
    wakeup: (Mutex<bool>, Condvar),
    shutting_down: AtomicBool,
    health: Mutex<LakeHealth>,
    queries: query::QueryRunner,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// One persist at a time (the persist thread, `flush` and `shutdown` may race).
    persist_lock: Mutex<()>,
    /// Held shared by a write from its check against the catalog until it is in the WAL's
    /// queue, and exclusively by a drop while it marks its table: once marked, every write
    /// admitted before is queued, so the WAL rotation that follows covers it.
    write_gate: RwLock<()>,
    /// Called with every batch once it is durable, before it is acknowledged ([`Lake::watch`]).
    watchers: Mutex<Vec<Watcher>>,
    /// Holds the directory's lock for as long as the lake is open.
    _lock: File,
}

/// Sees each batch the lake made durable ([`Lake::watch`]).
pub type Watcher = Arc<dyn Fn(&ColumnarBatch) + Send + Sync>;

struct State {
    catalog: Catalog,
    active: buffer::Buffer,
    active_since: Option<Instant>,
    frozen: Option<Arc<buffer::Buffer>>,
    wal_segment: u64,
    /// Replaced files, deleted a while later so queries already reading them can finish.
    graveyard: Vec<(Instant, PathBuf)>,
    /// Tables (database, table) being dropped or losing a column: writes to them wait.
    dropping: BTreeSet<(String, String)>,
}

enum WalCommand {
    Append {
        payload: Vec<u8>,
        batch: ColumnarBatch,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
    Rotate {
        reply: mpsc::Sender<Result<u64>>,
    },
}

/// The rows left to write, and their WAL encoding.
type EncodedBatch = (ColumnarBatch, Vec<u8>);

/// Answers once the WAL thread has made a batch durable (or failed to).
type DurableReceipt = tokio::sync::oneshot::Receiver<Result<()>>;

const WAL_DIR: &str = "wal";
const GROUP_COMMIT_BYTES: usize = 16 << 20;
const GRAVEYARD_DELAY: Duration = Duration::from_secs(60);
/// How long a client is asked to wait after a WAL write failed (a full disk takes a person).
const WAL_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long the persist thread waits after a failed persist before it tries again.
const PERSIST_RETRY: Duration = Duration::from_secs(5);

impl Lake {
    /// Opens (or creates) the lake in `dir`: takes its lock, reads the manifest, removes
    /// leftovers of an interrupted persist and replays the WAL.
    pub fn open(dir: impl AsRef<Path>, mut config: LakeConfig) -> Result<Lake> {
        let dir = dir.as_ref().to_owned();
        config.persist.faults = config.faults.clone();
        let queries = query::QueryRunner::new(config.query.clone())?;
        let wal_dir = dir.join(WAL_DIR);
        std::fs::create_dir_all(&wal_dir).map_err(|e| LakeError::io(&wal_dir, e))?;
        let lock = lock_dir(&dir)?;
        let mut catalog = Catalog::load(&dir)?.unwrap_or_default();
        remove_leftovers(&dir, &catalog)?;

        let mut active = buffer::Buffer::default();
        let started = Instant::now();
        let last_segment = wal::replay(&wal_dir, catalog.wal_persisted_through, |payload| {
            let batch = codec::decode_any(payload).map_err(|reason| LakeError::WalCorrupt {
                path: wal_dir.clone(),
                offset: 0,
                reason: format!("a record passed its checksum but cannot be decoded: {reason}"),
            })?;
            catalog.admit(&batch, |_| true); // replayed batches were admitted before
            active.append(&batch);
            Ok(())
        })?;
        if active.is_empty() {
            // Segments with nothing to replay (left by processes that only read) can go.
            wal::remove_through(&wal_dir, last_segment)?;
        } else {
            tracing::info!(rows = active.rows, elapsed = ?started.elapsed(), "replayed the write-ahead log");
        }
        let writer = wal::WalWriter::create(
            &wal_dir,
            last_segment.max(catalog.wal_persisted_through),
            config.faults.clone(),
        )?;
        let active_since = (!active.is_empty()).then(Instant::now);
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            dir,
            config,
            state: RwLock::new(State {
                catalog,
                active,
                active_since,
                frozen: None,
                wal_segment: writer.segment(),
                graveyard: Vec::new(),
                dropping: BTreeSet::new(),
            }),
            wal_tx: Mutex::new(Some(tx)),
            wakeup: (Mutex::new(false), Condvar::new()),
            shutting_down: AtomicBool::new(false),
            health: Mutex::new(LakeHealth::default()),
            queries,
            threads: Mutex::new(Vec::new()),
            persist_lock: Mutex::new(()),
            write_gate: RwLock::new(()),
            watchers: Mutex::new(Vec::new()),
            _lock: lock,
        });
        let wal_inner = inner.clone();
        let wal_thread = std::thread::Builder::new()
            .name("doppel-wal".into())
            .spawn(move || wal_inner.run_wal(writer, rx))
            .map_err(|e| LakeError::io(&inner.dir, e))?;
        let flush_inner = inner.clone();
        let flush_thread = std::thread::Builder::new()
            .name("doppel-persist".into())
            .spawn(move || flush_inner.run_flusher())
            .map_err(|e| LakeError::io(&inner.dir, e))?;
        inner
            .threads
            .lock()
            .unwrap()
            .extend([wal_thread, flush_thread]);
        Ok(Lake {
            _threads: Arc::new(ThreadsGuard {
                inner: inner.clone(),
            }),
            inner,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Writes a batch of points durably. With `accept_partial` the points that are refused
    /// (by the catalog, or because they contradict an earlier point of the batch) are left
    /// out and reported by index; without it any refused point refuses the whole batch.
    pub async fn write(&self, batch: WriteBatch, accept_partial: bool) -> Result<WriteOutcome> {
        let (columns, refused) = points_to_columns(&batch);
        self.write_columns(columns, refused, accept_partial).await
    }

    /// [`Lake::write`] for callers outside an async runtime (imports, tests).
    pub fn write_blocking(&self, batch: WriteBatch, accept_partial: bool) -> Result<WriteOutcome> {
        let (columns, refused) = points_to_columns(&batch);
        match self.enqueue(columns, refused, accept_partial)? {
            (outcome, Some(durable)) => {
                durable
                    .blocking_recv()
                    .map_err(|_| LakeError::ShuttingDown)??;
                Ok(outcome)
            }
            (outcome, None) => Ok(outcome),
        }
    }

    /// Writes a batch in columns durably: the write path of the HTTP API. `refused` are rows
    /// the caller already left out (lines that contradict earlier ones, say): with them and
    /// without `accept_partial` nothing is written. Rejections name each row by its source.
    pub async fn write_columns(
        &self,
        batch: ColumnarBatch,
        refused: Vec<PointRejection>,
        accept_partial: bool,
    ) -> Result<WriteOutcome> {
        match self.enqueue(batch, refused, accept_partial)? {
            (outcome, Some(durable)) => {
                durable.await.map_err(|_| LakeError::ShuttingDown)??;
                Ok(outcome)
            }
            (outcome, None) => Ok(outcome),
        }
    }

    /// Checks a batch and hands it to the WAL thread; the receiver answers once it is durable
    /// (`None` when nothing was left to write).
    fn enqueue(
        &self,
        batch: ColumnarBatch,
        refused: Vec<PointRejection>,
        accept_partial: bool,
    ) -> Result<(WriteOutcome, Option<DurableReceipt>)> {
        let _admitted_until_queued = self.inner.write_gate.read();
        let (outcome, prepared) = self.prepare(batch, refused, accept_partial)?;
        // Nothing left to write: every row refused (with accept_partial), or none sent.
        let Some((batch, payload)) = prepared else {
            return Ok((outcome, None));
        };
        let (reply, durable) = tokio::sync::oneshot::channel();
        self.send(WalCommand::Append {
            payload,
            batch,
            reply,
        })?;
        Ok((outcome, Some(durable)))
    }

    fn prepare(
        &self,
        mut batch: ColumnarBatch,
        mut refused: Vec<PointRejection>,
        accept_partial: bool,
    ) -> Result<(WriteOutcome, Option<EncodedBatch>)> {
        doppel_core::point::validate_database_name(&batch.database).map_err(LakeError::Invalid)?;
        let buffered = {
            let state = self.inner.state.read();
            state.active.bytes + state.frozen.as_ref().map_or(0, |f| f.bytes)
        };
        if buffered > self.inner.config.max_buffer_bytes {
            self.inner.wake_flusher();
            return Err(LakeError::Busy {
                buffered_bytes: buffered,
            });
        }
        let masks = {
            // Checking and registering under one lock: two batches racing to create a column
            // with different types cannot both win.
            let mut state = self.inner.state.write();
            if let Some(rows) = batch.tables.iter().find(|t| {
                state
                    .dropping
                    .contains(&(batch.database.clone(), t.measurement.clone()))
            }) {
                return Err(LakeError::Unavailable {
                    reason: format!(
                        "table `{}` is being dropped or losing a column; write again in a moment",
                        rows.measurement
                    ),
                    retry_after: Duration::from_secs(1),
                });
            }
            let nothing_refused_before = refused.is_empty();
            let (masks, rejected) = state.catalog.admit(&batch, |all_passed| {
                accept_partial || (all_passed && nothing_refused_before)
            });
            refused.extend(rejected);
            refused.sort_by_key(|r| r.index);
            if !refused.is_empty() && !accept_partial {
                return Err(LakeError::Rejected(refused));
            }
            masks
        };
        for (rows, mask) in batch.tables.iter_mut().zip(masks) {
            if let Some(keep) = mask {
                rows.retain_rows(&keep);
            }
        }
        batch.tables.retain(|t| !t.is_empty());
        let outcome = WriteOutcome {
            points_written: batch.rows(),
            rejected: refused,
        };
        if batch.tables.is_empty() {
            return Ok((outcome, None));
        }
        let mut payload = Vec::new();
        codec::encode(&batch, &mut payload);
        Ok((outcome, Some((batch, payload))))
    }

    fn send(&self, command: WalCommand) -> Result<()> {
        let tx = self.inner.wal_tx.lock().unwrap();
        tx.as_ref()
            .ok_or(LakeError::ShuttingDown)?
            .send(command)
            .map_err(|_| LakeError::ShuttingDown)
    }

    /// Runs one read-only SQL statement against a database within the lake's query limits;
    /// returns the result's schema and batches. Dropping the future stops the query.
    pub async fn query(&self, database: &str, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let tables = self.snapshot(database)?;
        self.inner
            .queries
            .run(self.inner.dir.clone(), tables, sql.to_owned())
            .await
    }

    fn snapshot(&self, database: &str) -> Result<Vec<query::TableSnapshot>> {
        let state = self.inner.state.read();
        let db = state
            .catalog
            .databases
            .get(database)
            .ok_or_else(|| LakeError::DatabaseNotFound(database.to_owned()))?;
        let mut unsorted = Vec::with_capacity(db.tables.len());
        for (name, table) in &db.tables {
            let schema = table.schema();
            let mut buffers = Vec::new();
            for buffer in state.frozen.as_deref().into_iter().chain([&state.active]) {
                if let Some(rows) = buffer.databases.get(database).and_then(|d| d.get(name)) {
                    buffers.push(rows.to_unsorted_batch(&schema)?);
                }
            }
            unsorted.push((name.clone(), schema, table.files.clone(), buffers));
        }
        // Sort outside the lock: a long sort here would hold up the WAL thread's writes.
        drop(state);
        let mut tables = Vec::with_capacity(unsorted.len());
        for (name, schema, files, buffers) in unsorted {
            let buffers = buffers
                .iter()
                .map(|(batch, keys)| keys.sort_dedupe(batch, schema.tag_count))
                .collect::<Result<_>>()?;
            tables.push(query::TableSnapshot {
                name,
                schema,
                files,
                buffers,
            });
        }
        Ok(tables)
    }

    /// Calls `watch` with every batch from now on once it is durable, in the order they were
    /// made durable, before the writer hears so: the same rows the WAL holds, never read
    /// back from files. It runs on the WAL's thread, so it must be quick and never block
    /// (the live twin's latest values are kept so).
    pub fn watch(&self, watch: impl Fn(&ColumnarBatch) + Send + Sync + 'static) {
        self.inner.watchers.lock().unwrap().push(Arc::new(watch));
    }

    /// The databases, in name order.
    pub fn databases(&self) -> Vec<String> {
        self.inner
            .state
            .read()
            .catalog
            .databases
            .keys()
            .cloned()
            .collect()
    }

    /// Whether `database` holds a table `table`.
    pub fn has_table(&self, database: &str, table: &str) -> bool {
        self.inner
            .state
            .read()
            .catalog
            .table(database, table)
            .is_some()
    }

    /// The fields of table `table` (none when there is no such table).
    pub fn fields_of(&self, database: &str, table: &str) -> Vec<String> {
        let state = self.inner.state.read();
        state
            .catalog
            .table(database, table)
            .map(|t| t.fields.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A copy of the catalog (schemas, files, retention).
    pub fn catalog(&self) -> Catalog {
        self.inner.state.read().catalog.clone()
    }

    /// What a retention period would remove from a table's files now (buffered rows are
    /// judged when they are persisted).
    pub fn retention_effect(
        &self,
        database: &str,
        table: &str,
        retention: Option<Duration>,
    ) -> Result<RetentionEffect> {
        let state = self.inner.state.read();
        let t = state
            .catalog
            .table(database, table)
            .ok_or_else(|| table_not_found(database, table))?;
        let cutoff = retention
            .map(|d| doppel_core::time::now_nanos() - d.as_nanos().min(i64::MAX as u128) as i64);
        let mut effect = RetentionEffect {
            cutoff,
            ..RetentionEffect::default()
        };
        for f in &t.files {
            if cutoff.is_some_and(|c| f.max_time < c) {
                effect.files_removed += 1;
                effect.rows_removed += f.rows;
            } else {
                effect.files_kept += 1;
                effect.rows_kept += f.rows;
            }
        }
        Ok(effect)
    }

    /// Sets (or clears) a table's retention period, and removes the files it expires now.
    pub fn set_retention(
        &self,
        database: &str,
        table: &str,
        retention: Option<Duration>,
    ) -> Result<()> {
        // Not while a persist runs: it could merge new rows into a file removed here.
        let _one_at_a_time = self.inner.persist_lock.lock().unwrap();
        let mut state = self.inner.state.write();
        let t = state
            .catalog
            .databases
            .get_mut(database)
            .ok_or_else(|| LakeError::DatabaseNotFound(database.to_owned()))?
            .tables
            .get_mut(table)
            .ok_or_else(|| table_not_found(database, table))?;
        t.retention_nanos = retention.map(|d| d.as_nanos().min(i64::MAX as u128) as i64);
        self.inner.save_catalog(&mut state, &[])?;
        Ok(())
    }

    pub fn stats(&self) -> LakeStats {
        let state = self.inner.state.read();
        let frozen = state.frozen.as_deref();
        let tables = state
            .catalog
            .databases
            .values()
            .flat_map(|d| d.tables.values());
        LakeStats {
            buffered_rows: state.active.rows + frozen.map_or(0, |f| f.rows),
            buffered_bytes: state.active.bytes + frozen.map_or(0, |f| f.bytes),
            persisting: frozen.is_some(),
            databases: state.catalog.databases.len(),
            tables: tables.clone().count(),
            files: tables.clone().map(|t| t.files.len()).sum(),
            file_bytes: tables.flat_map(|t| &t.files).map(|f| f.bytes).sum(),
            wal_segment: state.wal_segment,
        }
    }

    /// Reads every Parquet file the manifest lists and compares it with the checksum taken
    /// when it was written; returns the files that differ or cannot be read, with why (an
    /// empty list: all is well). Files written before checksums were kept are only read.
    pub fn check(&self) -> Result<Vec<(PathBuf, String)>> {
        let files: Vec<FileMeta> = {
            let state = self.inner.state.read();
            state
                .catalog
                .databases
                .values()
                .flat_map(|d| d.tables.values())
                .flat_map(|t| t.files.iter().cloned())
                .collect()
        };
        let mut damaged = Vec::new();
        for file in files {
            let path = self.inner.dir.join(&file.path);
            match std::fs::read(&path) {
                Err(e) => damaged.push((path, format!("cannot be read: {e}"))),
                Ok(bytes) if bytes.len() as u64 != file.bytes => damaged.push((
                    path,
                    format!("{} bytes where {} were written", bytes.len(), file.bytes),
                )),
                Ok(bytes) => {
                    if let Some(expected) = file.crc32c
                        && crc32c::crc32c(&bytes) != expected
                    {
                        damaged.push((
                            path,
                            "its checksum does not match: changed or damaged on disk".into(),
                        ));
                    }
                }
            }
        }
        Ok(damaged)
    }

    /// What is wrong right now, if anything.
    pub fn health(&self) -> LakeHealth {
        self.inner.health.lock().unwrap().clone()
    }

    /// Rewrites the damaged WAL segments of the lake in `dir` with their intact records and
    /// moves the originals into `wal/damaged/` (see `docs/LAKE.md`). Run while no doppel has
    /// the directory open; the next open replays what was kept.
    pub fn salvage(dir: impl AsRef<Path>) -> Result<Vec<SalvagedSegment>> {
        let dir = dir.as_ref();
        let _lock = lock_dir(dir)?;
        let persisted_through = Catalog::load(dir)?.map_or(0, |c| c.wal_persisted_through);
        wal::salvage(&dir.join(WAL_DIR), persisted_through)
    }

    /// Persists everything buffered now and waits for it.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_once()
    }

    /// Persists what is buffered and stops the lake's threads. Writes after this fail.
    pub fn shutdown(&self) -> Result<()> {
        if self.inner.shutting_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = self.inner.flush_once();
        self.inner.stop_threads();
        result
    }
}

impl Inner {
    fn stop_threads(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.wal_tx.lock().unwrap().take();
        self.wake_flusher();
        let threads: Vec<_> = self.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Waits up to `how_long`, or until the lake shuts down.
    fn pause(&self, how_long: Duration) {
        let (lock, cvar) = &self.wakeup;
        let deadline = Instant::now() + how_long;
        let mut woken = lock.lock().unwrap();
        while !self.shutting_down.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            woken = cvar.wait_timeout(woken, left).unwrap().0;
        }
    }

    fn wake_flusher(&self) {
        let (lock, cvar) = &self.wakeup;
        *lock.lock().unwrap() = true;
        cvar.notify_one();
    }

    /// The WAL thread: appends everything waiting with one fsync, applies it, acknowledges it.
    fn run_wal(self: Arc<Self>, mut writer: wal::WalWriter, rx: mpsc::Receiver<WalCommand>) {
        let mut appends: Vec<(
            Vec<u8>,
            ColumnarBatch,
            tokio::sync::oneshot::Sender<Result<()>>,
        )> = Vec::new();
        let mut rotations = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut group_bytes = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    WalCommand::Append {
                        payload,
                        batch,
                        reply,
                    } => {
                        group_bytes += payload.len();
                        appends.push((payload, batch, reply));
                    }
                    WalCommand::Rotate { reply } => rotations.push(reply),
                }
                if group_bytes < GROUP_COMMIT_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                let result = writer.append_all(appends.iter().map(|(p, _, _)| p.as_slice()));
                match result {
                    Ok(()) => {
                        self.health.lock().unwrap().wal = None;
                        let mut state = self.state.write();
                        for (_, batch, _) in &appends {
                            state.active.append(batch);
                        }
                        if state.active_since.is_none() {
                            state.active_since = Some(Instant::now());
                        }
                        let full = state.active.bytes >= self.config.flush_bytes;
                        drop(state);
                        let watchers = self.watchers.lock().unwrap().clone();
                        for (_, batch, _) in &appends {
                            for watch in &watchers {
                                watch(batch);
                            }
                        }
                        for (_, _, reply) in appends.drain(..) {
                            let _ = reply.send(Ok(()));
                        }
                        if full {
                            self.wake_flusher();
                        }
                    }
                    Err(e) => {
                        // Nothing of this group was acknowledged, and the writer cut what it
                        // wrote (or will before the next write): answer "retry later".
                        tracing::error!(error = %e, "WAL write failed; the writes are refused with 503 until one succeeds");
                        let reason = wal_unavailable(&e, writer.is_dirty());
                        self.health.lock().unwrap().wal = Some(reason.clone());
                        for (_, _, reply) in appends.drain(..) {
                            let _ = reply.send(Err(LakeError::Unavailable {
                                reason: reason.clone(),
                                retry_after: WAL_RETRY_AFTER,
                            }));
                        }
                    }
                }
            }
            for reply in rotations.drain(..) {
                let result = writer.rotate();
                if result.is_ok() {
                    let mut state = self.state.write();
                    let active = std::mem::take(&mut state.active);
                    state.frozen = Some(Arc::new(active));
                    state.active_since = None;
                    state.wal_segment = writer.segment();
                }
                let _ = reply.send(result);
            }
        }
    }

    /// The persist thread: flushes on size and age, and retries after a failure.
    fn run_flusher(self: Arc<Self>) {
        loop {
            {
                let (lock, cvar) = &self.wakeup;
                let mut woken = lock.lock().unwrap();
                if !*woken {
                    woken = cvar.wait_timeout(woken, Duration::from_secs(1)).unwrap().0;
                }
                *woken = false;
            }
            if self.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let due = {
                let state = self.state.read();
                state.frozen.is_some()
                    || state.active.bytes >= self.config.flush_bytes
                    // Writers are being refused: persist now, whatever the flush size says.
                    || state.active.bytes > self.config.max_buffer_bytes
                    || state
                        .active_since
                        .is_some_and(|t| t.elapsed() >= self.config.flush_age)
            };
            if due {
                let result = self.flush_once();
                let mut health = self.health.lock().unwrap();
                match result {
                    Ok(()) => {
                        health.persist = None;
                        health.persist_failures = 0;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "persisting the buffer failed; it stays in memory and in the WAL, retrying");
                        health.persist_failures += 1;
                        health.persist = Some(format!(
                            "persisting to Parquet failed {} time(s) in a row: {}; the data is safe in the WAL, retrying every 5 s",
                            health.persist_failures,
                            e.public_message()
                        ));
                        drop(health);
                        self.pause(PERSIST_RETRY);
                    }
                }
            }
            self.empty_graveyard(false);
        }
    }

    /// Rotates the WAL, writes the frozen buffer to Parquet, records it in the manifest, then
    /// removes the WAL segments it covered. One at a time (the persist lock).
    fn flush_once(&self) -> Result<()> {
        let _one_at_a_time = self.persist_lock.lock().unwrap();
        let needs_rotation = {
            let state = self.state.read();
            state.frozen.is_none() && !state.active.is_empty()
        };
        let closed_segment = if needs_rotation {
            let (reply, wait) = mpsc::channel();
            {
                let tx = self.wal_tx.lock().unwrap();
                let Some(tx) = tx.as_ref() else { return Ok(()) };
                tx.send(WalCommand::Rotate { reply })
                    .map_err(|_| LakeError::ShuttingDown)?;
            }
            Some(wait.recv().map_err(|_| LakeError::ShuttingDown)??)
        } else {
            None
        };
        let (frozen, mut catalog) = {
            let state = self.state.read();
            match &state.frozen {
                Some(f) => (f.clone(), state.catalog.clone()),
                None => return Ok(()),
            }
        };
        // The frozen buffer covers every segment before the active one.
        let covered = closed_segment.unwrap_or_else(|| self.state.read().wal_segment - 1);
        let started = Instant::now();
        let changes = persist::persist(&self.dir, &frozen, &mut catalog, &self.config.persist)?;
        let removed_paths: Vec<PathBuf> = {
            let mut state = self.state.write();
            changes.apply(&mut state.catalog);
            state.catalog.next_file_id = catalog.next_file_id;
            state.catalog.wal_persisted_through = covered;
            let removed = self.save_catalog(&mut state, &changes.removed)?;
            state.frozen = None;
            removed
        };
        wal::remove_through(&self.dir.join(WAL_DIR), covered)?;
        tracing::info!(
            rows = frozen.rows,
            files_written = changes.added.len(),
            files_replaced = removed_paths.len(),
            elapsed = ?started.elapsed(),
            "persisted the write buffer"
        );
        Ok(())
    }

    /// Drops the files retention expires now, saves the catalog, and hands the expired files
    /// and the `replaced` ones to the graveyard (queries already reading them may finish;
    /// they go a minute later, or at close). Returns the paths handed over.
    fn save_catalog(
        &self,
        state: &mut State,
        replaced: &[(String, String, String)],
    ) -> Result<Vec<PathBuf>> {
        let expired = persist::expired_files(&state.catalog, doppel_core::time::now_nanos());
        expired.apply(&mut state.catalog);
        state.catalog.save(&self.dir, &self.config.faults)?;
        let now = Instant::now();
        let removed: Vec<PathBuf> = replaced
            .iter()
            .chain(&expired.removed)
            .map(|(_, _, p)| self.dir.join(p))
            .collect();
        state
            .graveyard
            .extend(removed.iter().map(|p| (now, p.clone())));
        Ok(removed)
    }

    fn empty_graveyard(&self, all: bool) {
        let due: Vec<PathBuf> = {
            let mut state = self.state.write();
            let (due, keep): (Vec<_>, Vec<_>) = state
                .graveyard
                .drain(..)
                .partition(|(t, _)| all || t.elapsed() >= GRAVEYARD_DELAY);
            state.graveyard = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        for path in due {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a replaced file");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.empty_graveyard(true);
    }
}

fn table_not_found(database: &str, table: &str) -> LakeError {
    LakeError::Invalid(format!(
        "table `{table}` not found in database `{database}`"
    ))
}

/// Takes the data directory's lock (held for as long as the returned file is open).
fn lock_dir(dir: &Path) -> Result<File> {
    let lock_path = dir.join("LOCK");
    let lock = File::create(&lock_path).map_err(|e| LakeError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(LakeError::Locked {
            dir: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(LakeError::io(&lock_path, e)),
    }
}

/// Why writes whose WAL append failed are refused, for the client (no file paths).
fn wal_unavailable(error: &LakeError, still_dirty: bool) -> String {
    let reason = match error {
        LakeError::Io { source, .. }
            if source.raw_os_error() == Some(libc::ENOSPC)
                || source.kind() == std::io::ErrorKind::StorageFull =>
        {
            "the disk is full: the write-ahead log cannot take writes until space is freed".into()
        }
        LakeError::Io { source, .. } => {
            format!("the write-ahead log could not be written ({source})")
        }
        other => format!(
            "the write-ahead log could not be written ({})",
            other.public_message()
        ),
    };
    if still_dirty {
        format!("{reason}; the failed write is cut off before the next")
    } else {
        reason
    }
}

/// A batch of points in columns, with the points that contradict earlier ones of the batch.
fn points_to_columns(batch: &WriteBatch) -> (ColumnarBatch, Vec<PointRejection>) {
    let (columns, refused) = ColumnarBatch::from_points(batch);
    let refused = refused
        .into_iter()
        .map(|(index, message)| PointRejection { index, message })
        .collect();
    (columns, refused)
}

/// Removes temporary files and Parquet files the manifest does not list: what a crash in
/// the middle of a persist leaves behind (the data is still in the WAL).
fn remove_leftovers(dir: &Path, catalog: &Catalog) -> Result<()> {
    let listed: std::collections::HashSet<PathBuf> = catalog
        .databases
        .values()
        .flat_map(|d| d.tables.values())
        .flat_map(|t| &t.files)
        .map(|f| dir.join(&f.path))
        .collect();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| LakeError::io(&folder, e))? {
            let entry = entry.map_err(|e| LakeError::io(&folder, e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| LakeError::io(&path, e))?;
            if file_type.is_dir() {
                if path.file_name().is_some_and(|n| n != WAL_DIR) {
                    stack.push(path);
                }
                continue;
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let stray_parquet = name.ends_with(".parquet") && !listed.contains(&path);
            if name.ends_with(".parquet.tmp") || name.ends_with(".json.tmp") || stray_parquet {
                tracing::warn!(file = %path.display(), "removing a leftover of an interrupted persist");
                std::fs::remove_file(&path).map_err(|e| LakeError::io(&path, e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use doppel_core::{FieldValue, Point};

    /// A WAL left by a doppel that logged points (version 1 records) replays into the buffer.
    #[test]
    fn a_version_1_wal_replays() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join(WAL_DIR);
        std::fs::create_dir_all(&wal_dir).unwrap();
        let batch = WriteBatch {
            database: "db".into(),
            points: (0..3)
                .map(|i| Point {
                    measurement: "m".into(),
                    tags: vec![("a".into(), format!("s{}", i % 2))],
                    fields: vec![("v".into(), FieldValue::Float(i as f64))],
                    time: i,
                })
                .collect(),
        };
        let mut payload = Vec::new();
        codec::encode_v1(&batch, &mut payload);
        let mut writer = wal::WalWriter::create(&wal_dir, 0, faults::Faults::default()).unwrap();
        writer.append_all([payload.as_slice()].into_iter()).unwrap();
        drop(writer);

        let lake = Lake::open(dir.path(), LakeConfig::default()).unwrap();
        assert_eq!(lake.stats().buffered_rows, 3);
        let table = lake.catalog().table("db", "m").cloned().unwrap();
        assert!(table.tags.contains("a"));
        assert_eq!(table.fields["v"], doppel_core::FieldType::Float);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (_, batches) = runtime
            .block_on(lake.query("db", "SELECT sum(v) AS s FROM m"))
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 3.0 |"), "{text}");
    }
}
