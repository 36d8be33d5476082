//! Growing columns kept as chunks of at most [`CHUNK_ROWS`] rows.
//!
//! A single vector per column doubles its capacity as it grows, and every doubling copies the
//! whole column into fresh memory that the kernel must fault in page by page. Every column
//! of a table doubles at the same row count, so with a large buffer one append copied and
//! faulted in a gigabyte under the lake's lock and held acknowledgements up for seconds.
//! Chunks never move once full; the one
//! copy left is the concatenation when a buffer is read out, which happens off the write path.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::concat;

use crate::error::{LakeError, Result};

/// Rows a chunk holds before a new one starts: 8 MiB of `f64` (64 in unit tests, so that
/// every buffer test with more rows crosses chunk boundaries).
pub const CHUNK_ROWS: usize = if cfg!(test) { 64 } else { 1 << 20 };

/// A vector of plain values in chunks; every chunk but the last is full.
#[derive(Default)]
pub struct ChunkedVec<T> {
    full: Vec<Vec<T>>,
    current: Vec<T>,
}

impl<T: Copy> ChunkedVec<T> {
    pub fn len(&self) -> usize {
        self.full.len() * CHUNK_ROWS + self.current.len()
    }

    /// Seals the current chunk when it is full.
    fn make_room(&mut self) {
        if self.current.len() == CHUNK_ROWS {
            let full = std::mem::replace(&mut self.current, Vec::with_capacity(CHUNK_ROWS));
            self.full.push(full);
        }
    }

    pub fn extend_from_slice(&mut self, mut values: &[T]) {
        while !values.is_empty() {
            self.make_room();
            let room = CHUNK_ROWS - self.current.len();
            let (now, rest) = values.split_at(room.min(values.len()));
            self.current.extend_from_slice(now);
            values = rest;
        }
    }

    pub fn extend(&mut self, values: impl IntoIterator<Item = T>) {
        for value in values {
            self.make_room();
            self.current.push(value);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.full.iter().flatten().chain(self.current.iter())
    }

    /// All values in one vector.
    pub fn to_vec(&self) -> Vec<T> {
        let mut all = Vec::with_capacity(self.len());
        for chunk in &self.full {
            all.extend_from_slice(chunk);
        }
        all.extend_from_slice(&self.current);
        all
    }
}

/// Arrow arrays in chunks: full ones sealed, the last one still growing in a builder.
pub struct ChunkedArray<B> {
    sealed: Vec<ArrayRef>,
    sealed_rows: usize,
    pub current: B,
}

/// What [`ChunkedArray`] needs of the builder of its last chunk.
pub trait ChunkBuilder {
    fn rows(&self) -> usize;
    /// The rows so far as an array, the builder left empty with room for `rows` rows.
    fn seal(&mut self, rows: usize) -> ArrayRef;
    fn snapshot(&self) -> ArrayRef;
}

impl<B: ChunkBuilder> ChunkedArray<B> {
    pub fn new(current: B) -> Self {
        ChunkedArray {
            sealed: Vec::new(),
            sealed_rows: 0,
            current,
        }
    }

    pub fn len(&self) -> usize {
        self.sealed_rows + self.current.rows()
    }

    /// Starts a new chunk when `incoming` more rows would overflow the current one.
    pub fn make_room(&mut self, incoming: usize) {
        let rows = self.current.rows();
        if rows > 0 && rows + incoming > CHUNK_ROWS {
            self.sealed.push(self.current.seal(CHUNK_ROWS));
            self.sealed_rows += rows;
        }
    }

    /// Every row as one array (a copy of the chunks, or of the single chunk).
    pub fn to_array(&self) -> Result<ArrayRef> {
        let last = self.current.snapshot();
        if self.sealed.is_empty() {
            return Ok(last);
        }
        let mut parts: Vec<&dyn datafusion::arrow::array::Array> =
            self.sealed.iter().map(|a| a.as_ref()).collect();
        parts.push(last.as_ref());
        concat(&parts).map_err(LakeError::arrow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_vec_keeps_order_across_chunks() {
        let mut v = ChunkedVec::default();
        let values: Vec<u32> = (0..(2 * CHUNK_ROWS as u32 + 17)).collect();
        for part in values.chunks(CHUNK_ROWS / 3 + 1) {
            v.extend_from_slice(part);
        }
        v.extend([7u32, 8]);
        assert_eq!(v.len(), values.len() + 2);
        assert_eq!(v.full.len(), 2, "two full chunks, then the rest");
        let all = v.to_vec();
        assert_eq!(&all[..values.len()], &values[..]);
        assert_eq!(&all[values.len()..], &[7, 8]);
        assert!(v.iter().copied().eq(all.iter().copied()));
    }
}
