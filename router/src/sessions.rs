//! The router's live client sessions, for the admin port's `SHOW SESSIONS` and
//! `GET /api/v1/sessions`: a session registers at login and is removed when it ends (its
//! [`SessionEntry`] is dropped).
//!
//! The hot path pays one relaxed store when a command starts and one when it ends, to a word
//! only that session writes: the command byte, a transaction flag and a timestamp packed in one
//! `u64`. Nothing is allocated per statement: the statement text is not kept (copying it would
//! cost an allocation per command), only what kind of command runs. The current database and
//! the pinned backend change rarely; they are compared with the session's own copy after each
//! command and written under a lock only when they changed.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde::Serialize;

/// The command byte shown while a session waits for its next command.
const IDLE: u8 = 0xff;
const MS_BITS: u32 = 40;
const MS_MASK: u64 = (1 << MS_BITS) - 1;
const IN_TXN: u64 = 1 << 48;

/// The first session id. The ids a client sees (the handshake's, `CONNECTION_ID()`'s with
/// multiplexing) are the router's own, in a range the servers' thread ids never reach, so
/// that `KILL n` can tell a router session from a backend thread without guessing.
pub const SESSION_ID_BASE: u32 = 1 << 30;

/// Bits of [`SessionInfo::running`]: a statement runs on a backend connection (the backend's
/// slot in bits 32..48, the connection's thread id in bits 0..32), and a `KILL` was sent to it.
const RUNNING: u64 = 1 << 63;
const KILL_SENT: u64 = 1 << 62;

/// Every live client session of one router.
#[derive(Debug)]
pub struct SessionRegistry {
    sessions: DashMap<u32, Arc<SessionInfo>>,
    /// Timestamps are milliseconds since this instant.
    base: Instant,
    /// Backend addresses by slot, for [`SessionInfo::running`] (a handful: one per server).
    backends: Mutex<Vec<Arc<str>>>,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            sessions: DashMap::new(),
            base: Instant::now(),
            backends: Mutex::new(Vec::new()),
        }
    }
}

/// What the registry knows of one session.
#[derive(Debug)]
pub struct SessionInfo {
    pub id: u32,
    /// Changes only with COM_CHANGE_USER.
    user: Mutex<Arc<str>>,
    /// The client's address.
    pub peer: String,
    /// Unix time of the login, in milliseconds.
    pub connected_at_ms: u64,
    /// Command byte (bits 40..48, 0xff: idle), in-transaction flag (bit 48), and when the
    /// session entered that state (bits 0..40, ms since the registry's base).
    activity: AtomicU64,
    db: Mutex<Option<Arc<str>>>,
    backend: Mutex<Option<Arc<str>>>,
    /// The backend connection running the session's statement, if one runs: `RUNNING`,
    /// `KILL_SENT`, the backend's slot and the connection's thread id (see the constants).
    running: AtomicU64,
    /// The client socket's descriptor, by which `KILL CONNECTION` ends the session whatever
    /// it is waiting for. The session removes it before its socket closes.
    client: Mutex<Option<RawFd>>,
    /// Ended by `KILL CONNECTION`.
    killed: AtomicBool,
}

impl SessionInfo {
    /// The session's user name.
    pub fn user(&self) -> Arc<str> {
        lock(&self.user).clone()
    }

    /// Marks the statement running now as killed and returns where it runs (the backend and
    /// the connection's thread id), or `None` when none runs. A connection so marked never
    /// serves another session (see [`SessionEntry::statement_done`]): a `KILL QUERY` that
    /// reaches its server late must not stop someone else's statement.
    pub fn kill_statement(&self, registry: &SessionRegistry) -> Option<(Arc<str>, u32)> {
        let cur = self
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur & RUNNING != 0).then_some(cur | KILL_SENT)
            })
            .ok()?;
        let slot = ((cur >> 32) & 0xffff) as usize;
        let addr = lock(&registry.backends).get(slot).cloned()?;
        Some((addr, cur as u32))
    }

    /// Ends the session's client connection (both directions): the session sees its client
    /// gone at its next read or write, and closes what it holds.
    pub fn end_connection(&self) {
        self.killed.store(true, Ordering::Release);
        let client = lock(&self.client);
        if let Some(fd) = *client {
            // SAFETY: `fd` is the session's open client socket: the session stores it at
            // login and removes it, under this lock, before the socket is closed
            // (`SessionEntry::forget_client_socket`, from the session's `Drop`).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One session as `SHOW SESSIONS` and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub id: u32,
    pub user: String,
    /// The client's address.
    pub peer: String,
    /// The session's current database.
    pub db: Option<String>,
    /// `Sleep` between commands, else the command running (`Query`, `Execute`, ...).
    pub command: &'static str,
    /// Seconds since the session entered that state.
    pub seconds: u64,
    /// Whether a transaction was open after the last command.
    pub in_transaction: bool,
    /// The backend the session is pinned to (a transaction, locks, temporary tables), if any.
    pub backend: Option<String>,
    /// Unix time of the login, in milliseconds.
    pub connected_at_ms: u64,
}

/// The name MySQL's process list gives a command byte.
pub fn command_name(command: u8) -> &'static str {
    match command {
        IDLE => "Sleep",
        0x01 => "Quit",
        0x02 => "Init DB",
        0x03 => "Query",
        0x04 => "Field List",
        0x09 => "Statistics",
        0x0e => "Ping",
        0x11 => "Change user",
        0x16 => "Prepare",
        0x17 => "Execute",
        0x18 => "Long Data",
        0x19 => "Close stmt",
        0x1a => "Reset stmt",
        0x1b => "Set option",
        0x1c => "Fetch",
        0x1f => "Reset connection",
        _ => "Unknown",
    }
}

impl SessionRegistry {
    /// Registers a session that just logged in; it is removed when the entry drops.
    pub fn register(self: &Arc<Self>, id: u32, user: Arc<str>, peer: &str) -> SessionEntry {
        let now = self.now_ms();
        let info = Arc::new(SessionInfo {
            id,
            user: Mutex::new(user),
            peer: peer.to_string(),
            connected_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            activity: AtomicU64::new(pack(IDLE, false, now)),
            db: Mutex::new(None),
            backend: Mutex::new(None),
            running: AtomicU64::new(0),
            client: Mutex::new(None),
            killed: AtomicBool::new(false),
        });
        self.sessions.insert(id, info.clone());
        SessionEntry {
            registry: self.clone(),
            info,
            shown_db: None,
            shown_backend: None,
            slots: Vec::new(),
        }
    }

    /// The live session `id`.
    pub fn get(&self, id: u32) -> Option<Arc<SessionInfo>> {
        self.sessions.get(&id).map(|s| s.clone())
    }

    /// The one session whose statement runs now on a backend connection of thread id
    /// `thread` (an id read from a server's process list); `None` when none, or when
    /// connections to several servers have that id.
    pub fn running_on_thread(&self, thread: u64) -> Option<Arc<SessionInfo>> {
        let thread = u32::try_from(thread).ok()?;
        let mut found = self.sessions.iter().filter(|s| {
            let r = s.running.load(Ordering::Acquire);
            r & RUNNING != 0 && r as u32 == thread
        });
        let one = found.next().map(|s| s.clone());
        if found.next().is_some() {
            return None;
        }
        one
    }

    /// Every live session of `user`.
    pub fn of_user(&self, user: &str) -> Vec<Arc<SessionInfo>> {
        self.sessions
            .iter()
            .filter(|s| **lock(&s.user) == *user)
            .map(|s| s.clone())
            .collect()
    }

    /// The slot of backend `addr` (`None` past 65536 backends: statements there can't be
    /// killed by id).
    fn backend_slot(&self, addr: &Arc<str>) -> Option<u16> {
        let mut all = lock(&self.backends);
        if let Some(i) = all.iter().position(|a| **a == **addr) {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(all.len()).ok()?;
        all.push(addr.clone());
        Some(i)
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Every live session, by id.
    pub fn list(&self) -> Vec<SessionView> {
        let now = self.now_ms();
        let mut all: Vec<SessionView> = self
            .sessions
            .iter()
            .map(|s| {
                let a = s.activity.load(Ordering::Relaxed);
                let since = a & MS_MASK;
                SessionView {
                    id: s.id,
                    user: lock(&s.user).to_string(),
                    peer: s.peer.clone(),
                    db: lock(&s.db).as_deref().map(str::to_owned),
                    command: command_name((a >> MS_BITS) as u8),
                    seconds: now.saturating_sub(since) / 1000,
                    in_transaction: a & IN_TXN != 0,
                    backend: lock(&s.backend).as_deref().map(str::to_owned),
                    connected_at_ms: s.connected_at_ms,
                }
            })
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64 & MS_MASK
    }
}

fn pack(command: u8, in_txn: bool, ms: u64) -> u64 {
    (u64::from(command) << MS_BITS) | if in_txn { IN_TXN } else { 0 } | (ms & MS_MASK)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's registration, owned by the session; dropping it removes the session.
#[derive(Debug)]
pub struct SessionEntry {
    registry: Arc<SessionRegistry>,
    info: Arc<SessionInfo>,
    /// What `info.db` / `info.backend` hold, so that they are locked only on change.
    shown_db: Option<Arc<str>>,
    shown_backend: Option<Arc<str>>,
    /// The backends this session ran statements on and their slots, so that the registry's
    /// list (under its lock) is searched only the first time.
    slots: Vec<(Arc<str>, Option<u16>)>,
}

impl SessionEntry {
    /// The session's id.
    pub fn id(&self) -> u32 {
        self.info.id
    }

    /// The client socket's descriptor, for `KILL CONNECTION`. The caller must call
    /// [`SessionEntry::forget_client_socket`] before that socket is closed.
    pub fn set_client_socket(&self, fd: RawFd) {
        *lock(&self.info.client) = Some(fd);
    }

    /// Whether `KILL CONNECTION` ended the session.
    pub fn was_killed(&self) -> bool {
        self.info.killed.load(Ordering::Acquire)
    }

    /// The client socket is about to close: `KILL CONNECTION` no longer touches it.
    pub fn forget_client_socket(&self) {
        *lock(&self.info.client) = None;
    }

    /// A statement starts on the backend connection `thread` of `addr`.
    pub fn statement_on(&mut self, addr: &Arc<str>, thread: u32) {
        let slot = match self.slots.iter().find(|(a, _)| **a == **addr) {
            Some((_, slot)) => *slot,
            None => {
                let slot = self.registry.backend_slot(addr);
                self.slots.push((addr.clone(), slot));
                slot
            }
        };
        if let Some(slot) = slot {
            self.info.running.store(
                RUNNING | (u64::from(slot) << 32) | u64::from(thread),
                Ordering::Release,
            );
        }
    }

    /// The statement ended; `true` when a `KILL` was sent to its connection meanwhile (the
    /// connection must then not go back to the pool).
    pub fn statement_done(&self) -> bool {
        self.info.running.swap(0, Ordering::AcqRel) & KILL_SENT != 0
    }

    /// The session logged in again as `user` (COM_CHANGE_USER).
    pub fn set_user(&self, user: Arc<str>) {
        *lock(&self.info.user) = user;
    }

    /// A command (its first byte) starts at `at`.
    pub fn started(&self, command: u8, at: Instant) {
        let a = self.info.activity.load(Ordering::Relaxed);
        let in_txn = a & IN_TXN != 0;
        self.info.activity.store(
            pack(command, in_txn, self.registry.ms(at)),
            Ordering::Relaxed,
        );
    }

    /// The session waits for its next command since `at`, in this state.
    pub fn idle(
        &mut self,
        at: Instant,
        in_transaction: bool,
        db: Option<&str>,
        backend: Option<&Arc<str>>,
    ) {
        self.info.activity.store(
            pack(IDLE, in_transaction, self.registry.ms(at)),
            Ordering::Relaxed,
        );
        if self.shown_db.as_deref() != db {
            let db: Option<Arc<str>> = db.map(Arc::from);
            *lock(&self.info.db) = db.clone();
            self.shown_db = db;
        }
        let same_backend = match (&self.shown_backend, backend) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
            _ => false,
        };
        if !same_backend {
            let backend = backend.cloned();
            *lock(&self.info.backend) = backend.clone();
            self.shown_backend = backend;
        }
    }
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.info.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_listed_until_its_entry_drops() {
        let reg = Arc::new(SessionRegistry::default());
        let mut e = reg.register(7, "app".into(), "127.0.0.1:5000");
        let now = Instant::now();
        e.started(0x03, now);
        let v = reg.list();
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].id, v[0].command), (7, "Query"));
        assert_eq!(v[0].db, None);
        let backend: Arc<str> = "127.0.0.1:3310".into();
        e.idle(now, true, Some("app"), Some(&backend));
        let v = reg.list();
        assert_eq!(v[0].command, "Sleep");
        assert!(v[0].in_transaction);
        assert_eq!(v[0].db.as_deref(), Some("app"));
        assert_eq!(v[0].backend.as_deref(), Some("127.0.0.1:3310"));
        e.started(0x17, now);
        assert!(reg.list()[0].in_transaction, "kept while a command runs");
        e.idle(now, false, None, None);
        e.set_user("other".into());
        let v = reg.list();
        assert_eq!(v[0].user, "other");
        assert_eq!((v[0].db.clone(), v[0].backend.clone()), (None, None));
        drop(e);
        assert!(reg.list().is_empty());
    }

    #[test]
    fn a_kill_finds_the_running_statement_and_marks_its_connection() {
        let reg = Arc::new(SessionRegistry::default());
        let mut e = reg.register(SESSION_ID_BASE, "app".into(), "127.0.0.1:5000");
        let info = reg.get(SESSION_ID_BASE).expect("listed");
        assert_eq!(info.kill_statement(&reg), None, "nothing runs");
        let a: Arc<str> = "127.0.0.1:3310".into();
        let b: Arc<str> = "127.0.0.1:3311".into();
        e.statement_on(&a, 42);
        assert!(!e.statement_done(), "no KILL came");
        e.statement_on(&b, u32::MAX);
        assert_eq!(info.kill_statement(&reg), Some((b.clone(), u32::MAX)));
        assert!(e.statement_done(), "its connection is marked");
        assert_eq!(info.kill_statement(&reg), None, "it ended");
        e.statement_on(&a, 7);
        assert_eq!(info.kill_statement(&reg), Some((a, 7)));
        assert_eq!(
            reg.running_on_thread(7).map(|s| s.id),
            Some(SESSION_ID_BASE)
        );
        assert!(reg.running_on_thread(8).is_none());
        assert_eq!(reg.of_user("app").len(), 1);
        assert!(reg.of_user("other").is_empty());
    }

    #[test]
    fn packing_keeps_each_field() {
        let p = pack(0x17, true, MS_MASK);
        assert_eq!((p >> MS_BITS) as u8, 0x17);
        assert_ne!(p & IN_TXN, 0);
        assert_eq!(p & MS_MASK, MS_MASK);
    }
}
