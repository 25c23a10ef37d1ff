//! Connection phase, both directions: the greeting the router sends to clients and the
//! response it parses from them, the greeting it reads from backends and the response it sends,
//! and `mysql_native_password` scrambling and verification.

use sha1::{Digest, Sha1};

use super::{read_lenenc_bytes, read_nul_bytes, CapabilityFlags};

/// The only authentication method the router speaks to clients and backends.
pub const NATIVE_PASSWORD: &str = "mysql_native_password";

/// Capabilities the router offers clients. The row format is relayed untouched from backends,
/// so every flag that changes it must also be set (or not) on the backend connection.
pub fn router_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_ODBC
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_RESERVED
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// Capabilities clients are offered: the router's, and the compressed protocol, which is
/// between the client and the router only (backend connections never ask for it).
pub fn client_capabilities() -> CapabilityFlags {
    router_capabilities() | CapabilityFlags::CLIENT_COMPRESS
}

/// A fresh 20-byte scramble of printable, non-NUL bytes.
pub fn new_scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    for b in &mut s {
        *b = rand::random_range(33u8..127);
    }
    s
}

/// Builds the initial handshake (protocol 10) the router sends to a client.
pub fn server_greeting(
    conn_id: u32,
    server_version: &str,
    scramble: &[u8; 20],
    caps: CapabilityFlags,
    collation: u8,
    status: u16,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(10);
    out.extend_from_slice(server_version.as_bytes());
    out.push(0);
    out.extend_from_slice(&conn_id.to_le_bytes());
    out.extend_from_slice(&scramble[..8]);
    out.push(0);
    let bits = caps.bits();
    out.extend_from_slice(&(bits as u16).to_le_bytes());
    out.push(collation);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&((bits >> 16) as u16).to_le_bytes());
    out.push(21); // auth-plugin-data length: 20 + NUL
    out.extend_from_slice(&[0u8; 10]);
    out.extend_from_slice(&scramble[8..]);
    out.push(0);
    out.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    out.push(0);
    out
}

/// What a client said in its handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub caps: CapabilityFlags,
    pub max_packet: u32,
    pub collation: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    /// The payload was only the SSL request prefix.
    pub ssl_request: bool,
}

/// Why a client's handshake response was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    #[error("handshake response is truncated or malformed")]
    Malformed,
    #[error("client does not speak protocol 4.1")]
    Protocol40,
}

/// Parses a client's HandshakeResponse41.
pub fn parse_client_hello(payload: &[u8]) -> Result<ClientHello, HelloError> {
    let word = |at: usize| -> Result<u32, HelloError> {
        payload
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(HelloError::Malformed)
    };
    if payload.len() < 4 {
        return Err(HelloError::Malformed);
    }
    let caps = CapabilityFlags::from_bits_truncate(word(0)?);
    if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(HelloError::Protocol40);
    }
    let max_packet = word(4)?;
    let collation = *payload.get(8).ok_or(HelloError::Malformed)?;
    if payload.len() == 32 && caps.contains(CapabilityFlags::CLIENT_SSL) {
        return Ok(ClientHello {
            caps,
            max_packet,
            collation,
            user: String::new(),
            auth_response: Vec::new(),
            database: None,
            auth_plugin: None,
            ssl_request: true,
        });
    }
    let mut pos = 32;
    let user = read_nul_bytes(payload, &mut pos).ok_or(HelloError::Malformed)?;
    let auth_response = if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
        read_lenenc_bytes(payload, &mut pos).ok_or(HelloError::Malformed)?
    } else if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let len = usize::from(*payload.get(pos).ok_or(HelloError::Malformed)?);
        pos += 1;
        let out = payload.get(pos..pos + len).ok_or(HelloError::Malformed)?;
        pos += len;
        out
    } else {
        read_nul_bytes(payload, &mut pos).ok_or(HelloError::Malformed)?
    };
    let mut database = None;
    if caps.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB) && pos < payload.len() {
        let db = read_nul_bytes(payload, &mut pos).ok_or(HelloError::Malformed)?;
        if !db.is_empty() {
            database = Some(String::from_utf8_lossy(db).into_owned());
        }
    }
    let mut auth_plugin = None;
    if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) && pos < payload.len() {
        // Some clients omit the terminating NUL at the very end of the packet.
        let rest = &payload[pos..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        auth_plugin = Some(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    Ok(ClientHello {
        caps,
        max_packet,
        collation,
        user: String::from_utf8_lossy(user).into_owned(),
        auth_response: auth_response.to_vec(),
        database,
        auth_plugin,
        ssl_request: false,
    })
}

/// An AuthSwitchRequest asking the client for `mysql_native_password` over `scramble`.
pub fn auth_switch_request(scramble: &[u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44);
    out.push(0xfe);
    out.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    out.push(0);
    out.extend_from_slice(scramble);
    out.push(0);
    out
}

/// SHA1(SHA1(password)): what the router stores to check native-password logins.
pub fn native_password_hash(password: &[u8]) -> [u8; 20] {
    Sha1::digest(Sha1::digest(password)).into()
}

/// The client-side scramble: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))). Empty for an
/// empty password, as the protocol says.
pub fn scramble_native(scramble: &[u8], password: &[u8]) -> Vec<u8> {
    if let Some(stage1) = parse_stage1(password) {
        return token_from_stage1(scramble, &stage1).to_vec();
    }
    mysql_common::auth::plugins::mysql_native_password::scramble_native(scramble, password)
        .map(|s| s.to_vec())
        .unwrap_or_default()
}

/// What stands for the password of an account taken from the backends: not the password,
/// which the router never learns, but its SHA1 ("stage 1"), all the native handshake needs.
/// Configured passwords can't take this form (they hold no control characters).
const STAGE1_PREFIX: &[u8] = b"\x01native-stage1:";

/// The backend password of an account known by its stage-1 hash.
pub fn stage1_password(stage1: &[u8; 20]) -> String {
    let mut s = String::from_utf8(STAGE1_PREFIX.to_vec()).unwrap_or_default();
    for b in stage1 {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Whether `password` is the stage-1 form of an account's password (see [`stage1_password`]).
pub fn is_stage1_password(password: &[u8]) -> bool {
    password.starts_with(STAGE1_PREFIX)
}

fn parse_stage1(password: &[u8]) -> Option<[u8; 20]> {
    let hex = password.strip_prefix(STAGE1_PREFIX)?;
    let mut out = [0u8; 20];
    if hex.len() != 40 {
        return None;
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))).
fn token_from_stage1(scramble: &[u8], stage1: &[u8; 20]) -> [u8; 20] {
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mask: [u8; 20] = h.finalize().into();
    let mut token = [0u8; 20];
    for i in 0..20 {
        token[i] = stage1[i] ^ mask[i];
    }
    token
}

/// The SHA1 of the password behind a client's native-password `token`, when the token is
/// right for the stored double hash `stored`.
pub fn recover_stage1(scramble: &[u8], token: &[u8], stored: &[u8; 20]) -> Option<[u8; 20]> {
    if token.len() != 20 {
        return None;
    }
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stored);
    let mask: [u8; 20] = h.finalize().into();
    let mut candidate = [0u8; 20];
    for i in 0..20 {
        candidate[i] = token[i] ^ mask[i];
    }
    let check: [u8; 20] = Sha1::digest(candidate).into();
    // Constant-time comparison: no early exit on the first differing byte.
    let differ = check
        .iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (differ == 0).then_some(candidate)
}

/// Checks a client's native-password token against the stored double hash.
pub fn verify_native(scramble: &[u8], token: &[u8], stored: &[u8; 20], empty: bool) -> bool {
    if empty {
        return token.is_empty();
    }
    recover_stage1(scramble, token, stored).is_some()
}

/// What a backend said in its greeting.
#[derive(Debug, Clone)]
pub struct BackendGreeting {
    pub server_version: String,
    pub conn_id: u32,
    pub scramble: Vec<u8>,
    pub caps: CapabilityFlags,
    pub collation: u8,
    pub auth_plugin: String,
}

/// Parses a backend's protocol-10 greeting.
pub fn parse_backend_greeting(payload: &[u8]) -> Option<BackendGreeting> {
    if payload.first() != Some(&10) {
        return None;
    }
    let mut pos = 1;
    let version = read_nul_bytes(payload, &mut pos)?;
    let conn_id = u32::from_le_bytes(payload.get(pos..pos + 4)?.try_into().ok()?);
    pos += 4;
    let mut scramble = payload.get(pos..pos + 8)?.to_vec();
    pos += 9;
    let caps_lo = u16::from_le_bytes(payload.get(pos..pos + 2)?.try_into().ok()?);
    pos += 2;
    let collation = *payload.get(pos)?;
    pos += 3; // collation + status
    let caps_hi = u16::from_le_bytes(payload.get(pos..pos + 2)?.try_into().ok()?);
    pos += 2;
    let data_len = usize::from(*payload.get(pos)?);
    pos += 11;
    let caps = CapabilityFlags::from_bits_truncate(u32::from(caps_lo) | u32::from(caps_hi) << 16);
    if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let n = data_len.saturating_sub(9).max(12);
        scramble.extend_from_slice(payload.get(pos..pos + n)?);
        pos += n + 1;
    }
    let auth_plugin = if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        let rest = payload.get(pos..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    } else {
        NATIVE_PASSWORD.to_string()
    };
    Some(BackendGreeting {
        server_version: String::from_utf8_lossy(version).into_owned(),
        conn_id,
        scramble,
        caps,
        collation,
        auth_plugin,
    })
}

/// The SSLRequest: the first 32 bytes of a handshake response, with CLIENT_SSL set, after
/// which the TLS handshake starts and the full response follows over TLS.
pub fn ssl_request(caps: CapabilityFlags, collation: u8) -> Vec<u8> {
    let caps = caps | CapabilityFlags::CLIENT_SSL;
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&caps.bits().to_le_bytes());
    out.extend_from_slice(&(super::MAX_PAYLOAD as u32).to_le_bytes());
    out.push(collation);
    out.extend_from_slice(&[0u8; 23]);
    out
}

/// The handshake response the router sends to a backend.
pub fn backend_hello(
    caps: CapabilityFlags,
    collation: u8,
    user: &str,
    token: &[u8],
    database: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&caps.bits().to_le_bytes());
    out.extend_from_slice(&(super::MAX_PAYLOAD as u32).to_le_bytes());
    out.push(collation);
    out.extend_from_slice(&[0u8; 23]);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    super::put_lenenc_bytes(&mut out, token);
    if let Some(db) = database {
        out.extend_from_slice(db.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_verifies_only_the_right_password() {
        let scramble = new_scramble();
        let stored = native_password_hash(b"secret");
        let token = scramble_native(&scramble, b"secret");
        assert!(verify_native(&scramble, &token, &stored, false));
        let wrong = scramble_native(&scramble, b"Secret");
        assert!(!verify_native(&scramble, &wrong, &stored, false));
        assert!(!verify_native(&scramble, &[], &stored, false));
        assert!(verify_native(
            &scramble,
            &[],
            &native_password_hash(b""),
            true
        ));
    }

    #[test]
    fn client_hello_round_trips_through_backend_hello() {
        let caps = router_capabilities();
        let payload = backend_hello(caps, 45, "app", &[1, 2, 3], Some("db1"));
        let hello = parse_client_hello(&payload).unwrap();
        assert_eq!(hello.user, "app");
        assert_eq!(hello.auth_response, vec![1, 2, 3]);
        assert_eq!(hello.database.as_deref(), Some("db1"));
        assert_eq!(hello.auth_plugin.as_deref(), Some(NATIVE_PASSWORD));
        assert_eq!(hello.collation, 45);
        assert!(parse_client_hello(&payload[..20]).is_err());
        assert!(parse_client_hello(&[]).is_err());
    }

    #[test]
    fn ssl_request_is_recognised_and_short_or_garbage_packets_are_refused() {
        let caps = router_capabilities();
        let req = ssl_request(caps, 45);
        assert_eq!(req.len(), 32);
        let hello = parse_client_hello(&req).unwrap();
        assert!(hello.ssl_request);
        assert!(hello.caps.contains(CapabilityFlags::CLIENT_SSL));
        assert_eq!(hello.collation, 45);
        assert!(hello.user.is_empty());
        // Cut anywhere short of 32 bytes, an SSLRequest is a malformed packet, not a panic
        // and not an SSLRequest.
        for n in 0..32 {
            assert!(
                matches!(
                    parse_client_hello(&req[..n]),
                    Err(HelloError::Malformed | HelloError::Protocol40)
                ),
                "{n} bytes"
            );
        }
        // Garbage with the SSL and 4.1 bits set but no user after the fixed part.
        let mut garbage = req.clone();
        garbage.extend_from_slice(&[0xff; 7]);
        assert_eq!(parse_client_hello(&garbage), Err(HelloError::Malformed));
        // Without PROTOCOL_41 the packet is refused as such.
        let old = (caps - CapabilityFlags::CLIENT_PROTOCOL_41) | CapabilityFlags::CLIENT_SSL;
        let mut pre41 = req.clone();
        pre41[..4].copy_from_slice(&old.bits().to_le_bytes());
        assert_eq!(parse_client_hello(&pre41), Err(HelloError::Protocol40));
    }

    #[test]
    fn greeting_parses_back() {
        let scramble = new_scramble();
        let g = server_greeting(
            7,
            "10.11.0-MariaDB",
            &scramble,
            router_capabilities(),
            45,
            2,
        );
        let parsed = parse_backend_greeting(&g).unwrap();
        assert_eq!(parsed.conn_id, 7);
        assert_eq!(parsed.scramble, scramble.to_vec());
        assert_eq!(parsed.auth_plugin, NATIVE_PASSWORD);
        assert_eq!(parsed.server_version, "10.11.0-MariaDB");
    }
}
