//! Bounded pools of backend connections, one per server (and per protocol flavour, since rows
//! are relayed raw and the client's DEPRECATE_EOF / FOUND_ROWS choice shapes them).
//! A checkout is a guard that gives the connection back when dropped.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::conn::{BackendConn, ConnState, ConnectOptions};
use super::BackendError;

/// What makes two backend connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: Arc<str>,
    pub user: Arc<str>,
    pub deprecate_eof: bool,
    pub found_rows: bool,
}

/// Pool limits and timeouts.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections per server and flavour, busy plus idle.
    pub max_per_server: usize,
    /// How long a checkout waits for a free connection before it fails.
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// TLS towards the servers (`None`: plain text).
    pub tls: Option<crate::tls::BackendTls>,
    /// The sockets' source address and dead-path detection.
    pub tcp: crate::backend::TcpOptions,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_per_server: 200,
            wait_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(300),
            tls: None,
            tcp: Default::default(),
        }
    }
}

/// One server's pool.
#[derive(Debug)]
pub struct Pool {
    key: PoolKey,
    password: Arc<str>,
    idle: Mutex<Vec<BackendConn>>,
    permits: Arc<Semaphore>,
    opts: PoolOptions,
    /// The socket of every open connection of this pool, idle or checked out.
    sockets: Arc<Sockets>,
}

/// Handles on the sockets of a pool's open connections, by connection, so that all of them
/// can be cut at once: a read waiting on a server that will never answer (frozen, or cut
/// off without a reset) then ends at once, as if the server had closed the connection.
#[derive(Debug, Default)]
struct Sockets {
    next: AtomicU64,
    open: Mutex<HashMap<u64, std::os::fd::OwnedFd, crate::FastHash>>,
}

/// A connection's entry in its pool's [`Sockets`], removed when the connection is dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    sockets: Arc<Sockets>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.sockets.open).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sockets {
    fn register(self: &Arc<Self>, socket: std::os::fd::OwnedFd) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(id, socket);
        Registration {
            sockets: self.clone(),
            id,
        }
    }

    /// Shuts every registered socket down (both directions); returns how many.
    fn cut_all(&self) -> usize {
        let open = lock(&self.open);
        for socket in open.values() {
            let _ = socket2::SockRef::from(socket).shutdown(Shutdown::Both);
        }
        open.len()
    }
}

/// Every pool, by key.
#[derive(Debug, Default)]
pub struct Pools {
    pools: DashMap<PoolKey, Arc<Pool>, crate::FastHash>,
    opts: PoolOptions,
}

impl Pools {
    pub fn new(opts: PoolOptions) -> Self {
        Pools {
            pools: DashMap::default(),
            opts,
        }
    }

    /// Takes a connection for `key`, preferring an idle one whose state already matches.
    pub async fn checkout(
        &self,
        key: &PoolKey,
        password: &Arc<str>,
        want: Option<&(dyn Fn(&ConnState) -> bool + Sync)>,
    ) -> Result<PooledConn, BackendError> {
        let pool = match self.pools.get(key) {
            Some(p) => p.clone(),
            None => self
                .pools
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Pool {
                        key: key.clone(),
                        password: password.clone(),
                        idle: Mutex::new(Vec::new()),
                        permits: Arc::new(Semaphore::new(self.opts.max_per_server)),
                        opts: self.opts.clone(),
                        sockets: Arc::default(),
                    })
                })
                .clone(),
        };
        pool.checkout(want).await
    }

    /// Drops the pools of `user`: new connections are made with the credentials the next
    /// checkout brings, and connections still checked out close when they come back.
    pub fn forget_user(&self, user: &str) {
        self.pools.retain(|k, _| &*k.user != user);
    }

    /// Idle and busy connection counts per server, for the admin API.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.pools
            .iter()
            .map(|p| {
                let idle = p.idle.lock().map(|v| v.len()).unwrap_or(0);
                PoolStats {
                    addr: p.key.addr.to_string(),
                    idle,
                    busy: p.opts.max_per_server - p.permits.available_permits(),
                }
            })
            .collect()
    }

    /// Closes every idle connection to `addr` (its server changed role or went away).
    pub fn drain_server(&self, addr: &str) {
        for p in self.pools.iter() {
            if &*p.key.addr == addr {
                if let Ok(mut idle) = p.idle.lock() {
                    idle.clear();
                }
            }
        }
    }

    /// Cuts every connection to `addr`, idle or in use: idle ones are closed, and a statement
    /// waiting on one in use fails at once as a lost connection (the server was replaced as
    /// leader and may never answer). Returns how many connections were cut.
    pub fn cut_server(&self, addr: &str) -> usize {
        let mut cut = 0;
        for p in self.pools.iter() {
            if &*p.key.addr == addr {
                lock(&p.idle).clear();
                cut += p.sockets.cut_all();
            }
        }
        cut
    }
}

/// Counts for one pool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolStats {
    pub addr: String,
    pub idle: usize,
    pub busy: usize,
}

impl Pool {
    async fn checkout(
        self: Arc<Self>,
        want: Option<&(dyn Fn(&ConnState) -> bool + Sync)>,
    ) -> Result<PooledConn, BackendError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => {
                return Err(BackendError::Closed(self.key.addr.to_string()))
            }
            // Only a pool at its limit waits (and reads the clock for it).
            Err(TryAcquireError::NoPermits) => {
                let started = Instant::now();
                let wait = self.permits.clone().acquire_owned();
                tokio::time::timeout(self.opts.wait_timeout, wait)
                    .await
                    .map_err(|_| BackendError::PoolExhausted {
                        addr: self.key.addr.to_string(),
                        max: self.opts.max_per_server,
                        waited_ms: started.elapsed().as_millis() as u64,
                    })?
                    .map_err(|_| BackendError::Closed(self.key.addr.to_string()))?
            }
        };
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let n = idle.len();
                // A few most recent connections are checked for a state match; LIFO otherwise
                // keeps the working set small and warm.
                let pick = want
                    .and_then(|w| (n.saturating_sub(8)..n).rev().find(|&i| w(&idle[i].state)))
                    .or(n.checked_sub(1));
                pick.map(|i| idle.swap_remove(i))
            };
            match candidate {
                Some(mut c) => {
                    if c.last_used.elapsed() < self.opts.idle_timeout && c.looks_alive() {
                        return Ok(PooledConn {
                            conn: Some(c),
                            pool: self.clone(),
                            _permit: permit,
                        });
                    }
                    // Dead or stale: drop it and look again.
                }
                None => {
                    let opts = ConnectOptions {
                        user: self.key.user.clone(),
                        password: self.password.clone(),
                        deprecate_eof: self.key.deprecate_eof,
                        found_rows: self.key.found_rows,
                        connect_timeout: self.opts.connect_timeout,
                        tls: self.opts.tls.clone(),
                        tcp: self.opts.tcp.clone(),
                    };
                    // Boxed: new connections are rare, and the handshake's future (TLS
                    // included) would otherwise be part of every checkout's.
                    let mut c = Box::pin(BackendConn::connect(&self.key.addr, &opts)).await?;
                    if let Some(socket) = c.socket.take() {
                        c.registration = Some(self.sockets.register(socket));
                    }
                    return Ok(PooledConn {
                        conn: Some(c),
                        pool: self.clone(),
                        _permit: permit,
                    });
                }
            }
        }
    }
}

/// A checked-out connection; dropping it returns it to the pool unless it is broken or in
/// the middle of a transaction.
#[derive(Debug)]
pub struct PooledConn {
    conn: Option<BackendConn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl PooledConn {
    /// Closes the connection instead of returning it.
    pub fn discard(mut self) {
        self.conn = None;
    }
}

impl std::ops::Deref for PooledConn {
    type Target = BackendConn;
    fn deref(&self) -> &BackendConn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut BackendConn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.take() {
            if !c.broken && !c.kill_sent && !c.in_transaction() {
                c.last_used = Instant::now();
                if let Ok(mut idle) = self.pool.idle.lock() {
                    idle.push(c);
                }
            }
        }
    }
}
