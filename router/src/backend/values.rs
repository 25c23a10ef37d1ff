//! Values of merged results: column kinds from column definitions, exact decimal arithmetic
//! on the servers' text values, comparison keys, MariaDB's text form of doubles, and the
//! binary-protocol encoding of a text value.

use std::cmp::Ordering;

use crate::protocol::read_lenenc_bytes;

/// What the router needs of a column definition.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    pub ty: u8,
    pub flags: u16,
    pub charset: u16,
    pub decimals: u8,
}

const UNSIGNED: u16 = 0x20;
const ENUM: u16 = 0x100;
const SET: u16 = 0x800;

impl ColumnInfo {
    pub fn parse(def: &[u8]) -> Option<ColumnInfo> {
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
        let decimals = *def.get(pos + 3)?;
        Some(ColumnInfo {
            name,
            ty,
            flags,
            charset,
            decimals,
        })
    }

    pub fn kind(&self) -> Kind {
        match self.ty {
            0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x0d => Kind::Int,
            0x00 | 0xf6 => Kind::Decimal,
            0x04 | 0x05 => Kind::Float,
            0x07 | 0x0a | 0x0c | 0x0e => Kind::Temporal,
            0x0b => Kind::Time,
            0x06 => Kind::Bytes,
            0x0f | 0xfc | 0xfd | 0xfe | 0xf5 => {
                if self.flags & (ENUM | SET) != 0 {
                    Kind::Other
                } else if self.charset == 63 {
                    Kind::Bytes
                } else {
                    Kind::Text
                }
            }
            _ => Kind::Other,
        }
    }

    fn collation_name(&self) -> String {
        use mysql_common::collations::{Collation, CollationId};
        Collation::from(CollationId::from(self.charset))
            .collation()
            .to_string()
    }
}

/// How values of a column compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Decimal,
    Float,
    /// DATE, DATETIME, TIMESTAMP: fixed-width text, ordered as written.
    Temporal,
    /// TIME: may be negative or beyond 24 hours.
    Time,
    /// Binary strings (and NULL-typed columns): byte order, no padding.
    Bytes,
    /// Strings in a collation: compared by their weight strings.
    Text,
    /// ENUM, SET, BIT, GEOMETRY...: not compared by the router.
    Other,
}

/// A value reduced to what orders and groups it.
#[derive(Debug, Clone, PartialEq)]
pub enum CmpKey {
    Null,
    Int(i128),
    Dec(Dec),
    Float(f64),
    Bytes(Vec<u8>),
}

impl CmpKey {
    /// NULLs first, as MariaDB sorts them ascending.
    pub fn compare(&self, other: &CmpKey) -> Ordering {
        match (self, other) {
            (CmpKey::Null, CmpKey::Null) => Ordering::Equal,
            (CmpKey::Null, _) => Ordering::Less,
            (_, CmpKey::Null) => Ordering::Greater,
            (CmpKey::Int(a), CmpKey::Int(b)) => a.cmp(b),
            (CmpKey::Dec(a), CmpKey::Dec(b)) => a.cmp(b),
            (CmpKey::Float(a), CmpKey::Float(b)) => a.total_cmp(b),
            (CmpKey::Bytes(a), CmpKey::Bytes(b)) => a.cmp(b),
            _ => Ordering::Equal,
        }
    }
}

/// The comparison key of `value` (with its weight string `weight`) in column `col`; `Err`
/// names why the router can't compare it exactly.
pub fn cmp_key(
    value: Option<&[u8]>,
    weight: Option<&[u8]>,
    col: &ColumnInfo,
) -> Result<CmpKey, String> {
    let Some(v) = value else {
        return Ok(CmpKey::Null);
    };
    let bad = || format!("a value of `{}` the router could not read", col.name);
    let text = || std::str::from_utf8(v).map_err(|_| bad());
    Ok(match col.kind() {
        Kind::Int => CmpKey::Int(text()?.parse().map_err(|_| bad())?),
        Kind::Decimal => CmpKey::Dec(Dec::parse(text()?).ok_or_else(bad)?),
        Kind::Float => CmpKey::Float(text()?.parse().map_err(|_| bad())?),
        Kind::Temporal | Kind::Bytes => CmpKey::Bytes(v.to_vec()),
        Kind::Time => CmpKey::Int(time_micros(text()?).ok_or_else(bad)?),
        Kind::Text => {
            if col.charset >= 1024 {
                return Err(format!(
                    "comparing `{}` in NO PAD collation {} over several shards",
                    col.name,
                    col.collation_name()
                ));
            }
            CmpKey::Bytes(weight.ok_or_else(bad)?.to_vec())
        }
        Kind::Other => {
            return Err(format!(
                "comparing `{}` (an ENUM, SET, BIT or spatial value) over several shards",
                col.name
            ))
        }
    })
}

/// `[-]HHH:MM:SS[.ffffff]` in microseconds.
fn time_micros(s: &str) -> Option<i128> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let h: i128 = parts.next()?.parse().ok()?;
    let m: i128 = parts.next()?.parse().ok()?;
    let sec: i128 = parts.next()?.parse().ok()?;
    let mut us: i128 = 0;
    for (i, c) in frac.chars().take(6).enumerate() {
        us += i128::from(c.to_digit(10)?) * 10i128.pow(5 - i as u32);
    }
    let t = ((h * 60 + m) * 60 + sec) * 1_000_000 + us;
    Some(if neg { -t } else { t })
}

/// An exact decimal: `mant / 10^scale` (38 digits, enough for any DECIMAL result the
/// router sums short of overflow, which is reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    pub mant: i128,
    pub scale: u32,
}

impl Dec {
    pub fn parse(s: &str) -> Option<Dec> {
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut mant: i128 = 0;
        for c in int.bytes().chain(frac.bytes()) {
            if !c.is_ascii_digit() {
                return None;
            }
            mant = mant.checked_mul(10)?.checked_add(i128::from(c - b'0'))?;
        }
        Some(Dec {
            mant: if neg { -mant } else { mant },
            scale: u32::try_from(frac.len()).ok()?,
        })
    }

    pub fn from_int(v: i128) -> Dec {
        Dec { mant: v, scale: 0 }
    }

    fn rescale(self, scale: u32) -> Option<Dec> {
        if scale >= self.scale {
            Some(Dec {
                mant: self
                    .mant
                    .checked_mul(10i128.checked_pow(scale - self.scale)?)?,
                scale,
            })
        } else {
            let d = 10i128.checked_pow(self.scale - scale)?;
            Some(Dec {
                mant: div_round(self.mant, d),
                scale,
            })
        }
    }

    pub fn checked_add(self, o: Dec) -> Option<Dec> {
        let s = self.scale.max(o.scale);
        let (a, b) = (self.rescale(s)?, o.rescale(s)?);
        Some(Dec {
            mant: a.mant.checked_add(b.mant)?,
            scale: s,
        })
    }

    /// `self / n` rounded half away from zero to `scale` digits, as MariaDB rounds.
    pub fn div_int(self, n: i128, scale: u32) -> Option<Dec> {
        let up = scale.checked_sub(self.scale);
        let num = match up {
            Some(k) => self.mant.checked_mul(10i128.checked_pow(k)?)?,
            None => self.mant,
        };
        let den = match up {
            Some(_) => n,
            None => n.checked_mul(10i128.checked_pow(self.scale - scale)?)?,
        };
        Some(Dec {
            mant: div_round(num, den),
            scale,
        })
    }

    /// The text form with exactly `scale` digits after the point.
    pub fn to_text(self, scale: u32) -> Option<String> {
        let d = self.rescale(scale)?;
        let neg = d.mant < 0;
        let digits = d.mant.unsigned_abs().to_string();
        let scale = scale as usize;
        let digits = if digits.len() <= scale {
            format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
        } else {
            digits
        };
        let (i, f) = digits.split_at(digits.len() - scale);
        let mut out = String::with_capacity(digits.len() + 2);
        if neg {
            out.push('-');
        }
        out.push_str(i);
        if scale > 0 {
            out.push('.');
            out.push_str(f);
        }
        Some(out)
    }

    pub fn to_f64(self) -> f64 {
        self.mant as f64 / 10f64.powi(self.scale as i32)
    }
}

impl Ord for Dec {
    fn cmp(&self, o: &Dec) -> Ordering {
        let s = self.scale.max(o.scale);
        match (self.rescale(s), o.rescale(s)) {
            (Some(a), Some(b)) => a.mant.cmp(&b.mant),
            _ => self.to_f64().total_cmp(&o.to_f64()),
        }
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, o: &Dec) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

fn div_round(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if r.unsigned_abs() * 2 >= den.unsigned_abs() {
        if (num < 0) != (den < 0) {
            q - 1
        } else {
            q + 1
        }
    } else {
        q
    }
}

/// A DOUBLE as MariaDB writes it in text results: the shortest digits that read back the
/// same, in plain notation for decimal exponents -15..=14, else as `1.5e15`.
pub fn format_double(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{v:e}");
    let exp: i32 = sci
        .rsplit_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if (-15..=14).contains(&exp) {
        format!("{v}")
    } else {
        sci
    }
}

/// Appends `value` of a column of type `col` to a binary-protocol row (the null bitmap is
/// the caller's); `Err` when the text can't be encoded as that type.
pub fn put_binary(out: &mut Vec<u8>, value: &[u8], col: &ColumnInfo) -> Result<(), String> {
    let bad = || format!("a value of `{}` the router could not encode", col.name);
    let text = || std::str::from_utf8(value).map_err(|_| bad());
    let int = |width: usize, out: &mut Vec<u8>| -> Result<(), String> {
        let t = text()?;
        let raw: u64 = if col.flags & UNSIGNED != 0 {
            t.parse::<u64>().map_err(|_| bad())?
        } else {
            t.parse::<i64>().map_err(|_| bad())? as u64
        };
        out.extend_from_slice(&raw.to_le_bytes()[..width]);
        Ok(())
    };
    match col.ty {
        0x01 => int(1, out)?,
        0x02 | 0x0d => int(2, out)?,
        0x03 | 0x09 => int(4, out)?,
        0x08 => int(8, out)?,
        0x04 => out.extend_from_slice(&text()?.parse::<f32>().map_err(|_| bad())?.to_le_bytes()),
        0x05 => out.extend_from_slice(&text()?.parse::<f64>().map_err(|_| bad())?.to_le_bytes()),
        0x07 | 0x0a | 0x0c | 0x0e => {
            let t = text()?;
            let (date, time) = t.split_once(' ').unwrap_or((t, ""));
            let mut d = date.split('-');
            let y: u16 = d.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let mo: u8 = d.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let da: u8 = d.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let (h, mi, s, us) = if time.is_empty() {
                (0, 0, 0, 0)
            } else {
                let us = time_micros(time).ok_or_else(bad)?;
                let secs = us / 1_000_000;
                (
                    (secs / 3600) as u8,
                    (secs / 60 % 60) as u8,
                    (secs % 60) as u8,
                    (us % 1_000_000) as u32,
                )
            };
            let len: u8 = if us != 0 {
                11
            } else if h != 0 || mi != 0 || s != 0 {
                7
            } else if y != 0 || mo != 0 || da != 0 {
                4
            } else {
                0
            };
            out.push(len);
            if len >= 4 {
                out.extend_from_slice(&y.to_le_bytes());
                out.extend_from_slice(&[mo, da]);
            }
            if len >= 7 {
                out.extend_from_slice(&[h, mi, s]);
            }
            if len == 11 {
                out.extend_from_slice(&us.to_le_bytes());
            }
        }
        0x0b => {
            let us = time_micros(text()?).ok_or_else(bad)?;
            if us == 0 {
                out.push(0);
                return Ok(());
            }
            let neg = us < 0;
            let us = us.unsigned_abs();
            let secs = us / 1_000_000;
            let frac = (us % 1_000_000) as u32;
            out.push(if frac != 0 { 12 } else { 8 });
            out.push(u8::from(neg));
            out.extend_from_slice(&((secs / 86_400) as u32).to_le_bytes());
            out.extend_from_slice(&[
                (secs / 3600 % 24) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
            ]);
            if frac != 0 {
                out.extend_from_slice(&frac.to_le_bytes());
            }
        }
        _ => crate::protocol::put_lenenc_bytes(out, value),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_add_divide_and_print_exactly() {
        let a = Dec::parse("1.50").unwrap();
        let b = Dec::parse("-0.25").unwrap();
        assert_eq!(a.checked_add(b).unwrap().to_text(2).unwrap(), "1.25");
        // AVG(int) = 10 / 3 with scale 4; halves round away from zero.
        assert_eq!(
            Dec::from_int(10).div_int(3, 4).unwrap().to_text(4).unwrap(),
            "3.3333"
        );
        assert_eq!(
            Dec::from_int(2).div_int(3, 4).unwrap().to_text(4).unwrap(),
            "0.6667"
        );
        assert_eq!(
            Dec::from_int(-2).div_int(3, 4).unwrap().to_text(4).unwrap(),
            "-0.6667"
        );
        assert_eq!(
            Dec::parse("3.75")
                .unwrap()
                .div_int(2, 6)
                .unwrap()
                .to_text(6)
                .unwrap(),
            "1.875000"
        );
        assert_eq!(Dec::parse("0.05").unwrap().to_text(2).unwrap(), "0.05");
        assert_eq!(Dec::parse("-0.5").unwrap().to_text(1).unwrap(), "-0.5");
        let big = Dec::parse("170141183460469231731687303715884105727").unwrap();
        assert!(big.checked_add(Dec::from_int(1)).is_none());
        assert!(Dec::parse("1e5").is_none());
        assert_eq!(
            Dec::parse("10").unwrap().cmp(&Dec::parse("9.99").unwrap()),
            Ordering::Greater
        );
    }

    #[test]
    fn doubles_print_as_mariadb_does() {
        for (v, want) in [
            (1e20, "1e20"),
            (1e15, "1e15"),
            (1.5e15, "1.5e15"),
            (1e14, "100000000000000"),
            (1e-5, "0.00001"),
            (1.5e-7, "0.00000015"),
            (1e-15, "0.000000000000001"),
            (1e-16, "1e-16"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5, "-2.5"),
            (12345678901234567e0, "1.2345678901234568e16"),
            (2.0, "2"),
        ] {
            assert_eq!(format_double(v), want, "{v}");
        }
    }

    #[test]
    fn times_compare_by_duration() {
        assert!(time_micros("-01:00:00").unwrap() < time_micros("00:00:00").unwrap());
        assert!(time_micros("100:00:00").unwrap() > time_micros("99:59:59.5").unwrap());
        assert_eq!(time_micros("00:00:01.5"), Some(1_500_000));
    }
}
