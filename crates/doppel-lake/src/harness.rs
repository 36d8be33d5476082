//! The durability harness: seeded cases that write to a real lake on real files while its
//! WAL, Parquet and manifest writes fail (full disk, I/O errors on write and on fsync, short
//! writes, failed clean-ups), crash it (dropped without persisting, optionally losing what was
//! never fsynced, as a power cut does) or flip a bit of its WAL, a Parquet file or the
//! manifest, open it again, and check the promise: every acknowledged batch is there whole,
//! nothing is there that was never written, and damage is detected (start-up stops on a
//! damaged WAL record, and salvage keeps the rest; on a damaged manifest; `Lake::check` names
//! a damaged Parquet file), never silent.
//!
//! The lake's tests run a few hundred cases; `doppel bench faults` runs thousands. The
//! harness only drives the lake's public API and its [`FaultPlan`] hook; it never reaches in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use doppel_core::{FieldValue, Point, WriteBatch};

use crate::faults::{Fault, FaultPlan, Faults, IoPoint};
use crate::{ErrorKind, Lake, LakeConfig, LakeError};

/// How a case ends before the lake is opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `shutdown`: persists what it can.
    Shutdown,
    /// Dropped without persisting, as `kill -9` leaves it (written bytes survive).
    Crash,
    /// A crash that also loses each WAL segment's bytes past its last fsync, but a random
    /// part of them (a torn write).
    PowerCut,
    /// A crash, then one bit of a WAL segment flipped on disk.
    BitFlip,
    /// A shutdown, then one bit of a Parquet file flipped: `Lake::check` must name it.
    ParquetFlip,
    /// A shutdown, then one bit of the manifest flipped: start-up must refuse it.
    ManifestFlip,
}

/// What one case saw.
#[derive(Debug, Clone, Default)]
pub struct CaseReport {
    pub seed: u64,
    pub batches: usize,
    pub acknowledged: usize,
    /// Writes answered "retry later" (503): the injected faults at work.
    pub refused: usize,
    pub faults_injected: usize,
    pub ending: Option<Ending>,
    /// Start-up stopped on damage (bit flips only) and salvage was run.
    pub damage_detected: bool,
    /// Acknowledged batches not found after the restart: must be 0, or 1 after a detected bit
    /// flip in an acknowledged record (salvage cannot rebuild a record from a flipped bit).
    pub lost: usize,
}

/// A seeded random source (SplitMix64): the same seed gives the same case everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
}

/// Injects faults at random I/O points, and remembers what each fsync made durable.
struct SeededPlan {
    rng: Rng,
    per_thousand: u64,
    injected: usize,
    synced: HashMap<PathBuf, u64>,
}

impl FaultPlan for SeededPlan {
    fn before(&mut self, point: IoPoint, _path: &Path) -> Option<Fault> {
        if !self.rng.chance(self.per_thousand) {
            return None;
        }
        self.injected += 1;
        Some(match (point, self.rng.below(3)) {
            (IoPoint::WalWrite | IoPoint::ParquetWrite | IoPoint::ManifestWrite, 0) => {
                Fault::ShortWrite(self.rng.below(64) as usize)
            }
            (_, 1) => Fault::Errno(libc::EIO),
            _ => Fault::Errno(libc::ENOSPC),
        })
    }

    fn synced(&mut self, path: &Path, len: u64) {
        self.synced.insert(path.to_owned(), len);
    }
}

/// Shares the plan between the lake and the harness (the lake owns its `Faults`).
struct Shared(std::sync::Arc<std::sync::Mutex<SeededPlan>>);

impl FaultPlan for Shared {
    fn before(&mut self, point: IoPoint, path: &Path) -> Option<Fault> {
        self.0.lock().unwrap().before(point, path)
    }
    fn synced(&mut self, path: &Path, len: u64) {
        self.0.lock().unwrap().synced(path, len);
    }
}

/// One batch: `rows` points of measurement `m`, each with a value no other batch writes.
fn batch(case: u64, index: usize, rows: usize) -> WriteBatch {
    WriteBatch {
        database: "db".into(),
        points: (0..rows)
            .map(|row| Point {
                measurement: "m".into(),
                tags: vec![("asset".into(), format!("a{}", row % 3))],
                fields: vec![("v".into(), FieldValue::Float(value(case, index, row)))],
                time: (index * 1000 + row) as i64 * 1_000_000_000,
            })
            .collect(),
    }
}

fn value(case: u64, index: usize, row: usize) -> f64 {
    ((case % 1000) * 1_000_000 + index as u64 * 1000 + row as u64) as f64
}

/// Runs one seeded case in `dir` (which must be empty). `Err` says how the promise broke.
pub fn run_case(seed: u64, dir: &Path) -> Result<CaseReport, String> {
    let mut rng = Rng(seed);
    let ending = match rng.below(6) {
        0 => Ending::Shutdown,
        1 => Ending::Crash,
        2 => Ending::PowerCut,
        3 => Ending::BitFlip,
        4 => Ending::ParquetFlip,
        _ => Ending::ManifestFlip,
    };
    let plan = std::sync::Arc::new(std::sync::Mutex::new(SeededPlan {
        rng: Rng(seed ^ 0xA5A5_A5A5),
        per_thousand: [0, 50, 150, 400][rng.below(4) as usize],
        injected: 0,
        synced: HashMap::new(),
    }));
    let config = LakeConfig {
        // Small, so that cases rotate the WAL and persist Parquet files often.
        flush_bytes: 16 << 10,
        flush_age: std::time::Duration::from_secs(3600),
        faults: Faults::new(Shared(plan.clone())),
        ..LakeConfig::default()
    };
    let mut report = CaseReport {
        seed,
        ending: Some(ending),
        ..CaseReport::default()
    };
    // Opening may itself meet a fault (creating the first segment): that is a refusal to
    // start, with nothing acknowledged yet.
    let lake = match Lake::open(dir, config) {
        Ok(lake) => lake,
        Err(_) => return Ok(report),
    };
    let batches = 5 + rng.below(40) as usize;
    let mut acknowledged: Vec<usize> = Vec::new();
    let mut sizes = Vec::with_capacity(batches);
    for index in 0..batches {
        let rows = 1 + rng.below(200) as usize;
        sizes.push(rows);
        match lake.write_blocking(batch(seed, index, rows), false) {
            Ok(_) => acknowledged.push(index),
            Err(e) => match e.kind() {
                ErrorKind::Unavailable(_) => report.refused += 1,
                _ => return Err(format!("batch {index}: a fault answered as {e:?}")),
            },
        }
        if rng.chance(150) {
            let _ = lake.flush();
        }
    }
    report.batches = batches;
    report.acknowledged = acknowledged.len();
    match ending {
        Ending::Shutdown | Ending::ParquetFlip | Ending::ManifestFlip => {
            let _ = lake.shutdown();
            drop(lake);
        }
        _ => drop(lake),
    }
    let synced = {
        let plan = plan.lock().unwrap();
        report.faults_injected = plan.injected;
        plan.synced.clone()
    };
    let wal = dir.join("wal");
    match ending {
        Ending::PowerCut => power_cut(&wal, &synced, &mut rng)?,
        Ending::BitFlip => flip_a_bit(&files_in(&wal, "wal")?, 8, &mut rng)?,
        Ending::ParquetFlip => {
            // The files the manifest lists: any other is a leftover that opening removes.
            let listed: Vec<PathBuf> = crate::Catalog::load(dir)
                .map_err(|e| e.to_string())?
                .unwrap_or_default()
                .databases
                .values()
                .flat_map(|d| d.tables.values())
                .flat_map(|t| t.files.iter().map(|f| dir.join(&f.path)))
                .collect();
            let files: Vec<PathBuf> = files_in(dir, "parquet")?
                .into_iter()
                .filter(|f| listed.contains(f))
                .collect();
            if !files.is_empty() {
                flip_a_bit(&files, 0, &mut rng)?;
                let lake = Lake::open(dir, LakeConfig::default())
                    .map_err(|e| format!("opening after a Parquet bit flip failed: {e}"))?;
                let damaged = lake.check().map_err(|e| e.to_string())?;
                if damaged.is_empty() {
                    return Err("a flipped bit in a Parquet file went unnoticed by check".into());
                }
                report.damage_detected = true;
                return Ok(report);
            }
        }
        Ending::ManifestFlip => {
            let manifest = dir.join(crate::catalog::MANIFEST);
            if manifest.exists() {
                flip_a_bit(&[manifest], 0, &mut rng)?;
                return match Lake::open(dir, LakeConfig::default()) {
                    Err(LakeError::Manifest { .. }) => {
                        report.damage_detected = true;
                        Ok(report)
                    }
                    Err(e) => Err(format!("a flipped manifest bit gave another error: {e}")),
                    Ok(_) => Err("a flipped bit in the manifest went unnoticed".into()),
                };
            }
        }
        _ => {}
    }

    let lake = match Lake::open(dir, LakeConfig::default()) {
        Ok(lake) => lake,
        Err(LakeError::WalCorrupt { .. }) if ending == Ending::BitFlip => {
            report.damage_detected = true;
            Lake::salvage(dir).map_err(|e| format!("salvage failed: {e}"))?;
            Lake::open(dir, LakeConfig::default())
                .map_err(|e| format!("opening after salvage failed: {e}"))?
        }
        Err(e) => return Err(format!("opening again after {ending:?} failed: {e}")),
    };
    let present = stored_values(&lake)?;
    let attempted: BTreeSet<u64> = (0..batches)
        .flat_map(|index| (0..200).map(move |row| value(seed, index, row) as u64))
        .collect();
    if let Some(stranger) = present.keys().find(|v| !attempted.contains(v)) {
        return Err(format!(
            "a value that was never written is stored: {stranger}"
        ));
    }
    // A batch is whole or absent: every acknowledged one whole.
    let mut by_batch: BTreeMap<usize, usize> = BTreeMap::new();
    for v in present.keys() {
        *by_batch
            .entry(((v % 1_000_000) / 1000) as usize)
            .or_default() += 1;
    }
    let mut lost = 0;
    for (index, &rows) in sizes.iter().enumerate() {
        let stored = by_batch.get(&index).copied().unwrap_or(0);
        if stored != 0 && stored != rows {
            return Err(format!(
                "batch {index} is stored in part: {stored} of {rows} rows"
            ));
        }
        if stored == 0 && acknowledged.contains(&index) {
            lost += 1;
        }
    }
    report.lost = lost;
    let allowed = usize::from(report.damage_detected);
    if lost > allowed {
        return Err(format!(
            "{lost} acknowledged batch(es) lost after {ending:?} (damage detected: {})",
            report.damage_detected
        ));
    }
    lake.shutdown()
        .map_err(|e| format!("shutdown after the check failed: {e}"))?;
    Ok(report)
}

/// Every stored value of `db.m`, with how often it is stored (must be once).
fn stored_values(lake: &Lake) -> Result<BTreeMap<u64, usize>, String> {
    if !lake.databases().contains(&"db".to_owned()) {
        return Ok(BTreeMap::new());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (_, batches) = runtime
        .block_on(lake.query("db", "SELECT v FROM m"))
        .map_err(|e| format!("reading back failed: {e}"))?;
    let mut values = BTreeMap::new();
    for batch in batches {
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .ok_or("v is not a float column")?;
        for v in column.iter().flatten() {
            *values.entry(v as u64).or_insert(0) += 1;
        }
    }
    if let Some((v, n)) = values.iter().find(|(_, n)| **n > 1) {
        return Err(format!("value {v} is stored {n} times"));
    }
    Ok(values)
}

/// Cuts each WAL segment back to what its last fsync made durable, plus a random part of the
/// rest (what the disk happened to write before the power went).
fn power_cut(wal: &Path, synced: &HashMap<PathBuf, u64>, rng: &mut Rng) -> Result<(), String> {
    for entry in std::fs::read_dir(wal).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|e| e != "wal") {
            continue;
        }
        let len = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
        let durable = synced.get(&path).copied().unwrap_or(0).min(len);
        let kept = durable + rng.below(len - durable + 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(kept))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The files under `dir` (recursively) whose name ends in `.extension`, in name order.
fn files_in(dir: &Path, extension: &str) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Flips one bit past the first `skip` bytes of a random file among `files` that has any.
fn flip_a_bit(files: &[PathBuf], skip: usize, rng: &mut Rng) -> Result<(), String> {
    let candidates: Vec<&PathBuf> = files
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() as usize > skip))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let path = candidates[rng.below(candidates.len() as u64) as usize];
    let mut bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let at = skip + rng.below((bytes.len() - skip) as u64) as usize;
    bytes[at] ^= 1 << rng.below(8);
    std::fs::write(path, bytes).map_err(|e| e.to_string())
}
