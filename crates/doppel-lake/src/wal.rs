//! The write-ahead log: numbered segment files of checksummed, length-prefixed records.
//!
//! ```text
//! segment := "DOPWAL01" record*
//! record  := u32 LE payload length | u32 LE CRC-32C of payload | payload
//! ```
//!
//! A record is acknowledged only after its bytes are fsynced; the writer thread in `lib.rs`
//! appends many records per fsync (group commit). At start-up the segments are replayed in
//! order: a bad record at the very end of the last segment is a torn write from a crash and is
//! cut off with a warning; a bad record anywhere else means the log is damaged, and start-up
//! stops with the file and byte offset so nothing is silently dropped.
//! This module knows nothing of what a payload means.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{LakeError, Result};

const MAGIC: &[u8; 8] = b"DOPWAL01";
const HEADER: usize = 8;

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

/// Segment ids present in the WAL folder, in order.
pub fn segment_ids(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| LakeError::io(dir, e))? {
        let entry = entry.map_err(|e| LakeError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".wal")
            && let Ok(id) = stem.parse::<u64>()
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Replays every record of the segments after `persisted_through`, in order, calling `apply`
/// with each payload. Returns the highest segment id seen (0 when none).
pub fn replay(
    dir: &Path,
    persisted_through: u64,
    mut apply: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let ids = segment_ids(dir)?;
    let last = ids.last().copied().unwrap_or(0);
    for &id in &ids {
        if id <= persisted_through {
            continue;
        }
        let path = segment_path(dir, id);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| LakeError::io(&path, e))?;
        let is_last = id == last;
        if bytes.len() < HEADER || &bytes[..HEADER] != MAGIC {
            if is_last && MAGIC.starts_with(&bytes[..bytes.len().min(HEADER)]) {
                // Created but its header never fully reached the disk: nothing was acknowledged.
                tracing::warn!(file = %path.display(), "WAL segment with a torn header: removing it");
                fs::remove_file(&path).map_err(|e| LakeError::io(&path, e))?;
                continue;
            }
            return Err(LakeError::WalCorrupt {
                path,
                offset: 0,
                reason: "the file does not start with the WAL header".into(),
            });
        }
        let mut pos = HEADER;
        while pos < bytes.len() {
            match check_record(&bytes[pos..]) {
                Ok(payload) => {
                    apply(payload)?;
                    pos += 8 + payload.len();
                }
                Err(reason) => {
                    // Torn tail: the bad record reaches the end of the last segment.
                    let extends_to_end =
                        record_end(&bytes[pos..]).is_none_or(|end| pos + end >= bytes.len());
                    if is_last && extends_to_end {
                        tracing::warn!(
                            file = %path.display(),
                            offset = pos,
                            lost_bytes = bytes.len() - pos,
                            "cutting a torn record off the end of the WAL (a crash during a write that was never acknowledged)"
                        );
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| LakeError::io(&path, e))?;
                        file.set_len(pos as u64)
                            .map_err(|e| LakeError::io(&path, e))?;
                        file.sync_all().map_err(|e| LakeError::io(&path, e))?;
                        break;
                    }
                    return Err(LakeError::WalCorrupt {
                        path,
                        offset: pos as u64,
                        reason,
                    });
                }
            }
        }
    }
    Ok(last)
}

/// Where a record starting at `bytes[0]` claims to end, if its length field is readable.
fn record_end(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    Some(8 + len)
}

fn check_record(bytes: &[u8]) -> std::result::Result<&[u8], String> {
    let end = record_end(bytes).ok_or("record header is cut short")?;
    let crc = u32::from_le_bytes(
        bytes
            .get(4..8)
            .ok_or("record header is cut short")?
            .try_into()
            .unwrap(),
    );
    let payload = bytes
        .get(8..end)
        .ok_or_else(|| format!("record of {} bytes is cut short", end - 8))?;
    if end == 8 {
        return Err("empty record (zeroed space at the end of the file?)".into());
    }
    if crc32c::crc32c(payload) != crc {
        return Err("record checksum does not match its bytes".into());
    }
    Ok(payload)
}

/// Appends records to the newest segment. Owned by one thread.
pub struct WalWriter {
    dir: PathBuf,
    file: File,
    segment: u64,
    buffer: Vec<u8>,
}

impl WalWriter {
    /// Starts a new segment after `last_segment` (never appends to an old one, so a replayed
    /// segment stays exactly as it was read).
    pub fn create(dir: &Path, last_segment: u64) -> Result<Self> {
        let segment = last_segment + 1;
        let file = new_segment(dir, segment)?;
        Ok(WalWriter {
            dir: dir.to_owned(),
            file,
            segment,
            buffer: Vec::with_capacity(1 << 20),
        })
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Writes the records and fsyncs once: when this returns `Ok`, every record is durable.
    pub fn append_all<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> Result<()> {
        self.buffer.clear();
        for payload in payloads {
            self.buffer
                .extend_from_slice(&(payload.len() as u32).to_le_bytes());
            self.buffer
                .extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
            self.buffer.extend_from_slice(payload);
        }
        let path = || segment_path(&self.dir, self.segment);
        self.file
            .write_all(&self.buffer)
            .map_err(|e| LakeError::io(path(), e))?;
        self.file
            .sync_data()
            .map_err(|e| LakeError::io(path(), e))?;
        Ok(())
    }

    /// Closes the current segment and starts the next; returns the id of the closed one.
    pub fn rotate(&mut self) -> Result<u64> {
        let closed = self.segment;
        self.file = new_segment(&self.dir, closed + 1)?;
        self.segment = closed + 1;
        Ok(closed)
    }
}

fn new_segment(dir: &Path, id: u64) -> Result<File> {
    let path = segment_path(dir, id);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| LakeError::io(&path, e))?;
    file.write_all(MAGIC).map_err(|e| LakeError::io(&path, e))?;
    file.sync_all().map_err(|e| LakeError::io(&path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Removes the segments up to and including `through` (their data is in Parquet now).
pub fn remove_through(dir: &Path, through: u64) -> Result<()> {
    for id in segment_ids(dir)? {
        if id <= through {
            let path = segment_path(dir, id);
            fs::remove_file(&path).map_err(|e| LakeError::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

/// Makes a directory's entries (new, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LakeError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(dir: &Path) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        replay(dir, 0, |p| {
            out.push(p.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn records_survive_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 0).unwrap();
        w.append_all([b"one".as_slice(), b"two"].into_iter())
            .unwrap();
        assert_eq!(w.rotate().unwrap(), 1);
        w.append_all([b"three".as_slice()].into_iter()).unwrap();
        assert_eq!(
            replayed(dir.path()).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        remove_through(dir.path(), 1).unwrap();
        assert_eq!(replayed(dir.path()).unwrap(), vec![b"three".to_vec()]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_records_append_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 0).unwrap();
        w.append_all([b"kept".as_slice()].into_iter()).unwrap();
        w.append_all([b"torn-record".as_slice()].into_iter())
            .unwrap();
        drop(w);
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert_eq!(replayed(dir.path()).unwrap(), vec![b"kept".to_vec()]);
        assert_eq!(fs::metadata(&path).unwrap().len(), (HEADER + 8 + 4) as u64);
    }

    #[test]
    fn corruption_in_the_middle_stops_with_where() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 0).unwrap();
        w.append_all([b"first".as_slice(), b"second"].into_iter())
            .unwrap();
        drop(w);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER + 8] ^= 0xff; // flip a byte of the first payload
        fs::write(&path, bytes).unwrap();
        let err = replayed(dir.path()).unwrap_err().to_string();
        assert!(err.contains("00000000000000000001.wal"), "{err}");
        assert!(err.contains("byte 8"), "{err}");
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn a_bad_record_in_an_older_segment_is_corruption_even_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 0).unwrap();
        w.append_all([b"first".as_slice()].into_iter()).unwrap();
        w.rotate().unwrap();
        w.append_all([b"later".as_slice()].into_iter()).unwrap();
        drop(w);
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        assert!(matches!(
            replayed(dir.path()),
            Err(LakeError::WalCorrupt { .. })
        ));
    }
}
