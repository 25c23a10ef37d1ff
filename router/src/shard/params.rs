//! The values of a COM_STMT_EXECUTE's parameters, as far as the shard planner can use them:
//! integers and strings become [`KeyValue`]s; NULLs, floats, dates and the like are `None`
//! (no shard can be named for them).

use shard_map::sql::quote;
use shard_map::KeyValue;

use crate::protocol::read_lenenc_bytes;

/// Decodes the parameters of an execute packet that carries its types (`new_params_bound = 1`,
/// as the router always sends it): `[0x17, id:4, flags:1, iterations:4, null bitmap,
/// 1, types: 2 per parameter, values]`. Returns one entry per parameter; an empty vector when
/// the packet is malformed.
pub fn decode(packet: &[u8], n: usize) -> Vec<Option<KeyValue>> {
    decode_inner(packet, n, &|_| false).unwrap_or_default()
}

/// Like [`decode`], for parameters some of which were sent with COM_STMT_SEND_LONG_DATA
/// (`long(i)`: their values are not in the packet, and they are `None` here).
pub fn decode_with_long_data(
    packet: &[u8],
    n: usize,
    long: &dyn Fn(usize) -> bool,
) -> Vec<Option<KeyValue>> {
    decode_inner(packet, n, long).unwrap_or_default()
}

/// Whether an execute packet (with its types, as in [`decode`]) holds a complete value of a
/// known type for each of its `n` parameters that is neither NULL nor sent as long data.
pub fn well_formed(packet: &[u8], n: usize, long: &dyn Fn(usize) -> bool) -> bool {
    decode_inner(packet, n, long).is_some()
}

/// One parameter of an execute packet, as it lies in the packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Param<'a> {
    /// NULL (by the null bitmap or the NULL type), or a parameter sent as long data.
    Null,
    /// TINY, SHORT/YEAR, LONG/INT24, LONGLONG: little-endian bytes of their width.
    Int { bytes: &'a [u8], unsigned: bool },
    /// FLOAT (widened) or DOUBLE.
    Float(f64),
    /// DATE, DATETIME, TIMESTAMP, TIME: the binary protocol's structure.
    Temporal { ty: u8, bytes: &'a [u8] },
    /// Length-encoded values: strings, blobs, DECIMAL, ENUM, SET, JSON, BIT, GEOMETRY.
    Bytes { ty: u8, bytes: &'a [u8] },
}

/// The `n` parameters of an execute packet that carries its types (`new_params_bound = 1`,
/// as the router always sends it): `[0x17, id:4, flags:1, iterations:4, null bitmap, 1,
/// types: 2 per parameter, values]`. Parameters for which `long(i)` holds were sent with
/// COM_STMT_SEND_LONG_DATA and have no value in the packet. `None` when the packet is
/// malformed or has a type the binary protocol does not define.
pub(super) fn walk<'a>(
    packet: &'a [u8],
    n: usize,
    long: &dyn Fn(usize) -> bool,
) -> Option<Vec<Param<'a>>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let bitmap_at = 10;
    let bitmap = packet.get(bitmap_at..bitmap_at + n.div_ceil(8))?;
    let mut pos = bitmap_at + bitmap.len();
    if *packet.get(pos)? != 1 {
        return None;
    }
    pos += 1;
    let types = packet.get(pos..pos + 2 * n)?;
    pos += 2 * n;
    let take = |len: usize, pos: &mut usize| -> Option<&'a [u8]> {
        let b = packet.get(*pos..*pos + len)?;
        *pos += len;
        Some(b)
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 || long(i) {
            out.push(Param::Null);
            continue;
        }
        let ty = types[2 * i];
        let unsigned = types[2 * i + 1] & 0x80 != 0;
        let int = |len: usize, pos: &mut usize| {
            take(len, pos).map(|bytes| Param::Int { bytes, unsigned })
        };
        let p = match ty {
            0x01 => int(1, &mut pos)?,
            0x02 | 0x0d => int(2, &mut pos)?,
            0x03 | 0x09 => int(4, &mut pos)?,
            0x08 => int(8, &mut pos)?,
            0x04 => Param::Float(f64::from(f32::from_le_bytes(
                take(4, &mut pos)?.try_into().ok()?,
            ))),
            0x05 => Param::Float(f64::from_le_bytes(take(8, &mut pos)?.try_into().ok()?)),
            0x06 => Param::Null,
            0x07 | 0x0a | 0x0b | 0x0c => {
                let len = usize::from(*packet.get(pos)?);
                pos += 1;
                Param::Temporal {
                    ty,
                    bytes: take(len, &mut pos)?,
                }
            }
            0x00 | 0x0f | 0x10 | 0xf5..=0xff => Param::Bytes {
                ty,
                bytes: read_lenenc_bytes(packet, &mut pos)?,
            },
            _ => return None,
        };
        out.push(p);
    }
    Some(out)
}

/// An integer parameter's value as decimal text (sign-extended from its width unless
/// unsigned).
pub(super) fn int_text(b: &[u8], unsigned: bool) -> String {
    let mut buf = [0u8; 8];
    buf[..b.len()].copy_from_slice(b);
    let raw = u64::from_le_bytes(buf);
    if unsigned {
        raw.to_string()
    } else {
        let shift = 64 - 8 * b.len() as u32;
        (((raw << shift) as i64) >> shift).to_string()
    }
}

fn decode_inner(
    packet: &[u8],
    n: usize,
    long: &dyn Fn(usize) -> bool,
) -> Option<Vec<Option<KeyValue>>> {
    walk(packet, n, long)?
        .into_iter()
        .map(|p| match p {
            Param::Int { bytes, unsigned } => Some(int(bytes, unsigned)),
            // VARCHAR, VAR_STRING, STRING, BLOBs, DECIMAL, JSON
            Param::Bytes {
                ty: 0x0f | 0xfd | 0xfe | 0xfc | 0xf9 | 0xfa | 0xfb | 0xf6,
                bytes,
            } => Some(Some(KeyValue::Str(bytes.to_vec()))),
            // The old DECIMAL type code is not sent by clients.
            Param::Bytes { ty: 0x00, .. } => None,
            // NULL, floats, temporal values, ENUM, SET, BIT, GEOMETRY: no shard can be named.
            Param::Null | Param::Float(_) | Param::Temporal { .. } | Param::Bytes { .. } => {
                Some(None)
            }
        })
        .collect()
}

/// The statement `sql` with each `?` replaced by its parameter from an execute packet (as
/// [`decode`] reads it) written as an SQL literal, for running it through the text protocol:
/// integers and decimals as numbers, floats in exponent form (so they stay DOUBLE), strings
/// quoted (in the connection's character set, as the client sent them), temporal values as
/// typed literals, NULL as NULL. `None` for what can't be written so (long data, bad packets,
/// text that is not UTF-8).
pub fn literal_sql(sql: &str, packet: &[u8], n: usize) -> Option<String> {
    super::literals::substitute(sql, &literals(packet, n)?)
}

fn literals(packet: &[u8], n: usize) -> Option<Vec<String>> {
    walk(packet, n, &|_| false)?
        .into_iter()
        .map(|p| match p {
            Param::Null => Some("NULL".to_string()),
            Param::Int { bytes, unsigned } => Some(int_text(bytes, unsigned)),
            Param::Float(v) => super::literals::float(v),
            Param::Temporal { ty, bytes } => temporal_literal(ty, bytes),
            Param::Bytes {
                ty: 0xf6 | 0x00,
                bytes,
            } => {
                let t = std::str::from_utf8(bytes).ok()?;
                t.bytes()
                    .all(|c| c.is_ascii_digit() || c == b'.' || c == b'-' || c == b'+')
                    .then(|| t.to_string())
            }
            Param::Bytes {
                ty: 0x0f | 0xfc | 0xfd | 0xfe | 0xf9 | 0xfa | 0xfb | 0xf5,
                bytes,
            } => Some(quote(std::str::from_utf8(bytes).ok()?)),
            Param::Bytes { .. } => None,
        })
        .collect()
}

fn temporal_literal(ty: u8, b: &[u8]) -> Option<String> {
    if ty == 0x0b {
        let (neg, days, h, m, s, us) = match b.len() {
            0 => (false, 0, 0, 0, 0, 0),
            8 | 12 => (
                b[0] == 1,
                u32::from_le_bytes(b[1..5].try_into().ok()?),
                b[5],
                b[6],
                b[7],
                if b.len() == 12 {
                    u32::from_le_bytes(b[8..12].try_into().ok()?)
                } else {
                    0
                },
            ),
            _ => return None,
        };
        let hours = days * 24 + u32::from(h);
        let sign = if neg { "-" } else { "" };
        return Some(format!("TIME'{sign}{hours:02}:{m:02}:{s:02}.{us:06}'"));
    }
    let mut f = [0u32; 7];
    if b.len() >= 4 {
        f[0] = u32::from(u16::from_le_bytes([b[0], b[1]]));
        f[1] = u32::from(b[2]);
        f[2] = u32::from(b[3]);
    }
    if b.len() >= 7 {
        f[3] = u32::from(b[4]);
        f[4] = u32::from(b[5]);
        f[5] = u32::from(b[6]);
    }
    if b.len() >= 11 {
        f[6] = u32::from_le_bytes(b[7..11].try_into().ok()?);
    }
    if ty == 0x0a {
        Some(format!("DATE'{:04}-{:02}-{:02}'", f[0], f[1], f[2]))
    } else {
        Some(format!(
            "TIMESTAMP'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
            f[0], f[1], f[2], f[3], f[4], f[5], f[6]
        ))
    }
}

fn int(b: &[u8], unsigned: bool) -> Option<KeyValue> {
    let mut buf = [0u8; 8];
    buf[..b.len()].copy_from_slice(b);
    let raw = u64::from_le_bytes(buf);
    if unsigned {
        return Some(match i64::try_from(raw) {
            Ok(v) => KeyValue::Int(v),
            Err(_) => KeyValue::UInt(raw),
        });
    }
    // Sign-extend from the value's width.
    let shift = 64 - 8 * b.len() as u32;
    Some(KeyValue::Int(((raw << shift) as i64) >> shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(null: u8, types: &[u8], values: &[u8]) -> Vec<u8> {
        let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, null, 1];
        p.extend_from_slice(types);
        p.extend_from_slice(values);
        p
    }

    #[test]
    fn decodes_integers_strings_and_nulls() {
        // (LONGLONG -5), (VAR_STRING "ab"), (NULL via bitmap), (TINY unsigned 200), DOUBLE
        let types = [0x08, 0, 0xfd, 0, 0x03, 0, 0x01, 0x80, 0x05, 0];
        let mut values = (-5i64).to_le_bytes().to_vec();
        values.extend_from_slice(&[2, b'a', b'b']);
        values.push(200);
        values.extend_from_slice(&1.5f64.to_le_bytes());
        let got = decode(&packet(0b0000_0100, &types, &values), 5);
        assert_eq!(
            got,
            vec![
                Some(KeyValue::Int(-5)),
                Some(KeyValue::Str(b"ab".to_vec())),
                None,
                Some(KeyValue::Int(200)),
                None
            ]
        );
        // A signed TINY of 0xff is -1; a truncated packet decodes to nothing.
        assert_eq!(
            decode(&packet(0, &[0x01, 0], &[0xff]), 1),
            vec![Some(KeyValue::Int(-1))]
        );
        assert!(decode(&packet(0, &[0x08, 0], &[1, 2]), 1).is_empty());
    }

    #[test]
    fn parameters_become_literals() {
        let types = [0x08, 0, 0xfd, 0, 0x03, 0, 0x05, 0, 0x0a, 0];
        let mut values = (-5i64).to_le_bytes().to_vec();
        values.extend_from_slice(&[4, b'a', b'\'', b'\\', b'b']);
        values.extend_from_slice(&1.5f64.to_le_bytes());
        values.extend_from_slice(&[4, 0xe8, 0x07, 2, 29]);
        let sql = "SELECT '?', ? FROM t WHERE a = ? AND b IN (?, ?) AND d = ?";
        let got = literal_sql(sql, &packet(0b0000_0100, &types, &values), 5);
        assert_eq!(
            got.as_deref(),
            Some("SELECT '?', -5 FROM t WHERE a = 'a''\\\\b' AND b IN (NULL, 1.5e0) AND d = DATE'2024-02-29'")
        );
    }
}
