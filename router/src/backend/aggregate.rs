//! Running a [`GatherSpec`]: every shard's text result is read whole, the rows are grouped
//! and their partial aggregates combined (exact decimal arithmetic, floats only for DOUBLE
//! results), HAVING, ORDER BY and LIMIT/OFFSET applied, and one result set is written to the
//! client with the shards' column definitions of the visible columns, as text or binary
//! rows. Nothing reaches the client before the merge is known to be exact.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::BytesMut;
use tokio::io::AsyncWrite;

use super::conn::BackendConn;
use super::scatter::{finish, malformed_error, next_row, Next, ScatterError};
use super::values::{cmp_key, format_double, put_binary, CmpKey, ColumnInfo, Dec, Kind};
use super::BackendError;
use crate::protocol::{
    eof_payload, parse_err, put_lenenc_bytes, read_lenenc_bytes, read_lenenc_int, PacketWriter,
    StatusFlags,
};
use crate::shard::gather::{Agg, CmpOp, Col, Cond, GatherSpec, Keyed, Operand, Ref};

type Row = Vec<Option<Vec<u8>>>;

/// One shard's whole result.
#[derive(Debug, Default)]
pub struct ShardRows {
    pub defs: Vec<BytesMut>,
    pub cols: Vec<ColumnInfo>,
    pub rows: Vec<Row>,
    pub warnings: u16,
    pub status: u16,
}

/// Reads a shard's text result set whole.
async fn read_result(
    conn: &mut BackendConn,
    deprecate_eof: bool,
) -> Result<ShardRows, ScatterError> {
    let lost = |source| ScatterError::Backend {
        source,
        forwarded: false,
        next_seq: 1,
    };
    let (_, _, first) = conn.read_raw().await.map_err(lost)?;
    if first.first() == Some(&0xff) {
        return Err(ScatterError::Server(
            parse_err(&first).unwrap_or_else(malformed_error),
        ));
    }
    let mut pos = 0;
    let n = read_lenenc_int(&first, &mut pos)
        .filter(|n| *n > 0 && first.first() != Some(&0))
        .ok_or_else(|| {
            conn.broken = true;
            lost(BackendError::Protocol(
                "a shard answered a read without rows".into(),
            ))
        })? as usize;
    let mut out = ShardRows::default();
    for _ in 0..n {
        let (_, _, def) = conn.read_raw().await.map_err(lost)?;
        let info = ColumnInfo::parse(&def)
            .ok_or_else(|| lost(BackendError::Protocol("unreadable column".into())))?;
        out.cols.push(info);
        out.defs.push(def);
    }
    if !deprecate_eof {
        conn.read_raw().await.map_err(lost)?;
    }
    loop {
        match next_row(conn, deprecate_eof).await {
            Ok(Next::Row(p)) => {
                let mut pos = 0;
                let mut row = Vec::with_capacity(n);
                for _ in 0..n {
                    if p.get(pos) == Some(&0xfb) {
                        pos += 1;
                        row.push(None);
                    } else {
                        let v = read_lenenc_bytes(&p, &mut pos)
                            .ok_or_else(|| lost(BackendError::Protocol("unreadable row".into())))?;
                        row.push(Some(v.to_vec()));
                    }
                }
                out.rows.push(row);
            }
            Ok(Next::End { warnings, status }) => {
                out.warnings = warnings;
                out.status = status;
                return Ok(out);
            }
            Err(BackendError::Server(e)) => return Err(ScatterError::Server(e)),
            Err(e) => return Err(lost(e)),
        }
    }
}

/// Reads every conn's result of `spec.sql`, merges them and writes one result set.
pub async fn gather<W: AsyncWrite + Unpin>(
    conns: &mut [&mut BackendConn],
    client: &mut PacketWriter<W>,
    deprecate_eof: bool,
    spec: &GatherSpec,
    binary: bool,
) -> Result<u64, ScatterError> {
    let mut results = Vec::with_capacity(conns.len());
    for conn in conns.iter_mut() {
        results.push(read_result(conn, deprecate_eof).await?);
    }
    let merged = combine(spec, &results).map_err(ScatterError::Unsupported)?;
    let first = &results[0];
    let visible = first.cols.len() - spec.hidden;
    let mut seq = 1u8;
    let mut count = Vec::new();
    crate::protocol::put_lenenc_int(&mut count, visible as u64);
    seq = client.push(seq, &count);
    for d in &first.defs[..visible] {
        seq = client.push(seq, d);
    }
    let warnings = results
        .iter()
        .fold(0u16, |w, r| w.saturating_add(r.warnings));
    let status = results
        .last()
        .map_or(StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits(), |r| r.status);
    if !deprecate_eof {
        seq = client.push(
            seq,
            &eof_payload(StatusFlags::from_bits_truncate(status), 0),
        );
    }
    let cols = &first.cols[..visible];
    let mut buf = Vec::with_capacity(256);
    for row in &merged {
        buf.clear();
        if binary {
            encode_binary(&mut buf, row, cols).map_err(ScatterError::Unsupported)?;
        } else {
            for v in row {
                match v {
                    None => buf.push(0xfb),
                    Some(v) => put_lenenc_bytes(&mut buf, v),
                }
            }
        }
        seq = client.push(seq, &buf);
        if client.pending() >= 64 * 1024 {
            client.flush().await.map_err(ScatterError::Client)?;
        }
    }
    finish(client, seq, status, warnings, deprecate_eof).await?;
    Ok(merged.len() as u64)
}

fn encode_binary(out: &mut Vec<u8>, row: &Row, cols: &[ColumnInfo]) -> Result<(), String> {
    out.push(0);
    let at = out.len();
    out.extend(std::iter::repeat_n(0u8, (cols.len() + 9) / 8));
    for (i, (v, c)) in row.iter().zip(cols).enumerate() {
        match v {
            None => out[at + (i + 2) / 8] |= 1 << ((i + 2) % 8),
            Some(v) => put_binary(out, v, c)?,
        }
    }
    Ok(())
}

/// A merged aggregate's running state.
#[derive(Debug, Clone)]
enum Acc {
    Count(i128),
    SumDec(Option<Dec>),
    SumFloat(Option<f64>),
    /// The best value so far and its key.
    Best(Option<(CmpKey, Vec<u8>)>),
    AvgDec(Option<Dec>, i128),
    AvgFloat(Option<f64>, i128),
    Distinct(std::collections::HashSet<Vec<u8>>),
}

struct Group {
    first: Row,
    accs: Vec<Acc>,
}

/// The merged rows (visible columns only, as text values) of the shards' `results`.
pub fn combine(spec: &GatherSpec, results: &[ShardRows]) -> Result<Vec<Row>, String> {
    let Some(first) = results.first() else {
        return Ok(Vec::new());
    };
    let cols = &first.cols;
    let n = cols.len();
    if n < spec.hidden || results.iter().any(|r| r.cols.len() != n) {
        return Err("shards answering with different columns".into());
    }
    let visible = n - spec.hidden;
    let idx = |c: Col| match c {
        Col::Item(i) => i,
        Col::Hidden(h) => visible + h,
    };
    let key_of = |row: &Row, k: &Keyed| -> Result<CmpKey, String> {
        cmp_key(
            row[idx(k.value)].as_deref(),
            row[idx(k.weight)].as_deref(),
            &cols[idx(k.value)],
        )
    };
    let mut rows: Vec<Row>;
    if let Some(g) = &spec.grouping {
        if g.alias_group && results.iter().any(|r| r.warnings > 0) {
            return Err(
                "GROUP BY a select alias that is also a column name (the shards warn \
                        that it is ambiguous; MariaDB groups by the column)"
                    .into(),
            );
        }
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        for row in results.iter().flat_map(|r| r.rows.iter()) {
            let mut key = Vec::new();
            for k in &g.keys {
                let v = key_of(row, k).map_err(|e| e.replace("comparing", "grouping by"))?;
                group_key(v, &mut key);
            }
            let gi = match index.get(&key) {
                Some(i) => *i,
                None => {
                    let accs = g
                        .aggs
                        .iter()
                        .map(|a| new_acc(a, cols, &idx))
                        .collect::<Result<_, _>>()?;
                    groups.push(Group {
                        first: row.clone(),
                        accs,
                    });
                    index.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            };
            let grp = &mut groups[gi];
            for (a, acc) in g.aggs.iter().zip(grp.accs.iter_mut()) {
                add(acc, a, row, cols, &idx)?;
            }
        }
        // The merged row: visible items, then the aggregates' final values for HAVING and
        // ORDER BY (kept in `finals`).
        if groups.is_empty() && g.keys.is_empty() && g.count_distinct {
            // No GROUP BY: one row even over no rows (the shards grouped by the DISTINCT
            // arguments, so they sent none).
            let accs = g
                .aggs
                .iter()
                .map(|a| new_acc(a, cols, &idx))
                .collect::<Result<_, _>>()?;
            groups.push(Group {
                first: vec![None; n],
                accs,
            });
        }
        let mut out = Vec::with_capacity(groups.len());
        for grp in groups {
            let finals: Vec<Option<Vec<u8>>> = g
                .aggs
                .iter()
                .zip(&grp.accs)
                .map(|(a, acc)| final_value(a, acc, cols, &idx))
                .collect::<Result<_, _>>()?;
            let value = |r: &Ref| -> Option<Vec<u8>> {
                match r {
                    Ref::Col(k) => grp.first[idx(k.value)].clone(),
                    Ref::Agg(a) => finals[*a].clone(),
                }
            };
            if let Some(h) = &g.having {
                let ctx = Eval {
                    row: &grp.first,
                    finals: &finals,
                    aggs: &g.aggs,
                    cols,
                    idx: &idx,
                };
                if eval(h, &ctx)? != Some(true) {
                    continue;
                }
            }
            let mut keys = Vec::with_capacity(spec.order.len());
            for (r, _) in &spec.order {
                keys.push(match r {
                    Ref::Col(k) => key_of(&grp.first, k)?,
                    Ref::Agg(a) => agg_key(&g.aggs[*a], &finals[*a], &grp.accs[*a], cols, &idx)?,
                });
            }
            let items: Row = g.items.iter().map(value).collect();
            out.push((keys, items));
        }
        sort(&mut out, &spec.order);
        rows = out.into_iter().map(|(_, r)| r).collect();
    } else {
        let mut out = Vec::new();
        for row in results.iter().flat_map(|r| r.rows.iter()) {
            let mut keys = Vec::with_capacity(spec.order.len());
            for (r, _) in &spec.order {
                if let Ref::Col(k) = r {
                    keys.push(key_of(row, k)?);
                }
            }
            out.push((keys, row[..visible].to_vec()));
        }
        sort(&mut out, &spec.order);
        rows = out.into_iter().map(|(_, r)| r).collect();
    }
    let skip = usize::try_from(spec.offset)
        .unwrap_or(usize::MAX)
        .min(rows.len());
    rows.drain(..skip);
    if let Some(l) = spec.limit {
        rows.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    Ok(rows)
}

/// Appends a value's grouping identity to `out`: weights or bytes for strings, numbers by
/// value (`1.50` and `1.5`, `-0` and `0` are one group).
fn group_key(v: CmpKey, out: &mut Vec<u8>) {
    match v {
        CmpKey::Null => out.push(0),
        CmpKey::Bytes(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(&b);
        }
        CmpKey::Int(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_le_bytes());
        }
        CmpKey::Dec(mut d) => {
            while d.scale > 0 && d.mant % 10 == 0 {
                d.mant /= 10;
                d.scale -= 1;
            }
            out.push(3);
            out.extend_from_slice(&d.mant.to_le_bytes());
            out.extend_from_slice(&d.scale.to_le_bytes());
        }
        CmpKey::Float(f) => {
            let f = if f == 0.0 { 0.0 } else { f };
            out.push(4);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
}

fn sort(rows: &mut [(Vec<CmpKey>, Row)], order: &[(Ref, bool)]) {
    if order.is_empty() {
        return;
    }
    rows.sort_by(|(a, _), (b, _)| {
        for ((x, y), (_, desc)) in a.iter().zip(b).zip(order) {
            let o = x.compare(y);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}

fn new_acc(a: &Agg, cols: &[ColumnInfo], idx: &dyn Fn(Col) -> usize) -> Result<Acc, String> {
    Ok(match a {
        Agg::Count(_) => Acc::Count(0),
        Agg::Sum(c) => match cols[idx(*c)].kind() {
            Kind::Float => Acc::SumFloat(None),
            Kind::Int | Kind::Decimal => Acc::SumDec(None),
            _ => return Err(format!("SUM of type {:#04x}", cols[idx(*c)].ty)),
        },
        Agg::Min(_) | Agg::Max(_) => Acc::Best(None),
        Agg::CountDistinct(_) => Acc::Distinct(Default::default()),
        Agg::Avg { avg, .. } => match cols[idx(*avg)].kind() {
            Kind::Float => Acc::AvgFloat(None, 0),
            Kind::Decimal => Acc::AvgDec(None, 0),
            _ => return Err(format!("AVG of type {:#04x}", cols[idx(*avg)].ty)),
        },
    })
}

fn text(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|_| "an unreadable number from a shard".to_string())
}

fn dec(v: &[u8]) -> Result<Dec, String> {
    Dec::parse(text(v)?)
        .ok_or_else(|| format!("a number beyond 38 digits ({})", text(v).unwrap_or("")))
}

fn float(v: &[u8]) -> Result<f64, String> {
    text(v)?
        .parse()
        .map_err(|_| "an unreadable number from a shard".to_string())
}

const OVERFLOW: &str = "a SUM or AVG beyond 38 digits";

fn add(
    acc: &mut Acc,
    a: &Agg,
    row: &Row,
    cols: &[ColumnInfo],
    idx: &dyn Fn(Col) -> usize,
) -> Result<(), String> {
    let get = |c: Col| row[idx(c)].as_deref();
    match (acc, a) {
        (Acc::Count(n), Agg::Count(c)) => {
            if let Some(v) = get(*c) {
                *n += text(v)?
                    .parse::<i128>()
                    .map_err(|_| "an unreadable count")?;
            }
        }
        (Acc::SumDec(s), Agg::Sum(c)) => {
            if let Some(v) = get(*c) {
                let v = dec(v)?;
                *s = Some(match s {
                    None => v,
                    Some(p) => p.checked_add(v).ok_or(OVERFLOW)?,
                });
            }
        }
        (Acc::SumFloat(s), Agg::Sum(c)) => {
            if let Some(v) = get(*c) {
                *s = Some(s.unwrap_or(0.0) + float(v)?);
            }
        }
        (Acc::Best(best), Agg::Min(k) | Agg::Max(k)) => {
            let col = &cols[idx(k.value)];
            let key = cmp_key(get(k.value), get(k.weight), col)?;
            if let (CmpKey::Null, _) | (_, None) = (&key, get(k.value)) {
                return Ok(());
            }
            let want = if matches!(a, Agg::Min(_)) {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            let better = match best {
                None => true,
                Some((b, _)) => key.compare(b) == want,
            };
            if better {
                *best = Some((key, get(k.value).unwrap_or_default().to_vec()));
            }
        }
        (Acc::AvgDec(s, n), Agg::Avg { sum, count, .. }) => {
            if let Some(v) = get(*sum) {
                let v = dec(v)?;
                *s = Some(match s {
                    None => v,
                    Some(p) => p.checked_add(v).ok_or(OVERFLOW)?,
                });
            }
            if let Some(c) = get(*count) {
                *n += text(c)?
                    .parse::<i128>()
                    .map_err(|_| "an unreadable count")?;
            }
        }
        (Acc::AvgFloat(s, n), Agg::Avg { sum, count, .. }) => {
            if let Some(v) = get(*sum) {
                *s = Some(s.unwrap_or(0.0) + float(v)?);
            }
            if let Some(c) = get(*count) {
                *n += text(c)?
                    .parse::<i128>()
                    .map_err(|_| "an unreadable count")?;
            }
        }
        (Acc::Distinct(set), Agg::CountDistinct(k)) => {
            let col = &cols[idx(k.value)];
            let v = cmp_key(get(k.value), get(k.weight), col)
                .map_err(|e| e.replace("comparing", "COUNT(DISTINCT ...) of"))?;
            if v != CmpKey::Null {
                let mut b = Vec::new();
                group_key(v, &mut b);
                set.insert(b);
            }
        }
        _ => return Err("an aggregate the router mixed up".into()),
    }
    Ok(())
}

fn final_value(
    a: &Agg,
    acc: &Acc,
    cols: &[ColumnInfo],
    idx: &dyn Fn(Col) -> usize,
) -> Result<Option<Vec<u8>>, String> {
    let scale_of = |c: Col| u32::from(cols[idx(c)].decimals);
    Ok(match (acc, a) {
        (Acc::Count(n), _) => Some(n.to_string().into_bytes()),
        (Acc::Distinct(set), _) => Some(set.len().to_string().into_bytes()),
        (Acc::SumDec(s), Agg::Sum(c)) => match s {
            None => None,
            Some(d) => Some(d.to_text(scale_of(*c)).ok_or(OVERFLOW)?.into_bytes()),
        },
        (Acc::SumFloat(s), _) => s.map(|v| format_double(v).into_bytes()),
        (Acc::Best(b), _) => b.as_ref().map(|(_, v)| v.clone()),
        (Acc::AvgDec(s, n), Agg::Avg { avg, .. }) => match s {
            Some(d) if *n > 0 => {
                let scale = scale_of(*avg);
                Some(
                    d.div_int(*n, scale)
                        .and_then(|q| q.to_text(scale))
                        .ok_or(OVERFLOW)?
                        .into_bytes(),
                )
            }
            _ => None,
        },
        (Acc::AvgFloat(s, n), _) => match s {
            Some(v) if *n > 0 => Some(format_double(v / *n as f64).into_bytes()),
            _ => None,
        },
        _ => return Err("an aggregate the router mixed up".into()),
    })
}

/// The sort key of an aggregate's final value.
fn agg_key(
    a: &Agg,
    value: &Option<Vec<u8>>,
    acc: &Acc,
    cols: &[ColumnInfo],
    idx: &dyn Fn(Col) -> usize,
) -> Result<CmpKey, String> {
    let Some(v) = value else {
        return Ok(CmpKey::Null);
    };
    Ok(match acc {
        Acc::Count(n) => CmpKey::Int(*n),
        Acc::Distinct(set) => CmpKey::Int(set.len() as i128),
        Acc::SumDec(_) | Acc::AvgDec(..) => CmpKey::Dec(dec(v)?),
        Acc::SumFloat(_) | Acc::AvgFloat(..) => CmpKey::Float(float(v)?),
        Acc::Best(b) => match (b, a) {
            (Some((k, _)), _) => k.clone(),
            _ => cmp_key(
                Some(v),
                None,
                &cols[idx(match a {
                    Agg::Min(k) | Agg::Max(k) => k.value,
                    _ => return Err("an aggregate the router mixed up".into()),
                })],
            )?,
        },
    })
}

struct Eval<'a> {
    row: &'a Row,
    finals: &'a [Option<Vec<u8>>],
    aggs: &'a [Agg],
    cols: &'a [ColumnInfo],
    idx: &'a dyn Fn(Col) -> usize,
}

/// A HAVING operand's value.
#[derive(Debug, Clone)]
enum HVal {
    Null,
    Dec(Dec),
    Float(f64),
    Bytes(Vec<u8>),
}

fn operand(o: &Operand, ctx: &Eval<'_>) -> Result<HVal, String> {
    Ok(match o {
        Operand::Null => HVal::Null,
        Operand::Num(n) => match Dec::parse(n) {
            Some(d) => HVal::Dec(d),
            None => HVal::Float(
                n.parse()
                    .map_err(|_| format!("HAVING with the number {n}"))?,
            ),
        },
        Operand::Str(s) => HVal::Bytes(s.clone()),
        Operand::Ref(Ref::Agg(a))
            if matches!(ctx.aggs[*a], Agg::Count(_) | Agg::CountDistinct(_)) =>
        {
            match &ctx.finals[*a] {
                Some(v) => HVal::Dec(dec(v)?),
                None => HVal::Null,
            }
        }
        Operand::Ref(r) => {
            let (value, col) = match r {
                Ref::Col(k) => (
                    ctx.row[(ctx.idx)(k.value)].clone(),
                    &ctx.cols[(ctx.idx)(k.value)],
                ),
                Ref::Agg(a) => {
                    let c = match &ctx.aggs[*a] {
                        Agg::Count(c) | Agg::Sum(c) => *c,
                        Agg::CountDistinct(k) => k.value,
                        Agg::Min(k) | Agg::Max(k) => k.value,
                        Agg::Avg { avg, .. } => *avg,
                    };
                    (ctx.finals[*a].clone(), &ctx.cols[(ctx.idx)(c)])
                }
            };
            let Some(v) = value else {
                return Ok(HVal::Null);
            };
            match col.kind() {
                Kind::Int | Kind::Decimal => HVal::Dec(dec(&v)?),
                Kind::Float => HVal::Float(float(&v)?),
                Kind::Bytes => HVal::Bytes(v),
                _ => {
                    return Err(format!(
                        "HAVING comparing `{}` (a string in a collation, or a date or time)",
                        col.name
                    ))
                }
            }
        }
    })
}

fn eval(c: &Cond, ctx: &Eval<'_>) -> Result<Option<bool>, String> {
    Ok(match c {
        Cond::And(a, b) => match (eval(a, ctx)?, eval(b, ctx)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Cond::Or(a, b) => match (eval(a, ctx)?, eval(b, ctx)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Cond::Not(a) => eval(a, ctx)?.map(|v| !v),
        Cond::IsNull(o, negated) => Some(matches!(operand(o, ctx)?, HVal::Null) != *negated),
        Cond::Cmp(a, op, b) => {
            let (a, b) = (operand(a, ctx)?, operand(b, ctx)?);
            let ord = match (&a, &b) {
                (HVal::Null, _) | (_, HVal::Null) => return Ok(None),
                (HVal::Dec(x), HVal::Dec(y)) => x.cmp(y),
                (HVal::Float(x), HVal::Float(y)) => x.total_cmp(y),
                (HVal::Dec(x), HVal::Float(y)) => x.to_f64().total_cmp(y),
                (HVal::Float(x), HVal::Dec(y)) => x.total_cmp(&y.to_f64()),
                (HVal::Bytes(x), HVal::Bytes(y)) => x.cmp(y),
                _ => return Err("HAVING comparing a string with a number".into()),
            };
            Some(match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;
    use crate::shard::gather::analyze_sql;

    fn col(name: &str, ty: u8, charset: u16, decimals: u8) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            ty,
            flags: 0,
            charset,
            decimals,
        }
    }

    fn spec(sql: &str) -> GatherSpec {
        analyze_sql(sql, &Classifier::new(0).classify(sql)).unwrap()
    }

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    fn shard(cols: &[ColumnInfo], rows: Vec<Row>) -> ShardRows {
        ShardRows {
            defs: Vec::new(),
            cols: cols.to_vec(),
            rows,
            warnings: 0,
            status: 0,
        }
    }

    fn texts(rows: &[Row]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| {
                r.iter()
                    .map(|x| match x {
                        None => "NULL".to_string(),
                        Some(b) => String::from_utf8_lossy(b).into_owned(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn groups_merge_partials_exactly_and_having_filters() {
        let s = spec(
            "SELECT g, COUNT(*), SUM(p), AVG(p), MIN(n) FROM t GROUP BY g \
             HAVING COUNT(*) > 1 OR g IS NULL ORDER BY 3 DESC",
        );
        // g, COUNT(*), SUM(p), AVG(p), MIN(n), then hidden: g, ws(g), SUM(p), COUNT(p),
        // ws(MIN(n)).
        assert_eq!(s.hidden, 5);
        let cols = [
            col("g", 0x03, 63, 0),
            col("COUNT(*)", 0x08, 63, 0),
            col("SUM(p)", 0xf6, 63, 2),
            col("AVG(p)", 0xf6, 63, 6),
            col("MIN(n)", 0xfd, 45, 0),
            col("g", 0x03, 63, 0),
            col("ws", 0xfc, 63, 0),
            col("SUM(p)", 0xf6, 63, 2),
            col("COUNT(p)", 0x08, 63, 0),
            col("ws", 0xfc, 63, 0),
        ];
        let row = |g: Option<&str>, c: &str, sum: Option<&str>, n: &str, w: &str, cp: &str| {
            vec![
                g.and_then(v),
                v(c),
                sum.and_then(v),
                v("0"),
                v(n),
                g.and_then(v),
                g.and_then(|_| v("x")),
                sum.and_then(v),
                v(cp),
                v(w),
            ]
        };
        let a = shard(
            &cols,
            vec![
                row(Some("1"), "2", Some("10.50"), "Banana", "B", "2"),
                row(
                    Some("2"),
                    "1",
                    Some("99999999999999999999.99"),
                    "x",
                    "X",
                    "1",
                ),
                row(None, "1", None, "z", "Z", "0"),
            ],
        );
        let b = shard(
            &cols,
            vec![
                row(Some("1"), "1", Some("-0.25"), "apple", "A", "1"),
                row(Some("2"), "2", Some("0.01"), "y", "Y", "1"),
            ],
        );
        let got = texts(&combine(&s, &[a, b]).unwrap());
        assert_eq!(
            got,
            vec![
                vec![
                    "2",
                    "3",
                    "100000000000000000000.00",
                    "50000000000000000000.000000",
                    "x"
                ],
                vec!["1", "3", "10.25", "3.416667", "apple"],
                vec!["NULL", "1", "NULL", "NULL", "z"],
            ]
        );
    }

    #[test]
    fn numbers_group_by_value() {
        let key = |v: CmpKey| {
            let mut out = Vec::new();
            group_key(v, &mut out);
            out
        };
        let d = |t: &str| CmpKey::Dec(Dec::parse(t).unwrap());
        assert_eq!(key(d("1.50")), key(d("1.5")));
        assert_ne!(key(d("1.05")), key(d("1.5")));
        assert_eq!(key(CmpKey::Float(-0.0)), key(CmpKey::Float(0.0)));
        assert_ne!(key(CmpKey::Null), key(CmpKey::Bytes(Vec::new())));
    }

    #[test]
    fn rows_sort_by_weights_then_skip_the_offset() {
        let s = spec("SELECT id, name FROM t ORDER BY name DESC, id LIMIT 1, 2");
        let cols = [
            col("id", 0x08, 63, 0),
            col("name", 0xfd, 45, 0),
            col("name", 0xfd, 45, 0),
            col("ws", 0xfc, 63, 0),
            col("id", 0x08, 63, 0),
            col("ws", 0xfc, 63, 0),
        ];
        let r = |id: &str, name: &str, w: &str| vec![v(id), v(name), v(name), v(w), v(id), v(id)];
        let a = shard(&cols, vec![r("3", "b", "B"), r("1", "A", "A")]);
        let b = shard(&cols, vec![r("2", "B ", "B"), r("4", "a", "A")]);
        assert_eq!(
            texts(&combine(&s, &[a, b]).unwrap()),
            vec![vec!["3", "b"], vec!["1", "A"]]
        );
    }

    #[test]
    fn having_uses_three_valued_logic_and_refuses_collated_strings() {
        let s = spec("SELECT g, SUM(x) FROM t GROUP BY g HAVING NOT SUM(x) > 1.5");
        let cols = [
            col("g", 0x03, 63, 0),
            col("SUM(x)", 0xf6, 63, 0),
            col("g", 0x03, 63, 0),
            col("ws", 0xfc, 63, 0),
        ];
        let a = shard(
            &cols,
            vec![
                vec![v("1"), v("1"), v("1"), None],
                vec![v("2"), None, v("2"), None],
                vec![v("3"), v("5"), v("3"), None],
            ],
        );
        // NOT (NULL > 1.5) is NULL: group 2 is filtered out.
        assert_eq!(texts(&combine(&s, &[a]).unwrap()), vec![vec!["1", "1"]]);
        let s = spec("SELECT n, COUNT(*) FROM t GROUP BY n HAVING n = 'a'");
        let cols = [
            col("n", 0xfd, 45, 0),
            col("COUNT(*)", 0x08, 63, 0),
            col("n", 0xfd, 45, 0),
            col("ws", 0xfc, 63, 0),
        ];
        let a = shard(&cols, vec![vec![v("a"), v("1"), v("a"), v("A")]]);
        assert!(combine(&s, &[a])
            .unwrap_err()
            .starts_with("HAVING comparing `n`"));
    }
}
