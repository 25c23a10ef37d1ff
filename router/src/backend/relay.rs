//! The hot path: relay a backend's response to the client as raw bytes, reading only packet
//! headers and the few packets that steer the state machine (column count, EOF/OK, ERR).
//! Rows are never decoded, and sequence ids pass through untouched because the router sends
//! each client command to the backend as a command of its own (sequence id 0).

use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::{BackendConn, CURSOR_EXISTS, MORE_RESULTS};
use super::BackendError;
use crate::protocol::{
    is_eof_or_ok_terminator, parse_eof, parse_err, parse_ok, read_lenenc_int, terminator_status,
    OkInfo, PacketReader, PacketWriter, ServerError, MAX_PAYLOAD,
};

/// What kind of response to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// COM_QUERY / COM_STMT_EXECUTE: OK, ERR, or result sets (possibly several).
    ResultSet { cursor: bool },
    /// COM_STMT_FETCH and COM_FIELD_LIST: packets up to a terminator.
    Rows,
    /// A command answered by exactly one packet (COM_INIT_DB, COM_STATISTICS, ...).
    Single,
}

/// What the router learned from a relayed response.
#[derive(Debug, Clone, Default)]
pub struct RelayOutcome {
    /// Status flags of the final packet (0 when it was an ERR).
    pub status: u16,
    /// The last OK packet seen, for affected rows and last insert id.
    pub ok: Option<OkInfo>,
    /// The server error that ended the response, if any.
    pub error: Option<ServerError>,
    /// Warnings of the final OK/EOF packet.
    pub warnings: u16,
    /// The response ended with a cursor open (rows come by COM_STMT_FETCH).
    pub cursor_open: bool,
    /// With `intercept_first_error`: the response was a lone ERR packet, kept back from the
    /// client (its sequence id and payload) so that the caller may retry elsewhere.
    pub intercepted: Option<(u8, Vec<u8>)>,
}

/// Why a relay stopped before the response ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The backend failed. `forwarded` says whether any part of the response reached the
    /// client already, and `next_seq` the sequence id an error packet must carry.
    #[error("backend: {source}")]
    Backend {
        source: BackendError,
        forwarded: bool,
        next_seq: u8,
    },
    /// The client went away; the backend connection is mid-response and unusable.
    #[error("client: {0}")]
    Client(std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Columns(u64),
    ColumnsEof,
    Rows,
    Done,
}

/// A packet larger than this cannot be a packet the state machine must read whole (OK, ERR,
/// EOF, column count, LOCAL INFILE request), so it is streamed through without buffering.
const STREAM_THRESHOLD: usize = 64 * 1024;
/// Flush to the client once this much is queued.
const FLUSH_AT: usize = 64 * 1024;

/// Relays one response from `conn` to the client. `client_in` is needed only to answer a
/// LOCAL INFILE request; without it such a request is answered with an empty file.
pub async fn relay<W, R>(
    conn: &mut BackendConn,
    mode: RelayMode,
    client: &mut PacketWriter<W>,
    mut client_in: Option<&mut PacketReader<R>>,
    intercept_first_error: bool,
) -> Result<RelayOutcome, RelayError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let deprecate_eof = conn.deprecate_eof;
    let mut state = match mode {
        RelayMode::ResultSet { .. } | RelayMode::Single => State::Start,
        RelayMode::Rows => State::Rows,
    };
    let cursor = matches!(mode, RelayMode::ResultSet { cursor: true });
    let mut out = RelayOutcome::default();
    // Bytes of the current physical packet still to pass through uninterpreted.
    let mut skip = 0usize;
    // The previous physical packet was full, so the next one continues it.
    let mut continuing = false;
    let mut forwarded = false;
    let mut next_seq = 1u8;
    let mut watch_client = true;
    loop {
        let buf = conn.reader().buffer();
        let mut consumed = 0usize;
        let mut infile = false;
        while state != State::Done {
            if skip > 0 {
                let n = skip.min(buf.len() - consumed);
                consumed += n;
                skip -= n;
                if skip > 0 {
                    break;
                }
                continue;
            }
            let avail = buf.len() - consumed;
            if avail < 4 {
                break;
            }
            let h = &buf[consumed..consumed + 4];
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            next_seq = h[3].wrapping_add(1);
            let was_continuing = continuing;
            continuing = len == MAX_PAYLOAD;
            let streamable = matches!(state, State::Columns(_) | State::Rows);
            if was_continuing || (len >= STREAM_THRESHOLD && streamable) {
                // Part of a row or column definition: pass it on without reading it.
                if !was_continuing {
                    if let State::Columns(n) = state {
                        state = after_column(n, deprecate_eof, cursor);
                    }
                }
                consumed += 4;
                skip = len;
                continue;
            }
            if avail < 4 + len {
                break;
            }
            let payload = &buf[consumed + 4..consumed + 4 + len];
            if intercept_first_error
                && !forwarded
                && consumed == 0
                && payload.first() == Some(&0xff)
            {
                let seq = h[3];
                let parsed = parse_err(payload);
                let raw = payload.to_vec();
                conn.consume(4 + len);
                let Some(e) = parsed else {
                    conn.broken = true;
                    return Err(RelayError::Backend {
                        source: BackendError::Protocol("malformed ERR".into()),
                        forwarded: false,
                        next_seq,
                    });
                };
                out.error = Some(e);
                out.intercepted = Some((seq, raw));
                return Ok(out);
            }
            consumed += 4 + len;
            state = match step(state, payload, deprecate_eof, cursor, mode, &mut out) {
                Ok(Step::Next(s)) => s,
                Ok(Step::LocalInfile) => {
                    infile = true;
                    break;
                }
                Err(what) => {
                    conn.broken = true;
                    return Err(RelayError::Backend {
                        source: BackendError::Protocol(format!("{what} from {}", conn.addr)),
                        forwarded,
                        next_seq,
                    });
                }
            };
        }
        if consumed > 0 {
            client.push_raw(&buf[..consumed]);
            conn.consume(consumed);
            forwarded = true;
        }
        if state == State::Done {
            if !conn.reader().buffer().is_empty() {
                // The backend sent more than one response: the state machine and the server
                // disagree about where this one ended, so nothing more from this connection
                // can be trusted. The client may still be waiting for the rest: it gets an
                // error, and the connection is dropped.
                conn.broken = true;
                return Err(RelayError::Backend {
                    source: BackendError::Protocol(format!(
                        "unexpected data after the end of a response from {}",
                        conn.addr
                    )),
                    forwarded: true,
                    next_seq,
                });
            }
            client.flush().await.map_err(|e| {
                conn.broken = true;
                RelayError::Client(e)
            })?;
            return Ok(out);
        }
        // Between two results of a multi-result response (a procedure's), what is complete
        // goes out before waiting: the next result may take its time.
        if infile || client.pending() >= FLUSH_AT || (state == State::Start && client.pending() > 0)
        {
            client.flush().await.map_err(|e| {
                conn.broken = true;
                RelayError::Client(e)
            })?;
        }
        if infile {
            Box::pin(send_local_file(conn, client_in.as_deref_mut(), next_seq)).await?;
            continue;
        }
        let filled = match client_in.as_deref_mut().filter(|_| watch_client) {
            // While the backend is silent, a client that goes away (its own timeout, Ctrl-C,
            // a killed test) ends the relay: the session and its backend connection are not
            // left waiting for a response nobody reads.
            Some(cin) => tokio::select! {
                biased;
                r = conn.reader().fill() => r,
                c = cin.fill() => {
                    match c {
                        Ok(n) if n > 0 => {
                            // Pipelined commands: kept for after this response.
                            watch_client = false;
                            continue;
                        }
                        _ => {
                            conn.broken = true;
                            return Err(RelayError::Client(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "client went away while the backend was answering",
                            )));
                        }
                    }
                }
            },
            None => conn.reader().fill().await,
        };
        match filled {
            Ok(0) => {
                conn.broken = true;
                return Err(RelayError::Backend {
                    source: BackendError::Closed(conn.addr.to_string()),
                    forwarded,
                    next_seq,
                });
            }
            Ok(_) => {}
            Err(e) => {
                conn.broken = true;
                return Err(RelayError::Backend {
                    source: BackendError::Io(conn.addr.to_string(), e.to_string()),
                    forwarded,
                    next_seq,
                });
            }
        }
    }
}

enum Step {
    Next(State),
    LocalInfile,
}

fn after_column(remaining: u64, deprecate_eof: bool, cursor: bool) -> State {
    if remaining > 1 {
        State::Columns(remaining - 1)
    } else if deprecate_eof && !cursor {
        State::Rows
    } else {
        State::ColumnsEof
    }
}

fn step(
    state: State,
    p: &[u8],
    deprecate_eof: bool,
    cursor: bool,
    mode: RelayMode,
    out: &mut RelayOutcome,
) -> Result<Step, &'static str> {
    let first = p.first().copied();
    if first == Some(0xff) && !matches!(state, State::Columns(_)) {
        out.error = Some(parse_err(p).ok_or("malformed ERR")?);
        out.status = 0;
        return Ok(Step::Next(State::Done));
    }
    let next = match state {
        State::Start => match first {
            _ if mode == RelayMode::Single => {
                if first == Some(0x00) || (first == Some(0xfe) && p.len() < 9) {
                    if let Some(ok) = parse_ok(p).filter(|_| first == Some(0x00)) {
                        out.status = ok.status;
                        out.ok = Some(ok);
                    } else if let Some((_, status)) = parse_eof(p) {
                        out.status = status;
                    }
                }
                State::Done
            }
            Some(0x00) => {
                let ok = parse_ok(p).ok_or("malformed OK")?;
                out.status = ok.status;
                out.warnings = ok.warnings;
                out.ok = Some(ok);
                more_or_done(ok.status)
            }
            Some(0xfb) => return Ok(Step::LocalInfile),
            Some(_) => {
                let mut pos = 0;
                let n = read_lenenc_int(p, &mut pos).ok_or("malformed column count")?;
                if n == 0 {
                    return Err("zero column count");
                }
                State::Columns(n)
            }
            None => return Err("empty packet"),
        },
        State::Columns(n) => after_column(n, deprecate_eof, cursor),
        State::ColumnsEof => {
            if is_eof_or_ok_terminator(p) && p.len() < 9 {
                let (_, status) = parse_eof(p).ok_or("malformed EOF")?;
                out.status = status;
                // Only an execute that asked for a cursor gets one: a stored program's
                // result sets can carry the flag of its own cursors (a FOR loop's), and
                // their rows follow as usual.
                if cursor && status & CURSOR_EXISTS != 0 {
                    out.cursor_open = true;
                    State::Done
                } else {
                    State::Rows
                }
            } else if deprecate_eof {
                // A row already: the server opened no cursor.
                State::Rows
            } else {
                return Err("missing EOF after column definitions");
            }
        }
        State::Rows => {
            if is_eof_or_ok_terminator(p) {
                let status = terminator_status(p, deprecate_eof).ok_or("malformed terminator")?;
                out.status = status;
                if deprecate_eof && p.len() > 5 {
                    out.ok = parse_ok(p);
                    out.warnings = out.ok.map_or(0, |ok| ok.warnings);
                } else {
                    out.warnings = parse_eof(p).map_or(0, |(w, _)| w);
                }
                if matches!(mode, RelayMode::Rows) {
                    State::Done
                } else {
                    more_or_done(status)
                }
            } else {
                State::Rows
            }
        }
        State::Done => State::Done,
    };
    Ok(Step::Next(next))
}

fn more_or_done(status: u16) -> State {
    if status & MORE_RESULTS != 0 {
        State::Start
    } else {
        State::Done
    }
}

/// Answers a LOCAL INFILE request: the client's file packets go to the backend up to the
/// empty packet that ends them. Without a client reader the file is empty.
async fn send_local_file<R: AsyncRead + Unpin>(
    conn: &mut BackendConn,
    client_in: Option<&mut PacketReader<R>>,
    mut seq: u8,
) -> Result<(), RelayError> {
    let backend_err = |conn: &mut BackendConn, source| {
        conn.broken = true;
        RelayError::Backend {
            source,
            forwarded: true,
            next_seq: 0,
        }
    };
    let Some(client_in) = client_in else {
        return conn
            .write_packet(seq, &[])
            .await
            .map_err(|e| backend_err(conn, e));
    };
    loop {
        let msg = client_in.read_message(usize::MAX).await;
        let (_, last, data) = match msg {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                conn.broken = true;
                return Err(RelayError::Client(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "client went away during LOCAL INFILE",
                )));
            }
        };
        let mut framed = Vec::with_capacity(data.len() + 8);
        let next = crate::protocol::packet::frame(seq, &data, &mut framed);
        if let Err(e) = conn.write_framed(&framed).await {
            return Err(backend_err(
                conn,
                BackendError::Io(conn.addr.to_string(), e.to_string()),
            ));
        }
        seq = next.max(last.wrapping_add(1));
        if data.is_empty() {
            return Ok(());
        }
    }
}

/// Responses a server should never send, or that the relay once misread, from a fake backend:
/// each one ends with the whole response relayed or with an error, within a bound, and a
/// backend connection left in doubt is marked broken (dropped, never pooled again).
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
    use tokio::net::TcpListener;

    use super::*;
    use crate::backend::conn::ConnectOptions;
    use crate::protocol::packet::frame;
    use crate::protocol::{CapabilityFlags, StatusFlags};

    const BOUND: Duration = Duration::from_secs(5);
    const AUTOCOMMIT: u16 = 0x0002;

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p
    }

    fn ok(status: u16) -> Vec<u8> {
        crate::protocol::ok_payload(0, 0, StatusFlags::from_bits_truncate(status), 0, 0)
    }

    fn column(name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "", "", "", name, ""] {
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
        p.extend_from_slice(&[0x0c, 0x21, 0, 0xff, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        p
    }

    /// One result set of one column and `rows` rows, its last EOF with `status`.
    fn result_set(first_seq: u8, rows: &[&str], header_status: u16, status: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seq = frame(first_seq, &[1], &mut out);
        seq = frame(seq, &column("a"), &mut out);
        seq = frame(seq, &eof(header_status), &mut out);
        for r in rows {
            let mut row = vec![r.len() as u8];
            row.extend_from_slice(r.as_bytes());
            seq = frame(seq, &row, &mut out);
        }
        frame(seq, &eof(status), &mut out);
        out
    }

    fn greeting() -> Vec<u8> {
        let caps = (CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_MULTI_STATEMENTS
            | CapabilityFlags::CLIENT_TRANSACTIONS)
            .bits();
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.0-fake\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&AUTOCOMMIT.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    /// What the fake backend does after the login and the first command.
    enum Then {
        /// Keeps the connection open, saying nothing more.
        Silence,
        /// Closes the connection.
        Close,
    }

    /// A backend that accepts any login and answers the first command with `response`
    /// (framed packets, written at once), then does `then`. Returns its address.
    async fn fake_backend(response: Vec<u8>, then: Then) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut out = Vec::new();
            frame(0, &greeting(), &mut out);
            s.write_all(&out).await.unwrap();
            let mut buf = vec![0u8; 4096];
            // The login, then the command: one packet each, short.
            let _ = s.read(&mut buf).await;
            out.clear();
            frame(2, &ok(AUTOCOMMIT), &mut out);
            s.write_all(&out).await.unwrap();
            let _ = s.read(&mut buf).await;
            s.write_all(&response).await.unwrap();
            match then {
                Then::Close => drop(s),
                Then::Silence => {
                    // Until the router closes its end.
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            }
        });
        addr
    }

    struct Client {
        writer: PacketWriter<WriteHalf<DuplexStream>>,
        reader: PacketReader<ReadHalf<DuplexStream>>,
        app: DuplexStream,
    }

    fn client() -> Client {
        let (router_side, app) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(router_side);
        Client {
            writer: PacketWriter::new(w),
            reader: PacketReader::with_chunk(r, 2048),
            app,
        }
    }

    async fn connect(addr: &str) -> BackendConn {
        let opts = ConnectOptions {
            user: "root".into(),
            password: "".into(),
            deprecate_eof: false,
            found_rows: false,
            connect_timeout: BOUND,
            tls: None,
            tcp: Default::default(),
        };
        let mut conn = BackendConn::connect(addr, &opts).await.unwrap();
        conn.send_command(b"\x03CALL p()").await.unwrap();
        conn
    }

    async fn run(
        conn: &mut BackendConn,
        c: &mut Client,
        cursor: bool,
    ) -> Result<RelayOutcome, RelayError> {
        let relayed = relay(
            conn,
            RelayMode::ResultSet { cursor },
            &mut c.writer,
            Some(&mut c.reader),
            false,
        );
        tokio::time::timeout(BOUND, relayed)
            .await
            .expect("the relay answers within its bound")
    }

    /// What the application received, once the relay is over.
    async fn received(c: Client) -> Vec<u8> {
        let Client {
            writer,
            reader,
            app,
        } = c;
        // Both halves gone: the application's end reads to the end.
        drop((writer, reader));
        let mut app = app;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(BOUND, app.read_to_end(&mut got)).await;
        got
    }

    #[tokio::test]
    async fn a_for_loops_cursor_flag_does_not_end_a_text_result() {
        // MariaDB marks the result sets of a FOR loop over a cursor with CURSOR_EXISTS; they
        // are ordinary result sets of a text statement, rows included.
        let flags = MORE_RESULTS | CURSOR_EXISTS | AUTOCOMMIT;
        let mut response = result_set(1, &["x"], flags, flags);
        response.extend(result_set(6, &[], flags, flags));
        frame(10, &ok(AUTOCOMMIT), &mut response);
        let addr = fake_backend(response.clone(), Then::Silence).await;
        let mut conn = connect(&addr).await;
        let mut c = client();
        let out = run(&mut conn, &mut c, false).await.unwrap();
        assert!(!out.cursor_open && out.error.is_none());
        assert_eq!(out.status, AUTOCOMMIT);
        assert!(!conn.broken);
        assert_eq!(
            received(c).await,
            response,
            "every packet reached the client"
        );
    }

    #[tokio::test]
    async fn a_result_set_between_a_procedures_oks_is_relayed() {
        let mut response = Vec::new();
        frame(1, &ok(MORE_RESULTS | AUTOCOMMIT), &mut response);
        response.extend(result_set(
            2,
            &["1", "2"],
            AUTOCOMMIT,
            MORE_RESULTS | AUTOCOMMIT,
        ));
        frame(8, &ok(MORE_RESULTS | AUTOCOMMIT), &mut response);
        frame(9, &ok(AUTOCOMMIT), &mut response);
        let addr = fake_backend(response.clone(), Then::Silence).await;
        let mut conn = connect(&addr).await;
        let mut c = client();
        let out = run(&mut conn, &mut c, false).await.unwrap();
        assert!(out.error.is_none() && !conn.broken);
        assert_eq!(received(c).await, response);
    }

    #[tokio::test]
    async fn a_second_response_without_the_more_results_flag_is_an_error() {
        // The first result says it is the last, yet another follows: the client gets an
        // error in place of the rest, and the connection is dropped.
        let mut response = result_set(1, &["x"], AUTOCOMMIT, AUTOCOMMIT);
        frame(6, &ok(AUTOCOMMIT), &mut response);
        let addr = fake_backend(response, Then::Silence).await;
        let mut conn = connect(&addr).await;
        let mut c = client();
        match run(&mut conn, &mut c, false).await {
            Err(RelayError::Backend {
                source: BackendError::Protocol(_),
                forwarded: true,
                next_seq: 6,
            }) => {}
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert!(conn.broken);
    }

    #[tokio::test]
    async fn unreadable_packets_are_errors() {
        // A truncated column count, an empty packet, a missing EOF after the columns.
        let mut truncated = Vec::new();
        frame(1, &[0xfc, 1], &mut truncated);
        let mut empty = Vec::new();
        frame(1, &[], &mut empty);
        let mut no_eof = Vec::new();
        let seq = frame(1, &[1], &mut no_eof);
        let seq = frame(seq, &column("a"), &mut no_eof);
        frame(seq, &[1, b'x'], &mut no_eof);
        for response in [truncated, empty, no_eof] {
            let addr = fake_backend(response.clone(), Then::Silence).await;
            let mut conn = connect(&addr).await;
            let mut c = client();
            match run(&mut conn, &mut c, false).await {
                Err(RelayError::Backend {
                    source: BackendError::Protocol(_),
                    ..
                }) => {}
                other => panic!("expected a protocol error for {response:?}, got {other:?}"),
            }
            assert!(conn.broken);
        }
    }

    #[tokio::test]
    async fn a_backend_gone_after_announcing_more_results_is_an_error() {
        let mut response = Vec::new();
        frame(1, &ok(MORE_RESULTS | AUTOCOMMIT), &mut response);
        let addr = fake_backend(response, Then::Close).await;
        let mut conn = connect(&addr).await;
        let mut c = client();
        match run(&mut conn, &mut c, false).await {
            Err(RelayError::Backend {
                source: BackendError::Closed(_),
                forwarded: true,
                ..
            }) => {}
            other => panic!("expected a closed backend, got {other:?}"),
        }
        assert!(conn.broken);
    }

    #[tokio::test]
    async fn a_client_gone_while_the_backend_is_silent_ends_the_relay() {
        // More results announced, then nothing: the relay waits for the backend, but not
        // past the client's leaving.
        let mut response = Vec::new();
        frame(1, &ok(MORE_RESULTS | AUTOCOMMIT), &mut response);
        let addr = fake_backend(response, Then::Silence).await;
        let mut conn = connect(&addr).await;
        let Client {
            mut writer,
            mut reader,
            app,
        } = client();
        let relayed = relay(
            &mut conn,
            RelayMode::ResultSet { cursor: false },
            &mut writer,
            Some(&mut reader),
            false,
        );
        let leave = async move {
            let mut app = app;
            // The first OK reaches the client before the relay waits for the next result.
            let mut first = [0u8; 11];
            app.read_exact(&mut first).await.unwrap();
            drop(app);
        };
        let (result, ()) = tokio::time::timeout(BOUND, async { tokio::join!(relayed, leave) })
            .await
            .expect("the relay ends within its bound once the client is gone");
        assert!(matches!(result, Err(RelayError::Client(_))), "{result:?}");
        assert!(conn.broken);
    }

    #[tokio::test]
    async fn a_cursor_execute_still_stops_at_the_open_cursor() {
        let mut response = Vec::new();
        let seq = frame(1, &[1], &mut response);
        let seq = frame(seq, &column("a"), &mut response);
        frame(seq, &eof(CURSOR_EXISTS | AUTOCOMMIT), &mut response);
        let addr = fake_backend(response, Then::Silence).await;
        let mut conn = connect(&addr).await;
        let mut c = client();
        let out = run(&mut conn, &mut c, true).await.unwrap();
        assert!(out.cursor_open && !conn.broken);
    }
}
