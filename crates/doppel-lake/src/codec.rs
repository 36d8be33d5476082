//! The byte format of a write batch inside a WAL record.
//!
//! Hand-written (not serde) because it sits on the hottest path of ingest and its layout is
//! part of the on-disk format, documented in `docs/LAKE.md`. All integers are little-endian.
//!
//! ```text
//! batch  := str(database) u32(point count) point*
//! point  := str(measurement) i64(time) u16(tag count) (str str)* u16(field count) (str value)*
//! value  := u8(type) payload      type: 0 f64 | 1 i64 | 2 u64 | 3 str | 4 bool (u8)
//! str    := u32(byte length) utf-8 bytes
//! ```

use doppel_core::{FieldValue, Point, WriteBatch};

pub fn encode(batch: &WriteBatch, out: &mut Vec<u8>) {
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

/// Decodes a batch; `Err` names what was malformed (the record passed its checksum, so this
/// means a bug or a format from another version, never a torn write).
pub fn decode(bytes: &[u8]) -> Result<WriteBatch, String> {
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
    if r.pos != bytes.len() {
        return Err(format!(
            "{} bytes left over after the batch",
            bytes.len() - r.pos
        ));
    }
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

    #[test]
    fn round_trips_every_type() {
        let batch = WriteBatch {
            database: "db".into(),
            points: vec![Point {
                measurement: "m".into(),
                tags: vec![("a".into(), "x".into())],
                fields: vec![
                    ("f".into(), FieldValue::Float(-1.5)),
                    ("i".into(), FieldValue::Integer(i64::MIN)),
                    ("u".into(), FieldValue::UInteger(u64::MAX)),
                    ("s".into(), FieldValue::String("héllo".into())),
                    ("b".into(), FieldValue::Boolean(true)),
                ],
                time: 42,
            }],
        };
        let mut bytes = Vec::new();
        encode(&batch, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), batch);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
