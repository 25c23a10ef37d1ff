//! Relaying one result built from several backends' results: the column definitions of the
//! first, then every backend's rows in turn (re-sequenced, still not decoded), then one
//! terminator. Only for reads whose correct answer is exactly that concatenation.

use tokio::io::AsyncWrite;

use super::conn::{BackendConn, MORE_RESULTS};
use super::BackendError;
use crate::protocol::{
    eof_payload, is_eof_or_ok_terminator, ok_payload, parse_eof, parse_err, parse_ok,
    read_lenenc_int, PacketWriter, ServerError, StatusFlags,
};

/// Why a scatter relay stopped.
#[derive(Debug)]
pub enum ScatterError {
    /// A backend failed; `next_seq` is where an error packet must go (`forwarded` says
    /// whether the client already has part of the result). The backend's connection is broken.
    Backend {
        source: BackendError,
        forwarded: bool,
        next_seq: u8,
    },
    /// A backend answered with an error before anything was sent: it goes to the client as is.
    Server(ServerError),
    /// The client went away.
    Client(std::io::Error),
    /// The result can't be merged exactly (an ORDER BY column of a type or collation the
    /// router doesn't compare like the server); nothing was sent.
    Unsupported(String),
}

/// Relays the results of `conns` (each already sent the same read) as one result set, at
/// most `limit` rows (the rest is read and dropped so that the connections stay usable); with
/// `order`, the shards' sorted results are merged by those result columns. Returns the number
/// of rows relayed.
pub async fn concat<W: AsyncWrite + Unpin>(
    conns: &mut [&mut BackendConn],
    client: &mut PacketWriter<W>,
    deprecate_eof: bool,
    limit: Option<u64>,
    order: &[(String, bool)],
    binary: bool,
) -> Result<u64, ScatterError> {
    if !order.is_empty() {
        return super::merge::merge_sorted(conns, client, deprecate_eof, limit, order, binary)
            .await;
    }
    let mut seq: u8 = 1;
    let mut rows = 0u64;
    let mut warnings = 0u16;
    let mut forwarded = false;
    let mut status = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();
    for (i, conn) in conns.iter_mut().enumerate() {
        let fail = |conn: &mut BackendConn, source, forwarded, seq| {
            conn.broken = true;
            ScatterError::Backend {
                source,
                forwarded,
                next_seq: seq,
            }
        };
        let (_, _, first) = conn.read_raw().await.map_err(|e| ScatterError::Backend {
            source: e,
            forwarded,
            next_seq: seq,
        })?;
        if first.first() == Some(&0xff) {
            let e = parse_err(&first).unwrap_or_else(malformed_error);
            if forwarded {
                return Err(fail(conn, BackendError::Server(e), true, seq));
            }
            return Err(ScatterError::Server(e));
        }
        let mut pos = 0;
        let Some(columns) = read_lenenc_int(&first, &mut pos).filter(|_| first.first() != Some(&0))
        else {
            let what = BackendError::Protocol("a shard answered a read without rows".into());
            return Err(fail(conn, what, forwarded, seq));
        };
        if i == 0 {
            seq = client.push(seq, &first);
        }
        let header = columns as usize + usize::from(!deprecate_eof);
        for _ in 0..header {
            let (_, _, p) = conn.read_raw().await.map_err(|e| ScatterError::Backend {
                source: e,
                forwarded,
                next_seq: seq,
            })?;
            if i == 0 {
                seq = client.push(seq, &p);
            }
        }
        forwarded = true;
        loop {
            let p = match next_row(conn, deprecate_eof).await {
                Ok(Next::Row(p)) => p,
                Ok(Next::End {
                    warnings: w,
                    status: st,
                }) => {
                    warnings = warnings.saturating_add(w);
                    status = st;
                    break;
                }
                Err(e) => return Err(fail(conn, e, true, seq)),
            };
            if limit.is_some_and(|l| rows >= l) {
                continue;
            }
            seq = client.push(seq, &p);
            rows += 1;
            if client.pending() >= 64 * 1024 {
                client.flush().await.map_err(ScatterError::Client)?;
            }
        }
    }
    finish(client, seq, status, warnings, deprecate_eof).await?;
    Ok(rows)
}

/// Relays the results of a `COUNT`-only read sent to every conn: the first conn's column
/// definitions and one row holding, for each column, the sum of the shards' counts.
pub async fn sum_counts<W: AsyncWrite + Unpin>(
    conns: &mut [&mut BackendConn],
    client: &mut PacketWriter<W>,
    deprecate_eof: bool,
    binary: bool,
) -> Result<(), ScatterError> {
    let mut header: Vec<bytes::BytesMut> = Vec::new();
    let mut sums: Vec<i64> = Vec::new();
    let mut warnings = 0u16;
    let mut status = StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits();
    for (i, conn) in conns.iter_mut().enumerate() {
        let lost = |source| ScatterError::Backend {
            source,
            forwarded: false,
            next_seq: 1,
        };
        let (_, _, first) = conn.read_raw().await.map_err(lost)?;
        if first.first() == Some(&0xff) {
            return Err(ScatterError::Server(parse_err(&first).unwrap_or(
                ServerError {
                    code: 2027,
                    sqlstate: "HY000".into(),
                    message: "malformed error packet from a shard".into(),
                    raw: None,
                },
            )));
        }
        let mut pos = 0;
        let n = read_lenenc_int(&first, &mut pos)
            .filter(|n| *n > 0 && first.first() != Some(&0))
            .ok_or_else(|| {
                conn.broken = true;
                lost(BackendError::Protocol(
                    "a shard answered a count without rows".into(),
                ))
            })? as usize;
        if i == 0 {
            header.push(first);
            sums = vec![0; n];
        } else if n != sums.len() {
            conn.broken = true;
            return Err(lost(BackendError::Protocol(
                "shards disagree on the columns".into(),
            )));
        }
        for _ in 0..n {
            let (_, _, def) = conn.read_raw().await.map_err(lost)?;
            if column_type(&def) != Some(0x08) {
                conn.broken = true;
                return Err(lost(BackendError::Protocol(
                    "a COUNT column that is not a BIGINT".into(),
                )));
            }
            if i == 0 {
                header.push(def);
            }
        }
        if !deprecate_eof {
            conn.read_raw().await.map_err(lost)?;
        }
        let mut rows = 0;
        loop {
            let p = match next_row(conn, deprecate_eof).await {
                Ok(Next::Row(p)) => p,
                Ok(Next::End {
                    warnings: w,
                    status: st,
                }) => {
                    warnings = warnings.saturating_add(w);
                    status = st & !MORE_RESULTS;
                    break;
                }
                Err(BackendError::Server(e)) => return Err(ScatterError::Server(e)),
                Err(e) => return Err(lost(e)),
            };
            rows += 1;
            let counts = if binary {
                binary_counts(&p, n)
            } else {
                text_counts(&p, n)
            };
            let Some(counts) = counts.filter(|_| rows == 1) else {
                conn.broken = true;
                return Err(lost(BackendError::Protocol(
                    "a shard's count row could not be read".into(),
                )));
            };
            for (s, c) in sums.iter_mut().zip(counts) {
                *s = s.saturating_add(c);
            }
        }
    }
    let mut seq = 1u8;
    for p in &header {
        seq = client.push(seq, p);
    }
    if !deprecate_eof {
        seq = client.push(
            seq,
            &eof_payload(StatusFlags::from_bits_truncate(status), 0),
        );
    }
    let mut row = Vec::with_capacity(16 * sums.len());
    if binary {
        row.push(0);
        row.extend(std::iter::repeat_n(0u8, (sums.len() + 9) / 8));
        for s in &sums {
            row.extend_from_slice(&s.to_le_bytes());
        }
    } else {
        for s in &sums {
            crate::protocol::put_lenenc_bytes(&mut row, s.to_string().as_bytes());
        }
    }
    seq = client.push(seq, &row);
    finish(client, seq, status, warnings, deprecate_eof).await
}

/// The type byte of a column definition packet.
pub(crate) fn column_type(def: &[u8]) -> Option<u8> {
    let mut pos = 0;
    for _ in 0..6 {
        crate::protocol::read_lenenc_bytes(def, &mut pos)?;
    }
    // length of the fixed fields (0x0c), charset (2), column length (4), then the type.
    pos += 1 + 2 + 4;
    def.get(pos).copied()
}

fn text_counts(row: &[u8], n: usize) -> Option<Vec<i64>> {
    let mut pos = 0;
    (0..n)
        .map(|_| {
            let v = crate::protocol::read_lenenc_bytes(row, &mut pos)?;
            std::str::from_utf8(v).ok()?.parse().ok()
        })
        .collect()
}

fn binary_counts(row: &[u8], n: usize) -> Option<Vec<i64>> {
    let bitmap = (n + 9) / 8;
    if row.first() != Some(&0) || row.get(1..1 + bitmap)?.iter().any(|b| *b != 0) {
        return None;
    }
    let mut pos = 1 + bitmap;
    (0..n)
        .map(|_| {
            let b: [u8; 8] = row.get(pos..pos + 8)?.try_into().ok()?;
            pos += 8;
            Some(i64::from_le_bytes(b))
        })
        .collect()
}

/// A shard's next row, or the end of its result.
pub(super) enum Next {
    Row(bytes::BytesMut),
    End { warnings: u16, status: u16 },
}

/// Reads the next packet of a result's row stream: a row, or the terminator (whose status the
/// connection keeps). An error packet, a second result or a broken connection is an error, and
/// the connection is then marked broken.
pub(super) async fn next_row(
    conn: &mut BackendConn,
    deprecate_eof: bool,
) -> Result<Next, BackendError> {
    let (_, _, p) = conn.read_raw().await?;
    if p.first() == Some(&0xff) {
        conn.broken = true;
        return Err(BackendError::Server(
            parse_err(&p).unwrap_or_else(malformed_error),
        ));
    }
    if is_eof_or_ok_terminator(&p) {
        let (w, st) = if deprecate_eof {
            parse_ok(&p)
                .map(|ok| (ok.warnings, ok.status))
                .unwrap_or((0, 0))
        } else {
            parse_eof(&p).unwrap_or((0, 0))
        };
        if st & MORE_RESULTS != 0 {
            conn.broken = true;
            return Err(BackendError::Protocol(
                "a shard sent several results".into(),
            ));
        }
        conn.status = st;
        return Ok(Next::End {
            warnings: w,
            status: st,
        });
    }
    Ok(Next::Row(p))
}

/// What a shard's unreadable error packet becomes.
pub(super) fn malformed_error() -> ServerError {
    ServerError {
        code: 2027,
        sqlstate: "HY000".into(),
        message: "malformed error packet from a shard".into(),
        raw: None,
    }
}

/// Ends a gathered result set: the terminator the client's protocol flavour expects (an OK
/// with the 0xfe header under DEPRECATE_EOF, else an EOF), then one flush.
pub(super) async fn finish<W: AsyncWrite + Unpin>(
    client: &mut PacketWriter<W>,
    seq: u8,
    status: u16,
    warnings: u16,
    deprecate_eof: bool,
) -> Result<(), ScatterError> {
    let status = StatusFlags::from_bits_truncate(status & !MORE_RESULTS);
    if deprecate_eof {
        client.push(seq, &ok_payload(0, 0, status, warnings, 0xfe));
    } else {
        client.push(seq, &eof_payload(status, warnings));
    }
    client.flush().await.map_err(ScatterError::Client)
}
