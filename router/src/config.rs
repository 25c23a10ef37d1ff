//! The router's settings, as they appear in switchyard's TOML config under `[router]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A secret string: never shown by `Debug`, `Display` or serialisation.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is really used.
    pub fn expose(&self) -> &Arc<str> {
        &self.0
    }
}

/// A string in the file (plain or `enc:...`), never shown back.
impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A secret: plain text or `enc:...` (see `switchyard encrypt`); shown as `***`.",
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if FINGERPRINTS.with(std::cell::Cell::get) {
            use sha1::Digest;
            let mut h = sha1::Sha1::new();
            h.update(fingerprint_salt());
            h.update(self.0.as_bytes());
            let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            return s.serialize_str(&digest);
        }
        s.serialize_str("***")
    }
}

thread_local! {
    static FINGERPRINTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A random salt per process, so that fingerprints can't be looked up in a table.
fn fingerprint_salt() -> &'static [u8; 16] {
    static SALT: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    SALT.get_or_init(rand::random)
}

/// Runs `f` (on this thread) with secrets serialised as a salted digest of their value
/// instead of `***`, so that two serialisations of a configuration differ where a secret
/// changed, without the value appearing: how a reload tells what changed.
pub fn with_secret_fingerprints<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FINGERPRINTS.with(|c| c.set(false));
        }
    }
    FINGERPRINTS.with(|c| c.set(true));
    let _reset = Reset;
    f()
}

/// An application user: what clients log in with; the router uses the same credentials on
/// the backends.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The login name, on the router and on the backends.
    pub name: String,
    /// Its password, the same as on the backends.
    pub password: Secret,
}

/// Router settings.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Address of the MySQL-protocol listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A Unix-domain socket the router also listens on, for applications on the same host
    /// (a sidecar): it saves the kernel's loopback TCP work. Clients on it are `localhost`,
    /// are offered no TLS and count as a secure transport, as on a server. A socket left
    /// there by a process that has gone is replaced; any other file there is an error. Off
    /// by default.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    pub users: Vec<UserConfig>,
    /// Client connections accepted at once; past it clients get error 1040.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest client packet accepted (bytes); larger ones get error 1153.
    #[serde(default = "default_max_allowed_packet")]
    pub max_allowed_packet: usize,
    /// Backend connections per server.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Share backend connections between client sessions statement by statement (a session
    /// keeps one only while it must: transaction, locks, temporary tables...). `false`: each
    /// client session keeps the backend connection of its first statement until it leaves,
    /// and that connection is closed then, so the server sees one session per client
    /// (`CONNECTION_ID()`, `KILL`, the process list and every session setting behave as on a
    /// direct connection), at the cost of one backend connection per client (`pool_size`
    /// caps them per server and user) and no reads on replicas.
    #[serde(default = "default_multiplexing")]
    pub multiplexing: bool,
    /// How long a statement waits for a free backend connection (ms).
    #[serde(default = "default_pool_wait_ms")]
    pub pool_wait_ms: u64,
    /// Backend connect timeout (ms).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The local address the router's connections to the servers leave from (HAProxy's
    /// `source`), for hosts with several addresses or networks; by default the kernel's
    /// choice.
    #[serde(default)]
    pub backend_source_address: Option<String>,
    /// A backend connection whose sent data stays unacknowledged this long, or whose
    /// keepalive probes (sent after half of it idle, in whole seconds) go unanswered as long, is closed and
    /// its statement fails with 2013 (ms): a server or path that drops packets without a
    /// reset is given up on in this time instead of the kernel's ~15 minutes. A long query
    /// on a live server is not affected (the server's kernel acknowledges everything). 0:
    /// the kernel's defaults.
    #[serde(default = "default_backend_dead_after_ms")]
    pub backend_dead_after_ms: u64,
    /// Unix-domain sockets of servers on this host, by the server's address (`"127.0.0.1:3306"
    /// = "/run/mysqld/mysqld.sock"`): the router's connections to such a server go through its
    /// socket instead of TCP, without TLS (a local socket needs none). Every such connection
    /// first checks that the server behind the socket listens on that address's port
    /// (`@@port`), so a wrong entry fails instead of sending statements elsewhere.
    #[serde(default)]
    pub backend_sockets: std::collections::BTreeMap<String, PathBuf>,
    /// Send reads outside transactions to replicas at most this many seconds behind.
    /// Off (`None`) by default: every statement goes to the leader.
    #[serde(default)]
    pub replica_read_max_lag: Option<u64>,
    /// Version string announced to clients; by default the leader's, with `-switchyard`.
    #[serde(default)]
    pub server_version: Option<String>,
    /// Client handshakes that do not finish within this time are dropped (ms).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// How long a statement waits while its cluster changes leader, before it fails (ms).
    #[serde(default = "default_hold_timeout_ms")]
    pub hold_timeout_ms: u64,
    /// Statements held at once across all sessions; past it they fail at once.
    #[serde(default = "default_hold_max_statements")]
    pub hold_max_statements: u64,
    /// Failed logins from one client address within 10 s before its further failures are
    /// answered slowly (a growing delay, up to `login_failure_delay_ms`).
    #[serde(default = "default_login_failure_limit")]
    pub login_failure_limit: u32,
    /// The longest delay before a throttled login failure is answered (ms).
    #[serde(default = "default_login_failure_delay_ms")]
    pub login_failure_delay_ms: u64,
    /// Names this router in the ids of its distributed (XA) transactions, so that after a
    /// restart it recovers its own prepared branches and no other router's. Keep it stable
    /// and unique per router; by default the `listen` address.
    #[serde(default)]
    pub router_id: Option<String>,
    /// Certificate chain (PEM) offered to clients that ask for TLS; with `tls_key`, the
    /// greeting advertises SSL. Unset: clients connect in plain text only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that log in without TLS (error 3159, as MariaDB's
    /// `require_secure_transport`). Needs `tls_cert` and `tls_key`.
    #[serde(default)]
    pub require_secure_transport: bool,
    /// TLS towards the backends: `disabled`, `preferred` (when the server offers it),
    /// `required` (fail when it does not; the certificate is not checked) or `verify_ca`
    /// (required, and the certificate must chain to `backend_tls_ca` and name the host of the
    /// node's address).
    #[serde(default)]
    pub backend_tls: BackendTlsMode,
    /// CA certificate(s) (PEM) that backend certificates must chain to with `verify_ca`.
    #[serde(default)]
    pub backend_tls_ca: Option<PathBuf>,
    /// Also accept the accounts of the backends (as MaxScale does): a login whose user is not
    /// in `users` is checked against `mysql.user` on the default cluster's leader (read with
    /// the orchestrator's user at each such login, so an account made with `CREATE USER`
    /// works at once), for accounts with `mysql_native_password` or no password. The router
    /// then logs in to the backends as that account without knowing its password (the
    /// client's proof yields what the native handshake needs); the backend checks the host
    /// part against the router's own address.
    #[serde(default)]
    pub backend_accounts: bool,
}

/// When the router's backend connections use TLS.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BackendTlsMode {
    /// Plain text.
    #[default]
    Disabled,
    /// TLS when the server offers it, plain text otherwise; the certificate is not checked.
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS or no connection, and the certificate must chain to `backend_tls_ca`.
    VerifyCa,
}

fn default_listen() -> String {
    "127.0.0.1:6033".into()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_allowed_packet() -> usize {
    64 << 20
}
fn default_pool_size() -> usize {
    200
}
fn default_multiplexing() -> bool {
    true
}
fn default_pool_wait_ms() -> u64 {
    5_000
}
fn default_backend_dead_after_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_handshake_timeout_ms() -> u64 {
    10_000
}
fn default_hold_timeout_ms() -> u64 {
    5_000
}
fn default_hold_max_statements() -> u64 {
    10_000
}
fn default_login_failure_limit() -> u32 {
    20
}
fn default_login_failure_delay_ms() -> u64 {
    2_000
}

impl RouterConfig {
    /// A config with defaults and the given users.
    pub fn with_users(users: Vec<UserConfig>) -> Self {
        RouterConfig {
            listen: default_listen(),
            socket: None,
            users,
            max_connections: default_max_connections(),
            max_allowed_packet: default_max_allowed_packet(),
            pool_size: default_pool_size(),
            multiplexing: default_multiplexing(),
            pool_wait_ms: default_pool_wait_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            backend_source_address: None,
            backend_dead_after_ms: default_backend_dead_after_ms(),
            backend_sockets: Default::default(),
            replica_read_max_lag: None,
            server_version: None,
            handshake_timeout_ms: default_handshake_timeout_ms(),
            hold_timeout_ms: default_hold_timeout_ms(),
            hold_max_statements: default_hold_max_statements(),
            login_failure_limit: default_login_failure_limit(),
            login_failure_delay_ms: default_login_failure_delay_ms(),
            router_id: None,
            tls_cert: None,
            tls_key: None,
            require_secure_transport: false,
            backend_tls: BackendTlsMode::Disabled,
            backend_tls_ca: None,
            backend_accounts: false,
        }
    }

    /// Every problem with these settings.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.users.is_empty() {
            problems.push("router.users: at least one application user is needed".into());
        }
        for u in &self.users {
            if u.name.is_empty() {
                problems.push("router.users: a user has an empty name".into());
            }
        }
        if self.max_connections == 0 {
            problems.push("router.max_connections must be at least 1".into());
        }
        if self.pool_size == 0 {
            problems.push("router.pool_size must be at least 1".into());
        }
        if self.max_allowed_packet < 1024 {
            problems.push("router.max_allowed_packet must be at least 1024".into());
        }
        problems.extend(self.tls_problems());
        problems
    }

    /// What is wrong with the TLS settings, the certificate and key files included.
    fn tls_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                if let Err(e) = crate::tls::server_config(cert, key) {
                    problems.push(format!("router.tls_cert/tls_key: {e}"));
                }
            }
            (Some(_), None) => problems.push("router.tls_cert is set but tls_key is not".into()),
            (None, Some(_)) => problems.push("router.tls_key is set but tls_cert is not".into()),
            (None, None) => {
                if self.require_secure_transport {
                    problems.push(
                        "router.require_secure_transport needs tls_cert and tls_key (no client \
                         could connect)"
                            .into(),
                    );
                }
            }
        }
        for addr in self.backend_sockets.keys() {
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                problems.push(format!(
                    "router.backend_sockets: {addr:?} is not a server address (host:port)"
                ));
            }
        }
        if let Some(a) = &self.backend_source_address {
            if a.parse::<std::net::IpAddr>().is_err() {
                problems.push(format!(
                    "router.backend_source_address = {a:?} is not an IP address"
                ));
            }
        }
        match (self.backend_tls, &self.backend_tls_ca) {
            (BackendTlsMode::VerifyCa, None) => problems.push(
                "router.backend_tls = \"verify_ca\" needs backend_tls_ca (a PEM file)".into(),
            ),
            (BackendTlsMode::VerifyCa, Some(ca)) => {
                if let Err(e) = crate::tls::backend_config(self.backend_tls, Some(ca)) {
                    problems.push(format!("router.backend_tls_ca: {e}"));
                }
            }
            (_, Some(_)) => problems
                .push("router.backend_tls_ca is only used with backend_tls = \"verify_ca\"".into()),
            (_, None) => {}
        }
        problems
    }

    pub(crate) fn pool_options(&self) -> crate::backend::PoolOptions {
        crate::backend::PoolOptions {
            max_per_server: self.pool_size,
            wait_timeout: Duration::from_millis(self.pool_wait_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            tcp: self.tcp_options(),
            ..Default::default()
        }
    }

    /// How backend sockets are opened (an invalid source address, which `validate` reports,
    /// is left out).
    pub fn tcp_options(&self) -> crate::backend::TcpOptions {
        crate::backend::TcpOptions {
            source: self
                .backend_source_address
                .as_deref()
                .and_then(|a| a.parse().ok()),
            dead_after: (self.backend_dead_after_ms > 0)
                .then(|| Duration::from_millis(self.backend_dead_after_ms)),
            local_sockets: Arc::new(
                self.backend_sockets
                    .iter()
                    .map(|(a, p)| (Arc::from(a.as_str()), Arc::from(p.as_path())))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_are_checked() {
        let mut c = RouterConfig::with_users(vec![UserConfig {
            name: "app".into(),
            password: Secret::new("app"),
        }]);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        c.backend_sockets
            .insert("127.0.0.1:3306".into(), "/run/mysqld/mysqld.sock".into());
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        c.backend_sockets
            .insert("db1".into(), "/run/mysqld/mysqld.sock".into());
        c.backend_source_address = Some("nowhere".into());
        let problems = c.validate();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"db1\" is not a server address"));
        assert!(problems[1].contains("backend_source_address"));
        // The options the pool gets: the socket by address.
        let opts = c.tcp_options();
        assert_eq!(
            opts.local_sockets
                .get("127.0.0.1:3306")
                .map(|p| p.to_path_buf()),
            Some(PathBuf::from("/run/mysqld/mysqld.sock"))
        );
    }
}
