//! Fault injection for the durability harness: a lake opened with a [`FaultPlan`] asks it
//! before each write, fsync and file creation of its WAL, Parquet files and manifest whether
//! that operation should fail, and tells it what each fsync made durable (so a harness can
//! model a power cut that loses what was never fsynced).
//!
//! A lake without a plan (every lake outside the harness) pays one branch per I/O call. This
//! module never decides what fails; the plan does.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where in the lake an I/O operation happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoPoint {
    /// Appending a group of records to a WAL segment.
    WalWrite,
    /// The fsync that acknowledges a group of records.
    WalSync,
    /// Creating a new WAL segment (at start-up and at every rotation).
    WalCreate,
    /// Cutting a failed write off a segment.
    WalTruncate,
    /// Writing a Parquet file.
    ParquetWrite,
    /// Fsyncing a Parquet file before its rename.
    ParquetSync,
    /// Writing the manifest's temporary file.
    ManifestWrite,
}

/// What a plan does to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this OS error (for example `libc::ENOSPC` or `libc::EIO`).
    Errno(i32),
    /// Write only this many bytes of the buffer, then fail with `ENOSPC` (writes only).
    ShortWrite(usize),
}

/// Decides which operations fail. Called from the lake's threads.
pub trait FaultPlan: Send {
    /// Called before an operation; `None` lets it run.
    fn before(&mut self, point: IoPoint, path: &Path) -> Option<Fault>;
    /// Called after an fsync of `path` succeeded: its first `len` bytes are durable.
    fn synced(&mut self, _path: &Path, _len: u64) {}
}

/// A lake's handle on its plan (none outside the harness). Cheap to clone.
#[derive(Clone, Default)]
pub struct Faults(Option<Arc<Mutex<dyn FaultPlan>>>);

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Faults(plan)"
        } else {
            "Faults(none)"
        })
    }
}

impl Faults {
    pub fn new(plan: impl FaultPlan + 'static) -> Self {
        Faults(Some(Arc::new(Mutex::new(plan))))
    }

    fn ask(&self, point: IoPoint, path: &Path) -> Option<Fault> {
        let plan = self.0.as_ref()?;
        plan.lock()
            .unwrap_or_else(|p| p.into_inner())
            .before(point, path)
    }

    /// Fails the operation when the plan says so.
    pub(crate) fn check(&self, point: IoPoint, path: &Path) -> io::Result<()> {
        match self.ask(point, path) {
            None => Ok(()),
            Some(Fault::Errno(errno)) => Err(io::Error::from_raw_os_error(errno)),
            // Nothing to write a part of: a short write fails like the full disk it models.
            Some(Fault::ShortWrite(_)) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        }
    }

    /// Writes `bytes` with `write_all`, unless the plan fails the write (a short write puts
    /// a prefix of the bytes on disk first, as a full disk does).
    pub(crate) fn write_all(
        &self,
        point: IoPoint,
        path: &Path,
        out: &mut impl io::Write,
        bytes: &[u8],
    ) -> io::Result<()> {
        match self.ask(point, path) {
            None => out.write_all(bytes),
            Some(Fault::Errno(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Fault::ShortWrite(n)) => {
                out.write_all(&bytes[..n.min(bytes.len())])?;
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
        }
    }

    pub(crate) fn synced(&self, path: &Path, len: u64) {
        if let Some(plan) = &self.0 {
            plan.lock()
                .unwrap_or_else(|p| p.into_inner())
                .synced(path, len);
        }
    }
}
