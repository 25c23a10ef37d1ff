//! Everything that can make a shard map invalid. Validation collects all of them at once, so an
//! operator fixes a config in one pass.

use crate::keyrange::KeyRangeError;

/// A problem that makes a shard map invalid.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ShardMapError {
    #[error("keyspace name must not be empty")]
    EmptyName,
    #[error("keyspace `{0}` is defined twice")]
    DuplicateKeyspace(String),
    #[error("keyspace `{keyspace}` names unknown cluster `{cluster}`")]
    UnknownCluster { keyspace: String, cluster: String },
    #[error("the shard map names no default cluster and has no keyspace to take one from")]
    NoDefaultCluster,
    #[error("keyspace `{keyspace}`: shard `{shard}` is on unknown cluster `{cluster}`")]
    UnknownShardCluster {
        keyspace: String,
        shard: String,
        cluster: String,
    },
    #[error("keyspace `{keyspace}`: bad shard name: {error}")]
    BadShardName {
        keyspace: String,
        error: KeyRangeError,
    },
    #[error("keyspace `{keyspace}`: shard {shard} is defined twice")]
    DuplicateShard { keyspace: String, shard: String },
    #[error("keyspace `{keyspace}`: shards {a} and {b} overlap")]
    ShardOverlap {
        keyspace: String,
        a: String,
        b: String,
    },
    #[error("keyspace `{keyspace}`: no shard covers {range}")]
    ShardGap { keyspace: String, range: String },
    #[error(
        "keyspace `{keyspace}`: shard {shard}'s database name `{database}` is longer than \
         MariaDB's 64 characters; use a shorter keyspace name"
    )]
    DatabaseNameTooLong {
        keyspace: String,
        shard: String,
        database: String,
    },
    #[error("keyspace `{keyspace}`: a table has an empty name")]
    EmptyTableName { keyspace: String },
    #[error("keyspace `{keyspace}`: table `{table}` is defined twice")]
    DuplicateTable { keyspace: String, table: String },
    #[error(
        "keyspace `{keyspace}`: table `{table}` is sharded but the keyspace has no shards; \
         add `shards` or make the table unsharded"
    )]
    ShardedTableWithoutShards { keyspace: String, table: String },
    #[error("keyspace `{keyspace}`: sharded table `{table}` needs a `column`")]
    MissingColumn { keyspace: String, table: String },
    #[error(
        "keyspace `{keyspace}`: sharded table `{table}` needs a `vindex` (hash, numeric or list)"
    )]
    MissingVindex { keyspace: String, table: String },
    #[error("keyspace `{keyspace}`: {kind} table `{table}` must not have `{field}`")]
    FieldNotAllowed {
        keyspace: String,
        table: String,
        kind: &'static str,
        field: &'static str,
    },
    #[error("keyspace `{keyspace}`: table `{table}` has a list vindex but no `values`")]
    ListWithoutValues { keyspace: String, table: String },
    #[error("keyspace `{keyspace}`: table `{table}` has `values` but its vindex is `{vindex}`, not list")]
    ValuesWithoutList {
        keyspace: String,
        table: String,
        vindex: &'static str,
    },
    #[error("keyspace `{keyspace}`: table `{table}` has an empty list value")]
    EmptyListValue { keyspace: String, table: String },
    #[error(
        "keyspace `{keyspace}`: table `{table}` maps value `{value}` to unknown shard `{shard}`"
    )]
    ListValueUnknownShard {
        keyspace: String,
        table: String,
        value: String,
        shard: String,
    },
    #[error(
        "keyspace `{keyspace}`: table `{table}` lists values `{a}` and `{b}`, which MariaDB may \
         compare as equal (case, trailing spaces or numeric value)"
    )]
    ListValuesCollide {
        keyspace: String,
        table: String,
        a: String,
        b: String,
    },
}

/// The name the first shard-map API used for its errors.
pub type KeyspaceError = ShardMapError;
