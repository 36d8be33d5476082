//! The write-ahead log: numbered segment files of checksummed, length-prefixed records.
//!
//! ```text
//! segment := "DOPWAL02" record*
//! record  := u32 LE payload length | u32 LE CRC-32C of payload
//!            | u32 LE CRC-32C of the 8 bytes before | payload
//! ```
//!
//! A record is acknowledged only after its bytes are fsynced; the writer thread in `lib.rs`
//! appends many records per fsync (group commit). At start-up the segments are replayed in
//! order. The header's own checksum tells a torn write from damage: a crash can only leave
//! the last record of the last segment incomplete (a header cut short, zeroed space, or a
//! whole header whose payload never fully arrived), and only that is cut off, its bytes kept
//! in `wal/damaged/`. Anything else that does not check out (a flipped length, a whole record
//! whose payload fails its checksum, any bad record in an older segment) may be damage to a
//! record that was acknowledged: start-up stops with the file and byte offset, and
//! [`salvage`] keeps every intact record, before and after the damage. Segments written by earlier versions
//! (`DOPWAL01`, no header checksum) are still replayed.
//!
//! A write that fails (a full disk, an I/O error) is cut off the segment again before the
//! next one, so a refused write never leaves bytes that a later start-up would take for
//! damage. This module knows nothing of what a payload means.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{LakeError, Result};
use crate::faults::{Faults, IoPoint};

const MAGIC_V1: &[u8; 8] = b"DOPWAL01";
const MAGIC: &[u8; 8] = b"DOPWAL02";
const SEGMENT_HEADER: usize = 8;
const V1_RECORD_HEADER: usize = 8;
const RECORD_HEADER: usize = 12;
/// Where the bytes of a damaged segment or a cut-off tail are kept, inside the WAL folder.
pub const DAMAGED_DIR: &str = "damaged";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V1,
    V2,
}

/// Why the bytes at a position are not a whole record.
struct Bad {
    reason: String,
    /// Whether a crash during an unacknowledged write could have left exactly these bytes:
    /// they run to the end of the file and nothing intact follows.
    torn: bool,
}

/// The record at the start of `bytes`: its payload and its whole length.
fn read_record(format: Format, bytes: &[u8]) -> std::result::Result<(&[u8], usize), Bad> {
    let header = match format {
        Format::V1 => V1_RECORD_HEADER,
        Format::V2 => RECORD_HEADER,
    };
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    if bytes.len() < header {
        return Err(Bad {
            reason: "record header is cut short".into(),
            torn: true,
        });
    }
    if format == Format::V2 && crc32c::crc32c(&bytes[..8]) != u32_at(8) {
        let zeroed = bytes.iter().all(|&b| b == 0);
        return Err(Bad {
            reason: if zeroed {
                "zeroed space at the end of the file".into()
            } else {
                "record header checksum does not match (a damaged length or checksum field)".into()
            },
            torn: zeroed,
        });
    }
    let len = u32_at(0) as usize;
    let end = header + len;
    if len == 0 {
        return Err(Bad {
            reason: "empty record (zeroed space at the end of the file?)".into(),
            torn: bytes.iter().all(|&b| b == 0),
        });
    }
    let Some(payload) = bytes.get(header..end) else {
        return Err(Bad {
            reason: format!("record of {len} bytes is cut short"),
            torn: true,
        });
    };
    if crc32c::crc32c(payload) != u32_at(4) {
        // Whole but wrong: even as the last record it may have been acknowledged (a flipped
        // bit on disk), so it is never cut as torn; salvage drops it, the operator deciding.
        return Err(Bad {
            reason: "record checksum does not match its bytes".into(),
            torn: format == Format::V1 && end == bytes.len(),
        });
    }
    Ok((payload, end))
}

/// A segment's format from its first bytes; `Ok(None)` for a header that never fully reached
/// the disk (the segment holds nothing, so nothing in it was acknowledged).
fn segment_format(path: &Path, bytes: &[u8]) -> Result<Option<Format>> {
    let start = &bytes[..bytes.len().min(SEGMENT_HEADER)];
    match start {
        _ if start == MAGIC => Ok(Some(Format::V2)),
        _ if start == MAGIC_V1 => Ok(Some(Format::V1)),
        _ if bytes.len() < SEGMENT_HEADER && MAGIC.starts_with(start) => Ok(None),
        _ => Err(LakeError::WalCorrupt {
            path: path.to_owned(),
            offset: 0,
            reason: "the file does not start with the WAL header".into(),
        }),
    }
}

fn read_segment(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| LakeError::io(path, e))?;
    Ok(bytes)
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
    for &id in ids.iter().filter(|&&id| id > persisted_through) {
        let path = segment_path(dir, id);
        let bytes = read_segment(&path)?;
        let Some(format) = segment_format(&path, &bytes)? else {
            tracing::warn!(file = %path.display(), "WAL segment with a torn header (it holds no record): removing it");
            fs::remove_file(&path).map_err(|e| LakeError::io(&path, e))?;
            continue;
        };
        let mut pos = SEGMENT_HEADER;
        while pos < bytes.len() {
            match read_record(format, &bytes[pos..]) {
                Ok((payload, len)) => {
                    apply(payload)?;
                    pos += len;
                }
                Err(bad) if bad.torn && id == last => {
                    cut_torn_tail(dir, &path, &bytes, pos)?;
                    break;
                }
                Err(bad) => {
                    return Err(LakeError::WalCorrupt {
                        path,
                        offset: pos as u64,
                        reason: bad.reason,
                    });
                }
            }
        }
    }
    Ok(last)
}

/// Cuts a write torn by a crash (never acknowledged) off the end of a segment, keeping its
/// bytes in `wal/damaged/` unless they are all zero.
fn cut_torn_tail(dir: &Path, path: &Path, bytes: &[u8], pos: usize) -> Result<()> {
    let tail = &bytes[pos..];
    tracing::warn!(
        file = %path.display(),
        offset = pos,
        lost_bytes = tail.len(),
        "cutting a torn record off the end of the WAL (a crash during a write that was never acknowledged)"
    );
    if tail.iter().any(|&b| b != 0) {
        let name = format!(
            "{}.torn-at-{pos}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        keep_damaged(dir, &name, tail)?;
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LakeError::io(path, e))?;
    file.set_len(pos as u64)
        .map_err(|e| LakeError::io(path, e))?;
    file.sync_all().map_err(|e| LakeError::io(path, e))
}

/// Writes evidence into `wal/damaged/NAME`, durably.
fn keep_damaged(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let damaged = dir.join(DAMAGED_DIR);
    fs::create_dir_all(&damaged).map_err(|e| LakeError::io(&damaged, e))?;
    let path = damaged.join(name);
    let mut file = File::create(&path).map_err(|e| LakeError::io(&path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| LakeError::io(&path, e))?;
    sync_dir(&damaged)?;
    Ok(path)
}

/// What [`salvage`] did to one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SalvagedSegment {
    pub segment: PathBuf,
    /// Where the damaged original now is.
    pub moved_to: PathBuf,
    pub records_kept: usize,
    /// Byte ranges of the original that held no intact record.
    pub damaged: Vec<(u64, u64)>,
}

/// Rewrites every damaged segment after `persisted_through` with the records in it that are
/// intact, before and after the damage (a record is intact when its header and payload
/// checksums hold), and moves the original into `wal/damaged/`. Segments without damage are
/// left as they are. A torn tail of the last segment is dropped as replay would.
pub fn salvage(dir: &Path, persisted_through: u64) -> Result<Vec<SalvagedSegment>> {
    let mut report = Vec::new();
    for id in segment_ids(dir)?
        .into_iter()
        .filter(|&id| id > persisted_through)
    {
        let path = segment_path(dir, id);
        let bytes = read_segment(&path)?;
        let scan = match segment_format(&path, &bytes) {
            Ok(Some(format)) => intact_records(format, &bytes),
            // A torn header holds nothing: replay removes it.
            Ok(None) => continue,
            Err(_) => Scan {
                records: Vec::new(),
                damaged: vec![(0, bytes.len() as u64)],
                repaired: 0,
            },
        };
        if scan.damaged.is_empty() && scan.repaired == 0 {
            continue;
        }
        let Scan {
            records, damaged, ..
        } = scan;
        let moved_to = dir.join(DAMAGED_DIR).join(format!("{id:020}.wal"));
        let mut rewritten = MAGIC.to_vec();
        for payload in &records {
            encode_record(payload, &mut rewritten);
        }
        let tmp = path.with_extension("wal.salvaged");
        fs::write(&tmp, &rewritten)
            .and_then(|()| File::open(&tmp)?.sync_all())
            .map_err(|e| LakeError::io(&tmp, e))?;
        fs::create_dir_all(dir.join(DAMAGED_DIR)).map_err(|e| LakeError::io(dir, e))?;
        fs::rename(&path, &moved_to).map_err(|e| LakeError::io(&moved_to, e))?;
        sync_dir(&dir.join(DAMAGED_DIR))?;
        fs::rename(&tmp, &path).map_err(|e| LakeError::io(&path, e))?;
        sync_dir(dir)?;
        report.push(SalvagedSegment {
            segment: path,
            moved_to,
            records_kept: records.len(),
            damaged,
        });
    }
    Ok(report)
}

/// What a salvage scan found in a segment.
struct Scan<'a> {
    records: Vec<&'a [u8]>,
    /// Byte ranges that held no intact record.
    damaged: Vec<(u64, u64)>,
    /// Records kept although their header was damaged.
    repaired: usize,
}

/// The intact records of a segment, and the byte ranges between them that are not. After
/// damage in a current segment the scan looks for the next position where a whole record
/// checks out (its header checksum first, so a stray length cannot send it astray); an old
/// segment has no header checksum to look for, so its scan ends at the first damage.
fn intact_records(format: Format, bytes: &[u8]) -> Scan<'_> {
    let mut records = Vec::new();
    let mut damaged = Vec::new();
    let mut repaired = 0;
    let mut pos = SEGMENT_HEADER;
    while pos < bytes.len() {
        if let Ok((payload, len)) = read_record(format, &bytes[pos..]) {
            records.push(payload);
            pos += len;
            continue;
        }
        let next = match format {
            Format::V1 => None,
            Format::V2 => {
                (pos + 1..bytes.len()).find(|&at| read_record(format, &bytes[at..]).is_ok())
            }
        };
        let end = next.unwrap_or(bytes.len());
        // A damaged length field before an intact record: the payload between may still
        // match its own checksum once its length is taken from where the next record starts.
        if let Some(payload) = next.and_then(|end| payload_between(bytes, pos, end)) {
            records.push(payload);
            repaired += 1;
        } else {
            damaged.push((pos as u64, end as u64));
        }
        pos = end;
    }
    Scan {
        records,
        damaged,
        repaired,
    }
}

/// The payload of a current-format record at `start` whose header is damaged, if the bytes up
/// to `end` match the payload checksum the header still holds.
fn payload_between(bytes: &[u8], start: usize, end: usize) -> Option<&[u8]> {
    let payload = bytes.get(start + RECORD_HEADER..end)?;
    let crc = u32::from_le_bytes(bytes.get(start + 4..start + 8)?.try_into().ok()?);
    (!payload.is_empty() && crc32c::crc32c(payload) == crc).then_some(payload)
}

fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[start..start + 8]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends records to the newest segment. Owned by one thread.
pub struct WalWriter {
    dir: PathBuf,
    file: File,
    segment: u64,
    buffer: Vec<u8>,
    /// The segment's length up to its last durable record.
    durable_len: u64,
    /// A failed write may have left bytes past `durable_len` that must go before the next.
    dirty: bool,
    faults: Faults,
}

impl WalWriter {
    /// Starts a new segment after `last_segment` (never appends to an old one, so a replayed
    /// segment stays exactly as it was read).
    pub fn create(dir: &Path, last_segment: u64, faults: Faults) -> Result<Self> {
        let segment = last_segment + 1;
        let file = new_segment(dir, segment, &faults)?;
        Ok(WalWriter {
            dir: dir.to_owned(),
            file,
            segment,
            buffer: Vec::with_capacity(1 << 20),
            durable_len: SEGMENT_HEADER as u64,
            dirty: false,
            faults,
        })
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.segment)
    }

    /// Writes the records and fsyncs once: when this returns `Ok`, every record is durable.
    /// When it fails, none is acknowledged, and the bytes it may have left are cut off (now,
    /// or before the next write if cutting fails too).
    pub fn append_all<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> Result<()> {
        if self.dirty {
            self.recover()?;
        }
        self.buffer.clear();
        for payload in payloads {
            encode_record(payload, &mut self.buffer);
        }
        let path = self.path();
        let written = self
            .faults
            .write_all(IoPoint::WalWrite, &path, &mut self.file, &self.buffer)
            .and_then(|()| self.faults.check(IoPoint::WalSync, &path))
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.durable_len += self.buffer.len() as u64;
                self.faults.synced(&path, self.durable_len);
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                if let Err(again) = self.recover() {
                    tracing::warn!(error = %again, "cannot cut a failed write off the WAL yet; trying again before the next write");
                }
                Err(LakeError::io(path, e))
            }
        }
    }

    /// Cuts whatever a failed write left past the last durable record. After a failed fsync
    /// the kernel may have dropped those pages; the records before them were fsynced earlier.
    pub fn recover(&mut self) -> Result<()> {
        let path = self.path();
        self.faults
            .check(IoPoint::WalTruncate, &path)
            .and_then(|()| self.file.set_len(self.durable_len))
            .and_then(|()| self.file.sync_all())
            .map_err(|e| LakeError::io(&path, e))?;
        self.dirty = false;
        Ok(())
    }

    /// Whether a failed write still has to be cut off before the next.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Closes the current segment and starts the next; returns the id of the closed one.
    /// A segment is never closed with a failed write's bytes in it.
    pub fn rotate(&mut self) -> Result<u64> {
        if self.dirty {
            self.recover()?;
        }
        let closed = self.segment;
        self.file = new_segment(&self.dir, closed + 1, &self.faults)?;
        self.segment = closed + 1;
        self.durable_len = SEGMENT_HEADER as u64;
        Ok(closed)
    }
}

/// Creates a segment with its header, durably; on failure it leaves no file behind (a
/// half-made segment would make the next try fail with "File exists").
fn new_segment(dir: &Path, id: u64, faults: &Faults) -> Result<File> {
    let path = segment_path(dir, id);
    faults
        .check(IoPoint::WalCreate, &path)
        .map_err(|e| LakeError::io(&path, e))?;
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| LakeError::io(&path, e))?;
    let made = file
        .write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(|e| LakeError::io(&path, e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = made {
        drop(file);
        let _ = fs::remove_file(&path);
        let _ = sync_dir(dir);
        return Err(e);
    }
    faults.synced(&path, SEGMENT_HEADER as u64);
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
        let mut w = WalWriter::create(dir.path(), 0, Faults::default()).unwrap();
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
        let mut w = WalWriter::create(dir.path(), 0, Faults::default()).unwrap();
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
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (SEGMENT_HEADER + RECORD_HEADER + 4) as u64
        );
    }

    #[test]
    fn corruption_in_the_middle_stops_with_where() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 0, Faults::default()).unwrap();
        w.append_all([b"first".as_slice(), b"second"].into_iter())
            .unwrap();
        drop(w);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[SEGMENT_HEADER + RECORD_HEADER] ^= 0xff; // flip a byte of the first payload
        fs::write(&path, bytes).unwrap();
        let err = replayed(dir.path()).unwrap_err().to_string();
        assert!(err.contains("00000000000000000001.wal"), "{err}");
        assert!(err.contains("byte 8"), "{err}");
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn a_bad_record_in_an_older_segment_is_corruption_even_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 0, Faults::default()).unwrap();
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

    fn ten_records(dir: &Path) -> PathBuf {
        let mut w = WalWriter::create(dir, 0, Faults::default()).unwrap();
        for i in 0..10u8 {
            w.append_all([vec![i; 20 + i as usize].as_slice()].into_iter())
                .unwrap();
        }
        segment_path(dir, 1)
    }

    /// The first record's offset and each later one's: 8-byte segment header, then records.
    fn record_offset(i: usize) -> usize {
        SEGMENT_HEADER + (0..i).map(|j| RECORD_HEADER + 20 + j).sum::<usize>()
    }

    #[test]
    fn a_damaged_length_field_stops_start_up_and_salvage_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = ten_records(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[record_offset(3) + 3] ^= 0x80; // the top byte of the fourth record's length
        fs::write(&path, &bytes).unwrap();

        let err = replayed(dir.path()).unwrap_err();
        let LakeError::WalCorrupt { offset, reason, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*offset as usize, record_offset(3));
        assert!(reason.contains("header checksum"), "{reason}");
        assert!(err.to_string().contains("doppel lake salvage"), "{err}");
        // Nothing was cut: the evidence is where it was.
        assert_eq!(fs::read(&path).unwrap(), bytes);

        let report = salvage(dir.path(), 0).unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].records_kept, 10, "{report:?}");
        assert!(report[0].damaged.is_empty(), "{report:?}");
        assert_eq!(fs::read(&report[0].moved_to).unwrap(), bytes);
        let records = replayed(dir.path()).unwrap();
        assert_eq!(records.len(), 10);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r, &vec![i as u8; 20 + i]);
        }
    }

    #[test]
    fn salvage_skips_a_record_whose_bytes_are_damaged_and_keeps_those_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = ten_records(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[record_offset(5) + RECORD_HEADER + 2] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            replayed(dir.path()),
            Err(LakeError::WalCorrupt { offset, .. }) if offset as usize == record_offset(5)
        ));
        let report = salvage(dir.path(), 0).unwrap();
        assert_eq!(report[0].records_kept, 9);
        assert_eq!(
            report[0].damaged,
            vec![(record_offset(5) as u64, record_offset(6) as u64)]
        );
        let kept: Vec<u8> = replayed(dir.path()).unwrap().iter().map(|r| r[0]).collect();
        assert_eq!(kept, vec![0, 1, 2, 3, 4, 6, 7, 8, 9]);
    }

    #[test]
    fn torn_tails_are_cut_and_their_bytes_kept() {
        for cut in [RECORD_HEADER - 5, RECORD_HEADER + 3] {
            let dir = tempfile::tempdir().unwrap();
            let path = ten_records(dir.path());
            let len = record_offset(9) + cut;
            let bytes = fs::read(&path).unwrap();
            fs::write(&path, &bytes[..len]).unwrap();
            assert_eq!(replayed(dir.path()).unwrap().len(), 9, "cut at {cut}");
            assert_eq!(
                fs::metadata(&path).unwrap().len() as usize,
                record_offset(9)
            );
            let kept: Vec<_> = fs::read_dir(dir.path().join(DAMAGED_DIR))
                .unwrap()
                .map(|e| fs::read(e.unwrap().path()).unwrap())
                .collect();
            assert_eq!(kept, vec![bytes[record_offset(9)..len].to_vec()]);
        }
    }

    #[test]
    fn zeroed_space_after_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = ten_records(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 4096]);
        fs::write(&path, &bytes).unwrap();
        assert_eq!(replayed(dir.path()).unwrap().len(), 10);
        assert!(!dir.path().join(DAMAGED_DIR).exists());
    }

    #[test]
    fn an_empty_segment_anywhere_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        ten_records(dir.path());
        fs::write(segment_path(dir.path(), 2), b"").unwrap();
        let mut w = WalWriter::create(dir.path(), 2, Faults::default()).unwrap();
        w.append_all([b"after".as_slice()].into_iter()).unwrap();
        assert_eq!(replayed(dir.path()).unwrap().len(), 11);
        assert!(!segment_path(dir.path(), 2).exists());
    }

    /// Fails the next write with a short write, then lets everything through.
    struct ShortOnce(bool);
    impl crate::faults::FaultPlan for ShortOnce {
        fn before(&mut self, point: IoPoint, _: &Path) -> Option<crate::faults::Fault> {
            (point == IoPoint::WalWrite && !std::mem::replace(&mut self.0, true))
                .then_some(crate::faults::Fault::ShortWrite(7))
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 0, Faults::default()).unwrap();
        w.append_all([b"one".as_slice()].into_iter()).unwrap();
        w.faults = Faults::new(ShortOnce(false));
        let err = w
            .append_all([b"refused".as_slice()].into_iter())
            .unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(!w.is_dirty());
        w.append_all([b"two".as_slice()].into_iter()).unwrap();
        w.rotate().unwrap();
        w.append_all([b"three".as_slice()].into_iter()).unwrap();
        assert_eq!(
            replayed(dir.path()).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }
}
