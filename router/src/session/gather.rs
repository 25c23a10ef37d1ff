//! Reads over several shards that the router merges: the shards run a rewritten statement
//! through the text protocol and [`crate::backend::aggregate`] combines their results; a
//! sorted scatter whose raw merge can't compare its keys falls back to this path.

use super::{shard, Cmd, Failure, Gather, RouterError, Session};

impl Session {
    /// A merged read: every shard runs the spec's statement through the text protocol.
    pub(crate) async fn run_gather(
        &mut self,
        targets: &[shard_map::ShardTarget],
        spec: Box<crate::shard::gather::GatherSpec>,
        binary: bool,
    ) -> Result<(), Failure> {
        let mut payload = Vec::with_capacity(spec.sql.len() + 1);
        payload.push(0x03);
        payload.extend_from_slice(spec.sql.as_bytes());
        self.run_scatter(targets, Gather::Merge { spec, binary }, Cmd::Raw(&payload))
            .await
    }

    /// A plain scatter; when its ORDER BY can't be merged from the rows alone (strings in a
    /// collation, types the raw merge doesn't compare), it runs again as a merged read that
    /// compares weight strings. `sql` is the statement with any parameters written in.
    pub(crate) async fn scatter_or_gather(
        &mut self,
        targets: &[shard_map::ShardTarget],
        limit: Option<u64>,
        order: Vec<(String, bool)>,
        cmd: Cmd<'_>,
        sql: &str,
    ) -> Result<(), Failure> {
        let binary = matches!(cmd, Cmd::Execute { .. });
        let ordered = !order.is_empty();
        match self
            .run_scatter(targets, Gather::Rows { limit, order }, cmd)
            .await
        {
            Err(Failure::Reply(RouterError::NotSupported(why), None)) if ordered => {
                match shard::gather::analyze_sql(sql, &self.ctx.classifier.classify(sql)) {
                    Ok(spec) => self.run_gather(targets, Box::new(spec), binary).await,
                    Err(_) => Err(RouterError::NotSupported(why).into()),
                }
            }
            other => other,
        }
    }
}
