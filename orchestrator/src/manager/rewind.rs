//! Rewinding a node that came back with transactions the leader lacks (an old leader whose
//! last commits, cut off on their way, went through when it returned), instead of keeping it
//! out: binlog flashback (`mariadb-binlog --flashback`) over exactly those transactions, then
//! replication from the leader at the position before them. Behind the `rejoin_rewind`
//! setting, and only where it is safe:
//!
//! - one replication domain diverged, and the extra transactions are the node's own (its
//!   `server_id`), following the last one of its the leader has (the leader's
//!   `gtid_binlog_state` names it): a contiguous tail of the node's binlog;
//! - `binlog_format=ROW` and `binlog_row_image=FULL` on the node (flashback reverses row
//!   images; a statement or a partial image cannot be reversed);
//! - every one of them an ordinary transaction (`GTID ... trans`: row changes of
//!   transactional tables), none a DDL, an XA transaction or a non-transactional write, and at
//!   most [`REWIND_MAX`] of them.
//!
//! The rewound transactions, decoded (`--verbose`), are saved to a file before anything is
//! changed, and the event names the file. A rewind that fails part-way leaves the node
//! read-only and kept out, as before (a rebuild puts it back).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::node::NodeConn;
use super::rebuild::copy::{self, Endpoint};
use super::{Orchestrator, OrchestratorError};
use crate::gtid::{Gtid, GtidPos};
use crate::monitor::split_host_port;

/// The binlog reader.
const BINLOG_PROGRAM: &str = "mariadb-binlog";
/// More transactions than this are not rewound (a rebuild is the safer way back).
pub(crate) const REWIND_MAX: u64 = 1000;
/// How long reading and applying the flashback may take.
const REWIND_LIMIT: Duration = Duration::from_secs(120);

/// What a rewind did.
#[derive(Debug)]
pub(super) struct Rewound {
    /// The transactions rewound, in binlog order.
    pub gtids: Vec<Gtid>,
    /// Where they are saved, decoded.
    pub file: PathBuf,
    /// The position the node replicates from now.
    pub from: GtidPos,
}

/// The tail of a node's binlog to rewind: after `after`, up to `last` (same domain and server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    pub after: Gtid,
    pub last: Gtid,
}

impl Tail {
    pub fn len(&self) -> u64 {
        self.last.seq - self.after.seq
    }
}

/// Finds the tail to rewind from the node's `server_id` and `gtid_binlog_pos` and the leader's
/// `gtid_binlog_state` (every server's last GTID per domain), or says why there is none that
/// can safely be.
pub(crate) fn tail_to_rewind(
    server_id: u32,
    mine: &GtidPos,
    leader_state: &str,
) -> Result<Tail, String> {
    let state: Vec<Gtid> = leader_state
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Gtid>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the leader's gtid_binlog_state: {e}"))?;
    let has = |g: &Gtid| {
        state
            .iter()
            .any(|s| s.domain == g.domain && s.server_id == g.server_id && s.seq >= g.seq)
    };
    let diverged: Vec<Gtid> = mine.iter().filter(|g| !has(g)).collect();
    let last = match diverged.as_slice() {
        [] => return Err("no transaction of its own the leader lacks was found".into()),
        [one] => *one,
        more => {
            return Err(format!(
                "{} replication domains diverged (only one is rewound)",
                more.len()
            ))
        }
    };
    if last.server_id != server_id {
        return Err(format!(
            "its last transaction {last} is not its own (server_id {server_id})"
        ));
    }
    let after = state
        .iter()
        .find(|s| s.domain == last.domain && s.server_id == server_id)
        .copied()
        .ok_or_else(|| {
            format!(
                "the leader has no transaction of server_id {server_id} in domain {}: where \
                 the histories part is unknown",
                last.domain
            )
        })?;
    let tail = Tail { after, last };
    if tail.len() == 0 || after.seq > last.seq {
        return Err(format!("nothing after {after} up to {last}"));
    }
    if tail.len() > REWIND_MAX {
        return Err(format!(
            "{} transactions (at most {REWIND_MAX} are rewound; rebuild it)",
            tail.len()
        ));
    }
    Ok(tail)
}

/// Checks the decoded binlog (`mariadb-binlog --verbose`) from just after `tail.after`: its
/// transactions must be exactly those of the tail, each an ordinary transaction. Returns them.
pub(crate) fn check_decoded(decoded: &str, tail: &Tail) -> Result<Vec<Gtid>, String> {
    let mut seen = Vec::new();
    for line in decoded.lines().filter(|l| l.starts_with('#')) {
        let Some((_, rest)) = line.split_once("\tGTID ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let gtid: Gtid = words
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| format!("reading its binlog: {e}"))?;
        let flags: Vec<&str> = words.collect();
        if flags != ["trans"] {
            return Err(format!(
                "{gtid} is not an ordinary transaction ({}): a DDL, an XA transaction or a \
                 non-transactional write cannot be flashed back",
                flags.join(" ")
            ));
        }
        seen.push(gtid);
    }
    let expected: Vec<Gtid> = (tail.after.seq + 1..=tail.last.seq)
        .map(|seq| Gtid { seq, ..tail.last })
        .collect();
    if seen != expected {
        return Err(format!(
            "its binlog after {} holds {} transaction(s), not the {} expected up to {}",
            tail.after,
            seen.len(),
            expected.len(),
            tail.last
        ));
    }
    Ok(seen)
}

/// Where rewound transactions are saved: `rewind_dir`, or `switchyard-rewind` in the
/// temporary directory.
pub(crate) fn rewind_file(dir: Option<&Path>, cluster: &str, addr: &str, now_ms: u64) -> PathBuf {
    let dir = dir.map_or_else(
        || std::env::temp_dir().join("switchyard-rewind"),
        Path::to_path_buf,
    );
    let node: String = addr
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{cluster}-{node}-{now_ms}.txt"))
}

impl Orchestrator {
    /// Rewinds `addr` (connected as `node`, read-only, not replicating) to the history of the
    /// leader, and starts it replicating from there. `Ok(Err(why))`: not safe to rewind,
    /// nothing changed.
    pub(super) async fn rewind(
        &self,
        cluster: &str,
        addr: &str,
        leader: &str,
        node: &mut NodeConn,
        lconn: &mut NodeConn,
    ) -> Result<Result<Rewound, String>, OrchestratorError> {
        let facts: Option<(u32, String, String, String)> = node
            .first(
                "reading its binlog settings",
                "SELECT @@global.server_id, @@global.binlog_format, @@global.binlog_row_image, \
                 @@global.gtid_binlog_pos",
            )
            .await?;
        let Some((server_id, format, image, mine)) = facts else {
            return Ok(Err("its binlog settings could not be read".into()));
        };
        if format != "ROW" || image != "FULL" {
            return Ok(Err(format!(
                "binlog_format={format}, binlog_row_image={image} (ROW and FULL are needed)"
            )));
        }
        let state: Option<String> = lconn
            .first(
                "reading the leader's gtid_binlog_state",
                "SELECT @@global.gtid_binlog_state",
            )
            .await?;
        let mine = GtidPos::parse_lossy(&mine);
        let tail = match tail_to_rewind(server_id, &mine, &state.unwrap_or_default()) {
            Ok(t) => t,
            Err(why) => return Ok(Err(why)),
        };
        let first_log: Option<(String, u64)> = node
            .first("listing its binary logs", "SHOW BINARY LOGS")
            .await?;
        let Some((first_log, _)) = first_log else {
            return Ok(Err("it has no binary log".into()));
        };
        let (host, port) =
            split_host_port(addr).ok_or_else(|| OrchestratorError::BadAddress(addr.to_owned()))?;
        let at = Endpoint {
            host: &host,
            port,
            user: &self.access.user,
            connect_timeout: self.access.connect_timeout,
            tls: &self.access.tls,
        };
        let deadline = Instant::now() + REWIND_LIMIT;
        let read = |extra: &[&str]| {
            let mut args = at.binlog_args();
            args.push("--read-from-remote-server".into());
            args.push(format!("--start-position={}", tail.after));
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            args.push(first_log.clone());
            args
        };

        // 1. The transactions, decoded, checked and saved before anything changes.
        let decoded = copy::output(
            copy::Program::new(
                BINLOG_PROGRAM,
                read(&["--base64-output=DECODE-ROWS", "--verbose"]),
            ),
            &self.access.password,
            deadline,
        )
        .await;
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => return Ok(Err(format!("reading its binlog: {e}"))),
        };
        let gtids = match check_decoded(&decoded, &tail) {
            Ok(g) => g,
            Err(why) => return Ok(Err(why)),
        };
        let settings = self.settings.load_full();
        let file = rewind_file(
            settings.rewind_dir.as_deref(),
            cluster,
            addr,
            super::now_ms(),
        );
        let saved = async {
            if let Some(dir) = file.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let header = format!(
                "-- Transactions of {addr} ({cluster}) that the leader {leader} lacked, \
                 rewound by binlog flashback: {} after {}.\n",
                gtids.len(),
                tail.after
            );
            tokio::fs::write(&file, format!("{header}{decoded}")).await
        };
        if let Err(e) = saved.await {
            return Ok(Err(format!("saving them to {}: {e}", file.display())));
        }

        // 2. Flashback: their reverse, newest first, applied without binlogging.
        let reversed = copy::pipe(
            copy::Program::new(BINLOG_PROGRAM, read(&["--flashback"])),
            copy::Program::new(copy::LOAD_PROGRAM, copy::load_args(&at)),
            &self.access.password,
            deadline,
        )
        .await;
        if let Err(e) = reversed {
            return Err(OrchestratorError::Refused(format!(
                "the flashback of {addr} failed part-way ({e}); its transactions are in {}; \
                 kept out: read-only, not replicating; rebuild it",
                file.display()
            )));
        }

        // 3. Its binlog no longer holds them, and it replicates from before them.
        let mut from = mine.clone();
        from.advance(tail.after);
        node.replicate_afresh(leader, &self.login, &from).await?;
        Ok(Ok(Rewound { gtids, file, from }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Gtid {
        s.parse().unwrap()
    }

    #[test]
    fn the_tail_follows_the_last_transaction_of_the_node_the_leader_has() {
        let mine = GtidPos::parse_lossy("0-101-505");
        let tail = tail_to_rewind(101, &mine, "0-101-500,0-102-510").unwrap();
        assert_eq!(
            tail,
            Tail {
                after: g("0-101-500"),
                last: g("0-101-505")
            }
        );
        assert_eq!(tail.len(), 5);
    }

    #[test]
    fn what_cannot_be_rewound_safely_is_refused() {
        let cases = [
            // (server_id, mine, leader's state, refusal contains)
            (
                101,
                "0-101-500",
                "0-101-500,0-102-510",
                "no transaction of its own",
            ),
            (
                101,
                "0-101-505,1-101-3",
                "0-101-500,1-102-9",
                "2 replication domains",
            ),
            (101, "0-103-505", "0-101-500,0-102-510", "not its own"),
            (
                101,
                "0-101-505",
                "0-102-510",
                "no transaction of server_id 101",
            ),
            (101, "0-101-5000", "0-101-500", "at most 1000"),
        ];
        for (id, mine, state, want) in cases {
            let got = tail_to_rewind(id, &GtidPos::parse_lossy(mine), state).unwrap_err();
            assert!(got.contains(want), "{mine} / {state}: {got}");
        }
    }

    #[test]
    fn the_decoded_binlog_must_hold_exactly_the_tail_of_ordinary_transactions() {
        let tail = Tail {
            after: g("0-1-3"),
            last: g("0-1-5"),
        };
        let line = |gtid: &str, flags: &str| {
            format!("#261207  3:44:30 server id 1  end_log_pos 867 CRC32 0xed5c \tGTID {gtid} {flags}\n### INSERT INTO `t`.`b`\n")
        };
        let good = format!("{}{}", line("0-1-4", "trans"), line("0-1-5", "trans"));
        assert_eq!(
            check_decoded(&good, &tail).unwrap(),
            vec![g("0-1-4"), g("0-1-5")]
        );
        let ddl = format!("{}{}", line("0-1-4", "trans"), line("0-1-5", "ddl"));
        assert!(check_decoded(&ddl, &tail).unwrap_err().contains("DDL"));
        let short = line("0-1-4", "trans");
        assert!(check_decoded(&short, &tail)
            .unwrap_err()
            .contains("1 transaction"));
    }

    #[test]
    fn rewound_transactions_are_saved_under_a_name_of_the_node() {
        let f = rewind_file(Some(Path::new("/var/x")), "c1", "127.0.0.1:3306", 42);
        assert_eq!(f, PathBuf::from("/var/x/c1-127.0.0.1_3306-42.txt"));
        assert!(rewind_file(None, "c1", "h:1", 1).starts_with(std::env::temp_dir()));
    }
}
