//! Keyspaces as written in the shard map (JSON or the TOML config's `[[keyspaces]]`): the
//! logical databases clients see, their shards and how each table is placed.
//!
//! These are plain data; [`crate::ShardMap`] indexes and validates them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::vindex::VindexKind;

/// A logical database: the cluster for its unsharded tables, its shards (none: unsharded) and
/// its tables (unlisted tables are unsharded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Keyspace {
    /// The database name clients use.
    pub name: String,
    /// Where its unsharded tables live.
    pub default_cluster: String,
    /// The key ranges and their clusters; empty for an unsharded keyspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardSpec>,
    /// How its tables are placed; unlisted tables are unsharded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableSpec>,
}

impl Keyspace {
    /// An unsharded keyspace: every table on `default_cluster`.
    pub fn unsharded(name: impl Into<String>, default_cluster: impl Into<String>) -> Self {
        Keyspace {
            name: name.into(),
            default_cluster: default_cluster.into(),
            ..Keyspace::default()
        }
    }
}

/// One shard: a key range written as a Vitess-style name (`-80`, `80-`) and its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    /// The key range: `-80`, `80-c0`, `c0-` (hex bounds of the 64-bit keyspace id).
    pub name: String,
    /// The cluster holding it, in a database named like the keyspace.
    pub cluster: String,
}

/// How a table is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TableKindName {
    /// Split across the shards by `column` through `vindex`.
    Sharded,
    /// A full copy on every shard: writes go to all, reads to any.
    Reference,
    /// On the keyspace's default cluster (also what unlisted tables are).
    Unsharded,
}

impl TableKindName {
    pub fn as_str(&self) -> &'static str {
        match self {
            TableKindName::Sharded => "sharded",
            TableKindName::Reference => "reference",
            TableKindName::Unsharded => "unsharded",
        }
    }
}

/// One table's placement as written. Table names are case-sensitive (MariaDB on Linux with
/// `lower_case_table_names=0`); the column name is not (MariaDB column names never are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// The table's name (case-sensitive).
    pub name: String,
    pub kind: TableKindName,
    /// The sharding column (sharded tables only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// How key values map to shards (sharded tables only): `hash` (spread evenly),
    /// `numeric` (the value itself is the keyspace id: ranges), `list` (explicit `values`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vindex: Option<VindexKind>,
    /// For the `list` vindex: value (integers as their decimal text) to shard name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, String>>,
}

impl TableSpec {
    /// A sharded table.
    pub fn sharded(name: impl Into<String>, column: impl Into<String>, vindex: VindexKind) -> Self {
        TableSpec {
            name: name.into(),
            kind: TableKindName::Sharded,
            column: Some(column.into()),
            vindex: Some(vindex),
            values: None,
        }
    }

    /// A reference table.
    pub fn reference(name: impl Into<String>) -> Self {
        TableSpec {
            name: name.into(),
            kind: TableKindName::Reference,
            column: None,
            vindex: None,
            values: None,
        }
    }
}
