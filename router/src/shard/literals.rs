//! A prepared statement's parameters as SQL literals, written into its text where the text
//! must be cut or filled in (a split INSERT, generated AUTO_INCREMENT values): integers,
//! floats, strings (escaped; hex when not UTF-8), NULL, dates and times.

/// Replaces each `?` placeholder of `sql` with the literal at its position.
pub fn substitute(sql: &str, literals: &[String]) -> Option<String> {
    let at = crate::classify::placeholder_offsets(sql);
    if at.len() != literals.len() {
        return None;
    }
    let mut out =
        String::with_capacity(sql.len() + literals.iter().map(String::len).sum::<usize>());
    let mut last = 0;
    for (pos, lit) in at.iter().zip(literals) {
        out.push_str(&sql[last..*pos]);
        out.push_str(lit);
        last = pos + 1;
    }
    out.push_str(&sql[last..]);
    Some(out)
}

/// The parameters of a COM_STMT_EXECUTE packet that carries its types (as the router always
/// sends it) as SQL literals; `None` for a malformed packet or a type without a literal form.
pub fn literals(packet: &[u8], n: usize) -> Option<Vec<String>> {
    use super::params::{int_text, walk, Param};
    walk(packet, n, &|_| false)?
        .into_iter()
        .map(|p| match p {
            Param::Null => Some("NULL".to_string()),
            Param::Int { bytes, unsigned } => Some(int_text(bytes, unsigned)),
            Param::Float(v) => float(v),
            Param::Temporal { ty, bytes } => temporal(ty, bytes),
            // The old DECIMAL type code is not sent by clients.
            Param::Bytes { ty: 0x00, .. } => None,
            Param::Bytes { bytes, .. } => Some(string(bytes)),
        })
        .collect()
}

pub(super) fn float(v: f64) -> Option<String> {
    // `{:e}` keeps every digit and always reads back as a DOUBLE.
    v.is_finite().then(|| format!("{v:e}"))
}

/// A string literal of the given bytes (the connection's character set, as the client sent
/// them).
fn string(b: &[u8]) -> String {
    let mut s = Vec::with_capacity(b.len() + 2);
    s.push(b'\'');
    for &c in b {
        match c {
            b'\'' => s.extend_from_slice(b"''"),
            b'\\' => s.extend_from_slice(b"\\\\"),
            0 => s.extend_from_slice(b"\\0"),
            c => s.push(c),
        }
    }
    s.push(b'\'');
    // Valid UTF-8 in, valid UTF-8 out; other bytes would not survive the text protocol's
    // String here, so they are written as a hex literal instead.
    String::from_utf8(s).unwrap_or_else(|_| {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("X'{hex}'")
    })
}

/// DATE/DATETIME/TIMESTAMP and TIME values of the binary protocol as quoted literals.
fn temporal(ty: u8, b: &[u8]) -> Option<String> {
    if ty == 0x0b {
        // TIME: negative, days, hours, minutes, seconds, microseconds
        if b.is_empty() {
            return Some("'00:00:00'".into());
        }
        let neg = b[0] == 1;
        let days = u32::from_le_bytes(b.get(1..5)?.try_into().ok()?);
        let (h, m, s) = (*b.get(5)?, *b.get(6)?, *b.get(7)?);
        let us = match b.get(8..12) {
            Some(x) => u32::from_le_bytes(x.try_into().ok()?),
            None => 0,
        };
        let hours = days * 24 + u32::from(h);
        return Some(format!(
            "'{}{hours:02}:{m:02}:{s:02}.{us:06}'",
            if neg { "-" } else { "" }
        ));
    }
    let mut v = [0u32; 7];
    if b.len() >= 4 {
        v[0] = u32::from(u16::from_le_bytes([b[0], b[1]]));
        v[1] = u32::from(b[2]);
        v[2] = u32::from(b[3]);
    }
    if b.len() >= 7 {
        v[3] = u32::from(b[4]);
        v[4] = u32::from(b[5]);
        v[5] = u32::from(b[6]);
    }
    if b.len() >= 11 {
        v[6] = u32::from_le_bytes(b[7..11].try_into().ok()?);
    }
    Some(format!(
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
        v[0], v[1], v[2], v[3], v[4], v[5], v[6]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_literals() {
        // LONGLONG -5, VAR_STRING "a'b", NULL (bitmap), DOUBLE 1.5, DATETIME
        let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0b100, 1];
        p.extend_from_slice(&[0x08, 0, 0xfd, 0, 0x03, 0, 0x05, 0, 0x0c, 0]);
        p.extend_from_slice(&(-5i64).to_le_bytes());
        p.extend_from_slice(&[3, b'a', b'\'', b'b']);
        p.extend_from_slice(&1.5f64.to_le_bytes());
        p.extend_from_slice(&[7, 0xe8, 0x07, 2, 29, 13, 14, 15]);
        let lits = literals(&p, 5).unwrap();
        assert_eq!(
            lits,
            vec![
                "-5",
                "'a''b'",
                "NULL",
                "1.5e0",
                "'2024-02-29 13:14:15.000000'"
            ]
        );
        assert_eq!(
            substitute(
                "INSERT INTO t VALUES (?, '?', ?)",
                &["1".into(), "'x'".into()]
            )
            .unwrap(),
            "INSERT INTO t VALUES (1, '?', 'x')"
        );
    }
}
