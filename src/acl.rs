//! Who may call the admin API: users from `[[admin.users]]` (a bearer token, or a name and
//! password checked against an argon2 hash over HTTP Basic), each with a role and optionally
//! a list of clusters; the single `admin.token` stays an admin. Every mutating call is written
//! to the audit log (JSON lines, and the last entries in memory for `GET /api/v1/audit`).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use axum::http::Method;
use base64::Engine;
use router::config::Secret;
use serde::{Deserialize, Serialize};

/// What a user may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything (within its clusters).
    Viewer,
    /// Also switchover, failover, rebuild, node flags, failover-limit reset (within its
    /// clusters).
    Operator,
    /// Also the shard map, the configuration and the audit log.
    Admin,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// One `[[admin.users]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    /// The user's name (HTTP Basic login, audit log).
    pub name: String,
    pub role: Role,
    /// The clusters this user may see and act on; every cluster when absent.
    #[serde(default)]
    pub clusters: Option<Vec<String>>,
    /// A bearer token (`Authorization: Bearer <token>`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// An argon2 PHC hash (`$argon2id$...`) of the password for HTTP Basic auth.
    #[serde(default)]
    pub password_hash: Option<Secret>,
}

impl AdminUser {
    /// Problems with this entry, given the configured clusters.
    pub fn validate(&self, clusters: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        let at = format!("admin.users.{}", self.name);
        if self.name.is_empty() || self.name.contains(':') {
            problems.push(format!("{at}: a name is needed, without `:`"));
        }
        match (&self.token, &self.password_hash) {
            (Some(_), Some(_)) => problems.push(format!(
                "{at}: give either `token` or `password_hash`, not both"
            )),
            (None, None) => problems.push(format!("{at}: `token` or `password_hash` is needed")),
            (Some(t), None) if t.expose().len() < 16 => {
                problems.push(format!("{at}: the token is shorter than 16 characters"))
            }
            (None, Some(h)) => {
                if let Err(e) = PasswordHash::new(h.expose()) {
                    problems.push(format!(
                        "{at}: password_hash is not an argon2 PHC string ({e})"
                    ));
                } else if !h.expose().starts_with("$argon2") {
                    problems.push(format!("{at}: password_hash must be an argon2 hash"));
                }
            }
            _ => {}
        }
        for c in self.clusters.iter().flatten() {
            if !clusters.contains(&c.as_str()) {
                problems.push(format!("{at}: unknown cluster `{c}`"));
            }
        }
        problems
    }
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// `None`: every cluster.
    pub clusters: Option<Vec<String>>,
}

impl Principal {
    /// Whether this principal's scope includes `cluster`.
    pub fn sees(&self, cluster: &str) -> bool {
        self.clusters
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == cluster))
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no or bad credentials.
    Unauthenticated(&'static str),
    /// 403: authenticated, but the role or scope does not allow it.
    Forbidden(String),
}

/// The users and the audit log.
#[derive(Debug)]
pub struct Acl {
    /// Replaced whole by a configuration reload.
    creds: arc_swap::ArcSwap<Credentials>,
    audit: Mutex<AuditLog>,
}

#[derive(Debug)]
struct Credentials {
    users: Vec<AdminUser>,
    legacy_token: Option<Secret>,
}

/// The rule table: which role an operation needs, and whether it is about one cluster (the
/// `{name}` in its path) so that a scoped user's list applies.
pub fn required_role(method: &Method, route: &str) -> Role {
    const OPERATOR: &[&str] = &[
        "/api/v1/clusters/{name}/switchover",
        "/api/v1/clusters/{name}/failover",
        "/api/v1/clusters/{name}/failover-limits/reset",
        "/api/v1/clusters/{name}/nodes/{addr}/flags",
        "/api/v1/clusters/{name}/nodes/{addr}/rebuild",
    ];
    const ADMIN_READS: &[&str] = &["/api/v1/audit", "/api/v1/config"];
    // POSTs that change nothing.
    const VIEWER_POSTS: &[&str] = &["/api/v1/shard-map/diff"];
    if VIEWER_POSTS.contains(&route) {
        Role::Viewer
    } else if method == Method::GET || method == Method::HEAD {
        if ADMIN_READS.contains(&route) {
            Role::Admin
        } else {
            Role::Viewer
        }
    } else if OPERATOR.contains(&route) {
        Role::Operator
    } else {
        // Shard map, configuration, and anything new until it is given a rule.
        Role::Admin
    }
}

impl Acl {
    pub fn new(
        users: Vec<AdminUser>,
        legacy_token: Option<Secret>,
        audit: Option<PathBuf>,
    ) -> Self {
        Acl {
            creds: arc_swap::ArcSwap::from_pointee(Credentials {
                users,
                legacy_token,
            }),
            audit: Mutex::new(AuditLog {
                path: audit,
                recent: VecDeque::new(),
            }),
        }
    }

    /// Puts new users, admin token and audit log file in force for the next calls.
    pub fn replace(
        &self,
        users: Vec<AdminUser>,
        legacy_token: Option<Secret>,
        audit: Option<PathBuf>,
    ) {
        self.creds.store(std::sync::Arc::new(Credentials {
            users,
            legacy_token,
        }));
        self.audit.lock().unwrap_or_else(|p| p.into_inner()).path = audit;
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Denied> {
        let creds = self.creds.load();
        let Some(header) = header else {
            return Err(Denied::Unauthenticated(
                "missing credentials: send `Authorization: Bearer <token>` or HTTP Basic",
            ));
        };
        if let Some(token) = header.strip_prefix("Bearer ") {
            if let Some(t) = &creds.legacy_token {
                if constant_time_eq(token.as_bytes(), t.expose().as_bytes()) {
                    return Ok(Principal {
                        name: "admin-token".into(),
                        role: Role::Admin,
                        clusters: None,
                    });
                }
            }
            // Compare with every token, so that the time taken does not tell which matched.
            let mut found = None;
            for u in &creds.users {
                if let Some(t) = &u.token {
                    if constant_time_eq(token.as_bytes(), t.expose().as_bytes()) {
                        found = Some(u);
                    }
                }
            }
            return found
                .map(principal)
                .ok_or(Denied::Unauthenticated("invalid bearer token"));
        }
        if let Some(encoded) = header.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(Denied::Unauthenticated("malformed Basic credentials"))?;
            let (name, password) = decoded
                .split_once(':')
                .ok_or(Denied::Unauthenticated("malformed Basic credentials"))?;
            let user = creds.users.iter().find(|u| u.name == name);
            let ok = user
                .and_then(|u| u.password_hash.as_ref())
                .and_then(|h| PasswordHash::new(h.expose()).ok())
                .is_some_and(|h| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                });
            return match (ok, user) {
                (true, Some(u)) => Ok(principal(u)),
                _ => Err(Denied::Unauthenticated("invalid user name or password")),
            };
        }
        Err(Denied::Unauthenticated(
            "unsupported authorization scheme: use Bearer or Basic",
        ))
    }

    /// Checks a user name and password as the admin SQL port receives them: the password of
    /// a user with a `password_hash`, or the token of a user with a `token` (the name must be
    /// that user's); `admin.token` is the password of `admin` (shown as `admin-token`, as on
    /// the API). Slow on purpose where argon2 is: call it off the async threads.
    pub fn login(&self, name: &str, password: &str) -> Option<Principal> {
        let creds = self.creds.load();
        let user = creds.users.iter().find(|u| u.name == name);
        if let Some(u) = user {
            let ok = match (&u.password_hash, &u.token) {
                (Some(h), _) => PasswordHash::new(h.expose()).ok().is_some_and(|h| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                }),
                (None, Some(t)) => constant_time_eq(password.as_bytes(), t.expose().as_bytes()),
                (None, None) => false,
            };
            return ok.then(|| principal(u));
        }
        let legacy = creds
            .legacy_token
            .as_ref()
            .is_some_and(|t| constant_time_eq(password.as_bytes(), t.expose().as_bytes()));
        (legacy && matches!(name, "admin" | "admin-token")).then(|| Principal {
            name: "admin-token".into(),
            role: Role::Admin,
            clusters: None,
        })
    }

    /// Whether `who` may call `method route` on `cluster` (the path's `{name}`, if any).
    pub fn authorize(
        &self,
        who: &Principal,
        method: &Method,
        route: &str,
        cluster: Option<&str>,
    ) -> Result<(), Denied> {
        let needed = required_role(method, route);
        if who.role < needed {
            return Err(Denied::Forbidden(format!(
                "{} is a {}; {method} {route} needs the {} role",
                who.name,
                who.role.label(),
                needed.label()
            )));
        }
        if let Some(c) = cluster {
            if !who.sees(c) {
                return Err(Denied::Forbidden(format!(
                    "{} may not act on cluster `{c}`",
                    who.name
                )));
            }
        }
        Ok(())
    }

    /// Appends one entry to the audit log (file and memory).
    pub fn audit(&self, entry: AuditEntry) {
        let mut log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &log.path {
            let line = serde_json::to_string(&entry).unwrap_or_default();
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::error!(path = %path.display(), error = %e, "can't write the audit log");
            }
        }
        if log.recent.len() >= AUDIT_KEPT {
            log.recent.pop_front();
        }
        log.recent.push_back(entry);
    }

    /// The most recent audit entries, oldest first.
    pub fn recent_audit(&self) -> Vec<AuditEntry> {
        let log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        log.recent.iter().cloned().collect()
    }
}

/// An argon2id PHC hash of `password` with a random salt and the crate's default parameters.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("making a salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

fn principal(u: &AdminUser) -> Principal {
    Principal {
        name: u.name.clone(),
        role: u.role,
        clusters: u.clusters.clone(),
    }
}

/// How many audit entries `GET /api/v1/audit` returns.
const AUDIT_KEPT: usize = 1000;

#[derive(Debug)]
struct AuditLog {
    path: Option<PathBuf>,
    recent: VecDeque<AuditEntry>,
}

/// One mutating call: who, what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The user's name; `-` when the credentials were missing or wrong.
    pub user: String,
    pub method: String,
    pub path: String,
    /// The cluster the call was about, if any.
    pub cluster: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_table() {
        let cases = [
            (Method::GET, "/api/v1/clusters", Role::Viewer),
            (Method::GET, "/api/v1/shard-map", Role::Viewer),
            (Method::GET, "/api/v1/audit", Role::Admin),
            (Method::GET, "/api/v1/config", Role::Admin),
            (
                Method::POST,
                "/api/v1/clusters/{name}/switchover",
                Role::Operator,
            ),
            (
                Method::POST,
                "/api/v1/clusters/{name}/failover",
                Role::Operator,
            ),
            (
                Method::PUT,
                "/api/v1/clusters/{name}/nodes/{addr}/flags",
                Role::Operator,
            ),
            (
                Method::POST,
                "/api/v1/clusters/{name}/nodes/{addr}/rebuild",
                Role::Operator,
            ),
            (Method::PUT, "/api/v1/shard-map", Role::Admin),
            (Method::DELETE, "/api/v1/anything-new", Role::Admin),
        ];
        for (m, route, role) in cases {
            assert_eq!(required_role(&m, route), role, "{m} {route}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
