//! The MySQL client/server wire format as the router needs it: packet framing with sequence
//! ids, length-encoded integers and strings, and the few packets the router itself writes
//! (handshake, OK, ERR, EOF). Result sets from backends are relayed, not decoded here.

pub mod compress;
pub mod handshake;
pub mod packet;

pub use mysql_common::constants::{CapabilityFlags, Command, StatusFlags};
pub use packet::{PacketReader, PacketWriter, MAX_PAYLOAD};

/// Reads a length-encoded integer at `buf[*pos..]`, advancing `pos`. `None` when truncated or
/// when the first byte is not an integer prefix (0xfb NULL, 0xff).
pub fn read_lenenc_int(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *buf.get(*pos)?;
    let (value, len) = match first {
        0..=0xfa => (u64::from(first), 1),
        0xfc => (u64::from(u16::from_le_bytes(take::<2>(buf, *pos + 1)?)), 3),
        0xfd => {
            let b = take::<3>(buf, *pos + 1)?;
            (u64::from(u32::from_le_bytes([b[0], b[1], b[2], 0])), 4)
        }
        0xfe => (u64::from_le_bytes(take::<8>(buf, *pos + 1)?), 9),
        _ => return None,
    };
    *pos += len;
    Some(value)
}

/// Reads a length-encoded string at `buf[*pos..]`, advancing `pos`.
pub fn read_lenenc_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(read_lenenc_int(buf, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    let out = buf.get(*pos..end)?;
    *pos = end;
    Some(out)
}

/// Reads a NUL-terminated string at `buf[*pos..]`, advancing `pos` past the NUL.
pub fn read_nul_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*pos..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    *pos += end + 1;
    Some(&rest[..end])
}

fn take<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at + N)?.try_into().ok()
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfa => out.push(v as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_lenenc_int(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// An OK packet's payload as the router builds it.
pub fn ok_payload(
    affected_rows: u64,
    last_insert_id: u64,
    status: StatusFlags,
    warnings: u16,
    header: u8,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(header);
    put_lenenc_int(&mut out, affected_rows);
    put_lenenc_int(&mut out, last_insert_id);
    out.extend_from_slice(&status.bits().to_le_bytes());
    out.extend_from_slice(&warnings.to_le_bytes());
    out
}

/// An ERR packet's payload (protocol 4.1: with SQLSTATE).
pub fn err_payload(code: u16, sqlstate: &str, message: impl AsRef<[u8]>) -> Vec<u8> {
    let message = message.as_ref();
    let mut out = Vec::with_capacity(9 + message.len());
    out.push(0xff);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    let state = sqlstate.as_bytes();
    for i in 0..5 {
        out.push(*state.get(i).unwrap_or(&b'0'));
    }
    out.extend_from_slice(message);
    out
}

/// An EOF packet's payload.
pub fn eof_payload(status: StatusFlags, warnings: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    out.push(0xfe);
    out.extend_from_slice(&warnings.to_le_bytes());
    out.extend_from_slice(&status.bits().to_le_bytes());
    out
}

/// What the router reads out of an OK packet (or an EOF-as-OK packet under DEPRECATE_EOF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Parses an OK packet payload (first byte 0x00 or 0xfe).
pub fn parse_ok(payload: &[u8]) -> Option<OkInfo> {
    let mut pos = 1;
    let affected_rows = read_lenenc_int(payload, &mut pos)?;
    let last_insert_id = read_lenenc_int(payload, &mut pos)?;
    let status = u16::from_le_bytes(take::<2>(payload, pos)?);
    let warnings = u16::from_le_bytes(take::<2>(payload, pos + 2).unwrap_or([0, 0]));
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

/// Parses an EOF packet payload `[0xfe, warnings:2, status:2]`.
pub fn parse_eof(payload: &[u8]) -> Option<(u16, u16)> {
    let warnings = u16::from_le_bytes(take::<2>(payload, 1)?);
    let status = u16::from_le_bytes(take::<2>(payload, 3)?);
    Some((warnings, status))
}

/// A server error as carried by an ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    pub sqlstate: String,
    pub message: String,
    /// The message's bytes as the server sent them when they are not UTF-8 (a message in
    /// the client's latin1, a quoted statement cut inside a character), so that the client
    /// gets them unchanged; `None` when `message` is exact.
    pub raw: Option<Box<[u8]>>,
}

impl ServerError {
    /// The message as the client must see it.
    pub fn message_bytes(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.message.as_bytes())
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code, self.sqlstate, self.message
        )
    }
}

/// Parses an ERR packet payload (first byte 0xff).
pub fn parse_err(payload: &[u8]) -> Option<ServerError> {
    let code = u16::from_le_bytes(take::<2>(payload, 1)?);
    let (sqlstate, msg_at) = if payload.get(3) == Some(&b'#') && payload.len() >= 9 {
        (String::from_utf8_lossy(&payload[4..9]).into_owned(), 9)
    } else {
        ("HY000".to_string(), 3)
    };
    let bytes = payload.get(msg_at..).unwrap_or_default();
    let (message, raw) = match std::str::from_utf8(bytes) {
        Ok(m) => (m.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(bytes.into()),
        ),
    };
    Some(ServerError {
        code,
        sqlstate,
        message,
        raw,
    })
}

/// True for a packet that ends a result set or a row stream: EOF, or an OK with the 0xfe
/// header under DEPRECATE_EOF. A row that starts with 0xfe is always longer (its first
/// column is at least 2^24 bytes), so the length tells them apart.
pub fn is_eof_or_ok_terminator(payload: &[u8]) -> bool {
    payload.first() == Some(&0xfe) && payload.len() < MAX_PAYLOAD
}

/// The status flags of a terminator packet (EOF or OK-with-0xfe), whichever form it has.
pub fn terminator_status(payload: &[u8], deprecate_eof: bool) -> Option<u16> {
    if deprecate_eof && payload.len() > 5 {
        parse_ok(payload).map(|ok| ok.status)
    } else {
        parse_eof(payload).map(|(_, status)| status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_at_every_width() {
        for v in [
            0u64,
            250,
            251,
            0xffff,
            0x1_0000,
            0xff_ffff,
            0x100_0000,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_lenenc_int(&mut buf, v);
            let mut pos = 0;
            assert_eq!(read_lenenc_int(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        let mut pos = 0;
        assert_eq!(read_lenenc_int(&[0xfc, 1], &mut pos), None, "truncated");
        assert_eq!(read_lenenc_int(&[0xfb], &mut pos), None, "NULL marker");
    }

    #[test]
    fn ok_and_err_parse_what_we_write() {
        let ok = ok_payload(3, 42, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 2, 0);
        let info = parse_ok(&ok).unwrap();
        assert_eq!(info.affected_rows, 3);
        assert_eq!(info.last_insert_id, 42);
        assert_eq!(info.status, StatusFlags::SERVER_STATUS_AUTOCOMMIT.bits());
        assert_eq!(info.warnings, 2);
        let err = err_payload(1045, "28000", "Access denied");
        assert_eq!(
            parse_err(&err).unwrap(),
            ServerError {
                code: 1045,
                sqlstate: "28000".into(),
                message: "Access denied".into(),
                raw: None,
            }
        );
        assert!(is_eof_or_ok_terminator(&eof_payload(
            StatusFlags::empty(),
            0
        )));
        assert!(!is_eof_or_ok_terminator(&[1, b'a']));
    }
}
