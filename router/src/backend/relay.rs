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
