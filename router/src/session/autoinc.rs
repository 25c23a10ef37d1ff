//! Global AUTO_INCREMENT on sharded tables: an INSERT that leaves a sharded table's
//! AUTO_INCREMENT column to the server (omits it, or gives NULL or 0) gets ids from the
//! keyspace's sequence instead (see [`crate::sequence`]), written into its text before it is
//! planned, so that it is routed by them when the column is the shard key. The reply's last
//! insert id and the session's `LAST_INSERT_ID()` are the first generated id.

use shard_map::{KeyspaceMap, ShardMap, TableKind};

use crate::backend::BackendError;
use crate::classify::{Classification, StatementKind};
use crate::error::RouterError;
use crate::shard::{fill, Plan};

use super::{Failure, Session, Target};

impl Session {
    /// The sharded table an INSERT (or REPLACE) writes to, with its keyspace.
    fn insert_target<'m>(
        &self,
        map: &'m ShardMap,
        sql: &str,
        class: &Classification,
    ) -> Option<(&'m KeyspaceMap, String)> {
        if class.kind != StatementKind::Write || !class.parsed || class.multi {
            return None;
        }
        let [t] = class.tables.as_slice() else {
            return None;
        };
        let verb = sql.trim_start().get(..7)?.to_ascii_uppercase();
        if !verb.starts_with("INSERT") && !verb.starts_with("REPLACE") {
            return None;
        }
        let ks = map
            .keyspace(t.schema.as_deref().or(self.state.db.as_deref())?)
            .filter(|k| k.is_sharded())?;
        matches!(ks.table(&t.name), TableKind::Sharded(_)).then(|| (ks, t.name.clone()))
    }

    /// Whether an INSERT writes to a sharded table with an AUTO_INCREMENT column.
    pub(super) async fn writes_auto_increment(
        &self,
        map: &ShardMap,
        sql: &str,
        class: &Classification,
    ) -> Result<bool, Failure> {
        match self.insert_target(map, sql, class) {
            Some((ks, table)) => Ok(self.auto_increment_column(ks, &table).await?.is_some()),
            None => Ok(false),
        }
    }

    /// For an INSERT into a sharded table that leaves AUTO_INCREMENT values to the server: its
    /// text with global ids written in, and the first id.
    pub(super) async fn fill_auto_increment(
        &self,
        map: &ShardMap,
        sql: &str,
        class: &Classification,
    ) -> Result<Option<(String, u64)>, Failure> {
        let Some((ks, table)) = self.insert_target(map, sql, class) else {
            return Ok(None);
        };
        let Some((column, pos)) = self.auto_increment_column(ks, &table).await? else {
            return Ok(None);
        };
        let Some((at, needs)) = fill::auto_increment_rows(sql, &column, pos) else {
            return Ok(None);
        };
        let n = needs.iter().filter(|x| **x).count() as u64;
        let ids = crate::sequence::reserve(
            &self.ctx,
            ks.default_cluster(),
            ks.name(),
            &table,
            n,
            (&self.user.name, &self.user.password),
        )
        .await
        .map_err(|e| RouterError::Backend(BackendError::Server(e.to_server())))?;
        let text = fill::fill_auto_increment(sql, &column, at, &needs, &ids).ok_or_else(|| {
            RouterError::NotSupported(format!(
                "this INSERT into `{table}`, whose AUTO_INCREMENT values the router must fill in"
            ))
        })?;
        Ok(Some((text, ids[0])))
    }

    /// Plans and runs an INSERT whose generated ids are written in; replies with the first.
    pub(super) async fn run_filled_insert(
        &mut self,
        map: &ShardMap,
        text: &str,
        first_id: u64,
        seq: u8,
    ) -> Result<(), Failure> {
        let class = self.ctx.classifier.classify(text);
        match self
            .plan(map, text, &class, self.state.db.as_deref(), None, None)
            .await?
        {
            Plan::Single(t) => {
                self.xa_write(vec![(t, text.to_string())], false, seq, Some(first_id))
                    .await
            }
            Plan::MultiWrite { parts, copies } => {
                self.xa_write(parts, copies, seq, Some(first_id)).await
            }
            Plan::Refuse(why) => Err(RouterError::NotSupported(why).into()),
            _ => Err(RouterError::NotSupported(
                "this INSERT with AUTO_INCREMENT values on a sharded table".into(),
            )
            .into()),
        }
    }

    /// A sharded table's AUTO_INCREMENT column and its position (0-based), from a shard's
    /// catalog (cached until DDL on sharded tables).
    async fn auto_increment_column(
        &self,
        ks: &KeyspaceMap,
        table: &str,
    ) -> Result<Option<(String, usize)>, Failure> {
        let key = (ks.name().to_string(), table.to_string());
        if let Some(c) = self.ctx.auto_increment.get(&key) {
            return Ok(c.clone());
        }
        let Some(shard) = ks.all_shards().first() else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT COLUMN_NAME, ORDINAL_POSITION FROM information_schema.COLUMNS WHERE \
             TABLE_SCHEMA = {} AND TABLE_NAME = {} AND EXTRA LIKE '%auto_increment%'",
            shard_map::sql::quote(&shard.database),
            shard_map::sql::quote(table)
        );
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.ctx.config.hold_timeout_ms);
        let (mut conn, _) = self
            .route_and_checkout(Target::Cluster(&shard.cluster), deadline)
            .await?;
        let out = conn.query(&sql).await.map_err(RouterError::from)?;
        let found = out.rows.first().and_then(|r| {
            let name = r.first().cloned().flatten()?;
            let pos = r.get(1).cloned().flatten()?.parse::<usize>().ok()?;
            Some((name, pos.checked_sub(1)?))
        });
        self.ctx.auto_increment.insert(key, found.clone());
        Ok(found)
    }
}
