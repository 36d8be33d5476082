//! The byte format of a write batch inside a WAL record.
//!
//! Hand-written (not serde) because it sits on the hottest path of ingest and its layout is
//! part of the on-disk format, documented in `docs/LAKE.md`. All integers are little-endian.
//!
//! Records are columnar (version 2): each table's names and tag sets once, then one array a
//! column, so a row of the plant payload (8 floats) costs 76 bytes instead of about 180.
//!
//! ```text
//! batch  := 0xC2 str(database) u32(table count) table*
//! table  := str(measurement) u32(series count) series* u32(row count)
//!           u32[rows](series of row) i64[rows](time) u16(column count) column*
//! series := u16(tag count) (str(key) str(value))*
//! column := str(name) u8(type) u8(has gaps) [u8[rows](1 = value present)] values
//! values := f64[rows] | i64[rows] | u64[rows] | str[rows] | u8[rows]
//!           type: 0 f64 | 1 i64 | 2 u64 | 3 str | 4 bool
//! str    := u32(byte length) utf-8 bytes
//! ```
//!
//! Version 1 records (one point after another) are still read, so a WAL left by an older
//! doppel replays:
//!
//! ```text
//! batch  := str(database) u32(point count) point*
//! point  := str(measurement) i64(time) u16(tag count) (str str)* u16(field count) (str value)*
//! value  := u8(type) payload      type: 0 f64 | 1 i64 | 2 u64 | 3 str | 4 bool (u8)
//! ```
//! A version 1 record starts with its database name's length (1 to 64), never with 0xC2.

use doppel_core::columnar::{ColumnValues, ColumnarBatch, FieldColumn, TableRows};
use doppel_core::{FieldValue, Point, WriteBatch};

const VERSION_2: u8 = 0xC2;

pub fn encode(batch: &ColumnarBatch, out: &mut Vec<u8>) {
    // An estimate from the shapes alone: counting present values would walk every validity
    // vector on the hot path just to size a buffer.
    let columns: usize = batch.tables.iter().map(|t| t.fields.len() * t.len()).sum();
    out.reserve(64 + batch.rows() * 12 + columns * 8);
    out.push(VERSION_2);
    put_str(out, &batch.database);
    put_u32(out, batch.tables.len());
    for table in &batch.tables {
        put_str(out, &table.measurement);
        put_u32(out, table.series.len());
        for tags in &table.series {
            out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
            for (key, value) in tags {
                put_str(out, key);
                put_str(out, value);
            }
        }
        put_u32(out, table.len());
        for s in &table.series_of_row {
            out.extend_from_slice(&s.to_le_bytes());
        }
        for t in &table.times {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&(table.fields.len() as u16).to_le_bytes());
        for column in &table.fields {
            put_str(out, &column.name);
            out.push(type_code(&column.values));
            match &column.valid {
                None => out.push(0),
                Some(valid) => {
                    out.push(1);
                    out.extend(valid.iter().map(|&v| v as u8));
                }
            }
            match &column.values {
                ColumnValues::Float(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                ColumnValues::Integer(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                ColumnValues::UInteger(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                ColumnValues::String(v) => v.iter().for_each(|x| put_str(out, x)),
                ColumnValues::Boolean(v) => out.extend(v.iter().map(|&x| x as u8)),
            }
        }
    }
}

fn type_code(values: &ColumnValues) -> u8 {
    match values {
        ColumnValues::Float(_) => 0,
        ColumnValues::Integer(_) => 1,
        ColumnValues::UInteger(_) => 2,
        ColumnValues::String(_) => 3,
        ColumnValues::Boolean(_) => 4,
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// Decodes a record of either version. Version 1 points go through the same builder as any
/// point write, so they come back as the columns they would be written as today; `Err` names
/// what was malformed (the record passed its checksum, so this means a bug or a format from
/// another version, never a torn write).
pub fn decode_any(bytes: &[u8]) -> Result<ColumnarBatch, String> {
    if bytes.first() == Some(&VERSION_2) {
        return decode(bytes);
    }
    let points = decode_v1(bytes)?;
    let (batch, refused) = ColumnarBatch::from_points(&points);
    match refused.first() {
        None => Ok(batch),
        Some((index, why)) => Err(format!("point {index} of a version 1 record: {why}")),
    }
}

fn decode(bytes: &[u8]) -> Result<ColumnarBatch, String> {
    let mut r = Reader { bytes, pos: 1 };
    let database = r.string()?;
    let table_count = r.u32()? as usize;
    let mut tables = Vec::with_capacity(table_count.min(1 << 16));
    for _ in 0..table_count {
        let measurement = r.string()?;
        let series_count = r.u32()? as usize;
        let mut series = Vec::with_capacity(series_count.min(1 << 20));
        for _ in 0..series_count {
            let tag_count = r.u16()?;
            let mut tags = Vec::with_capacity(tag_count as usize);
            for _ in 0..tag_count {
                tags.push((r.string()?, r.string()?));
            }
            series.push(tags);
        }
        let rows = r.u32()? as usize;
        let series_of_row: Vec<u32> = r.array::<4, _>(rows, u32::from_le_bytes)?;
        if let Some(bad) = series_of_row.iter().find(|&&s| s as usize >= series_count) {
            return Err(format!("series {bad} of a table with {series_count}"));
        }
        let times = r.array::<8, _>(rows, i64::from_le_bytes)?;
        let column_count = r.u16()?;
        let mut fields = Vec::with_capacity(column_count as usize);
        for _ in 0..column_count {
            let name = r.string()?;
            let code = r.take::<1>()?[0];
            let valid = match r.take::<1>()?[0] {
                0 => None,
                _ => Some(r.array::<1, _>(rows, |b| b[0] != 0)?),
            };
            let values = match code {
                0 => ColumnValues::Float(r.array::<8, _>(rows, f64::from_le_bytes)?),
                1 => ColumnValues::Integer(r.array::<8, _>(rows, i64::from_le_bytes)?),
                2 => ColumnValues::UInteger(r.array::<8, _>(rows, u64::from_le_bytes)?),
                3 => ColumnValues::String((0..rows).map(|_| r.string()).collect::<Result<_, _>>()?),
                4 => ColumnValues::Boolean(r.array::<1, _>(rows, |b| b[0] != 0)?),
                t => return Err(format!("unknown column type {t} at byte {}", r.pos - 2)),
            };
            fields.push(FieldColumn {
                name,
                values,
                valid,
            });
        }
        tables.push(TableRows {
            measurement,
            series,
            series_of_row,
            times,
            fields,
            sources: Vec::new(),
        });
    }
    r.finish()?;
    Ok(ColumnarBatch { database, tables })
}

/// Writes a version 1 record: only for the tests that such records still replay.
#[cfg(test)]
pub(crate) fn encode_v1(batch: &WriteBatch, out: &mut Vec<u8>) {
    put_str(out, &batch.database);
    out.extend_from_slice(&(batch.points.len() as u32).to_le_bytes());
    for point in &batch.points {
        put_str(out, &point.measurement);
        out.extend_from_slice(&point.time.to_le_bytes());
        out.extend_from_slice(&(point.tags.len() as u16).to_le_bytes());
        for (key, value) in &point.tags {
            put_str(out, key);
            put_str(out, value);
        }
        out.extend_from_slice(&(point.fields.len() as u16).to_le_bytes());
        for (key, value) in &point.fields {
            put_str(out, key);
            match value {
                FieldValue::Float(v) => {
                    out.push(0);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::Integer(v) => {
                    out.push(1);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::UInteger(v) => {
                    out.push(2);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                FieldValue::String(v) => {
                    out.push(3);
                    put_str(out, v);
                }
                FieldValue::Boolean(v) => {
                    out.push(4);
                    out.push(*v as u8);
                }
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn decode_v1(bytes: &[u8]) -> Result<WriteBatch, String> {
    let mut r = Reader { bytes, pos: 0 };
    let database = r.string()?;
    let count = r.u32()? as usize;
    let mut points = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let measurement = r.string()?;
        let time = i64::from_le_bytes(r.take::<8>()?);
        let tag_count = r.u16()?;
        let mut tags = Vec::with_capacity(tag_count as usize);
        for _ in 0..tag_count {
            tags.push((r.string()?, r.string()?));
        }
        let field_count = r.u16()?;
        let mut fields = Vec::with_capacity(field_count as usize);
        for _ in 0..field_count {
            let key = r.string()?;
            let value = match r.take::<1>()?[0] {
                0 => FieldValue::Float(f64::from_le_bytes(r.take::<8>()?)),
                1 => FieldValue::Integer(i64::from_le_bytes(r.take::<8>()?)),
                2 => FieldValue::UInteger(u64::from_le_bytes(r.take::<8>()?)),
                3 => FieldValue::String(r.string()?),
                4 => FieldValue::Boolean(r.take::<1>()?[0] != 0),
                t => return Err(format!("unknown value type {t} at byte {}", r.pos - 1)),
            };
            fields.push((key, value));
        }
        points.push(Point {
            measurement,
            tags,
            fields,
            time,
        });
    }
    r.finish()?;
    Ok(WriteBatch { database, points })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.pos + N;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| format!("record ends early at byte {}", self.pos))?;
        self.pos = end;
        Ok(slice.try_into().expect("slice has N bytes"))
    }

    /// `n` fixed-size items.
    fn array<const N: usize, T>(
        &mut self,
        n: usize,
        item: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        let len = n.checked_mul(N).ok_or("array length overflows")?;
        let slice = self.bytes.get(self.pos..self.pos + len).ok_or_else(|| {
            format!(
                "{n} items of {N} bytes run past the record at byte {}",
                self.pos
            )
        })?;
        self.pos += len;
        Ok(slice
            .chunks_exact(N)
            .map(|c| item(c.try_into().expect("chunk has N bytes")))
            .collect())
    }

    fn finish(&self) -> Result<(), String> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            left => Err(format!("{left} bytes left over after the batch")),
        }
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take::<2>()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let slice = self.bytes.get(self.pos..self.pos + len).ok_or_else(|| {
            format!(
                "string of {len} bytes runs past the record at byte {}",
                self.pos
            )
        })?;
        self.pos += len;
        String::from_utf8(slice.to_vec())
            .map_err(|_| format!("string at byte {} is not UTF-8", self.pos - len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points() -> WriteBatch {
        let point = |tags: Vec<(String, String)>, fields, time| Point {
            measurement: "m".into(),
            tags,
            fields,
            time,
        };
        WriteBatch {
            database: "db".into(),
            points: vec![
                point(
                    vec![("a".into(), "x".into())],
                    vec![
                        ("f".into(), FieldValue::Float(-1.5)),
                        ("i".into(), FieldValue::Integer(i64::MIN)),
                        ("u".into(), FieldValue::UInteger(u64::MAX)),
                        ("s".into(), FieldValue::String("héllo".into())),
                        ("b".into(), FieldValue::Boolean(true)),
                    ],
                    42,
                ),
                point(vec![], vec![("f".into(), FieldValue::Float(2.0))], 43),
            ],
        }
    }

    #[test]
    fn round_trips_every_type_and_gap() {
        let (batch, refused) = ColumnarBatch::from_points(&points());
        assert!(refused.is_empty());
        let mut bytes = Vec::new();
        encode(&batch, &mut bytes);
        let back = decode_any(&bytes).unwrap();
        assert_eq!(back.to_points(), batch.to_points());
        assert_eq!(back.tables[0].fields[1].valid, Some(vec![true, false]));
        assert!(decode_any(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_any(&longer).unwrap_err().contains("left over"));
    }

    #[test]
    fn version_1_records_still_read() {
        let batch = points();
        let mut bytes = Vec::new();
        encode_v1(&batch, &mut bytes);
        assert_ne!(bytes[0], VERSION_2);
        assert_eq!(decode_any(&bytes).unwrap().to_points(), batch.points);
        assert!(decode_any(&bytes[..bytes.len() - 1]).is_err());
    }
}
