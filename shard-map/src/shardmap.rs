//! The shard map: every keyspace with its shards and tables, indexed at construction for the
//! per-statement lookups of the router, and immutable afterwards (a change is a new map).
//!
//! # Where data lives
//!
//! - Unsharded tables of keyspace `app` live in database `app` on the keyspace's
//!   `default_cluster`.
//! - Each shard lives on its cluster in database `app` when it is the keyspace's only shard on
//!   that cluster, and in `app_{lo}_{hi}` when the cluster holds several shards of `app`, where
//!   `lo`/`hi` are the range's hex bounds with `00` and `ff` for the open ends (`-40` →
//!   `app_00_40`, `40-80` → `app_40_80`, `c0-` → `app_c0_ff`). Starts are unique in a valid
//!   keyspace, so these names are too. A shard alone on the default cluster therefore shares
//!   database `app` with the unsharded tables. Moving a second shard of `app` onto a cluster
//!   renames the first one's database there: [`crate::diff`] reports it.
//! - Reference tables have a copy in every shard's database (in `app` on the default cluster
//!   when the keyspace has no shards).
//!
//! # Names
//!
//! Keyspace and table names compare exactly (MariaDB on Linux with the default
//! `lower_case_table_names=0` treats database and table names case-sensitively); column names
//! compare case-insensitively, as MariaDB always does. A column the router fails to recognise
//! as the sharding column only costs a scatter, never a wrong shard.
//!
//! Lookups assume a map for which [`ShardMap::validate`] found nothing; [`ShardMap::new`] and
//! [`ShardMap::validated`] give such maps.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::ShardMapError;
use crate::keyrange::KeyRange;
use crate::keyspace::{Keyspace, TableKindName, TableSpec};
use crate::vindex::{KeyValue, ListVindex, Placement, Unplaceable, Vindex};

/// Every keyspace, plus the cluster for databases that belong to no keyspace.
///
/// Serialises as `{"default_cluster": "c1", "keyspaces": [...]}`; `default_cluster` may be left
/// out, and then it is the first keyspace's `default_cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "ShardMapSpec", into = "ShardMapSpec")]
pub struct ShardMap {
    spec: ShardMapSpec,
    /// The cluster for databases in no keyspace (resolved from the spec).
    default_cluster: String,
    /// Built keyspaces; a name defined twice keeps its first definition.
    keyspaces: HashMap<String, KeyspaceMap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardMapSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_cluster: Option<String>,
    #[serde(default)]
    keyspaces: Vec<Keyspace>,
}

impl PartialEq for ShardMap {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for ShardMap {}

impl From<ShardMapSpec> for ShardMap {
    fn from(spec: ShardMapSpec) -> Self {
        let default_cluster = spec
            .default_cluster
            .clone()
            .or_else(|| spec.keyspaces.first().map(|k| k.default_cluster.clone()))
            .unwrap_or_default();
        let mut keyspaces = HashMap::new();
        for ks in &spec.keyspaces {
            keyspaces
                .entry(ks.name.clone())
                .or_insert_with(|| KeyspaceMap::build(ks));
        }
        ShardMap {
            spec,
            default_cluster,
            keyspaces,
        }
    }
}

impl From<ShardMap> for ShardMapSpec {
    fn from(map: ShardMap) -> Self {
        map.spec
    }
}

/// Where one shard lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardTarget {
    /// Canonical shard name (`-80`).
    pub shard: String,
    pub range: KeyRange,
    pub cluster: String,
    pub database: String,
}

/// How one table is placed, ready for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    Sharded(ShardedTable),
    /// A copy on every shard: writes go to all, reads to any.
    Reference,
    /// On the keyspace's default cluster, in the keyspace's database.
    Unsharded,
}

static UNSHARDED: TableKind = TableKind::Unsharded;

/// A sharded table's column and vindex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedTable {
    /// As written in the map.
    pub column: String,
    pub vindex: Vindex,
}

impl ShardedTable {
    /// Whether `name` is the sharding column (column names are case-insensitive).
    pub fn is_column(&self, name: &str) -> bool {
        self.column.eq_ignore_ascii_case(name)
            || (!self.column.is_ascii() && self.column.to_lowercase() == name.to_lowercase())
    }
}

/// Which shards a read with `column = value` must visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardLookup<'a> {
    /// Only this one.
    One(&'a ShardTarget),
    /// None: no row can have this value.
    Nowhere,
    /// Every shard, because the value's shard cannot be known (the reason says why).
    All(Unplaceable),
}

/// One keyspace, indexed.
#[derive(Debug, Clone)]
pub struct KeyspaceMap {
    name: String,
    default_cluster: String,
    sharded: bool,
    /// Every shard with a valid name, sorted by range.
    shards: Vec<ShardTarget>,
    tables: HashMap<String, TableKind>,
}

impl KeyspaceMap {
    fn build(spec: &Keyspace) -> KeyspaceMap {
        let shards = shard_targets_of(spec);
        let ranges: HashSet<KeyRange> = shards.iter().map(|t| t.range).collect();
        let mut tables = HashMap::new();
        for t in &spec.tables {
            if let Some(kind) = table_kind(t, &ranges) {
                tables.entry(t.name.clone()).or_insert(kind);
            }
        }
        KeyspaceMap {
            name: spec.name.clone(),
            default_cluster: spec.default_cluster.clone(),
            sharded: !spec.shards.is_empty(),
            shards,
            tables,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster of the unsharded tables.
    pub fn default_cluster(&self) -> &str {
        &self.default_cluster
    }

    /// The database of the unsharded tables (on the default cluster): the keyspace's name.
    pub fn unsharded_database(&self) -> &str {
        &self.name
    }

    /// Whether the keyspace has shards.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// How `table` is placed; unlisted tables are unsharded. Case-sensitive.
    pub fn table(&self, table: &str) -> &TableKind {
        self.tables.get(table).unwrap_or(&UNSHARDED)
    }

    /// Every shard, ordered by range. Empty for an unsharded keyspace.
    pub fn all_shards(&self) -> &[ShardTarget] {
        &self.shards
    }

    /// The shard whose range contains `id`.
    pub fn shard_for_id(&self, id: u64) -> Option<&ShardTarget> {
        let after = self.shards.partition_point(|t| t.range.start <= id);
        let t = self.shards.get(after.checked_sub(1)?)?;
        t.range.contains(id).then_some(t)
    }

    /// The shards holding any id in `lo..=hi` (for ranges over a `numeric` vindex column).
    pub fn shards_for_range(&self, lo: u64, hi: u64) -> &[ShardTarget] {
        if lo > hi {
            return &[];
        }
        let first = self
            .shards
            .partition_point(|t| t.range.start <= lo)
            .saturating_sub(1);
        let end = self.shards.partition_point(|t| t.range.start <= hi);
        let first = first.min(end);
        let slice = &self.shards[first..end];
        // Skip a leading shard that ends before `lo` (only in a map with gaps).
        match slice.first() {
            Some(t) if t.range.end_u128() <= u128::from(lo) => &slice[1..],
            _ => slice,
        }
    }

    /// The shard with this name (canonical or not).
    pub fn shard(&self, name: &str) -> Option<&ShardTarget> {
        let range = KeyRange::parse(name).ok()?;
        self.shards.iter().find(|t| t.range == range)
    }

    /// Which shards a read with `table.column = v` must visit.
    pub fn shard_for_read(&self, table: &ShardedTable, v: &KeyValue) -> ShardLookup<'_> {
        match table.vindex.place(v) {
            Placement::Id(id) => match self.shard_for_id(id) {
                Some(t) => ShardLookup::One(t),
                None => ShardLookup::All(Unplaceable::NoShard(id)),
            },
            Placement::Nowhere => ShardLookup::Nowhere,
            Placement::Unknown(why) => ShardLookup::All(why),
        }
    }

    /// The shard an inserted row with `table.column = v` belongs to, or why it must be refused.
    pub fn shard_for_insert(
        &self,
        table: &ShardedTable,
        v: &KeyValue,
    ) -> Result<&ShardTarget, Unplaceable> {
        let id = table.vindex.place_insert(v)?;
        self.shard_for_id(id).ok_or(Unplaceable::NoShard(id))
    }
}

/// The database of the shard with `range` in `keyspace`: the keyspace's name, or
/// `{keyspace}_{lo}_{hi}` when its cluster holds several shards of the keyspace.
pub fn shard_database_name(keyspace: &str, range: &KeyRange, cluster_shared: bool) -> String {
    if cluster_shared {
        format!("{keyspace}_{}_{}", range.start_hex(), range.end_hex())
    } else {
        keyspace.to_string()
    }
}

/// Targets of every shard with a valid name (first definition of a range wins), sorted.
fn shard_targets_of(spec: &Keyspace) -> Vec<ShardTarget> {
    let mut parsed: BTreeMap<KeyRange, &str> = BTreeMap::new();
    for s in &spec.shards {
        if let Ok(r) = KeyRange::parse(&s.name) {
            parsed.entry(r).or_insert(&s.cluster);
        }
    }
    let mut per_cluster: HashMap<&str, usize> = HashMap::new();
    for cluster in parsed.values() {
        *per_cluster.entry(cluster).or_default() += 1;
    }
    parsed
        .iter()
        .map(|(range, cluster)| ShardTarget {
            shard: range.name(),
            range: *range,
            cluster: cluster.to_string(),
            database: shard_database_name(&spec.name, range, per_cluster[cluster] > 1),
        })
        .collect()
}

/// The routing form of a table entry; `None` for a sharded entry missing its column or vindex
/// (validation reports it).
fn table_kind(t: &TableSpec, shards: &HashSet<KeyRange>) -> Option<TableKind> {
    Some(match t.kind {
        TableKindName::Reference => TableKind::Reference,
        TableKindName::Unsharded => TableKind::Unsharded,
        TableKindName::Sharded => {
            let column = t.column.clone().filter(|c| !c.is_empty())?;
            let vindex = match t.vindex? {
                crate::VindexKind::Hash => Vindex::Hash,
                crate::VindexKind::Numeric => Vindex::Numeric,
                crate::VindexKind::List => {
                    let entries = t
                        .values
                        .iter()
                        .flatten()
                        .map(|(value, shard)| {
                            let range = KeyRange::parse(shard).ok().filter(|r| shards.contains(r));
                            (value.clone(), range)
                        })
                        .collect();
                    Vindex::List(ListVindex::new(&entries))
                }
            };
            TableKind::Sharded(ShardedTable { column, vindex })
        }
    })
}

impl ShardMap {
    /// Builds a shard map, checking it against the known cluster names. Every problem is listed.
    pub fn new(
        default_cluster: String,
        keyspaces: Vec<Keyspace>,
        clusters: &[&str],
    ) -> Result<Self, Vec<ShardMapError>> {
        ShardMap::from_keyspaces(Some(default_cluster), keyspaces).validated(clusters)
    }

    /// Builds a shard map without checking it; see [`ShardMap::validate`].
    pub fn from_keyspaces(default_cluster: Option<String>, keyspaces: Vec<Keyspace>) -> Self {
        ShardMap::from(ShardMapSpec {
            default_cluster,
            keyspaces,
        })
    }

    /// Parses the JSON form. Only the shape is checked here; see [`ShardMap::validate`].
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The JSON form, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.spec).expect("a shard map always serialises")
    }

    /// Every problem that makes this map unusable with these clusters.
    pub fn validate(&self, clusters: &[&str]) -> Vec<ShardMapError> {
        crate::validate::validate(
            self.spec.default_cluster.as_deref(),
            &self.spec.keyspaces,
            &self.keyspaces,
            clusters,
        )
    }

    /// This map if it is valid with these clusters, else every problem.
    pub fn validated(self, clusters: &[&str]) -> Result<Self, Vec<ShardMapError>> {
        let problems = self.validate(clusters);
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
    }

    /// The cluster that serves statements for a session whose current database is `db`: the
    /// keyspace's default cluster, or the map's for a database in no keyspace (or none).
    pub fn cluster_for_db(&self, db: Option<&str>) -> &str {
        db.and_then(|d| self.keyspaces.get(d))
            .map(|ks| ks.default_cluster.as_str())
            .unwrap_or(&self.default_cluster)
    }

    /// The cluster for databases in no keyspace.
    pub fn default_cluster(&self) -> &str {
        &self.default_cluster
    }

    /// The keyspaces as written, in order.
    /// Whether any keyspace has shards (the router plans statements only then).
    pub fn has_sharded_keyspace(&self) -> bool {
        self.keyspace_specs().iter().any(|k| !k.shards.is_empty())
    }

    pub fn keyspace_specs(&self) -> &[Keyspace] {
        &self.spec.keyspaces
    }

    /// The keyspace named `name` (case-sensitive).
    pub fn keyspace(&self, name: &str) -> Option<&KeyspaceMap> {
        self.keyspaces.get(name)
    }

    /// How `table` of `keyspace` is placed; tables of unknown keyspaces are unsharded.
    pub fn table(&self, keyspace: &str, table: &str) -> &TableKind {
        self.keyspace(keyspace)
            .map_or(&UNSHARDED, |ks| ks.table(table))
    }

    /// The shard of `keyspace` whose range contains `id`.
    pub fn shard_for_id(&self, keyspace: &str, id: u64) -> Option<&ShardTarget> {
        self.keyspace(keyspace)?.shard_for_id(id)
    }

    /// The shards of `keyspace` holding any id in `lo..=hi`.
    pub fn shards_for_range(&self, keyspace: &str, lo: u64, hi: u64) -> &[ShardTarget] {
        self.keyspace(keyspace)
            .map_or(&[], |ks| ks.shards_for_range(lo, hi))
    }

    /// Every shard of `keyspace`, ordered by range (empty when unsharded or unknown).
    pub fn all_shards(&self, keyspace: &str) -> &[ShardTarget] {
        self.keyspace(keyspace).map_or(&[], KeyspaceMap::all_shards)
    }

    /// Owned copies of [`ShardMap::all_shards`].
    pub fn shard_targets(&self, keyspace: &str) -> Vec<ShardTarget> {
        self.all_shards(keyspace).to_vec()
    }

    /// The database that holds `shard` (any spelling of its name) of `keyspace`.
    pub fn shard_database(&self, keyspace: &str, shard: &str) -> Option<String> {
        Some(self.keyspace(keyspace)?.shard(shard)?.database.clone())
    }
}
