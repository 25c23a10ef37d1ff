//! MariaDB GTID positions (`domain-server-seq,...`, as in `@@gtid_binlog_pos` or
//! `Gtid_IO_Pos`): parsing, and the comparisons elections and rejoins are decided on.
//!
//! A position holds at most one GTID per replication domain. Under `gtid_strict_mode` the
//! sequence numbers of a domain only grow, so within a domain "further" means a higher
//! sequence number, whichever server wrote it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One global transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    pub domain: u32,
    pub server_id: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.seq)
    }
}

impl FromStr for Gtid {
    type Err = GtidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GtidError(s.to_owned());
        let mut parts = s.trim().splitn(3, '-');
        let mut next = || parts.next().ok_or_else(bad);
        let domain = next()?.parse().map_err(|_| bad())?;
        let server_id = next()?.parse().map_err(|_| bad())?;
        let seq = next()?.parse().map_err(|_| bad())?;
        Ok(Gtid {
            domain,
            server_id,
            seq,
        })
    }
}

/// A text that is not a GTID or GTID list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MariaDB GTID list: {0:?}")]
pub struct GtidError(pub String);

/// A GTID position: the last GTID of each domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos {
    by_domain: BTreeMap<u32, Gtid>,
}

impl GtidPos {
    /// Parses `0-1-5,1-2-7` (spaces and newlines, which the server puts in long lists, are
    /// ignored; the empty string is the empty position). A domain listed twice keeps its
    /// highest sequence number.
    pub fn parse(s: &str) -> Result<GtidPos, GtidError> {
        let mut pos = GtidPos::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let gtid: Gtid = item.parse().map_err(|_| GtidError(s.to_owned()))?;
            pos.by_domain
                .entry(gtid.domain)
                .and_modify(|g| {
                    if gtid.seq > g.seq {
                        *g = gtid;
                    }
                })
                .or_insert(gtid);
        }
        Ok(pos)
    }

    /// Like [`GtidPos::parse`], but a malformed text is the empty position. For values read
    /// from the server, which are well formed.
    pub fn parse_lossy(s: &str) -> GtidPos {
        GtidPos::parse(s).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The GTID of `domain`, if any.
    pub fn get(&self, domain: u32) -> Option<Gtid> {
        self.by_domain.get(&domain).copied()
    }

    /// The sequence number reached in `domain` (0 when the domain is absent).
    pub fn seq(&self, domain: u32) -> u64 {
        self.get(domain).map_or(0, |g| g.seq)
    }

    /// The domains present.
    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_domain.keys().copied()
    }

    /// Every GTID, in domain order.
    pub fn iter(&self) -> impl Iterator<Item = Gtid> + '_ {
        self.by_domain.values().copied()
    }

    /// Moves `g`'s domain to `g` (the next GTID of a binlog read in order).
    pub fn advance(&mut self, g: Gtid) {
        self.by_domain.insert(g.domain, g);
    }

    /// Per domain, the further of the two positions.
    pub fn max_with(mut self, other: &GtidPos) -> GtidPos {
        for g in other.iter() {
            self.by_domain
                .entry(g.domain)
                .and_modify(|mine| {
                    if g.seq > mine.seq {
                        *mine = g;
                    }
                })
                .or_insert(g);
        }
        self
    }

    /// The GTIDs of `self` that `other` does not have: per domain, a GTID whose sequence is
    /// beyond `other`'s, or the same sequence number written by another server (the histories
    /// diverged). Empty when everything `self` holds is contained in `other`.
    ///
    /// This looks at the last GTID of each domain only: two histories that diverged earlier and
    /// then wrote the same number of transactions would compare equal here. A rejoining node
    /// whose history differs in that way is caught by the new leader refusing its position
    /// (error 1236 under `gtid_strict_mode`), which the rejoin checks for.
    pub fn not_in(&self, other: &GtidPos) -> Vec<Gtid> {
        self.iter()
            .filter(|g| match other.get(g.domain) {
                None => true,
                Some(o) => g.seq > o.seq || (g.seq == o.seq && g.server_id != o.server_id),
            })
            .collect()
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for g in self.by_domain.values() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

/// `0-1-5, 0-1-6` for a list of GTIDs.
pub fn list(gtids: &[Gtid]) -> String {
    gtids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: &str) -> GtidPos {
        GtidPos::parse(s).expect("valid position")
    }

    #[test]
    fn parses_and_prints_positions() {
        let table = [
            ("", ""),
            ("0-1-5", "0-1-5"),
            ("1-2-7,0-1-5", "0-1-5,1-2-7"),
            (" 0-1-5,\n1-2-7 ", "0-1-5,1-2-7"),
            ("0-1-5,0-2-9", "0-2-9"),
        ];
        for (text, printed) in table {
            assert_eq!(pos(text).to_string(), printed, "{text:?}");
        }
        for bad in ["0-1", "x-1-2", "0-1-2-3", "0-1-", "-1-2"] {
            assert!(GtidPos::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(GtidPos::parse_lossy("garbage").is_empty());
    }

    #[test]
    fn seq_per_domain() {
        let p = pos("0-1-5,3-2-9");
        assert_eq!((p.seq(0), p.seq(3), p.seq(1)), (5, 9, 0));
        assert_eq!(p.domains().collect::<Vec<_>>(), vec![0, 3]);
    }

    #[test]
    fn max_with_keeps_the_further_gtid_per_domain() {
        let merged = pos("0-1-5,2-1-1").max_with(&pos("0-2-7,1-1-3"));
        assert_eq!(merged.to_string(), "0-2-7,1-1-3,2-1-1");
    }

    #[test]
    fn not_in_finds_what_the_other_lacks() {
        // (mine, theirs, what I have that they lack)
        let table = [
            ("", "0-1-5", ""),
            ("0-1-5", "0-1-5", ""),
            ("0-1-4", "0-1-5", ""),
            // Written by another server further on: still contained.
            ("0-1-4", "0-2-5", ""),
            ("0-1-6", "0-1-5", "0-1-6"),
            // Same number, another server: diverged.
            ("0-3-5", "0-1-5", "0-3-5"),
            // A domain they do not have at all.
            ("0-1-5,1-9-2", "0-1-5", "1-9-2"),
            ("0-1-5", "", "0-1-5"),
        ];
        for (mine, theirs, extra) in table {
            let got = pos(mine).not_in(&pos(theirs));
            assert_eq!(list(&got), extra, "{mine:?} vs {theirs:?}");
        }
    }
}
