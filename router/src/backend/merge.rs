//! Merging shards' sorted results: each shard ran the same `ORDER BY` read; the router picks
//! the smallest head row among them, again and again. Only sort keys the router compares
//! exactly as the server does are accepted: integers, decimals, dates and times, and strings
//! in binary or `_bin` collations; anything else is refused before a byte is sent.

use std::cmp::Ordering;

use bytes::BytesMut;
use tokio::io::AsyncWrite;

use super::conn::BackendConn;
use super::scatter::{malformed_error, next_row, Next, ScatterError};
use super::BackendError;
use crate::protocol::{
    eof_payload, parse_err, read_lenenc_bytes, read_lenenc_int, PacketWriter, StatusFlags,
};

/// How one sort column compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Int {
        unsigned: bool,
        width: usize,
    },
    Decimal,
    /// DATE, DATETIME, TIMESTAMP: text sorts as written; binary is decoded.
    Temporal,
    /// Binary strings compare byte by byte; `_bin` collations ignore trailing spaces.
    Bytes {
        pad_space: bool,
    },
}

/// A decoded sort key value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Null,
    Int(i128),
    Dec(Vec<u8>),
    Bytes(Vec<u8>),
    Time([u32; 7]),
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: u8,
    flags: u16,
    charset: u16,
}

fn parse_column(def: &[u8]) -> Option<Column> {
    let mut pos = 0;
    for _ in 0..4 {
        read_lenenc_bytes(def, &mut pos)?;
    }
    let name = String::from_utf8_lossy(read_lenenc_bytes(def, &mut pos)?).into_owned();
    read_lenenc_bytes(def, &mut pos)?;
    pos += 1;
    let charset = u16::from_le_bytes(def.get(pos..pos + 2)?.try_into().ok()?);
    pos += 2 + 4;
    let ty = *def.get(pos)?;
    let flags = u16::from_le_bytes(def.get(pos + 1..pos + 3)?.try_into().ok()?);
    Some(Column {
        name,
        ty,
        flags,
        charset,
    })
}

fn key_kind(c: &Column) -> Result<KeyKind, String> {
    const UNSIGNED: u16 = 0x20;
    let unsigned = c.flags & UNSIGNED != 0;
    Ok(match c.ty {
        0x01 => KeyKind::Int { unsigned, width: 1 },
        0x02 | 0x0d => KeyKind::Int { unsigned, width: 2 },
        0x03 | 0x09 => KeyKind::Int { unsigned, width: 4 },
        0x08 => KeyKind::Int { unsigned, width: 8 },
        0x00 | 0xf6 => KeyKind::Decimal,
        0x07 | 0x0a | 0x0c => KeyKind::Temporal,
        0x0f | 0xfc | 0xfd | 0xfe => {
            if c.charset == 63 {
                KeyKind::Bytes { pad_space: false }
            } else {
                use mysql_common::collations::{Collation, CollationId};
                let coll = Collation::from(CollationId::from(c.charset));
                if coll.collation().ends_with("_bin") {
                    KeyKind::Bytes { pad_space: true }
                } else {
                    return Err(format!(
                        "ORDER BY `{}` (collation {}) over several shards; order by a column \
                         with a _bin collation",
                        c.name,
                        coll.collation()
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "ORDER BY `{}` (column type {other:#04x}) over several shards",
                c.name
            ))
        }
    })
}

/// Compares two non-negative or negative decimal texts numerically.
fn cmp_decimal(a: &[u8], b: &[u8]) -> Ordering {
    fn split(s: &[u8]) -> (bool, &[u8], &[u8]) {
        let (neg, s) = match s.first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = match s.iter().position(|&c| c == b'.') {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => (s, &s[s.len()..]),
        };
        let int = &int[int.iter().position(|&c| c != b'0').unwrap_or(int.len())..];
        let frac = &frac[..frac.iter().rposition(|&c| c != b'0').map_or(0, |i| i + 1)];
        let zero = int.is_empty() && frac.is_empty();
        (neg && !zero, int, frac)
    }
    let (na, ia, fa) = split(a);
    let (nb, ib, fb) = split(b);
    let magnitude = ia
        .len()
        .cmp(&ib.len())
        .then_with(|| ia.cmp(ib))
        .then_with(|| fa.cmp(fb));
    match (na, nb) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

fn cmp_key(a: &Key, b: &Key) -> Ordering {
    match (a, b) {
        (Key::Null, Key::Null) => Ordering::Equal,
        (Key::Null, _) => Ordering::Less,
        (_, Key::Null) => Ordering::Greater,
        (Key::Int(x), Key::Int(y)) => x.cmp(y),
        (Key::Dec(x), Key::Dec(y)) => cmp_decimal(x, y),
        (Key::Bytes(x), Key::Bytes(y)) => x.cmp(y),
        (Key::Time(x), Key::Time(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn text_key(v: Option<&[u8]>, kind: KeyKind) -> Option<Key> {
    let Some(v) = v else {
        return Some(Key::Null);
    };
    Some(match kind {
        KeyKind::Int { .. } => Key::Int(std::str::from_utf8(v).ok()?.parse().ok()?),
        KeyKind::Decimal => Key::Dec(v.to_vec()),
        KeyKind::Temporal => Key::Bytes(v.to_vec()),
        KeyKind::Bytes { pad_space } => Key::Bytes(trim(v, pad_space)),
    })
}

fn trim(v: &[u8], pad_space: bool) -> Vec<u8> {
    if pad_space {
        let end = v.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
        v[..end].to_vec()
    } else {
        v.to_vec()
    }
}

/// The sort keys of a text row.
fn text_keys(row: &[u8], want: &[(usize, KeyKind)]) -> Option<Vec<Key>> {
    let last = want.iter().map(|w| w.0).max()?;
    let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(last + 1);
    let mut pos = 0;
    for _ in 0..=last {
        if row.get(pos) == Some(&0xfb) {
            pos += 1;
            fields.push(None);
        } else {
            fields.push(Some(read_lenenc_bytes(row, &mut pos)?));
        }
    }
    want.iter().map(|(i, k)| text_key(fields[*i], *k)).collect()
}

/// The sort keys of a binary row, skipping other columns by their types.
fn binary_keys(row: &[u8], cols: &[Column], want: &[(usize, KeyKind)]) -> Option<Vec<Key>> {
    let n = cols.len();
    let bitmap = row.get(1..1 + (n + 9) / 8)?;
    let mut pos = 1 + bitmap.len();
    let mut keys: Vec<Option<Key>> = vec![None; n];
    let last = want.iter().map(|w| w.0).max()?;
    for (i, c) in cols.iter().enumerate().take(last + 1) {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            keys[i] = Some(Key::Null);
            continue;
        }
        let kind = want.iter().find(|w| w.0 == i).map(|w| w.1);
        let fixed = |len: usize, pos: &mut usize| -> Option<&[u8]> {
            let b = row.get(*pos..*pos + len)?;
            *pos += len;
            Some(b)
        };
        match c.ty {
            0x01 | 0x02 | 0x0d | 0x03 | 0x09 | 0x08 | 0x04 | 0x05 => {
                let width = match c.ty {
                    0x01 => 1,
                    0x02 | 0x0d => 2,
                    0x03 | 0x09 | 0x04 => 4,
                    _ => 8,
                };
                let b = fixed(width, &mut pos)?;
                if let Some(KeyKind::Int { unsigned, .. }) = kind {
                    let mut buf = [0u8; 8];
                    buf[..width].copy_from_slice(b);
                    let raw = u64::from_le_bytes(buf);
                    let v = if unsigned {
                        i128::from(raw)
                    } else {
                        let shift = 64 - 8 * width as u32;
                        i128::from(((raw << shift) as i64) >> shift)
                    };
                    keys[i] = Some(Key::Int(v));
                }
            }
            0x07 | 0x0a | 0x0c | 0x0b => {
                let len = usize::from(*row.get(pos)?);
                pos += 1;
                let b = fixed(len, &mut pos)?;
                if kind.is_some() {
                    let mut t = [0u32; 7];
                    if b.len() >= 4 {
                        t[0] = u32::from(u16::from_le_bytes([b[0], b[1]]));
                        t[1] = u32::from(b[2]);
                        t[2] = u32::from(b[3]);
                    }
                    if b.len() >= 7 {
                        t[3] = u32::from(b[4]);
                        t[4] = u32::from(b[5]);
                        t[5] = u32::from(b[6]);
                    }
                    if b.len() >= 11 {
                        t[6] = u32::from_le_bytes([b[7], b[8], b[9], b[10]]);
                    }
                    keys[i] = Some(Key::Time(t));
                }
            }
            _ => {
                let b = read_lenenc_bytes(row, &mut pos)?;
                match kind {
                    Some(KeyKind::Decimal) => keys[i] = Some(Key::Dec(b.to_vec())),
                    Some(KeyKind::Bytes { pad_space }) => {
                        keys[i] = Some(Key::Bytes(trim(b, pad_space)))
                    }
                    _ => {}
                }
            }
        }
    }
    want.iter().map(|(i, _)| keys[*i].clone()).collect()
}

fn cmp_keys(a: &[Key], b: &[Key], desc: &[bool]) -> Ordering {
    for ((x, y), d) in a.iter().zip(b).zip(desc) {
        let o = cmp_key(x, y);
        let o = if *d { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// See [`super::scatter::concat`]: the sorted merge.
pub async fn merge_sorted<W: AsyncWrite + Unpin>(
    conns: &mut [&mut BackendConn],
    client: &mut PacketWriter<W>,
    deprecate_eof: bool,
    limit: Option<u64>,
    order: &[(String, bool)],
    binary: bool,
) -> Result<u64, ScatterError> {
    let lost = |source, forwarded, next_seq| ScatterError::Backend {
        source,
        forwarded,
        next_seq,
    };
    // Headers first: nothing reaches the client until the merge is known to be exact.
    let mut header: Vec<BytesMut> = Vec::new();
    let mut cols: Vec<Column> = Vec::new();
    for (i, conn) in conns.iter_mut().enumerate() {
        let (_, _, first) = conn.read_raw().await.map_err(|e| lost(e, false, 1))?;
        if first.first() == Some(&0xff) {
            return Err(ScatterError::Server(
                parse_err(&first).unwrap_or_else(malformed_error),
            ));
        }
        let mut pos = 0;
        let n = read_lenenc_int(&first, &mut pos)
            .filter(|n| *n > 0 && first.first() != Some(&0))
            .ok_or_else(|| {
                lost(
                    BackendError::Protocol("a shard answered a read without rows".into()),
                    false,
                    1,
                )
            })? as usize;
        if i == 0 {
            header.push(first);
        }
        for _ in 0..n {
            let (_, _, def) = conn.read_raw().await.map_err(|e| lost(e, false, 1))?;
            if i == 0 {
                cols.push(parse_column(&def).ok_or_else(|| {
                    lost(BackendError::Protocol("unreadable column".into()), false, 1)
                })?);
                header.push(def);
            }
        }
        if !deprecate_eof {
            conn.read_raw().await.map_err(|e| lost(e, false, 1))?;
        }
    }
    let mut want = Vec::with_capacity(order.len());
    for (name, _) in order {
        let mut named = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name.eq_ignore_ascii_case(name));
        let i = match (named.next(), named.next()) {
            (Some((i, _)), None) => i,
            (None, _) => {
                return Err(ScatterError::Unsupported(format!(
                    "ORDER BY `{name}`, which is not a column of the result, over several shards"
                )))
            }
            (Some(_), Some(_)) => {
                return Err(ScatterError::Unsupported(format!(
                    "ORDER BY `{name}`, which names several columns of the result, over several \
                     shards"
                )))
            }
        };
        want.push((i, key_kind(&cols[i]).map_err(ScatterError::Unsupported)?));
    }
    let desc: Vec<bool> = order.iter().map(|o| o.1).collect();
    let keys_of = |row: &[u8]| {
        if binary {
            binary_keys(row, &cols, &want)
        } else {
            text_keys(row, &want)
        }
    };
    let mut seq = 1u8;
    for p in &header {
        seq = client.push(seq, p);
    }
    if !deprecate_eof {
        seq = client.push(seq, &eof_payload(StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0));
    }
    let mut warnings = 0u16;
    let mut status = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();
    let mut heads: Vec<Option<(Vec<Key>, BytesMut)>> = Vec::with_capacity(conns.len());
    for conn in conns.iter_mut() {
        match next_row(conn, deprecate_eof)
            .await
            .map_err(|e| lost(e, true, seq))?
        {
            Next::Row(r) => {
                let k = keys_of(&r).ok_or_else(|| {
                    lost(BackendError::Protocol("unreadable row".into()), true, seq)
                })?;
                heads.push(Some((k, r)));
            }
            Next::End {
                warnings: w,
                status: st,
            } => {
                warnings = warnings.saturating_add(w);
                status = st;
                heads.push(None);
            }
        }
    }
    let mut rows = 0u64;
    loop {
        let mut best: Option<usize> = None;
        for (i, h) in heads.iter().enumerate() {
            if let Some((k, _)) = h {
                let better = match best.and_then(|b| heads[b].as_ref()) {
                    None => true,
                    Some((bk, _)) => cmp_keys(k, bk, &desc) == Ordering::Less,
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let Some(b) = best else {
            break;
        };
        let done = limit.is_some_and(|l| rows >= l);
        if let Some((_, row)) = heads[b].take() {
            if !done {
                seq = client.push(seq, &row);
                rows += 1;
                if client.pending() >= 64 * 1024 {
                    client.flush().await.map_err(ScatterError::Client)?;
                }
            }
        }
        match next_row(conns[b], deprecate_eof)
            .await
            .map_err(|e| lost(e, true, seq))?
        {
            Next::Row(r) => {
                let k = keys_of(&r).ok_or_else(|| {
                    lost(BackendError::Protocol("unreadable row".into()), true, seq)
                })?;
                heads[b] = Some((k, r));
            }
            Next::End {
                warnings: w,
                status: st,
            } => {
                warnings = warnings.saturating_add(w);
                status = st;
            }
        }
    }
    super::scatter::finish(client, seq, status, warnings, deprecate_eof).await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_compare_numerically() {
        let cases: [(&str, &str, Ordering); 8] = [
            ("1.50", "1.5", Ordering::Equal),
            ("-0.00", "0", Ordering::Equal),
            ("10", "9.99", Ordering::Greater),
            ("-10", "-9.99", Ordering::Less),
            ("-1", "1", Ordering::Less),
            ("0.001", "0.01", Ordering::Less),
            ("007", "7.000", Ordering::Equal),
            (
                "123456789012345678901234567890.5",
                "123456789012345678901234567890.4",
                Ordering::Greater,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp_decimal(a.as_bytes(), b.as_bytes()), want, "{a} vs {b}");
        }
    }

    #[test]
    fn nulls_sort_first_and_desc_reverses() {
        let a = vec![Key::Null];
        let b = vec![Key::Int(-5)];
        assert_eq!(cmp_keys(&a, &b, &[false]), Ordering::Less);
        assert_eq!(cmp_keys(&a, &b, &[true]), Ordering::Greater);
        // `_bin` collations pad with spaces: 'a ' equals 'a'.
        let t = text_keys(b"\x02a ", &[(0, KeyKind::Bytes { pad_space: true })]);
        assert_eq!(t, Some(vec![Key::Bytes(b"a".to_vec())]));
        let n = text_keys(
            b"\xfb\x0242",
            &[(
                1,
                KeyKind::Int {
                    unsigned: false,
                    width: 8,
                },
            )],
        );
        assert_eq!(n, Some(vec![Key::Int(42)]));
    }
}
